"""A real Label Studio server, run from its own virtualenv (its pins clash with Airflow's).

Token handling (Label Studio 1.23): organisations created with the JWT feature flag on get
``legacy_api_tokens_enabled = False``, and then ``Authorization: Token <key>`` is refused with 401. The server
enables legacy tokens for the organisation it creates at first start when ``LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN``
is true (``organizations/functions.py``) or ``--enable-legacy-api-token`` is passed (``server.py``). We set both.
``--user-token`` (≤ 40 characters, DRF ``Token.key``) fixes the admin's legacy token, which label-studio-sdk 2.x sends
as ``Authorization: Token <key>`` for any api_key that is not a JWT.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.demo.stack import REPO_ROOT
from pipeline.demo.stack.ports import free_port
from pipeline.demo.stack.process import ManagedProcess, start_process

#: Environment variable overriding the ``label-studio`` executable.
LABEL_STUDIO_BIN_ENV = "LABEL_STUDIO_BIN"
#: The admin user Label Studio creates at first start.
ADMIN_USERNAME = "admin@pipeline.local"
#: A cold first start runs all Django migrations on SQLite (40-55 s on 2 cores).
STARTUP_TIMEOUT = 300.0
_DB_FILE = "label_studio.sqlite3"


@dataclass(frozen=True)
class LabelStudio:
    """Connection details of a running Label Studio (``LabelStudio(base_url=url, api_key=token)``)."""

    url: str
    token: str
    document_root: Path
    username: str
    password: str


def find_label_studio_bin() -> Path:
    """``$LABEL_STUDIO_BIN``, else ``<repo>/.venv-labelstudio/bin/label-studio``."""
    path = Path(os.environ.get(LABEL_STUDIO_BIN_ENV) or REPO_ROOT / ".venv-labelstudio" / "bin" / "label-studio")
    if not os.access(path, os.X_OK):
        raise FileNotFoundError(
            f"Label Studio server not found at {path}. Run `make venv-labelstudio` (its own virtualenv, "
            f"because its pins clash with Airflow's) or set {LABEL_STUDIO_BIN_ENV} to a label-studio executable."
        )
    return path


def _child_env(data_dir: Path, document_root: Path, url: str, admin: LabelStudioAdmin) -> dict[str, str]:
    # Label Studio reads LABEL_STUDIO_X, HEARTEX_X and plain X: drop what the caller's shell may carry.
    dropped_prefixes = ("LABEL_STUDIO_", "HEARTEX_", "DJANGO_", "POSTGRE_", "MYSQL_")
    dropped = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "DATABASE_NAME", "HOST", "PORT", "DEBUG", "SENTRY_DSN"}
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped_prefixes) and k not in dropped}
    env.update(
        {
            "PYTHONUNBUFFERED": "1",
            "DJANGO_DB": "sqlite",
            "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
            "LABEL_STUDIO_HOST": url,
            "LABEL_STUDIO_USERNAME": admin.username,
            "LABEL_STUDIO_PASSWORD": admin.password,
            "LABEL_STUDIO_USER_TOKEN": admin.token,
            "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
            "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
            "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(document_root),
            "LABEL_STUDIO_DEBUG": "false",
            # No phoning home: no network in CI, and each call would stall start-up.
            "LABEL_STUDIO_LATEST_VERSION_CHECK": "false",
            "LABEL_STUDIO_COLLECT_ANALYTICS": "false",
            "LABEL_STUDIO_SENTRY_DSN": "",
            "LABEL_STUDIO_FRONTEND_SENTRY_DSN": "",
        }
    )
    return env


def _template_path(cache_dir: Path, binary: Path, admin: LabelStudioAdmin) -> Path:
    """Where a migrated database for this Label Studio install and these admin credentials is cached."""
    stat = binary.resolve().stat()
    key = f"{binary.resolve()}|{stat.st_mtime_ns}|{admin.username}|{admin.token}"
    return cache_dir / f"label_studio-{hashlib.sha256(key.encode()).hexdigest()[:16]}.sqlite3"


def _snapshot(source: Path, target: Path) -> None:
    """Copy a live SQLite database consistently (backup API), atomically replacing ``target``."""
    partial = target.with_suffix(f".{os.getpid()}.partial")
    src = sqlite3.connect(source)
    dst = sqlite3.connect(partial)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()
    os.replace(partial, target)


@dataclass(frozen=True)
class LabelStudioAdmin:
    """The admin Label Studio creates at first start, and the admin's legacy API token (at most 40 characters)."""

    username: str = ADMIN_USERNAME
    password: str = field(default_factory=lambda: secrets.token_urlsafe(18), repr=False)
    token: str = field(default_factory=lambda: secrets.token_hex(20), repr=False)


def start_label_studio(
    workdir: Path, *, admin: LabelStudioAdmin | None = None, cache_dir: Path | None = None
) -> tuple[LabelStudio, ManagedProcess]:
    """Start Label Studio on a free loopback port with ``admin`` (fresh random credentials by default) and its
    legacy token; wait until the API answers.

    With ``cache_dir``, the migrated database of the first start is kept there and copied into later sessions'
    fresh data dirs, which cuts start-up from ~40 s to ~10 s. Label Studio still checks and applies migrations itself.
    """
    admin = admin or LabelStudioAdmin()
    binary = find_label_studio_bin()
    data_dir = workdir / "data"
    document_root = workdir / "documents"
    data_dir.mkdir(parents=True, exist_ok=True)
    document_root.mkdir(parents=True, exist_ok=True)

    template = _template_path(cache_dir, binary, admin) if cache_dir is not None else None
    if template is not None and template.is_file():
        shutil.copyfile(template, data_dir / _DB_FILE)

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [
        str(binary),
        "start",
        "--no-browser",
        "--internal-host",
        "127.0.0.1",
        "--port",
        str(port),
        "--host",
        url,
        "--data-dir",
        str(data_dir),
        "--username",
        admin.username,
        "--password",
        admin.password,
        "--user-token",
        admin.token,
        "--enable-legacy-api-token",
    ]

    def port_taken(log: str) -> str | None:
        # label-studio silently moves to the next port when ours was grabbed in the meantime.
        return f"port {port} was taken before Label Studio bound it" if f"Port {port} is in use" in log else None

    process = start_process(
        "label-studio",
        argv,
        log_path=workdir / "label-studio.log",
        env=_child_env(data_dir, document_root, url, admin),
        cwd=workdir,
    )
    process.wait_for_http(
        f"{url}/api/projects?page_size=1",
        headers={"Authorization": f"Token {admin.token}"},
        timeout=STARTUP_TIMEOUT,
        check_log=port_taken,
    )
    if template is not None and not template.is_file():
        _snapshot(data_dir / _DB_FILE, template)
    return (
        LabelStudio(
            url=url, token=admin.token, document_root=document_root, username=admin.username, password=admin.password
        ),
        process,
    )
