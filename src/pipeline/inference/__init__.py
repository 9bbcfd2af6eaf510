"""The production inference service: DICOM in, a prediction and everything production logs out."""

from pipeline.inference.service import (
    InferenceRequest,
    InferenceService,
    ServiceOutput,
    binary_entropy,
    collimation_cuts_apex,
)

__all__ = ["InferenceRequest", "InferenceService", "ServiceOutput", "binary_entropy", "collimation_cuts_apex"]
