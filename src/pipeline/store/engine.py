"""Engine construction for the store: one place that knows SQLite from PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine, make_url


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Return an engine for ``url`` (``sqlite:///path`` or ``postgresql://...``).

    SQLite files get their folder created, WAL journaling and enforced foreign keys, so the
    embedded default behaves like the production database as far as the pipeline can tell.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, **kwargs)

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    if parsed.get_backend_name() == "postgresql":
        return sa.create_engine(url, pool_pre_ping=True, **kwargs)
    raise ValueError(f"unsupported store backend {parsed.get_backend_name()!r}: use sqlite or postgresql")


def is_postgres(engine: Engine | Connection) -> bool:
    """Return True when ``engine`` (or a connection of it) talks to PostgreSQL."""
    return engine.dialect.name == "postgresql"


def insert_for(bind: Engine | Connection) -> Callable[[sa.Table], postgresql.Insert | sqlite.Insert]:
    """Return the ``insert`` of the store's dialect, PostgreSQL's or SQLite's: the one with ``on_conflict_do_*``.

    Every idempotent write of the pipeline (``INSERT .. ON CONFLICT DO NOTHING`` or ``DO UPDATE``) builds its
    statement with it, e.g. ``insert_for(conn)(table).on_conflict_do_nothing(index_elements=["study_id"])``.

    Args:
        bind: the store's engine, or a connection of it.
    """
    return postgresql.insert if is_postgres(bind) else sqlite.insert
