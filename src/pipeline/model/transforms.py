"""The one preprocessing path shared by training and the inference service (MONAI dictionary transforms)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    EnsureTyped,
    MapTransform,
    NormalizeIntensityd,
    RandAdjustContrastd,
    RandAffined,
    RandGaussianNoised,
    Resized,
    Transform,
)

from pipeline.dicom import DicomError, read_pixels

UNREADABLE_KEY = "unreadable"
"""Key that :class:`PrepareStudyd` sets (to the reason) on a study whose file cannot be read."""


class LoadDicom(Transform):
    """Read a DICOM file into display pixels: (H, W) float32 in [0, 1], bright = dense (MONOCHROME1 inverted)."""

    def __call__(self, path: Any) -> np.ndarray:
        return read_pixels(path)


class LoadDicomd(MapTransform):
    """Dictionary version of :class:`LoadDicom`: replaces each key's path with its pixels."""

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadDicom()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.loader(d[key])
        return d


class PrepareStudyd(MapTransform):
    """Read and resize a study once; an unreadable file is marked, not raised.

    The result is what a cache (``CacheDataset``, ``PersistentDataset``) keeps: ``image`` a
    (1, S, S) float32 tensor in [0, 1]. For a file that :func:`pipeline.dicom.read_pixels`
    refuses, ``image`` is None and ``unreadable`` holds the reason, so a training set can skip
    and count it without decoding any file twice.
    """

    def __init__(self, image_size: int, keys: KeysCollection = "image") -> None:
        super().__init__(keys)
        self.image_size = image_size
        # plain tensors, no MetaTensor: a PersistentDataset cache then loads with ``weights_only``
        self.resize = Compose(
            [*_spatial_steps(keys, image_size), EnsureTyped(keys=keys, dtype=np.float32, track_meta=False)]
        )

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        try:
            for key in self.key_iterator(d):
                d[key] = read_pixels(d[key])
        except DicomError as exc:
            return {**dict(data), **dict.fromkeys(self.keys), UNREADABLE_KEY: str(exc)}
        return dict(self.resize(d))


def _spatial_steps(keys: KeysCollection, image_size: int) -> list[Any]:
    return [
        EnsureChannelFirstd(keys=keys, channel_dim="no_channel"),
        Resized(keys=keys, spatial_size=(image_size, image_size), mode="area"),
    ]


def finish(*, train: bool = False) -> Compose:
    """Return the transforms after :class:`PrepareStudyd`: augmentations (``train``), normalisation, float32 tensor.

    Args:
        train: add the training augmentations (small rotations and scaling, noise, contrast).
    """
    steps: list[Any] = []
    if train:
        steps += [
            RandAffined(keys="image", prob=0.5, rotate_range=0.08, scale_range=0.05, padding_mode="border"),
            RandAdjustContrastd(keys="image", prob=0.3, gamma=(0.85, 1.15)),
            RandGaussianNoised(keys="image", prob=0.3, std=0.01),
        ]
    steps += [NormalizeIntensityd(keys="image"), EnsureTyped(keys="image", dtype=np.float32, track_meta=False)]
    return Compose(steps)


def preprocess(image_size: int, *, train: bool = False, load: bool = True) -> Compose:
    """Return the transforms from a DICOM path (or pixels, ``load=False``) to a (1, S, S) normalised tensor.

    Args:
        image_size: S, the network's input rows and columns.
        train: add the training augmentations (small rotations and scaling, noise, contrast).
        load: start from a DICOM path under key ``image``; else from (H, W) pixels in [0, 1].
    """
    steps: list[Any] = [LoadDicomd(keys="image")] if load else []
    steps += _spatial_steps("image", image_size)
    steps += list(finish(train=train).transforms)
    return Compose(steps)
