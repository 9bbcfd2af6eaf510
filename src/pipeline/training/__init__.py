"""Training the normal filter with MONAI: the network, the shared preprocessing, the training loop."""

from pipeline.training.model import NetConfig, NormalFilterNet, enable_mc_dropout
from pipeline.training.train import (
    TrainConfig,
    TrainingDataError,
    TrainResult,
    predict_probs,
    threshold_for_sensitivity,
    train,
)
from pipeline.training.transforms import LoadDicom, LoadDicomd, preprocess

__all__ = [
    "LoadDicom",
    "LoadDicomd",
    "NetConfig",
    "NormalFilterNet",
    "TrainConfig",
    "TrainResult",
    "TrainingDataError",
    "enable_mc_dropout",
    "predict_probs",
    "preprocess",
    "threshold_for_sensitivity",
    "train",
]
