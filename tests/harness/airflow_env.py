"""Airflow configuration for tests: a throwaway AIRFLOW_HOME with a SQLite metadata database.

Airflow reads its configuration when ``airflow`` is first imported, so :func:`configure_airflow_env` must run before
any test module (or ``pipeline`` module) imports it; the root conftest calls it at import time.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow.dag_processing.dagbag import DagBag

#: The bundle Airflow builds from ``[core] dags_folder``; ``dag.test()`` re-syncs it on every call.
DAGS_FOLDER_BUNDLE = "dags-folder"


def airflow_env(home: Path, dags_folder: Path) -> dict[str, str]:
    """The variables the test suite wants (applied only where the caller's environment does not set them)."""
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
    }


def configure_airflow_env(home: Path, dags_folder: Path) -> dict[str, str]:
    """Set the Airflow variables that are not already set; return the ones that were set here."""
    wanted = {key: value for key, value in airflow_env(home, dags_folder).items() if key not in os.environ}
    if wanted and "airflow" in sys.modules:
        raise RuntimeError(
            "airflow was imported before the test configuration was applied; it would use the wrong "
            f"AIRFLOW_HOME/database. Set {', '.join(sorted(wanted))} yourself or avoid importing airflow in plugins."
        )
    os.environ.update(wanted)
    home.mkdir(parents=True, exist_ok=True)
    return wanted


def migrate_airflow_db() -> float:
    """Create/upgrade the Airflow metadata database in-process (``airflow db migrate``); return seconds taken."""
    started = time.monotonic()
    from airflow.utils.db import upgradedb

    upgradedb()
    return time.monotonic() - started


def dags_folder() -> Path:
    """The DAGs folder of this session (``$AIRFLOW__CORE__DAGS_FOLDER``, normally ``<repo>/dags``)."""
    return Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])


def serialize_dags(folder: Path) -> DagBag:
    """Parse ``folder`` and write its DAGs to the metadata DB, so ``dag.test()`` works for DAGs outside the DAGs folder.

    ``dag.test()`` only creates a run for a DAG that is serialized in the DB; it serializes the DAGs folder itself,
    but not other folders (``AirflowException: ... the dag is not serialized``). Needs the ``airflow_db`` fixture.
    """
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db
    from airflow.utils.session import create_session

    bag = DagBag(dag_folder=folder)
    if bag.import_errors:
        raise RuntimeError(f"DAG import errors in {folder}: {bag.import_errors}")
    with create_session() as session:
        DagBundlesManager().sync_bundles_to_db(session=session)
    sync_bag_to_db(bag, DAGS_FOLDER_BUNDLE, None)
    return bag
