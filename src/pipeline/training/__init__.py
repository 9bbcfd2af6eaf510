"""Training the normal filter with MONAI: the network, the shared preprocessing, dataset snapshots, the training loop."""

from pipeline.training.model import NetConfig, NormalFilterNet, enable_mc_dropout
from pipeline.training.snapshot import (
    Snapshot,
    SnapshotConfig,
    SnapshotCorrupt,
    SnapshotNotFound,
    as_mlflow_dataset,
    build_snapshot,
    check_trainable,
    load_snapshot,
)
from pipeline.training.train import (
    CheckpointMismatch,
    TrainConfig,
    TrainingDataError,
    TrainResult,
    predict_probs,
    threshold_for_sensitivity,
    train,
)
from pipeline.training.transforms import LoadDicom, LoadDicomd, PrepareStudyd, finish, preprocess

__all__ = [
    "CheckpointMismatch",
    "LoadDicom",
    "LoadDicomd",
    "NetConfig",
    "NormalFilterNet",
    "PrepareStudyd",
    "Snapshot",
    "SnapshotConfig",
    "SnapshotCorrupt",
    "SnapshotNotFound",
    "TrainConfig",
    "TrainResult",
    "TrainingDataError",
    "as_mlflow_dataset",
    "build_snapshot",
    "check_trainable",
    "enable_mc_dropout",
    "finish",
    "load_snapshot",
    "predict_probs",
    "preprocess",
    "threshold_for_sensitivity",
    "train",
]
