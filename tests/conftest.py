"""Root fixtures: real PostgreSQL, MLflow, Label Studio and Airflow for the test suite.

Every service fixture is session-scoped and lazy: a run that does not ask for a service does not pay for it.
Airflow's environment is set below at import time, before any test module can import ``airflow``.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.harness import REPO_ROOT, TEST_LABEL_STUDIO_ADMIN
from tests.harness.airflow_env import configure_airflow_env, migrate_airflow_db

# --- Environment that must exist before anything imports airflow or mlflow --------------------------------------
_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="pipeline-airflow-home-"))
atexit.register(shutil.rmtree, _AIRFLOW_HOME, ignore_errors=True)
configure_airflow_env(_AIRFLOW_HOME, REPO_ROOT / "dags")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from pipeline.stack.label_studio import LabelStudio, start_label_studio  # noqa: E402
from pipeline.stack.mlflow_server import start_mlflow_server  # noqa: E402
from tests.harness.postgres import create_database, drop_database, resolve_server  # noqa: E402

_STARTUP_NOTES: list[str] = []


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


# --- A trained normal filter ---------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def normal_filter_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where ``tests.worlds.trained_model`` keeps the tests' trained normal filter: trained once per session."""
    return tmp_path_factory.mktemp("normal-filter")


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
