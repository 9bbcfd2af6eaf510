"""The one rule for "this share of a site's studies going wrong is an incident".

Error rates (technical) and expectation failure rates (quality) share it: the share must be above
an absolute floor and several times its baseline, come from enough studies, and be very unlikely
under the baseline rate (a one-sided binomial test). The test is what keeps rare, expected
failures quiet on small windows.
"""

from __future__ import annotations

from dataclasses import dataclass

from scipy.stats import binom

from pipeline.alerts.model import Severity


@dataclass(frozen=True)
class RateVerdict:
    """A rate that crossed its limit."""

    rate: float
    limit: float
    p_value: float
    severity: Severity


@dataclass(frozen=True)
class RateRule:
    """When a share of failing studies becomes an alert.

    Args:
        rate: a share above this is an alert...
        factor: ...when it is also this many times its baseline...
        min_count: ...and at least this many studies failed...
        max_p_value: ...and so many failures are this unlikely under the baseline (binomial test).
        baseline_floor: the baseline assumed for a failure never seen before.
        critical_rate: above this the alert is critical.
    """

    rate: float = 0.02
    factor: float = 3.0
    min_count: int = 3
    max_p_value: float = 1e-3
    baseline_floor: float = 1e-3
    critical_rate: float = 0.1

    def judge(self, failed: int, n: int, baseline: float) -> RateVerdict | None:
        """Return the verdict when ``failed`` of ``n`` studies is an alert against ``baseline``, else None."""
        if n <= 0 or failed < self.min_count:
            return None
        rate = failed / n
        limit = max(self.rate, self.factor * baseline)
        if rate <= limit:
            return None
        p_value = float(binom.sf(failed - 1, n, max(baseline, self.baseline_floor)))
        if p_value >= self.max_p_value:
            return None
        severity = Severity.CRITICAL if rate > self.critical_rate else Severity.WARNING
        return RateVerdict(rate, limit, p_value, severity)
