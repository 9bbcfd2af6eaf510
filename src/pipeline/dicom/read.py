"""Read a chest radiograph: the pseudonymous tag record the store keeps, and the display pixels.

Everything that can go wrong with a file from the wild ends as one of the exceptions of
:mod:`pipeline.dicom.errors`, whose one-line message names the file's base name and the problem
in a PACS administrator's words; a tag that is missing or garbled but not essential reads as None
(the quality checks downstream judge it), and no patient identifier leaves this module.

Pixels take one path, through pydicom's functions, for inference, statistics and renderings alike:
stored values (pydicom's decoder plugins; compressed data in a child process, so that a decoder
that aborts on a corrupt codestream ends the child, not the service) -> Modality LUT
(:func:`pydicom.pixels.apply_modality_lut`) -> the range that LUT gives the values BitsStored
allows, mapped onto [0, 1] -> MONOCHROME1 inverted. The VOI (window, VOI LUT) is a display
choice and is not applied; ``docs/dicom.md`` says why.
"""

from __future__ import annotations

import math
import os
import re
import struct
import unicodedata
import warnings
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import pydicom
from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.pixels import apply_modality_lut, get_decoder
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian
from pydicom.valuerep import DT

from pipeline.dicom.decode import DecoderCrashed, decode_here, decode_in_child, pixel_module
from pipeline.dicom.errors import DicomError, NotChestRadiograph, UnreadableDicom, UnsupportedPixelData
from pipeline.dicom.pseudonymize import pseudonymize_patient_id, pseudonymize_uid

if TYPE_CHECKING:
    pass

RADIOGRAPH_MODALITIES: tuple[str, ...] = ("CR", "DX", "DR")
"""Modalities the normal filter accepts (DR is not a DICOM term but some devices write it)."""

CHEST_BODY_PARTS: tuple[str, ...] = ("CHEST", "THORAX", "LUNG")
"""BodyPartExamined words that mean a chest: a value is a chest when one of its words (split at anything but a
letter, case ignored) starts with one of these, so ``CHEST``, ``chest pa``, ``CHEST_AP``, ``THORAX``, ``LUNGS``
pass and ``HAND``, ``CSPINE``, ``ABDOMEN``, ``THORACIC SPINE`` do not. A missing or empty value passes."""

STUDY_TEXT_MAX_CHARS: dict[str, int] = {
    "modality": 16,
    "manufacturer": 128,
    "model_name": 128,
    "view_position": 16,
    "body_part": 64,
    "photometric": 16,
    "patient_sex": 1,
}
"""Length of each text column of the store's ``studies`` table; a longer tag value is cut to it."""

MAX_IMAGE_PIXELS = 8192 * 8192
"""Largest Rows x Columns decoded (a 43 cm detector at 100 um is 4300 x 4300): a garbled size is refused
before a decoder allocates for it."""

_AGE = re.compile(r"^(\d{1,3})([DWMY])$")
_AGE_UNIT_YEARS = {"D": 1 / 365.25, "W": 7 / 365.25, "M": 1 / 12, "Y": 1.0}
_UTC_OFFSET = re.compile(r"^([+-])(\d{2})(\d{2})$")
_COLOUR = ("RGB", "YBR", "PALETTE", "HSV", "ARGB", "CMYK")
_FORCE_HINT = re.compile(r"[^.:;]*force=True[^.]*\.?", re.IGNORECASE)
_UNDEFINED_LENGTH = 0xFFFFFFFF
_ELEMENT_HEADER_BYTES = 8  # the shortest data element header (tag, then VR and length or a 4-byte length)

Source = str | os.PathLike[str] | IO[bytes]


@dataclass(frozen=True)
class ImageStats:
    """Statistics of the display pixels, bright = dense.

    The display pixels are the stored values through the Modality LUT (Rescale Slope/Intercept or a
    Modality LUT Sequence), mapped linearly from the range that LUT gives the values BitsStored allows
    onto [0, 1], MONOCHROME1 inverted; no window or VOI LUT. For a file without a Modality LUT, or with
    slope 1 and intercept 0, that is the stored value over its BitsStored range.

    Args:
        mean: mean value.
        std: standard deviation.
        p01: 1st percentile.
        p50: median.
        p99: 99th percentile.
        clipped_frac: share of pixels whose stored value is the lowest or highest BitsStored allows.
    """

    mean: float
    std: float
    p01: float
    p50: float
    p99: float
    clipped_frac: float


