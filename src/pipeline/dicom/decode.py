"""Decoding stored pixel values, isolated: pydicom's decoder plugins, compressed data in a child process.

GDCM, pydicom's first decoder of every JPEG syntax and of JPEG 2000, ends the whole process (an uncaught C++
exception, SIGABRT) on some corrupt codestreams and on headers that disagree with them (Rows above the JPEG-LS
frame's, BitsAllocated 32 with JPEG Lossless): one damaged file would take down a batch and its retries. Compressed
pixel data is therefore decoded by a child Python process that only decodes; when it dies or hangs, that file is
refused and a fresh child serves the next. Only the pixel data and the tags describing it cross the pipe.

Also a pydicom decoding plugin: GDCM for 12-bit JPEG Extended (below).
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import pickle
import select
import subprocess
import sys
import threading
import time
import warnings
from typing import IO, TYPE_CHECKING

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import get_decoder
from pydicom.pixels.decoders import JPEGExtended12BitDecoder
from pydicom.uid import JPEG2000, UID, JPEG2000Lossless, JPEGExtended12Bit

if TYPE_CHECKING:
    from pydicom.pixels.decoders.base import DecodeRunner

DECODE_TIMEOUT_S = 60.0
"""Longest the child may take over one file's compressed pixel data (a 4300 x 4300 JPEG-LS frame takes about 1 s)."""

_PLUGIN: dict[str, str] = {JPEG2000Lossless: "pylibjpeg", JPEG2000: "pylibjpeg"}
"""Plugin chosen over pydicom's order: OpenJPEG refuses a corrupt JPEG 2000 codestream with an error where GDCM
(first in pydicom's order, bundling an older OpenJPEG) aborts its process; for valid files they decode the same."""

_PIXEL_KEYWORDS = (
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "PlanarConfiguration",
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "NumberOfFrames",
    "ExtendedOffsetTable",
    "ExtendedOffsetTableLengths",
    "PixelData",
)
_LENGTH_BYTES = 8


class DecoderCrashed(Exception):
    """The child decoding compressed pixel data ended or hung instead of answering."""


def pixel_module(ds: Dataset, syntax: UID) -> Dataset:
    """Return a dataset with only the pixel data, the tags that describe it and the transfer syntax."""
    module = Dataset()
    module.file_meta = FileMetaDataset()
    module.file_meta.TransferSyntaxUID = syntax
    for keyword in _PIXEL_KEYWORDS:
        with contextlib.suppress(Exception):  # a garbled element stays out; the decoder then says what is missing
            if keyword in ds:
                module[keyword] = ds[keyword]
    return module


def decode_here(module: Dataset) -> np.ndarray:
    """Return the stored values of ``module``'s pixel data, through the plugin :data:`_PLUGIN` names, else any."""
    syntax = module.file_meta.TransferSyntaxUID
    decoder = get_decoder(syntax)
    plugin = _PLUGIN.get(syntax, "")
    array: np.ndarray = decoder.as_array(module, decoding_plugin=plugin if plugin in decoder.available_plugins else "")[
        0
    ]
    return array


def _write_message(stream: IO[bytes], payload: bytes) -> None:
    stream.write(len(payload).to_bytes(_LENGTH_BYTES, "little") + payload)
    stream.flush()


def _read_exactly(fd: int, size: int, deadline: float) -> bytes:
    chunks: list[bytes] = []
    while size > 0:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise TimeoutError(f"the decoder took longer than {DECODE_TIMEOUT_S:g} s")
        chunk = os.read(fd, min(size, 1 << 20))
        if not chunk:
            raise EOFError("the decoder process ended")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _serve_decodes() -> None:
    """Run the child: read pickled pixel modules from stdin, write back ``(True, array)`` or ``(False, reason)``."""
    requests = sys.stdin.buffer
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # whatever a decoder prints goes to stderr, never into the replies
    warnings.simplefilter("ignore")
    while len(header := requests.read(_LENGTH_BYTES)) == _LENGTH_BYTES:
        module = pickle.loads(requests.read(int.from_bytes(header, "little")))
        try:
            reply: tuple[bool, object] = (True, decode_here(module))
        except Exception as exc:  # any decoder failure goes back as the reason
            reply = (False, " ".join(str(exc).split()) or type(exc).__name__)
        _write_message(replies, pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL))


