"""The normal filter itself: the network and the one preprocessing path that training, serving and validation share.

Below the registry (which loads these networks from MLflow) and training (which fits them); it imports only
``dicom`` of the pipeline.
"""

from pipeline.model.network import NetConfig, NormalFilterNet, calibrate_head, enable_mc_dropout
from pipeline.model.transforms import UNREADABLE_KEY, LoadDicom, LoadDicomd, PrepareStudyd, finish, preprocess

__all__ = [
    "UNREADABLE_KEY",
    "LoadDicom",
    "LoadDicomd",
    "NetConfig",
    "NormalFilterNet",
    "PrepareStudyd",
    "calibrate_head",
    "enable_mc_dropout",
    "finish",
    "preprocess",
]
