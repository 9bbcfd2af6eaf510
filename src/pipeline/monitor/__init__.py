"""Monitoring of the inference stream: technical health per site and model version (quality and drift plug in)."""

from pipeline.monitor.technical import TechnicalResult, TechnicalThresholds, check_technical, window_metrics

__all__ = ["TechnicalResult", "TechnicalThresholds", "check_technical", "window_metrics"]
