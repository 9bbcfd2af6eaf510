from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.dicom import render_png, window_to_uint8


def test_png_file_is_8bit_grayscale(tmp_path: Path, image: np.ndarray) -> None:
    out = render_png(image, tmp_path / "r" / "a.png")
    assert out == tmp_path / "r" / "a.png"
    with Image.open(out) as png:
        assert png.mode == "L" and png.size == (64, 64)
        arr = np.asarray(png)
    assert arr.min() == 0 and arr.max() == 255  # auto window spans the range
    assert [p.name for p in (tmp_path / "r").iterdir()] == ["a.png"]


def test_size_keeps_aspect_and_buffer_works(image: np.ndarray) -> None:
    wide = np.concatenate([image, image], axis=1)  # 64 x 128
    buf = io.BytesIO()
    assert render_png(wide, buf, size=256) is None
    with Image.open(io.BytesIO(buf.getvalue())) as png:
        assert png.size == (256, 128)
    buf = io.BytesIO()
    render_png(wide, buf, size=(100, 40))
    with Image.open(io.BytesIO(buf.getvalue())) as png:
        assert png.size == (100, 40)


def test_window_maps_low_and_high() -> None:
    ramp = np.linspace(0, 1, 101, dtype=np.float32)[None, :].repeat(3, axis=0)
    out = window_to_uint8(ramp, (0.25, 0.75))
    assert out[0, 25] == 0 and out[0, 75] == 255 and out[0, 50] in (127, 128)
    assert out[0, 0] == 0 and out[0, 100] == 255
    with pytest.raises(ValueError):
        window_to_uint8(np.zeros((2, 2, 2)))
