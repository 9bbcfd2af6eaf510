"""Reports for people: built from stored results, never computing them."""

from pipeline.reports.monitoring import write_monitoring_report

__all__ = ["write_monitoring_report"]
