"""A real Airflow deployment for tests: api-server, scheduler (CeleryExecutor) and Celery workers as processes.

In Airflow 3 a Celery worker runs a task through the Task SDK, which talks to the api-server's Execution API
(``[core] execution_api_server_url``) with a JWT the scheduler signed (``[api_auth] jwt_secret``, shared by all
processes here). The scheduler sends each workload to the Celery queue named by the task's ``queue``; a worker
consumes only the queues given by ``--queues``. So a test of queue routing needs every piece for real:

* a PostgreSQL metadata database (SQLite locks across processes) migrated with ``airflow db migrate``,
* DAGs serialized into it (``airflow dags reserialize``; no long-running dag-processor is needed for manual runs),
* a Redis broker (``127.0.0.1:6379``, ``$PIPELINE_TEST_REDIS_URL``, or a throwaway ``redis-server``), on a Redis
  database number that is empty and claimed for this deployment only, and flushed at the end,
* ``airflow api-server`` on a free port (the REST API runs under the simple auth manager with everyone admin),
* ``airflow scheduler`` and one ``airflow celery worker`` per queue set.

Every process logs to its own file under the deployment's work directory and is stopped with its process group.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.demo.stack.airflow import AirflowApi, find_airflow_bin, run_airflow
from pipeline.demo.stack.ports import free_port, port_answers
from pipeline.demo.stack.process import POLL_INTERVAL, ManagedProcess, ServiceStartError, log_tail, start_process

#: Environment variable naming a Redis server to use as the broker (``redis://host:port``; the db number is ours).
REDIS_URL_ENV = "PIPELINE_TEST_REDIS_URL"
#: A local Redis tried before starting a throwaway ``redis-server``.
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379"
#: Key that marks a Redis database as taken by a test deployment (it is deleted with the database's keys).
REDIS_CLAIM_KEY = "pipeline-test:claimed-by"
#: Seconds a process may take to come up on a busy 2-core machine.
STARTUP_TIMEOUT = 240.0
#: A Celery worker prints this line once it consumes from its queues.
WORKER_READY_MARK = "ready."
#: Task-instance states after which a task will not run again without a retry or a clear.
FINISHED_STATES = frozenset({"success", "failed", "skipped", "upstream_failed", "removed"})


# --- Redis --------------------------------------------------------------------------------------------------------
@dataclass
class RedisBroker:
    """A Redis database claimed for one deployment: ``url`` includes the database number."""

    url: str
    server: ManagedProcess | None = None

    def queue_length(self, queue: str) -> int:
        """Messages waiting in a Celery queue (kombu keeps a queue of default priority as a Redis list)."""
        import redis

        client = redis.Redis.from_url(self.url, socket_connect_timeout=3)
        try:
            return int(client.llen(queue))
        finally:
            client.close()

    def release(self) -> None:
        """Delete every key of the claimed database (queues, bindings, the claim), stop a throwaway server."""
        import redis

        try:
            client = redis.Redis.from_url(self.url, socket_connect_timeout=3)
            client.flushdb()
            client.close()
        except redis.RedisError:
            pass
        if self.server is not None:
            self.server.stop()


def _redis_answers(url: str) -> bool:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=2)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except redis.RedisError:
        return False


def _start_redis_server(workdir: Path) -> tuple[str, ManagedProcess]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise ServiceStartError(
            f"no Redis at {DEFAULT_REDIS_URL} and no redis-server binary: start Redis, set {REDIS_URL_ENV}, "
            "or install redis-server (apt-get install redis-server)"
        )
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process = start_process("redis-server", argv, log_path=workdir / "redis.log", cwd=workdir)
    url = f"redis://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while not port_answers("127.0.0.1", port):
        if not process.is_running() or time.monotonic() > deadline:
            process.stop()
            raise ServiceStartError(process.describe_failure("did not accept connections"))
        time.sleep(POLL_INTERVAL)
    return url, process


def claim_redis_database(workdir: Path) -> RedisBroker:
    """Claim an empty database (1-15) on the configured, local or a throwaway Redis server.

    The claim is a key set with ``NX`` in an empty database, so two sessions sharing a server never share a queue.
    """
    import redis

    server: ManagedProcess | None = None
    base = os.environ.get(REDIS_URL_ENV) or DEFAULT_REDIS_URL
    if not _redis_answers(base):
        if os.environ.get(REDIS_URL_ENV):
            raise ServiceStartError(f"{REDIS_URL_ENV}={base} does not answer PING")
        base, server = _start_redis_server(workdir)
    base = base.rstrip("/")
    token = uuid.uuid4().hex
    for number in range(1, 16):
        client = redis.Redis.from_url(f"{base}/{number}", socket_connect_timeout=3)
        try:
            if client.dbsize() == 0 and client.set(REDIS_CLAIM_KEY, token, nx=True):
                return RedisBroker(url=f"{base}/{number}", server=server)
        finally:
            client.close()
    if server is not None:
        server.stop()
    raise ServiceStartError(f"no empty database among 1-15 on {base}; free one (FLUSHDB) or set {REDIS_URL_ENV}")


# --- Environment and one-shot commands ----------------------------------------------------------------------------
def celery_deployment_env(
    *,
    home: Path,
    metadata_db_url: str,
    broker_url: str,
    api_port: int,
    dags_folder: Path,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment every process of one deployment shares (the caller's ``AIRFLOW*`` variables are dropped).

    Args:
        home: AIRFLOW_HOME (``airflow.cfg``, task logs).
        metadata_db_url: ``postgresql+psycopg2://`` URL of an empty (or already migrated) database.
        broker_url: ``redis://host:port/db`` of a claimed database.
        api_port: Port the api-server will listen on; workers reach its Execution API there.
        dags_folder: The DAGs folder (the ``dags-folder`` bundle).
        extra: More variables, e.g. the application's own settings; they win over the ones set here.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    result_backend = "db+" + metadata_db_url.replace("postgresql+psycopg2://", "postgresql://", 1)
    env.update(
        {
            "PYTHONUNBUFFERED": "1",
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
            "AIRFLOW__CORE__AUTH_MANAGER": (
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_db_url,
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{api_port}",
            "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            "AIRFLOW__CELERY__BROKER_URL": broker_url,
            "AIRFLOW__CELERY__RESULT_BACKEND": result_backend,
            # One task at a time per worker, and one sender process in the scheduler: 2 cores are shared.
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": "1",
            "AIRFLOW__CELERY__SYNC_PARALLELISM": "1",
            # The worker's own task log goes to its stdout as well, so the worker log names what it ran.
            "AIRFLOW__CELERY__TASK_LOGS_TO_STDOUT": "True",
        }
    )
    env.update(extra or {})
    return env


# --- Long-running processes ---------------------------------------------------------------------------------------
def wait_for_log(
    process: ManagedProcess, mark: str, *, timeout: float, stop_on_failure: bool = True, tail_lines: int = 400
) -> float:
    """Wait until ``mark`` appears in the process log; return seconds waited (stop the process on failure)."""
    started = time.monotonic()
    while mark not in log_tail(process.log_path, tail_lines):
        if not process.is_running():
            if stop_on_failure:
                process.stop()
            raise ServiceStartError(process.describe_failure(f"exited with code {process.popen.returncode}"))
        if time.monotonic() - started > timeout:
            if stop_on_failure:
                process.stop()
            raise ServiceStartError(process.describe_failure(f"did not log {mark!r} within {timeout:.0f}s"))
        time.sleep(POLL_INTERVAL * 4)
    return time.monotonic() - started


@dataclass
class CeleryDeployment:
    """Airflow with the CeleryExecutor: shared environment, api-server, scheduler and any number of workers."""

    workdir: Path
    env: dict[str, str]
    api_port: int
    broker: RedisBroker
    processes: dict[str, ManagedProcess] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)

    @property
    def api(self) -> AirflowApi:
        """REST client of this deployment's api-server."""
        return AirflowApi(f"http://127.0.0.1:{self.api_port}")

    def log_path(self, name: str) -> Path:
        """Log file of the process called ``name``."""
        return self.workdir / "logs" / f"{name}.log"

    def _spawn(self, name: str, *args: str) -> ManagedProcess:
        if name in self.processes and self.processes[name].is_running():
            raise RuntimeError(f"{name} is already running")
        process = start_process(
            name, [str(find_airflow_bin()), *args], log_path=self.log_path(name), env=self.env, cwd=self.workdir
        )
        self.processes[name] = process
        return process

    def prepare_database(self) -> None:
        """``airflow db migrate`` then ``airflow dags reserialize`` (so runs can be created without a dag-processor)."""
        for what, args in (("db migrate", ("db", "migrate")), ("dags reserialize", ("dags", "reserialize"))):
            started = time.monotonic()
            run_airflow(self.env, *args)
            self.timings_s[what] = time.monotonic() - started

    def start_api_server(self) -> ManagedProcess:
        """Start ``airflow api-server`` (one uvicorn worker) on the deployment's port; do not wait."""
        return self._spawn("api-server", "api-server", "--host", "127.0.0.1", "--port", str(self.api_port), "-w", "1")

    def start_scheduler(self) -> ManagedProcess:
        """Start ``airflow scheduler``; do not wait."""
        return self._spawn("scheduler", "scheduler")

    def start_worker(self, name: str, queues: Sequence[str]) -> ManagedProcess:
        """Start ``airflow celery worker --queues ...`` named ``name@<host>``; do not wait.

        No log server (``--skip-serve-logs``: two workers on one host would fight over its port), no gossip or
        mingle (nothing to synchronise with in a test, and both slow start-up).
        """
        return self._spawn(
            name,
            "celery",
            "worker",
            "--queues",
            ",".join(queues),
            "--concurrency",
            "1",
            "--celery-hostname",
            f"{name}@%h",
            "--skip-serve-logs",
            "--without-gossip",
            "--without-mingle",
        )

    def wait_for_api_server(self, timeout: float = STARTUP_TIMEOUT) -> None:
        """Wait until the api-server answers its health endpoint."""
        process = self.processes["api-server"]
        self.timings_s["api-server"] = process.wait_for_http(
            f"{self.api.base_url}/api/v2/monitor/health", timeout=timeout
        )

    def wait_for_scheduler(self, timeout: float = STARTUP_TIMEOUT) -> None:
        """Wait until the api-server reports a healthy scheduler (its job heartbeats in the metadata DB)."""
        process = self.processes["scheduler"]
        started = time.monotonic()
        while True:
            health = self.api.request("GET", "/monitor/health")
            if (health.get("scheduler") or {}).get("status") == "healthy":
                break
            if not process.is_running() or time.monotonic() - started > timeout:
                process.stop()
                raise ServiceStartError(process.describe_failure(f"not healthy after {timeout:.0f}s: {health}"))
            time.sleep(1.0)
        self.timings_s["scheduler"] = time.monotonic() - started

    def wait_for_worker(self, name: str, timeout: float = STARTUP_TIMEOUT) -> None:
        """Wait until the Celery worker ``name`` logs that it is ready."""
        self.timings_s[name] = wait_for_log(self.processes[name], WORKER_READY_MARK, timeout=timeout)

    def worker_log(self, name: str) -> str:
        """The whole log of a process."""
        return self.log_path(name).read_text(encoding="utf-8", errors="replace")

    def wait_for_tasks(
        self,
        dag_id: str,
        run_id: str,
        done: Callable[[dict[str, str | None]], bool],
        *,
        timeout: float,
        what: str,
    ) -> dict[str, str | None]:
        """Poll the task states of a run until ``done(states)``; fail early on a failed or retrying task."""
        started = time.monotonic()
        states: dict[str, str | None] = {}
        while time.monotonic() - started < timeout:
            states = self.api.task_states(dag_id, run_id)
            if done(states):
                return states
            broken = {t: s for t, s in states.items() if s in ("failed", "upstream_failed", "up_for_retry")}
            if broken:
                raise AssertionError(f"{what}: {broken} in {states}\n{self.diagnostics()}")
            for name, process in self.processes.items():
                if not process.is_running():
                    raise AssertionError(f"{what}: {name} exited\n{self.diagnostics()}")
            time.sleep(2.0)
        raise AssertionError(f"{what}: not reached within {timeout:.0f}s; states {states}\n{self.diagnostics()}")

    def diagnostics(self, lines: int = 40) -> str:
        """The tail of every process log, for assertion messages."""
        return "\n".join(
            f"--- {name} ({'running' if p.is_running() else f'exit {p.popen.returncode}'}) ---\n{p.log_tail(lines)}"
            for name, p in self.processes.items()
        )

    def stop(self) -> None:
        """Stop workers first (they hold broker connections), then the scheduler and api-server; release Redis."""
        for name in sorted(self.processes, key=lambda n: n in ("scheduler", "api-server")):
            with contextlib.suppress(Exception):
                self.processes[name].stop()
        self.broker.release()


@contextlib.contextmanager
def celery_deployment(
    workdir: Path, metadata_db_url: str, *, dags_folder: Path, extra_env: Mapping[str, str] | None = None
) -> Iterator[CeleryDeployment]:
    """A migrated Airflow metadata DB with serialized DAGs and a claimed Redis broker; every process is stopped on exit.

    Processes are started by the caller (``start_api_server``, ``start_scheduler``, ``start_worker``) so a test
    controls which workers exist when.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    broker = claim_redis_database(workdir)
    home = workdir / "airflow-home"
    home.mkdir(exist_ok=True)
    api_port = free_port()
    env = celery_deployment_env(
        home=home,
        metadata_db_url=metadata_db_url,
        broker_url=broker.url,
        api_port=api_port,
        dags_folder=dags_folder,
        extra=extra_env,
    )
    deployment = CeleryDeployment(workdir=workdir, env=env, api_port=api_port, broker=broker)
    try:
        yield deployment
    finally:
        deployment.stop()
