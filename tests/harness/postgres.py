"""PostgreSQL for tests: find or start a server, and create/drop throwaway databases on it."""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

from pipeline.demo.stack.ports import free_port
from pipeline.demo.stack.process import log_tail

#: Environment variable naming an existing server to use (``postgresql+psycopg2://user:pw@host:port/db``).
DATABASE_URL_ENV = "PIPELINE_TEST_DATABASE_URL"
#: A local server tried before starting a throwaway cluster.
DEFAULT_LOCAL_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
#: Prefix of every database the harness creates.
DATABASE_PREFIX = "pipeline_test_"

_HOW_TO_PROVIDE = (
    f"Set {DATABASE_URL_ENV}=postgresql+psycopg2://USER:PASSWORD@HOST:PORT/postgres (a role allowed to CREATE "
    "DATABASE), run a server on 127.0.0.1:5432 that lets user 'postgres' in, or install the PostgreSQL server "
    "binaries (initdb, pg_ctl: e.g. apt-get install postgresql) so a throwaway cluster can be started."
)


class PostgresUnavailableError(RuntimeError):
    """No PostgreSQL server could be found or started."""


def normalise_url(url: str) -> str:
    """Return ``url`` with the psycopg2 driver made explicit."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg2")
    return parsed.render_as_string(hide_password=False)


def with_database(url: str, database: str) -> str:
    """Return ``url`` pointing at another database on the same server."""
    return make_url(url).set(database=database).render_as_string(hide_password=False)


def _admin_engine(url: str | URL) -> sa.Engine:
    return sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool, connect_args={"connect_timeout": 3})


def server_answers(url: str) -> bool:
    """True when ``SELECT 1`` works against ``url``."""
    engine = _admin_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return True
    except sa.exc.OperationalError:
        return False
    finally:
        engine.dispose()


def create_database(admin_url: str, prefix: str = DATABASE_PREFIX) -> str:
    """Create a uniquely named empty database and return its URL."""
    name = f"{prefix}{uuid.uuid4().hex[:12]}"
    engine = _admin_engine(admin_url)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()
    return with_database(admin_url, name)


def drop_database(admin_url: str, database_url: str) -> None:
    """Terminate the connections to the database of ``database_url`` and drop it."""
    name = make_url(database_url).database
    if not name:
        raise ValueError(f"no database name in {database_url!r}")
    engine = _admin_engine(admin_url)
    try:
        with engine.connect() as conn:
            conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": name},
            )
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
    finally:
        engine.dispose()


def find_pg_binary(name: str) -> Path | None:
    """Locate a PostgreSQL server binary (``PATH``, ``/usr/local/bin``, newest ``/usr/lib/postgresql/*/bin``)."""
    candidates: list[str] = []
    if found := shutil.which(name):
        candidates.append(found)
    candidates.append(f"/usr/local/bin/{name}")

    def version_key(path: str) -> tuple[int, ...]:
        version = Path(path).parents[1].name
        return tuple(int(part) for part in version.split(".") if part.isdigit())

    candidates.extend(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=version_key, reverse=True))
    for candidate in candidates:
        if os.access(candidate, os.X_OK):
            return Path(candidate)
    return None


@dataclass
class TempCluster:
    """A throwaway PostgreSQL cluster started with ``initdb`` + ``pg_ctl`` (trust auth, loopback only)."""

    root: Path
    port: int
    pg_ctl: Path
    run_as: str | None = None
    running: bool = field(default=False, init=False)

    @property
    def data_dir(self) -> Path:
        """The cluster's PGDATA."""
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        """Server log file."""
        return self.root / "postgres.log"

    @property
    def url(self) -> str:
        """Admin URL (superuser ``postgres``, database ``postgres``)."""
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/postgres"

    def _command(self, argv: list[str]) -> list[str]:
        if self.run_as is None:
            return argv
        return ["runuser", "-u", self.run_as, "--", *argv]

    def _run(self, argv: list[str], what: str) -> None:
        result = subprocess.run(self._command(argv), capture_output=True, text=True, check=False, timeout=120)
        if result.returncode != 0:
            raise PostgresUnavailableError(
                f"{what} failed (exit {result.returncode}): {' '.join(argv)}\n{result.stdout}\n{result.stderr}\n"
                f"--- {self.log_path} ---\n{log_tail(self.log_path)}"
            )

    def start(self, initdb: Path) -> None:
        """initdb + pg_ctl start (waits until the server accepts connections)."""
        self._run(
            [str(initdb), "-D", str(self.data_dir), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "-N"],
            "initdb",
        )
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run(
            [
                str(self.pg_ctl),
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_path),
                "-o",
                options,
                "-w",
                "-t",
                "60",
                "start",
            ],
            "pg_ctl start",
        )
        self.running = True
        atexit.register(self.stop)

    def stop(self) -> None:
        """pg_ctl stop -m fast, then remove the cluster directory."""
        atexit.unregister(self.stop)
        if self.running:
            self.running = False
            subprocess.run(
                self._command([str(self.pg_ctl), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"]),
                capture_output=True,
                check=False,
                timeout=60,
            )
        shutil.rmtree(self.root, ignore_errors=True)


def start_temp_cluster() -> TempCluster:
    """Start a throwaway cluster on a free port; as root, the server runs as user ``postgres``."""
    initdb, pg_ctl = find_pg_binary("initdb"), find_pg_binary("pg_ctl")
    if initdb is None or pg_ctl is None:
        raise PostgresUnavailableError(
            f"No PostgreSQL server answers and initdb/pg_ctl were not found. {_HOW_TO_PROVIDE}"
        )

    run_as: str | None = None
    owner: pwd.struct_passwd | None = None
    if os.geteuid() == 0:
        # initdb refuses to run as root: hand the cluster to the 'postgres' system user.
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError as exc:
            raise PostgresUnavailableError(
                f"Running as root and there is no 'postgres' user to own a throwaway cluster. {_HOW_TO_PROVIDE}"
            ) from exc
        if shutil.which("runuser") is None:
            raise PostgresUnavailableError(f"Running as root but 'runuser' is missing. {_HOW_TO_PROVIDE}")
        run_as = "postgres"

    # Not under pytest's basetemp: that is mode 0700 and owned by root, which 'postgres' cannot enter.
    root = Path(tempfile.mkdtemp(prefix="pipeline-pg-"))
    if owner is not None:
        os.chown(root, owner.pw_uid, owner.pw_gid)
    cluster = TempCluster(root=root, port=free_port(), pg_ctl=pg_ctl, run_as=run_as)
    try:
        cluster.start(initdb)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def resolve_server() -> tuple[str, TempCluster | None]:
    """Return ``(admin_url, cluster)``: env override, else local 5432, else a new throwaway cluster."""
    if env_url := os.environ.get(DATABASE_URL_ENV):
        url = normalise_url(env_url)
        if not server_answers(url):
            raise PostgresUnavailableError(
                f"{DATABASE_URL_ENV} is set but the server does not answer: {make_url(url)!r}"
            )
        return url, None
    if server_answers(DEFAULT_LOCAL_URL):
        return DEFAULT_LOCAL_URL, None
    cluster = start_temp_cluster()
    return cluster.url, cluster