class _ChildDecoder:
    """The child process that decodes compressed pixel data; started on first use, restarted after a crash."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    def decode(self, module: Dataset) -> np.ndarray:
        """Return the stored values of a pixel module's compressed pixel data (see :func:`pixel_module`), decoded by the child.

        Raises:
            DecoderCrashed: the child ended or took longer than :data:`DECODE_TIMEOUT_S`.
            RuntimeError: every decoder refused the pixel data (the reason is the message).
        """
        request = pickle.dumps(module, protocol=pickle.HIGHEST_PROTOCOL)
        with self._lock:
            process = self._running()
            assert process.stdin is not None and process.stdout is not None
            try:
                _write_message(process.stdin, request)
                deadline = time.monotonic() + DECODE_TIMEOUT_S
                size = int.from_bytes(_read_exactly(process.stdout.fileno(), _LENGTH_BYTES, deadline), "little")
                reply = _read_exactly(process.stdout.fileno(), size, deadline)
            except (OSError, EOFError, TimeoutError) as exc:
                self.stop()
                what = exc if isinstance(exc, TimeoutError) else "the decoder crashed"
                raise DecoderCrashed(f"{what}: a corrupt codestream, or a header that does not match it") from exc
        decoded, value = pickle.loads(reply)
        if not decoded:
            raise RuntimeError(value)
        return np.asarray(value)

    def _running(self) -> subprocess.Popen[bytes]:
        if self._process is None or self._process.poll() is not None:
            self._process = subprocess.Popen(
                [sys.executable, "-c", f"from {__name__} import _serve_decodes; _serve_decodes()"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
        return self._process

    def forget(self) -> None:
        """Drop, in a forked process, the child and the lock inherited from the parent (which keeps using them)."""
        process, self._process = self._process, None
        self._lock = threading.Lock()
        for stream in (process.stdin, process.stdout) if process is not None else ():
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()  # this process's copy of the pipe; the parent's stays open

    def stop(self) -> None:
        """End the child (it also ends by itself when this process closes its end of the pipe)."""
        process, self._process = self._process, None
        if process is None:
            return
        process.kill()
        process.wait()
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):  # a write the dead child never read cannot be flushed
                    stream.close()


_CHILD_DECODER = _ChildDecoder()
atexit.register(_CHILD_DECODER.stop)
# a forked process (a DataLoader worker, a prefork pool) starts its own child instead of sharing the parent's pipe
os.register_at_fork(after_in_child=_CHILD_DECODER.forget)


def decode_in_child(module: Dataset) -> np.ndarray:
    """Return the stored values of a pixel module's compressed pixel data, decoded by the child process.

    Raises:
        DecoderCrashed: the child ended or took longer than :data:`DECODE_TIMEOUT_S`.
        RuntimeError: every decoder refused the pixel data (the reason is the message).
    """
    return _CHILD_DECODER.decode(module)


# --- A pydicom decoding plugin: GDCM for 12-bit JPEG Extended -------------------------------------------------------
# pydicom's own GDCM plugin refuses 12-bit JPEG Extended (Process 4, common in CR archives), although GDCM decodes
# it right (pydicom's reference values of JPGExtended.dcm; tfmoraes/python-gdcm#35); Pillow takes 8 bits only, and
# pylibjpeg-libjpeg, the other decoder, is GPL-3.0. The plugin below hands such a frame to GDCM as pydicom's does.
# pydicom's plugin protocol wants the module to answer ``is_available`` and name its ``DECODER_DEPENDENCIES``.

DECODER_DEPENDENCIES: dict[str, tuple[str, ...]] = {JPEGExtended12Bit: ("python-gdcm>=3.0.10",)}
"""What the 12-bit JPEG Extended plugin needs (pydicom's decoder plugin protocol)."""

_GDCM_12_BIT_PLUGIN = "gdcm-12bit"


def is_available(uid: str) -> bool:
    """Return True when the 12-bit JPEG Extended plugin can decode ``uid`` (pydicom's decoder plugin protocol)."""
    return uid == JPEGExtended12Bit and importlib.util.find_spec("gdcm") is not None


def _decode_jpeg_extended_12bit(src: bytes, runner: DecodeRunner) -> bytes:
    """Return one decoded grayscale frame of 12-bit JPEG Extended pixel data (pydicom's decoder plugin protocol)."""
    import gdcm

    if runner.bits_stored <= 8 or runner.samples_per_pixel != 1:
        raise ValueError("only grayscale frames of more than 8 bits are decoded here")
    fragment = gdcm.Fragment()
    fragment.SetByteStringValue(src)
    fragments = gdcm.SequenceOfFragments.New()
    fragments.AddFragment(fragment)
    element = gdcm.DataElement(gdcm.Tag(0x7FE0, 0x0010))
    element.SetValue(fragments.__ref__())
    image = gdcm.Image()
    image.SetNumberOfDimensions(2)
    image.SetDimensions((runner.columns, runner.rows, 1))
    image.SetDataElement(element)
    photometric = gdcm.PhotometricInterpretation.GetPIType(str(runner.photometric_interpretation))
    image.SetPhotometricInterpretation(gdcm.PhotometricInterpretation(photometric))
    image.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.JPEGExtendedProcess2_4))
    bits = runner.bits_stored
    image.SetPixelFormat(gdcm.PixelFormat(1, runner.bits_allocated, bits, bits - 1, runner.pixel_representation))
    frame = image.GetBuffer().encode("utf-8", "surrogateescape")  # GDCM hands the bytes back as a str
    expected = runner.rows * runner.columns * (runner.bits_allocated // 8)
    if len(frame) != expected:
        raise ValueError(f"GDCM returned {len(frame)} bytes for a frame of {expected}")
    return bytes(frame)


if _GDCM_12_BIT_PLUGIN not in JPEGExtended12BitDecoder.available_plugins:
    with contextlib.suppress(ValueError):  # already named (a reload of this module): keep the first
        JPEGExtended12BitDecoder.add_plugin(_GDCM_12_BIT_PLUGIN, (__name__, "_decode_jpeg_extended_12bit"))
