"""Alembic environment: the engine comes from ``pipeline.store.migrate.upgrade`` (``pipeline db upgrade``)."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Engine

from pipeline.store.migrate import VERSION_TABLE
from pipeline.store.schema import metadata


def _engine() -> Engine:
    engine = context.config.attributes.get("engine")
    if engine is None:
        raise SystemExit("migrations run through `pipeline db upgrade`, which hands them the store's engine")
    return engine


def run_migrations_online() -> None:
    with _engine().begin() as connection:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            version_table=VERSION_TABLE,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported: run `pipeline db upgrade`")
run_migrations_online()
