"""Reports for people, from the stages' results: HTML pages and figures, never computing the results.

Above the stages and below the entries (``pipeline.entry``), which write them: no stage imports this package.
"""

from pipeline.reports.monitoring import write_monitoring_report, write_run_report
from pipeline.reports.training import log_evaluation_report
from pipeline.reports.validation import record_shadow, record_validation

__all__ = ["log_evaluation_report", "record_shadow", "record_validation", "write_monitoring_report", "write_run_report"]
