"""Root fixtures: real PostgreSQL, MLflow, Label Studio and Airflow for the test suite.

Every service fixture is session-scoped and lazy: a run that does not ask for a service does not pay for it.
Airflow's environment is set below at import time, before any test module can import ``airflow``.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# Each of ``make test``'s workers runs torch (OpenMP) at its share of the cores, one thread each on two cores: at
# torch's default of a thread per core, two workers' threads spin against each other and the same training steps
# take twice as long (5.3 s against 2.6 s). Set before anything imports torch, and inherited by every process the
# tests start (Airflow's task processes, torchrun's ranks, the services). Only in a worker: the workers inherit the
# environment of the process that leads them, so a value set there would win over theirs; a run in one process
# keeps torch's default, a thread per core. A value the caller set wins everywhere.
if "PYTEST_XDIST_WORKER" in os.environ:
    _share = max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    for _variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_variable, str(_share))

from tests.harness import REPO_ROOT, TEST_LABEL_STUDIO_ADMIN
from tests.harness.airflow_env import configure_airflow_env, migrate_airflow_db
from tests.harness.shared import drop_shared_databases, shared_dir

# --- Environment that must exist before anything imports airflow or mlflow --------------------------------------
_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="pipeline-airflow-home-"))
atexit.register(shutil.rmtree, _AIRFLOW_HOME, ignore_errors=True)
configure_airflow_env(_AIRFLOW_HOME, REPO_ROOT / "dags")
# Airflow puts the DAG bundle's folder on sys.path when it parses DAGs (BundleDagBag): the DAG files share
# dags/_assets.py that way. A plain DagBag, as the tests build one, does not: the folder goes on the path here.
sys.path.append(str(REPO_ROOT / "dags"))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from pipeline.demo.stack.label_studio import LabelStudio, start_label_studio  # noqa: E402
from pipeline.demo.stack.mlflow_server import start_mlflow_server  # noqa: E402
from tests.harness.postgres import create_database, drop_database, resolve_server  # noqa: E402

_STARTUP_NOTES: list[str] = []


# --- How `make test`'s workers share the suite ---------------------------------------------------------------------
# Whole files go to one worker (pytest-xdist's loadfile), so a module's world or server is built once; but the tests
# of the files named here share only what tests.harness.shared builds once per run, so each is a unit of its own.
# Their first test runs first (it builds the shared world while the other worker takes whole files) and the rest
# last, where short units even out the two workers' ends (`--no-loadscope-reorder` keeps this order).
SPREAD = frozenset({"tests/integration/test_drift_scenarios.py"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Put the first test of each spread file first and the rest of them last."""
    spread = [item for item in items if item.nodeid.split("::", 1)[0] in SPREAD]
    if spread:
        ids = {item.nodeid for item in spread}
        items[:] = spread[:1] + [item for item in items if item.nodeid not in ids] + spread[1:]


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """Whole files to each worker, but a test of a spread file alone."""
    from xdist.scheduler import LoadFileScheduling

    class SpreadScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return nodeid if nodeid.split("::", 1)[0] in SPREAD else super()._split_scope(nodeid)

    return SpreadScheduling(config, log)  # type: ignore[arg-type]


def pytest_sessionfinish(session: pytest.Session) -> None:
    """The process that ran the tests, or led the workers that did, drops the databases they shared."""
    if not hasattr(session.config, "workerinput"):
        drop_shared_databases(shared_dir(session.config._tmp_path_factory))  # type: ignore[attr-defined]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """List the services this session started and how long each took."""
    if _STARTUP_NOTES:
        terminalreporter.write_sep("-", "services started by tests/harness")
        for note in _STARTUP_NOTES:
            terminalreporter.write_line(note)


# --- PostgreSQL ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """URL of a PostgreSQL server where the tests may CREATE DATABASE.

    ``$PIPELINE_TEST_DATABASE_URL``, else 127.0.0.1:5432 as ``postgres``, else a throwaway initdb cluster.
    """
    started = time.monotonic()
    url, cluster = resolve_server()
    where = "throwaway cluster" if cluster else "existing server"
    _STARTUP_NOTES.append(f"PostgreSQL ({where}) ready in {time.monotonic() - started:.1f}s")
    try:
        yield url
    finally:
        if cluster is not None:
            cluster.stop()


@pytest.fixture(scope="session")
def pg_database_factory(pg_admin_url: str) -> Iterator[Callable[[], str]]:
    """Callable returning the URL of a new, empty, uniquely named database; all are dropped at session end."""
    created: list[str] = []

    def factory() -> str:
        url = create_database(pg_admin_url)
        created.append(url)
        return url

    yield factory
    for url in reversed(created):
        drop_database(pg_admin_url, url)


@pytest.fixture
def pg_url(pg_database_factory: Callable[[], str]) -> str:
    """URL (``postgresql+psycopg2://``) of a fresh empty database for one test."""
    return pg_database_factory()


# --- MLflow -------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def mlflow_server(pg_database_factory: Callable[[], str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Tracking URI (``http://127.0.0.1:PORT``) of a real ``mlflow server`` on its own PostgreSQL database."""
    started = time.monotonic()
    server = start_mlflow_server(pg_database_factory(), tmp_path_factory.mktemp("mlflow"))
    _STARTUP_NOTES.append(f"MLflow server at {server.tracking_uri} up in {time.monotonic() - started:.1f}s")
    try:
        yield server.tracking_uri
    finally:
        server.process.stop()


# --- What the workers of a run share -------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder every worker of this run sees (``tests.harness.shared``): trained models, worlds' DICOM files."""
    return shared_dir(tmp_path_factory)


@pytest.fixture(scope="session")
def normal_filter_cache(shared: Path) -> Path:
    """Where ``tests.worlds.trained_model`` keeps the tests' trained normal filter: trained once per run."""
    return shared / "normal-filter"


# --- Label Studio -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def label_studio(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabelStudio]:
    """A real Label Studio server: ``.url``, ``.token`` (legacy API token) and ``.document_root`` (local files).

    Its migrated database is cached in ``.pytest_cache`` (``--cache-clear`` forces a cold start).
    """
    cache = getattr(request.config, "cache", None)
    cache_dir = cache.mkdir("label-studio") if cache is not None else None
    started = time.monotonic()
    server, process = start_label_studio(
        tmp_path_factory.mktemp("label-studio"), admin=TEST_LABEL_STUDIO_ADMIN, cache_dir=cache_dir
    )
    _STARTUP_NOTES.append(f"Label Studio at {server.url} up in {time.monotonic() - started:.1f}s")
    try:
        yield server
    finally:
        process.stop()


# --- Airflow ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def airflow_home() -> Path:
    """The session's AIRFLOW_HOME (its SQLite metadata DB is created by ``airflow_db``)."""
    return Path(os.environ["AIRFLOW_HOME"])


@pytest.fixture(scope="session")
def airflow_db(airflow_home: Path) -> Path:
    """Migrate the Airflow metadata database once per session (``airflow db migrate``); return AIRFLOW_HOME."""
    seconds = migrate_airflow_db()
    _STARTUP_NOTES.append(
        f"Airflow metadata DB ({os.environ['AIRFLOW__DATABASE__SQL_ALCHEMY_CONN']}) in {seconds:.1f}s"
    )
    return airflow_home
