"""The registered versions of the model and their validation verdicts, as MLflow's registry holds them.

Aliases name roles (``champion``, ``previous``, ``candidate``); tags carry the verdict that
``pipeline.validation.suite.record_verdict`` wrote (``validation_status``, ``validation_threshold``,
``validation_report``, ...). The page reads them as they are and infers nothing from a version number.
MLflow may be down while the store is up: :class:`RegistryUnavailable` says so quickly, and the page
shows a notice instead of the table.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime

log = logging.getLogger(__name__)

_USERINFO = re.compile(r"(\w+://)[^/\s@]+@")


def _masked(text: str) -> str:
    """Return ``text`` with the credentials of every URL in it (``scheme://user:password@``) masked."""
    return _USERINFO.sub(r"\1***@", text)


class RegistryUnavailable(RuntimeError):
    """MLflow's registry did not answer; the message says where it was asked (credentials masked) and why.

    It is for the server's log: the page shows its readers a generic line instead.
    """

    def __init__(self, message: str) -> None:
        super().__init__(_masked(message))


@dataclass(frozen=True)
class ModelVersionView:
    """One registered version: the roles (aliases) it holds and the verdict of its validation."""

    version: str
    aliases: tuple[str, ...]
    role: str | None
    validation_status: str
    validation_threshold: float | None
    validation_report: str | None
    validated_against: str | None
    validated_at: str | None
    failed_checks: tuple[str, ...]
    approved_by: str | None
    created_at: datetime | None
    run_id: str | None


def _reachable(tracking_uri: str, timeout_s: float) -> None:
    """Raise RegistryUnavailable unless an HTTP tracking server answers its health check within ``timeout_s``.

    MLflow's client retries a refused connection for minutes; one quick probe keeps the page fast.
    """
    if not tracking_uri.startswith(("http://", "https://")):
        return
    import httpx

    url = f"{tracking_uri.rstrip('/')}/health"
    try:
        response = httpx.get(url, timeout=timeout_s, trust_env=False)
    except httpx.HTTPError as exc:
        raise RegistryUnavailable(f"MLflow at {tracking_uri} did not answer: {type(exc).__name__}: {exc}") from exc
    if response.status_code != 200:
        raise RegistryUnavailable(f"MLflow at {tracking_uri} answered {url} with HTTP {response.status_code}")


def _threshold(text: str | None) -> float | None:
    try:
        return None if text is None else float(text)
    except ValueError:
        return None


def model_versions(tracking_uri: str, model_name: str, *, timeout_s: float = 3.0) -> list[ModelVersionView]:
    """Return every registered version of ``model_name``, newest first, with its aliases and validation tags.

    An unregistered model gives an empty list.

    Args:
        tracking_uri: MLflow's tracking URI (an HTTP server, or a local store).
        model_name: the registered model.
        timeout_s: how long an HTTP server gets to answer its health check.

    Raises:
        RegistryUnavailable: the server is down or the registry call failed.
    """
    _reachable(tracking_uri, timeout_s)
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    # imported here, as MLflow is: the page's module is imported by the Airflow plugin and stays light
    from pipeline.registry import (
        APPROVED_BY,
        PENDING,
        ROLE,
        VALIDATED_AGAINST,
        VALIDATED_AT,
        VALIDATION_FAILED_CHECKS,
        VALIDATION_REPORT,
        VALIDATION_STATUS,
        VALIDATION_THRESHOLD,
    )

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        try:
            aliases = dict(client.get_registered_model(model_name).aliases or {})
        except MlflowException as exc:
            if getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
                return []
            raise
        escaped = model_name.replace("'", "\\'")
        found = list(client.search_model_versions(f"name = '{escaped}'"))
    except MlflowException as exc:
        raise RegistryUnavailable(f"MLflow at {tracking_uri} failed to list {model_name!r}: {exc}") from exc
    roles: dict[str, list[str]] = {}
    for alias, version in aliases.items():
        roles.setdefault(str(version), []).append(alias)
    views = []
    for v in found:
        tags = dict(v.tags or {})
        failed = tags.get(VALIDATION_FAILED_CHECKS, "")
        views.append(
            ModelVersionView(
                version=str(v.version),
                aliases=tuple(sorted(roles.get(str(v.version), []))),
                role=tags.get(ROLE),
                validation_status=tags.get(VALIDATION_STATUS, PENDING),
                validation_threshold=_threshold(tags.get(VALIDATION_THRESHOLD)),
                validation_report=tags.get(VALIDATION_REPORT),
                validated_against=tags.get(VALIDATED_AGAINST),
                validated_at=tags.get(VALIDATED_AT),
                failed_checks=tuple(c for c in failed.split(",") if c and c != "none"),
                approved_by=tags.get(APPROVED_BY),
                created_at=datetime.fromtimestamp(v.creation_timestamp / 1000, UTC) if v.creation_timestamp else None,
                run_id=v.run_id or None,
            )
        )
    views.sort(key=lambda m: m.created_at or datetime.min.replace(tzinfo=UTC), reverse=True)
    return views
