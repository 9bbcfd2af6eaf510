"""Alembic migrations of the store, run from code (``pipeline db upgrade``) or from Alembic's CLI."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Engine

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# Airflow keeps its own `alembic_version` table; ours must not collide when both share a database.
VERSION_TABLE = "pipeline_alembic_version"


def _config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the store behind ``engine`` up to ``revision`` (idempotent)."""
    command.upgrade(_config(engine), revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Migrate the store behind ``engine`` down to ``revision``."""
    command.downgrade(_config(engine), revision)


def current_revision(engine: Engine) -> str | None:
    """Return the revision the store is at, or None for an empty database."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_revision()
