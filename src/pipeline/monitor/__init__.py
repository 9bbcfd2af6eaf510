"""Monitoring of the inference stream: technical health per site and model version (quality and drift plug in)."""

from pipeline.monitor.run import EmptyWindow, MonitorResult, report_path_for, run_monitor
from pipeline.monitor.technical import TechnicalResult, TechnicalThresholds, check_technical, window_metrics

__all__ = [
    "EmptyWindow",
    "MonitorResult",
    "TechnicalResult",
    "TechnicalThresholds",
    "check_technical",
    "report_path_for",
    "run_monitor",
    "window_metrics",
]
