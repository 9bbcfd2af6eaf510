"""Windowed 8-bit PNG renderings of display pixels (for labelling tools and reports)."""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image


def window_to_uint8(pixels: np.ndarray, window: tuple[float, float] | None = None) -> np.ndarray:
    """Return ``pixels`` windowed to 8 bits.

    Args:
        pixels: (H, W) float in [0, 1], bright = dense.
        window: ``(low, high)`` in pixel units mapped to 0 and 255; None takes the 0.5th and
            99.5th percentiles, as a radiologist's auto-window would.

    Returns:
        (H, W) uint8.
    """
    if pixels.ndim != 2:
        raise ValueError(f"pixels must be 2D (H, W), got shape {pixels.shape}")
    values = np.nan_to_num(pixels.astype(np.float32, copy=False), nan=0.0)
    if window is None:
        low, high = (float(v) for v in np.percentile(values, [0.5, 99.5]))
    else:
        low, high = window
    if high <= low:
        high = low + 1e-6
    scaled = (values - np.float32(low)) * np.float32(255.0 / (high - low))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def render_png(
    pixels: np.ndarray,
    path_or_buffer: str | os.PathLike[str] | IO[bytes],
    size: int | tuple[int, int] | None = None,
    *,
    window: tuple[float, float] | None = None,
) -> Path | None:
    """Write a windowed 8-bit grayscale PNG of ``pixels``.

    Args:
        pixels: (H, W) float in [0, 1], bright = dense (e.g. :func:`pipeline.dicom.read_pixels`).
        path_or_buffer: a file path (written atomically, folder created) or a binary buffer.
        size: None keeps the pixel size; an int is the longest side in pixels (aspect kept);
            ``(width, height)`` is exact.
        window: ``(low, high)`` display window in pixel units; None auto-windows (see
            :func:`window_to_uint8`).

    Returns:
        The path written, or None when writing to a buffer.
    """
    image = Image.fromarray(window_to_uint8(pixels, window), mode="L")
    if size is not None:
        if isinstance(size, int):
            h, w = pixels.shape
            factor = size / max(h, w)
            target = (max(round(w * factor), 1), max(round(h * factor), 1))
        else:
            target = (int(size[0]), int(size[1]))
        if target != image.size:
            image = image.resize(target, Image.Resampling.LANCZOS)
    if not isinstance(path_or_buffer, (str, os.PathLike)):
        image.save(path_or_buffer, format="PNG")
        return None
    target_path = Path(path_or_buffer)
    target_path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target_path.name}.", suffix=".tmp", dir=target_path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(buffer.getvalue())
        os.replace(tmp_name, target_path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return target_path