@dataclass(frozen=True)
class StudyRecord:
    """The pseudonymous tag record of one study; field names are columns of the store's ``studies`` table.

    The caller adds ``site`` and ``dicom_uri``. No patient name, id, birth date, accession
    number or original UID is kept; ``patient_key`` is a keyed hash of the PatientID, like the study id.
    Text fields are printable one-line text (no NUL or other control character), cut to their
    column's length (:data:`STUDY_TEXT_MAX_CHARS`), None when nothing is left.
    """

    study_id: str
    acquired_at: datetime | None
    modality: str | None
    manufacturer: str | None
    model_name: str | None
    view_position: str | None
    body_part: str | None
    kvp: float | None
    exposure_mas: float | None
    pixel_spacing_mm: float | None
    rows: int
    columns: int
    bits_stored: int
    photometric: str
    patient_age_years: float | None
    patient_sex: str | None
    img_mean: float
    img_std: float
    img_p01: float
    img_p50: float
    img_p99: float
    img_clipped_frac: float
    patient_key: str | None = None  # keyed hash of the PatientID; None when the file has none


@dataclass(frozen=True, eq=False)
class LoadedStudy:
    """A study read once: its record and its display pixels.

    Args:
        record: the pseudonymous tag record.
        pixels: (H, W) float32 in [0, 1], bright = dense (MONOCHROME1 already inverted).
    """

    record: StudyRecord
    pixels: np.ndarray


def parse_age(value: object) -> float | None:
    """Return a DICOM Age String (``"045Y"``, ``"008M"``, ``"003W"``, ``"012D"``) in years.

    Returns None for a missing, empty or garbled value (no unit, wrong unit, not a number).
    Up to three digits are accepted, so ``"45Y"`` reads as 45 years.
    """
    if value is None:
        return None
    match = _AGE.match(str(value).strip().upper())
    if match is None:
        return None
    return int(match.group(1)) * _AGE_UNIT_YEARS[match.group(2)]


def is_chest_body_part(value: str) -> bool:
    """Return True when a BodyPartExamined value names the chest (see :data:`CHEST_BODY_PARTS`)."""
    return any(word.startswith(CHEST_BODY_PARTS) for word in re.split(r"[^A-Z]+", value.upper()) if word)


def clean_text(value: object, max_chars: int | None = None) -> str | None:
    """Return a tag value as printable one-line text, or None when nothing is left.

    Control and format characters (NUL, escape, zero-width, lone surrogates) are dropped, except
    that line breaks and tabs become spaces; runs of white space become one space; the ends are
    trimmed. Undecodable bytes were already replaced (U+FFFD) by pydicom's character-set decoding;
    a raw ``bytes`` value (VR UN) is decoded as UTF-8 with the same replacement.

    Args:
        value: a tag value (str, bytes, a pydicom value type) or None.
        max_chars: cut the text to this many characters (then trim again).
    """
    if value is None:
        return None
    text = value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)
    printable = "".join(
        (" " if char.isspace() else "") if unicodedata.category(char).startswith("C") else char for char in text
    )
    text = " ".join(printable.split())
    if max_chars is not None:
        text = text[:max_chars].rstrip()
    return text or None


def _stored_range(bits_stored: int, signed: bool) -> tuple[int, int]:
    if signed:
        return -(1 << (bits_stored - 1)), (1 << (bits_stored - 1)) - 1
    return 0, (1 << bits_stored) - 1


def _through_modality_lut(
    stored: np.ndarray, lo: int, hi: int, modality_lut: Dataset | None
) -> tuple[np.ndarray, float, float]:
    """Return ``stored`` through the Modality LUT (float32) and the lowest and highest value it gives ``lo .. hi``.

    Without a usable Modality LUT (none, or one that fails to apply or maps every value to one) the
    values stay as stored, over ``lo .. hi``: a garbled optional tag reads as missing.
    """
    if modality_lut is not None:
        every_value = np.arange(lo, hi + 1) if hi - lo < 1 << 16 else np.array([lo, hi])  # a LUT needs every value
        try:
            span = apply_modality_lut(every_value, modality_lut)
            values = apply_modality_lut(stored, modality_lut)
        except Exception:  # pydicom reads the LUT's tags as it applies them; garbled ones raise any of many types
            pass
        else:
            low, high = float(np.min(span)), float(np.max(span))
            if math.isfinite(low) and math.isfinite(high) and high > low:
                return np.asarray(values, dtype=np.float32), low, high
    return stored.astype(np.float32, copy=False), float(lo), float(hi)


