"""The audit trail of model roles: who validated, approved, rejected, promoted or rolled back which version, and when.

MLflow's tags carry the latest state of a version; ``model_events`` keeps every step, so "who put this
model in front of patients, on what evidence" has an answer after the tags have moved on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pipeline.store.schema import model_events

ACTIONS = frozenset(
    {"validated", "shadow_started", "shadow_report", "shadow_ended", "approved", "rejected", "promoted", "rolled_back"}
)


@dataclass(frozen=True)
class Event:
    """One row of the audit trail."""

    model_name: str
    version: str
    action: str
    actor: str
    at: datetime
    detail: dict[str, Any]


def record_event(
    engine: Engine,
    model_name: str,
    version: str,
    action: str,
    actor: str,
    detail: dict[str, Any],
    *,
    once: bool = False,
    at: datetime | None = None,
) -> bool:
    """Append an event; with ``once``, not when the version's latest event is this action with this detail.

    Returns whether a row was written.

    Raises:
        ValueError: an unknown action or an empty actor.
    """
    if action not in ACTIONS:
        raise ValueError(f"unknown model event {action!r}; one of {sorted(ACTIONS)}")
    if not actor.strip():
        raise ValueError("a model event needs the person (or service) who acted")
    text = json.dumps(detail, sort_keys=True, default=str)
    with engine.begin() as conn:
        if once:
            last = conn.execute(
                sa.select(model_events.c.action, model_events.c.detail)
                .where(model_events.c.model_name == model_name, model_events.c.version == version)
                .order_by(model_events.c.event_id.desc())
                .limit(1)
            ).one_or_none()
            if last is not None and last.action == action and last.detail == text:
                return False
        conn.execute(
            sa.insert(model_events).values(
                model_name=model_name,
                version=version,
                action=action,
                actor=actor,
                at=at or datetime.now(UTC),
                detail=text,
            )
        )
    return True


def events(engine: Engine, model_name: str, version: str | None = None) -> list[Event]:
    """Return the model's events (of one version, if given), oldest first."""
    query = sa.select(model_events).where(model_events.c.model_name == model_name)
    if version is not None:
        query = query.where(model_events.c.version == version)
    with engine.connect() as conn:
        rows = conn.execute(query.order_by(model_events.c.event_id)).all()
    return [
        Event(
            r.model_name,
            r.version,
            r.action,
            r.actor,
            r.at if r.at.tzinfo else r.at.replace(tzinfo=UTC),
            json.loads(r.detail),
        )
        for r in rows
    ]
