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
            Small on purpose: a deployment runs thousands of these tests a month (sites x error
            types x expectations x windows); at 1e-5 that is about 0.05 false alarms per 5,000.
        baseline_floor: the baseline assumed for a failure never seen before.
        critical_rate: above this the alert is critical; with no baseline yet (a new site, the
            first days of monitoring), only a share above this is an alert.
        min_baseline_rows: a baseline needs at least this many studies behind it.
    """

    rate: float = 0.02
    factor: float = 3.0
    min_count: int = 3
    max_p_value: float = 1e-5
    baseline_floor: float = 1e-3
    critical_rate: float = 0.1
    min_baseline_rows: int = 100

    def baseline(self, failed: float, rows: float) -> float | None:
        """Return the baseline rate of ``failed`` out of ``rows`` past studies, or None when too few to tell."""
        return failed / rows if rows >= self.min_baseline_rows else None

    def judge(self, failed: int, n: int, baseline: float | None) -> RateVerdict | None:
        """Return the verdict when ``failed`` of ``n`` studies is an alert against ``baseline``, else None.

        ``baseline`` None means no history: only a share above ``critical_rate`` is an alert then.
        """
        if n <= 0 or failed < self.min_count:
            return None
        rate = failed / n
        if baseline is None:
            limit = self.critical_rate
            baseline = self.critical_rate / self.factor
        else:
            limit = max(self.rate, self.factor * baseline)
        if rate <= limit:
            return None
        p_value = float(binom.sf(failed - 1, n, max(baseline, self.baseline_floor)))
        if p_value >= self.max_p_value:
            return None
        severity = Severity.CRITICAL if rate > self.critical_rate else Severity.WARNING
        return RateVerdict(rate, limit, p_value, severity)


def usual(baseline: float | None) -> str:
    """Return how a baseline reads in an alert message."""
    return "no history yet" if baseline is None else f"usual {baseline:.2%}"
