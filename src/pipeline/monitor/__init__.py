"""Monitoring of the inference stream: data quality and technical health per site and model version (drift plugs in)."""

from pipeline.monitor.expectations import Outcome, QualityRun, run_expectations
from pipeline.monitor.quality import QualityResult, QualityThresholds, check_quality
from pipeline.monitor.rules import RateRule, RateVerdict
from pipeline.monitor.run import EmptyWindow, MonitorResult, report_path_for, run_monitor
from pipeline.monitor.technical import TechnicalResult, TechnicalThresholds, check_technical, window_metrics

__all__ = [
    "EmptyWindow",
    "MonitorResult",
    "Outcome",
    "QualityResult",
    "QualityRun",
    "QualityThresholds",
    "RateRule",
    "RateVerdict",
    "TechnicalResult",
    "TechnicalThresholds",
    "check_quality",
    "check_technical",
    "report_path_for",
    "run_expectations",
    "run_monitor",
    "window_metrics",
]
