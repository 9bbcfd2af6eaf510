"""The production inference service: DICOM in, a prediction and everything production logs out."""

from pipeline.inference.service import (
    InferenceRequest,
    InferenceService,
    ServiceOutput,
    binary_entropy,
    collimation_cuts_apex,
)
from pipeline.inference.serving import load_shadow, registry_services

__all__ = [
    "InferenceRequest",
    "InferenceService",
    "ServiceOutput",
    "binary_entropy",
    "collimation_cuts_apex",
    "load_shadow",
    "registry_services",
]
