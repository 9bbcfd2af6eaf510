"""Training the normal filter with MONAI: dataset snapshots and the training loop (the network is ``pipeline.model``)."""

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

__all__ = [
    "CheckpointMismatch",
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
    "load_snapshot",
    "predict_probs",
    "threshold_for_sensitivity",
    "train",
]