def image_statistics(
    stored: np.ndarray,
    *,
    bits_stored: int,
    photometric: str,
    signed: bool = False,
    modality_lut: Dataset | None = None,
) -> tuple[np.ndarray, ImageStats]:
    """Return the display image and its statistics from stored pixel values.

    Args:
        stored: (H, W) integer stored values.
        bits_stored: BitsStored; with ``signed`` it sets the range of values the file can store.
        photometric: ``"MONOCHROME1"`` inverts, so that bright = dense for both interpretations.
        signed: PixelRepresentation 1 (two's complement values).
        modality_lut: the dataset whose Modality LUT (Modality LUT Sequence, else Rescale Slope and
            Intercept) maps stored values to modality values, as :func:`pydicom.pixels.apply_modality_lut`
            applies it; None (or a dataset without one) keeps the stored values.

    Returns:
        ``(pixels, stats)``: (H, W) float32 in [0, 1], the modality values mapped linearly from the range
        the Modality LUT gives ``bits_stored``'s values (MONOCHROME1 inverted), and its :class:`ImageStats`.
    """
    lo, hi = _stored_range(bits_stored, signed)
    clipped = float(np.count_nonzero((stored <= lo) | (stored >= hi))) / max(stored.size, 1)
    values, low, high = _through_modality_lut(stored, lo, hi, modality_lut)
    pixels = (values - np.float32(low)) * np.float32(1.0 / (high - low))
    np.clip(pixels, 0.0, 1.0, out=pixels)
    if photometric == "MONOCHROME1":
        pixels = np.float32(1.0) - pixels
    p01, p50, p99 = (float(v) for v in np.percentile(pixels, [1.0, 50.0, 99.0]))
    stats = ImageStats(
        mean=float(pixels.mean(dtype=np.float64)),
        std=float(pixels.std(dtype=np.float64)),
        p01=p01,
        p50=p50,
        p99=p99,
        clipped_frac=clipped,
    )
    return pixels.astype(np.float32, copy=False), stats


