"""Airflow as local processes: the CLI, a client of the public REST API, and ``airflow standalone``.

``airflow standalone`` runs the api-server, scheduler, dag-processor and triggerer in one process tree with the
LocalExecutor. :func:`start_standalone` gives it its own ``AIRFLOW_HOME`` and port, the project's DAGs and plugins,
and users of the simple auth manager whose generated passwords it reads back, so a caller can act through the
REST API as a named user (a release manager answering an approval, say) rather than as an anonymous admin.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.demo.stack import REPO_ROOT
from pipeline.demo.stack.ports import free_port
from pipeline.demo.stack.process import ManagedProcess, ServiceStartError, find_executable, start_process

#: Environment variable overriding the ``airflow`` executable.
AIRFLOW_BIN_ENV = "AIRFLOW_BIN"
#: Seconds one-shot CLI commands (``db migrate``, ``dags reserialize``) may take.
CLI_TIMEOUT = 300.0
#: ``airflow standalone`` migrates its database, then starts four services: minutes on a cold 2-core machine.
STANDALONE_TIMEOUT = 420.0
#: Seconds a human-in-the-loop request must have waited before a script answers it (see ``waiting_requests``).
HITL_SETTLE_S = 10.0
_SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
_PASSWORDS_FILE = "simple_auth_manager_passwords.json.generated"


class AirflowCommandError(RuntimeError):
    """An ``airflow`` CLI command exited non-zero; the message carries its output."""


class AirflowApiError(RuntimeError):
    """The REST API answered with an error status; the message carries the body."""


def find_airflow_bin() -> Path:
    """``$AIRFLOW_BIN``, else ``airflow`` next to the running interpreter, else ``<repo>/.venv/bin/airflow``."""
    return find_executable("airflow", AIRFLOW_BIN_ENV, "apache-airflow")


def run_airflow(env: Mapping[str, str], *args: str, timeout: float = CLI_TIMEOUT) -> str:
    """Run ``airflow ARGS`` to completion and return its output; raise :class:`AirflowCommandError` on failure."""
    argv = [str(find_airflow_bin()), *args]
    result = subprocess.run(
        argv, env=dict(env), capture_output=True, text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL
    )
    if result.returncode != 0:
        raise AirflowCommandError(
            f"`airflow {' '.join(args)}` exited with {result.returncode}\n"
            f"--- stdout ---\n{result.stdout[-4000:]}\n--- stderr ---\n{result.stderr[-4000:]}"
        )
    return result.stdout + result.stderr


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class AirflowApi:
    """A minimal client of the public REST API (``/api/v2``); ``token`` is a JWT from ``/auth/token`` (none: every
    user is an admin)."""

    base_url: str
    token: str | None = None

    def request(self, method: str, path: str, body: Mapping[str, Any] | None = None, *, attempts: int = 4) -> Any:
        """Send ``body`` as JSON and return the decoded JSON answer.

        A server error (5xx: a SQLite metadata DB answers "database is locked" under load) is tried again after
        1, 2, 4 ... seconds, ``attempts`` times in all; a client error (4xx) is raised at once.
        """
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        for attempt in range(1, attempts + 1):
            request = urllib.request.Request(f"{self.base_url}/api/v2{path}", data=data, method=method, headers=headers)
            try:
                with _OPENER.open(request, timeout=30) as response:
                    return json.loads(response.read() or b"null")
            except urllib.error.HTTPError as exc:
                detail = exc.read().decode(errors="replace")
                if exc.code < 500 or attempt == attempts:
                    raise AirflowApiError(f"{method} {path} -> {exc.code}: {detail}") from exc
            time.sleep(2.0 ** (attempt - 1))
        raise AssertionError("unreachable")

    def as_user(self, username: str, password: str) -> AirflowApi:
        """The same API, signed in as ``username`` (a JWT from the auth manager's ``/auth/token``)."""
        request = urllib.request.Request(
            f"{self.base_url}/auth/token",
            data=json.dumps({"username": username, "password": password}).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        try:
            with _OPENER.open(request, timeout=30) as response:
                token = json.loads(response.read())["access_token"]
        except urllib.error.HTTPError as exc:
            raise AirflowApiError(
                f"sign-in as {username} -> {exc.code}: {exc.read().decode(errors='replace')}"
            ) from exc
        return AirflowApi(self.base_url, token)

    def unpause(self, dag_id: str) -> None:
        """Unpause a DAG (it must be serialized already)."""
        self.request("PATCH", f"/dags/{dag_id}", {"is_paused": False})

    def trigger(
        self,
        dag_id: str,
        conf: Mapping[str, Any] | None = None,
        *,
        logical_date: datetime | None = None,
        data_interval: tuple[datetime, datetime] | None = None,
        run_id: str | None = None,
    ) -> str:
        """Create a manual DAG run (for ``logical_date``, now by default, over ``data_interval`` when given) with
        ``conf``; return its run id. With ``run_id``, triggering again finds the run already there."""
        body: dict[str, Any] = {
            "logical_date": (logical_date or datetime.now(UTC)).isoformat(),
            "conf": dict(conf or {}),
        }
        if data_interval is not None:
            body["data_interval_start"], body["data_interval_end"] = (d.isoformat() for d in data_interval)
        if run_id is None:
            return str(self.request("POST", f"/dags/{dag_id}/dagRuns", body)["dag_run_id"])
        body["dag_run_id"] = run_id
        try:
            self.request("POST", f"/dags/{dag_id}/dagRuns", body)
        except AirflowApiError as exc:  # the same run asked for again (or a retry after a lost answer): it is there
            if " -> 409:" not in str(exc):
                raise
        return run_id

    def dag_run_state(self, dag_id: str, run_id: str) -> str:
        """State of a DAG run (``queued``, ``running``, ``success``, ``failed``)."""
        return str(self.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}")["state"])

    def dag_runs(self, dag_id: str = "~", **filters: str) -> list[dict[str, Any]]:
        """DAG runs of one DAG (``~``: of all), newest first, filtered by the API's query parameters."""
        query = "&".join(f"{k}={v}" for k, v in {"limit": "100", "order_by": "-run_after", **filters}.items())
        return list(self.request("GET", f"/dags/{dag_id}/dagRuns?{query}")["dag_runs"])

    def task_instances(self, dag_id: str, run_id: str) -> dict[str, dict[str, Any]]:
        """Task instances of a run by task id (``state``, ``queue``, ``try_number``, ``hostname``, ...)."""
        answer = self.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
        return {ti["task_id"]: ti for ti in answer["task_instances"]}

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        """State of each task instance of a run by task id (None: not scheduled yet)."""
        return {task_id: ti["state"] for task_id, ti in self.task_instances(dag_id, run_id).items()}

    def waiting_requests(self, dag_id: str = "~", *, waited: float = HITL_SETTLE_S) -> list[dict[str, Any]]:
        """Human-in-the-loop requests (approvals) that nobody answered yet and that are safe to answer: their task
        is parked (``awaiting_input``) and has been asking for ``waited`` seconds.

        An answer that reaches Airflow while the task is still parking kills that try, and its retry asks again
        (minutes later, after the retry delay): a person never answers that fast, a script must wait.
        """
        now = datetime.now(UTC)
        details = self.request("GET", f"/dags/{dag_id}/dagRuns/~/hitlDetails?response_received=false")
        return [
            d
            for d in details.get("hitl_details", [])
            if d["task_instance"].get("state") == "awaiting_input"
            and (now - datetime.fromisoformat(d["created_at"])).total_seconds() >= waited
        ]

    def answer(self, request: Mapping[str, Any], option: str, **params_input: Any) -> dict[str, Any]:
        """Answer a human-in-the-loop request (one of :meth:`waiting_requests`) as this client's user."""
        ti = request["task_instance"]
        return dict(
            self.request(
                "PATCH",
                f"/dags/{ti['dag_id']}/dagRuns/{ti['dag_run_id']}/taskInstances/{ti['task_id']}/{ti['map_index']}"
                "/hitlDetails",
                {"chosen_options": [option], "params_input": params_input},
            )
        )


@dataclass
class Standalone:
    """A running ``airflow standalone``: its URL, users and passwords, and the process tree."""

    url: str
    home: Path
    env: dict[str, str]
    passwords: dict[str, str]
    process: ManagedProcess

    @property
    def api(self) -> AirflowApi:
        """The REST API as an anonymous caller (only health and sign-in work without a token)."""
        return AirflowApi(self.url)

    def api_as(self, username: str) -> AirflowApi:
        """The REST API signed in as one of the standalone's users."""
        return self.api.as_user(username, self.passwords[username])

    def stop(self) -> None:
        """Stop every Airflow process of the standalone."""
        self.process.stop(timeout=30)


def standalone_env(
    home: Path,
    *,
    port: int,
    users: Mapping[str, str],
    dags_folder: Path,
    plugins_folder: Path | None,
    metadata_db_url: str | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of ``airflow standalone`` (the caller's ``AIRFLOW*`` variables are dropped).

    Args:
        home: AIRFLOW_HOME (configuration, generated passwords, task logs, the SQLite metadata DB by default).
        port: The api-server's port; the LocalExecutor's tasks reach its Execution API there.
        users: ``{username: role}`` of the simple auth manager (roles: viewer, user, op, admin).
        dags_folder: The DAGs folder.
        plugins_folder: The plugins folder (the monitoring page), or None for none.
        metadata_db_url: SQLAlchemy URL of the metadata DB (default: SQLite under ``home``).
        extra: More variables (the application's own settings); they win over the ones set here.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        {
            "PYTHONUNBUFFERED": "1",
            # standalone starts its services as `airflow ...` from PATH.
            "PATH": os.pathsep.join([str(find_airflow_bin().parent), env.get("PATH", "")]),
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__AUTH_MANAGER": _SIMPLE_AUTH_MANAGER,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{u}:{r}" for u, r in users.items()),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_db_url or f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
            "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
        }
    )
    if plugins_folder is not None:
        env["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(plugins_folder)
    env.update(extra or {})
    return env


def start_standalone(
    workdir: Path,
    *,
    users: Mapping[str, str],
    dags_folder: Path = REPO_ROOT / "dags",
    plugins_folder: Path | None = REPO_ROOT / "plugins",
    expected_dags: Sequence[str] = (),
    metadata_db_url: str | None = None,
    extra_env: Mapping[str, str] | None = None,
    timeout: float = STANDALONE_TIMEOUT,
) -> Standalone:
    """Start ``airflow standalone`` on a free port and wait until the API answers and ``expected_dags`` are parsed.

    The simple auth manager writes a password for each of ``users`` to ``AIRFLOW_HOME``; they are read back here.
    """
    home = workdir / "airflow-home"
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = standalone_env(
        home,
        port=port,
        users=users,
        dags_folder=dags_folder,
        plugins_folder=plugins_folder,
        metadata_db_url=metadata_db_url,
        extra=extra_env,
    )
    process = start_process(
        "airflow standalone",
        [str(find_airflow_bin()), "standalone"],
        log_path=workdir / "airflow-standalone.log",
        env=env,
        cwd=workdir,
    )
    url = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    process.wait_for_http(f"{url}/api/v2/monitor/health", timeout=timeout)
    passwords: dict[str, str] = json.loads((home / _PASSWORDS_FILE).read_text())
    standalone = Standalone(url=url, home=home, env=env, passwords=passwords, process=process)
    admin = next(u for u, r in users.items() if r == "admin")
    api = standalone.api_as(admin)
    while True:
        parsed = {d["dag_id"] for d in api.request("GET", "/dags?limit=100")["dags"]}
        health = api.request("GET", "/monitor/health")
        if set(expected_dags) <= parsed and (health.get("scheduler") or {}).get("status") == "healthy":
            return standalone
        if not process.is_running() or time.monotonic() - started > timeout:
            process.stop()
            missing = sorted(set(expected_dags) - parsed)
            raise ServiceStartError(process.describe_failure(f"not ready after {timeout:.0f}s: DAGs missing {missing}"))
        time.sleep(1.0)
