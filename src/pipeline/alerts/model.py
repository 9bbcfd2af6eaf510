"""What a check found, and the alert that tracks it over time."""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass


class Kind(enum.StrEnum):
    """Which family of check raised the alert."""

    QUALITY = "quality"
    TECHNICAL = "technical"
    DRIFT = "drift"
    PERFORMANCE = "performance"


class Severity(enum.StrEnum):
    WARNING = "warning"
    CRITICAL = "critical"


GLOBAL = "*"
"""The ``site`` of a finding about all sites together."""


@dataclass(frozen=True)
class Finding:
    """One check's verdict that something is wrong in a window (a statistic beyond its threshold).

    Args:
        kind: the family of check.
        site: the site, or ``"*"`` for all sites.
        feature: what moved (a column, an error type, ``volume``...).
        statistic: how it was measured (``error_rate``, ``volume_ratio``, ``wasserstein``...).
        value: the statistic's value in the window.
        threshold: the limit it crossed.
        severity: warning or critical.
        message: one sentence for the on-call engineer.
    """

    kind: Kind
    site: str
    feature: str
    statistic: str
    value: float | None
    threshold: float | None
    severity: Severity
    message: str

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (str(self.kind), self.site, self.feature, self.statistic)

    @property
    def alert_id(self) -> str:
        """Return the id of the alert that tracks this problem: the same for every window it persists."""
        return alert_id(*self.key)


def alert_id(kind: str, site: str, feature: str, statistic: str) -> str:
    """Return the stable id of the alert for (kind, site, feature, statistic)."""
    return hashlib.sha1("\x1f".join((kind, site, feature, statistic)).encode()).hexdigest()