def _name(source: Source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return clean_text(Path(source).name) or "<file>"
    return clean_text(Path(str(getattr(source, "name", "<buffer>"))).name) or "<buffer>"


def _one_line(exc: BaseException, limit: int = 240) -> str:
    """Return a library's exception message as one line, without pydicom's "Use force=True" advice."""
    text = clean_text(_FORCE_HINT.sub("", str(exc))) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def _corruption(exc: Exception) -> str:
    """Return what a parser's exception says about a corrupt file: its message where pydicom's words quote only tags,
    VRs and lengths (an unknown VR, a value length that does not fit its VR), else only its type, since a message
    may quote a value and a value may be a patient's."""
    if isinstance(exc, (NotImplementedError, BytesLengthException)):
        return _one_line(exc)
    return type(exc).__name__


def _get(ds: Dataset, keyword: str) -> Any:
    """Return the value of ``keyword``, or None when it is absent, empty or cannot be decoded."""
    try:
        value = ds.get(keyword)
    except Exception:  # pydicom converts the raw bytes on access; garbled ones raise any of many types
        return None
    if value is None or value == "" or (hasattr(value, "__len__") and len(value) == 0):
        return None
    return value


def _first(value: Any) -> Any:
    if isinstance(value, (list, tuple, MultiValue)):
        return value[0] if len(value) else None
    return value


def _text(ds: Dataset, keyword: str, max_chars: int | None = None) -> str | None:
    return clean_text(_first(_get(ds, keyword)), max_chars)


def _float(ds: Dataset, keyword: str) -> float | None:
    value = _first(_get(ds, keyword))
    try:
        number = float(value) if value is not None else None
    except (TypeError, ValueError, OverflowError):
        return None
    return number if number is not None and math.isfinite(number) else None


def _int(ds: Dataset, keyword: str) -> int | None:
    number = _float(ds, keyword)
    return int(number) if number is not None and number.is_integer() else None


def _exposure_mas(ds: Dataset) -> float | None:
    micro = _float(ds, "ExposureInuAs")
    if micro is not None:
        return micro / 1000.0
    milli = _float(ds, "ExposureInmAs")
    return milli if milli is not None else _float(ds, "Exposure")


def _pixel_spacing_mm(ds: Dataset) -> float | None:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = _float(ds, keyword)
        if value is not None and value > 0:
            return value
    return None


def _utc_offset(text: str | None) -> timedelta | None:
    """Return a TimezoneOffsetFromUTC (``"+0100"``) as a timedelta; None when absent or outside -12:00 .. +14:00."""
    match = _UTC_OFFSET.match(text or "")
    if match is None:
        return None
    hours, minutes = int(match.group(2)), int(match.group(3))
    if hours > 14 or minutes >= 60:
        return None
    return (1 if match.group(1) == "+" else -1) * timedelta(hours=hours, minutes=minutes)


def _utc_datetime(text: str | None, default_offset: timedelta | None) -> datetime | None:
    """Return a DICOM DT value as UTC, or None when it is not a real moment.

    Month 13, year 0000, a 25-hour offset, or a moment that leaves Python's calendar once shifted
    to UTC (0001-01-01 at +0100) all read as None. An offset in the value wins over ``default_offset``.
    """
    if not text:
        return None
    try:
        moment = DT(text)
        naive = datetime.combine(moment.date(), moment.time())
        offset = moment.utcoffset()
        return (naive - (offset if offset is not None else default_offset or timedelta(0))).replace(tzinfo=UTC)
    except (ValueError, TypeError, OverflowError):
        return None


def _acquired_at(ds: Dataset) -> datetime | None:
    """Return AcquisitionDateTime (else StudyDate + StudyTime) as UTC; a garbled value reads as missing."""
    offset = _utc_offset(_text(ds, "TimezoneOffsetFromUTC"))
    study_date, study_time = _text(ds, "StudyDate"), _text(ds, "StudyTime")
    for text in (_text(ds, "AcquisitionDateTime"), study_date and study_date + (study_time or "")):
        moment = _utc_datetime(text, offset)
        if moment is not None:
            return moment
    return None


def _patient_key(ds: Dataset, key: str | bytes) -> str | None:
    patient_id = _text(ds, "PatientID")
    return pseudonymize_patient_id(patient_id, key) if patient_id else None


def _size(source: Source) -> int | None:
    """Return the size of the file in bytes, or None when it cannot be told (a stream that cannot seek)."""
    try:
        if isinstance(source, (str, os.PathLike)):
            return os.path.getsize(source)
        if not source.seekable():
            return None
        position = source.tell()
        size = source.seek(0, os.SEEK_END)
        source.seek(position)
        return size
    except (OSError, ValueError):
        return None


def _cut_short(ds: Dataset, size: int | None) -> tuple[str, str | None] | None:
    """Return how a file that pydicom read without complaint ends early (reason, keyword at fault), or None.

    pydicom stops quietly at the end of the bytes: an empty data set, a last value shorter than its
    declared length, or a few bytes left that cannot hold an element header all mean the file was cut.
    """
    if len(ds) == 0:
        if len(getattr(ds, "file_meta", ())) == 0:
            return "preamble only: no file meta, no data set", None
        return "header only: the file meta and no data set", None
    last: RawDataElement | None = None
    for tag in ds.keys():  # noqa: SIM118 - iterating a Dataset converts its elements; get_item keeps them raw
        element = ds.get_item(tag)
        if (
            isinstance(element, RawDataElement)
            and element.value_tell is not None
            and (last is None or element.value_tell > (last.value_tell or 0))
        ):
            last = element
    if last is None or last.value_tell is None:
        return None
    keyword = keyword_for_tag(last.tag) or str(last.tag)
    read = len(last.value) if last.value is not None else 0
    if last.length != _UNDEFINED_LENGTH and read < last.length:
        return f"ends inside {keyword}: {read} of {last.length} bytes", keyword
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if size is None or syntax == DeflatedExplicitVRLittleEndian:  # positions count inflated bytes
        return None
    end = last.value_tell + (read + _ELEMENT_HEADER_BYTES if last.length == _UNDEFINED_LENGTH else last.length)
    if end > size:
        return f"ends inside {keyword}: no sequence delimiter", keyword
    if 0 < size - end < _ELEMENT_HEADER_BYTES:
        return f"ends inside the element header after {keyword}", keyword
    return None


def _open(source: Source, name: str) -> Dataset:
    size = _size(source)
    if size == 0:
        raise UnreadableDicom(f"{name}: empty file (0 bytes)", source=name)
    try:
        ds = pydicom.dcmread(source, force=False)
    except InvalidDicomError as exc:
        raise UnreadableDicom(
            f"{name}: not a DICOM file (no DICOM file header: no 'DICM' after the 128-byte preamble)", source=name
        ) from exc
    except (EOFError, struct.error) as exc:
        raise UnreadableDicom(f"{name}: truncated file (ends inside a data element)", source=name) from exc
    except zlib.error as exc:
        raise UnreadableDicom(
            f"{name}: truncated or corrupt file (the deflated data set cannot be inflated)", source=name
        ) from exc
    except OSError as exc:
        if exc.errno is None:  # pydicom's own: no tag where a sequence item must start, i.e. the bytes ran out
            raise UnreadableDicom(f"{name}: truncated file ({_one_line(exc)})", source=name) from exc
        raise UnreadableDicom(f"{name}: cannot read the file ({exc.strerror})", source=name) from exc
    except Exception as exc:  # pydicom raises many types on corrupt headers; all mean the same here
        raise UnreadableDicom(
            f"{name}: corrupt file: cannot parse the data set ({_corruption(exc)})", source=name
        ) from exc
    cut = _cut_short(ds, size)
    if cut is not None:
        reason, keyword = cut
        raise UnreadableDicom(f"{name}: truncated file ({reason})", source=name, field=keyword)
    return ds


def _sop_class(ds: Dataset) -> str | None:
    uid = _text(ds, "SOPClassUID") or _text(getattr(ds, "file_meta", Dataset()), "MediaStorageSOPClassUID")
    return UID(uid).name if uid else None


def _check_radiograph(ds: Dataset, name: str) -> str:
    """Raise unless ``ds`` is one grayscale chest radiograph with pixel data; return its PhotometricInterpretation."""
    modality = _text(ds, "Modality")
    if modality is not None and modality.upper() not in RADIOGRAPH_MODALITIES:
        raise NotChestRadiograph(
            f"{name}: not a chest radiograph: Modality {modality!r} (want {', '.join(RADIOGRAPH_MODALITIES)})",
            source=name,
            field="Modality",
        )
    body_part = _text(ds, "BodyPartExamined")
    if body_part is not None and not is_chest_body_part(body_part):
        raise NotChestRadiograph(
            f"{name}: not a chest radiograph: body part {body_part!r} (BodyPartExamined)",
            source=name,
            field="BodyPartExamined",
        )
    if "PixelData" not in ds:
        if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
            raise UnsupportedPixelData(
                f"{name}: float pixel data (FloatPixelData) is not supported", source=name, field="FloatPixelData"
            )
        sop_class = _sop_class(ds)
        what = f"; SOP class {sop_class}" if sop_class else ""
        raise UnreadableDicom(f"{name}: no pixel data (PixelData is missing{what})", source=name, field="PixelData")
    if modality is None:
        raise NotChestRadiograph(f"{name}: not a chest radiograph: Modality is missing", source=name, field="Modality")
    frames = _int(ds, "NumberOfFrames")
    if frames is not None and frames > 1:
        raise NotChestRadiograph(
            f"{name}: not a chest radiograph: several frames (NumberOfFrames {frames})",
            source=name,
            field="NumberOfFrames",
        )
    samples = _int(ds, "SamplesPerPixel")
    if samples is not None and samples != 1:
        raise NotChestRadiograph(
            f"{name}: not a chest radiograph: colour image (SamplesPerPixel {samples})",
            source=name,
            field="SamplesPerPixel",
        )
    photometric = _text(ds, "PhotometricInterpretation")
    if photometric in ("MONOCHROME1", "MONOCHROME2"):
        return photometric
    if photometric is not None and photometric.upper().startswith(_COLOUR):
        raise NotChestRadiograph(
            f"{name}: not a chest radiograph: colour image (PhotometricInterpretation {photometric!r})",
            source=name,
            field="PhotometricInterpretation",
        )
    raise UnreadableDicom(
        f"{name}: PhotometricInterpretation {photometric!r} is not MONOCHROME1 or MONOCHROME2",
        source=name,
        field="PhotometricInterpretation",
    )


def _transfer_syntax(ds: Dataset) -> UID | None:
    value = _text(getattr(ds, "file_meta", Dataset()), "TransferSyntaxUID")
    return UID(value) if value else None


def _syntax_words(syntax: UID) -> str:
    return f"{syntax.name} ({syntax})" if syntax.name != str(syntax) else f"with the unknown UID {syntax}"


def _decode(ds: Dataset, name: str) -> tuple[np.ndarray, int, bool]:
    """Return the stored values (H, W), BitsStored and whether they are signed."""
    allocated = _int(ds, "BitsAllocated")
    if allocated not in (8, 16, 32):
        raise UnsupportedPixelData(
            f"{name}: BitsAllocated {allocated} is not supported (want 8, 16 or 32)", source=name, field="BitsAllocated"
        )
    bits_stored = _int(ds, "BitsStored") or allocated
    if not 1 <= bits_stored <= allocated:
        raise UnreadableDicom(
            f"{name}: BitsStored {bits_stored} does not fit BitsAllocated {allocated}", source=name, field="BitsStored"
        )
    rows, cols = _int(ds, "Rows"), _int(ds, "Columns")
    if not rows or not cols or rows < 0 or cols < 0:
        raise UnreadableDicom(f"{name}: Rows or Columns is missing or zero", source=name, field="Rows")
    if rows * cols > MAX_IMAGE_PIXELS:
        raise UnsupportedPixelData(
            f"{name}: image of {rows} x {cols} pixels is larger than the {MAX_IMAGE_PIXELS} pixels taken (Rows, Columns)",
            source=name,
            field="Rows",
        )
    syntax = _transfer_syntax(ds)
    if syntax is None:
        raise UnreadableDicom(
            f"{name}: TransferSyntaxUID is missing from the file meta", source=name, field="PixelData"
        )
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError as exc:
        raise UnsupportedPixelData(
            f"{name}: unsupported transfer syntax {_syntax_words(syntax)}: no decoder", source=name, field="PixelData"
        ) from exc
    if not decoder.is_available:
        raise UnsupportedPixelData(
            f"{name}: unsupported transfer syntax {_syntax_words(syntax)}: no decoder installed",
            source=name,
            field="PixelData",
        )
    try:
        module = pixel_module(ds, syntax)
        stored = decode_in_child(module) if decoder.is_encapsulated else decode_here(module)
    except DecoderCrashed as exc:
        raise UnsupportedPixelData(
            f"{name}: cannot decode {_syntax_words(syntax)} pixel data ({exc})", source=name, field="PixelData"
        ) from exc
    except Exception as exc:  # decoders raise anything from RuntimeError to struct.error
        if decoder.is_encapsulated:
            raise UnsupportedPixelData(
                f"{name}: cannot decode {_syntax_words(syntax)} pixel data ({_one_line(exc)})",
                source=name,
                field="PixelData",
            ) from exc
        raise UnreadableDicom(
            f"{name}: corrupt pixel data (PixelData: {_one_line(exc)})", source=name, field="PixelData"
        ) from exc
    if stored.ndim != 2 or stored.shape != (rows, cols):
        raise NotChestRadiograph(
            f"{name}: not a chest radiograph: PixelData of shape {stored.shape} is not one {rows} x {cols} image",
            source=name,
            field="PixelData",
        )
    if not np.issubdtype(stored.dtype, np.integer):
        raise UnsupportedPixelData(
            f"{name}: PixelData of type {stored.dtype} is not supported", source=name, field="PixelData"
        )
    return stored, bits_stored, _int(ds, "PixelRepresentation") == 1


def _display(ds: Dataset, name: str) -> tuple[str, np.ndarray, np.ndarray, ImageStats, int]:
    """Return PhotometricInterpretation, stored values, display pixels, their statistics and BitsStored."""
    photometric = _check_radiograph(ds, name)
    stored, bits_stored, signed = _decode(ds, name)
    pixels, stats = image_statistics(
        stored, bits_stored=bits_stored, photometric=photometric, signed=signed, modality_lut=ds
    )
    return photometric, stored, pixels, stats, bits_stored


def load_study(source: Source, key: str | bytes) -> LoadedStudy:
    """Return the pseudonymous record and the display pixels of one chest radiograph.

    Args:
        source: a path, or a binary file object (its ``name``, if any, is used in messages).
        key: the pseudonymisation key of the StudyInstanceUID.

    Raises:
        UnreadableDicom: empty, not DICOM, truncated or header only, no pixel data, corrupt, or
            without StudyInstanceUID.
        UnsupportedPixelData: pixel data that cannot be decoded here (a transfer syntax without a
            decoder, a codestream the decoders refuse, float data, an unusual bit depth or size).
        NotChestRadiograph: a modality other than CR/DX/DR (or none), a body part other than the chest,
            several frames, or a colour image.
    """
    if not key:
        raise ValueError("the pseudonymisation key must not be empty")
    with warnings.catch_warnings():
        # pydicom warns about every odd value it reads and also logs it; the record shows them as None
        warnings.simplefilter("ignore", UserWarning)
        return _load(source, key)


def _load(source: Source, key: str | bytes) -> LoadedStudy:
    name = _name(source)
    try:
        ds = _open(source, name)
        photometric, stored, pixels, stats, bits_stored = _display(ds, name)
        study_uid = _text(ds, "StudyInstanceUID")
        if study_uid is None:
            raise UnreadableDicom(f"{name}: StudyInstanceUID is missing", source=name, field="StudyInstanceUID")
        sex = _text(ds, "PatientSex")
        record = StudyRecord(
            study_id=pseudonymize_uid(study_uid, key),
            acquired_at=_acquired_at(ds),
            modality=_text(ds, "Modality", STUDY_TEXT_MAX_CHARS["modality"]),
            manufacturer=_text(ds, "Manufacturer", STUDY_TEXT_MAX_CHARS["manufacturer"]),
            model_name=_text(ds, "ManufacturerModelName", STUDY_TEXT_MAX_CHARS["model_name"]),
            view_position=_text(ds, "ViewPosition", STUDY_TEXT_MAX_CHARS["view_position"]),
            body_part=_text(ds, "BodyPartExamined", STUDY_TEXT_MAX_CHARS["body_part"]),
            kvp=_float(ds, "KVP"),
            exposure_mas=_exposure_mas(ds),
            pixel_spacing_mm=_pixel_spacing_mm(ds),
            rows=int(stored.shape[0]),
            columns=int(stored.shape[1]),
            bits_stored=bits_stored,
            photometric=photometric,
            patient_age_years=parse_age(_text(ds, "PatientAge")),
            patient_sex=sex.upper() if sex and sex.upper() in ("M", "F", "O") else None,
            img_mean=stats.mean,
            img_std=stats.std,
            img_p01=stats.p01,
            img_p50=stats.p50,
            img_p99=stats.p99,
            img_clipped_frac=stats.clipped_frac,
            patient_key=_patient_key(ds, key),
        )
    except DicomError:
        raise
    except Exception as exc:  # a malformed element deep in the dataset; the file is unusable
        raise UnreadableDicom(f"{name}: corrupt file: malformed data set ({_corruption(exc)})", source=name) from exc
    return LoadedStudy(record=record, pixels=pixels)


def read_study(source: Source, key: str | bytes) -> StudyRecord:
    """Return the pseudonymous tag record of one chest radiograph (see :func:`load_study`)."""
    return load_study(source, key).record


def read_pixels(source: Source) -> np.ndarray:
    """Return the display pixels of one chest radiograph: (H, W) float32 in [0, 1], bright = dense.

    The same pixels as :func:`load_study` (see :class:`ImageStats` for the scaling); raises the
    same exceptions, except that a missing StudyInstanceUID does not matter here.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return _pixels(source)


def _pixels(source: Source) -> np.ndarray:
    name = _name(source)
    try:
        _, _, pixels, _, _ = _display(_open(source, name), name)
    except DicomError:
        raise
    except Exception as exc:
        raise UnreadableDicom(f"{name}: corrupt file: malformed data set ({_corruption(exc)})", source=name) from exc
    return pixels


# --- Decoding: pydicom's plugins, compressed pixel data in a child process -----------------------------------------
