"""What the test processes of one run share: a folder, and PostgreSQL databases built once under a lock.

``make test`` runs the suite in several pytest-xdist workers. Something that takes minutes to make (a simulated
world, ``tests.worlds``; the tests' trained normal filter) is made by whichever worker asks first while the
others wait on a file lock, then read what it made. A shared database is a template: it is built under a
temporary name and renamed once complete, so a worker that dies half-way leaves nothing another would trust,
and each test reads a copy of it (``CREATE DATABASE .. TEMPLATE``), never the template itself. The run's
controller drops them all at the end (``pytest_sessionfinish`` in ``tests/conftest.py``).
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from filelock import FileLock
from sqlalchemy.engine import make_url

from tests.harness.postgres import DATABASE_PREFIX, _admin_engine, drop_database, server_answers, with_database

#: The same in every worker of one run (pytest-xdist sets it), new for each run in one process.
RUN_ID: str = os.environ.get("PYTEST_XDIST_TESTRUNUID") or uuid.uuid4().hex
_RECORDS = "databases.jsonl"


def shared_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder every worker of this run sees: the parent of the workers' own temporary folders."""
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    path = root / "shared"
    path.mkdir(exist_ok=True)
    return path


def _exists(admin_url: str, name: str) -> bool:
    engine = _admin_engine(admin_url)
    try:
        with engine.connect() as conn:
            found = conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first()
    finally:
        engine.dispose()
    return found is not None


def shared_database(admin_url: str, key: str, build: Callable[[str], None], shared: Path) -> str:
    """Return the URL of this run's database ``key`` on the server of ``admin_url``, built by ``build(url)``
    (given an empty database) the first time any worker asks. Read it through a copy (:func:`copy_database`)."""
    server = hashlib.sha256(make_url(admin_url).render_as_string(hide_password=True).encode()).hexdigest()[:8]
    name = f"{DATABASE_PREFIX}shared_{RUN_ID[:8]}_{key}"
    if len(name) > 54:  # PostgreSQL cuts names at 63 bytes; "_partial" must still fit
        raise ValueError(f"shared database key {key!r} is too long")
    # a lock per server: where no server answers, each worker runs a throwaway cluster of its own
    with FileLock(shared / f"{key}-{server}.lock"):
        if _exists(admin_url, name):
            return with_database(admin_url, name)
        partial = f"{name}_partial"
        drop_database(admin_url, with_database(admin_url, partial))  # a worker that died building it
        with (shared / _RECORDS).open("a") as records:
            records.write(json.dumps({"admin_url": admin_url, "databases": [partial, name]}) + "\n")
        engine = _admin_engine(admin_url)
        try:
            with engine.connect() as conn:
                conn.execute(sa.text(f'CREATE DATABASE "{partial}"'))
            build(with_database(admin_url, partial))
            with engine.connect() as conn:
                conn.execute(
                    sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"), {"n": partial}
                )
                conn.execute(sa.text(f'ALTER DATABASE "{partial}" RENAME TO "{name}"'))
        finally:
            engine.dispose()
    return with_database(admin_url, name)


def copy_database(admin_url: str, source_url: str, name: str) -> str:
    """Create database ``name`` as a copy of the database of ``source_url``; return its URL.

    Copies of one template are made one at a time, from the server's admin database (PostgreSQL refuses a
    template that another session is connected to).
    """
    engine = _admin_engine(admin_url)
    source = make_url(source_url).database
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT pg_advisory_lock(hashtext(:s))"), {"s": f"copy {source}"})
            try:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                conn.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{source}"'))
            finally:
                conn.execute(sa.text("SELECT pg_advisory_unlock(hashtext(:s))"), {"s": f"copy {source}"})
    finally:
        engine.dispose()
    return with_database(source_url, name)


def drop_shared_databases(shared: Path) -> None:
    """Drop every shared database this run built (called once, by the process that ran or led the workers)."""
    records = shared / _RECORDS
    if not records.exists():
        return
    for line in records.read_text().splitlines():
        record = json.loads(line)
        if not server_answers(record["admin_url"]):  # a throwaway cluster, already stopped with its databases
            continue
        for database in record["databases"]:
            drop_database(record["admin_url"], with_database(record["admin_url"], database))
