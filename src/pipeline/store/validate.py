"""Row validation before anything is written: every bad row is named with its field and reason.

The rules are read from the SQLAlchemy table (types and their bounds, NOT NULL, string lengths,
characters the database refuses) plus the domain rules below (enumerations, ranges, the study id's
pseudonym format, rules across fields). Validation is vectorised over a pandas frame so a
million-row batch is checked in about a second.

Repeats of a key within one batch follow one rule (docs/ingest.md): an identical repeat is a
re-delivery and counts as unchanged; a repeat with other values is rejected (facts are written
once, the first delivery wins), except in tables whose rows may be amended (feedback), where the
newest report wins (``reported_at``, then the later row) and the ones it replaces are returned as
``superseded`` for the audit trail.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import sqlalchemy as sa

from pipeline.store.schema import STUDY_ID_LENGTH, TABLES, Decision, ErrorType, Status


@dataclass(frozen=True)
class RowError:
    """Why one row of a batch was rejected."""

    row_number: int  # 0-based position in the submitted batch
    field: str
    reason: str
    study_id: str | None = None

    def __str__(self) -> str:
        who = f" (study_id={self.study_id})" if self.study_id else ""
        return f"row {self.row_number}{who}: field {self.field!r}: {self.reason}"


@dataclass(frozen=True)
class Between:
    """Inclusive numeric range; either bound may be None."""

    low: float | None = None
    high: float | None = None


@dataclass(frozen=True)
class Pattern:
    """A text format (a regular expression the whole value must match) and its name in messages."""

    regex: str
    name: str


STUDY_ID = Pattern(f"[0-9a-f]{{{STUDY_ID_LENGTH}}}", f"a pseudonymous id ({STUDY_ID_LENGTH} lowercase hex characters)")

#: Bounds of the integer column types, as PostgreSQL stores them.
INTEGER_BOUNDS: tuple[tuple[type[sa.Integer], int], ...] = (
    (sa.SmallInteger, 15),
    (sa.BigInteger, 63),
    (sa.Integer, 31),
)

#: Where rows may be amended by a later report: the column that says which report is newer.
AMENDABLE: dict[str, str] = {"feedback": "reported_at"}

RowRule = Callable[[pd.DataFrame], "tuple[pd.Series, str, str]"]
"""A rule across fields: returns (mask of bad rows, field to name, reason)."""


def _ok_needs_prediction(frame: pd.DataFrame) -> tuple[pd.Series, str, str]:
    bad = (frame["status"] == Status.OK) & frame["prob_abnormal"].isna()
    return bad, "prob_abnormal", "status 'ok' needs a probability"


def _failure_needs_error_type(frame: pd.DataFrame) -> tuple[pd.Series, str, str]:
    bad = frame["status"].isin([Status.ERROR, Status.REJECTED]) & frame["error_type"].isna()
    return bad, "error_type", "a failed or rejected study needs an error_type"


def _finished_after_received(frame: pd.DataFrame) -> tuple[pd.Series, str, str]:
    bad = frame["finished_at"] < frame["received_at"]
    return bad, "finished_at", "finished before it was received"


DOMAIN_RULES: dict[str, dict[str, Between | frozenset[str] | Pattern]] = {
    "inference_logs": {
        "study_id": STUDY_ID,
        "status": frozenset(Status),
        "error_type": frozenset(ErrorType),
        "decision": frozenset(Decision),
        "prob_abnormal": Between(0.0, 1.0),
        "threshold": Between(0.0, 1.0),
        "latency_s": Between(0.0, None),
        "entropy": Between(0.0, None),
        "epistemic_var": Between(0.0, None),
    },
    "shadow_logs": {
        "study_id": STUDY_ID,
        "decision": frozenset(Decision),
        "prob_abnormal": Between(0.0, 1.0),
        "threshold": Between(0.0, 1.0),
        "latency_s": Between(0.0, None),
        "entropy": Between(0.0, None),
    },
    "studies": {
        "study_id": STUDY_ID,
        "patient_key": STUDY_ID,
        "patient_sex": frozenset({"M", "F", "O"}),
        "rows": Between(1, None),
        "columns": Between(1, None),
        "bits_stored": Between(1, 32),
        "img_clipped_frac": Between(0.0, 1.0),
    },
    "feedback": {"study_id": STUDY_ID},
    "ground_truth": {"study_id": STUDY_ID, "patient_sex": frozenset({"M", "F", "O"}), "view": frozenset({"PA", "AP"})},
}

ROW_RULES: dict[str, tuple[RowRule, ...]] = {
    "inference_logs": (_ok_needs_prediction, _failure_needs_error_type, _finished_after_received),
    "shadow_logs": (),
    "studies": (),
    "feedback": (),
    "ground_truth": (),
}


def primary_key(table: sa.Table) -> list[str]:
    """Return the names of ``table``'s key columns, the identity an upsert matches on."""
    return [c.name for c in table.primary_key.columns]


@dataclass(frozen=True)
class Validated:
    """A batch split into rows fit to write and the errors of the others."""

    valid: pd.DataFrame  # typed columns in table order; original row numbers in the index
    errors: tuple[RowError, ...]
    superseded: pd.DataFrame | None = None  # amendable tables: valid rows a newer report of the batch replaced

    @property
    def rejected_rows(self) -> int:
        return len({e.row_number for e in self.errors})


class UnknownTable(ValueError):
    """The batch names a table the store does not ingest."""


def _coerce(column: sa.Column, values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Return the column converted to its table type and the mask of values that did not convert."""
    present = values.notna()
    kind = column.type
    if isinstance(kind, sa.DateTime):
        converted = pd.to_datetime(_timestamps(values), utc=True, errors="coerce", format="ISO8601")
    elif isinstance(kind, sa.Boolean):
        converted = values.map(_as_bool).astype("boolean")
    elif isinstance(kind, sa.Integer):
        # through float64, exact for every integer a 32-bit column holds: a value out of the column's range is
        # masked before the cast (an out-of-range value would make the cast itself raise)
        number = pd.to_numeric(_scalars(values), errors="coerce").astype("float64")
        bits = _integer_bits(kind)
        unfit = number.notna() & ((number != np.floor(number.fillna(0))) | (number.abs() >= 2.0**bits))
        converted = number.mask(unfit).astype("Int64")
    elif isinstance(kind, sa.Float):
        converted = pd.to_numeric(_scalars(values), errors="coerce").astype("float64")
        converted = converted.mask(~np.isfinite(converted.fillna(0.0)))
    elif isinstance(kind, sa.LargeBinary):
        converted = values.map(lambda v: v if isinstance(v, bytes | bytearray | memoryview) else None)
        converted = converted.where(present, None)
    else:  # strings: a number or a flag from a typed format reads as its text; a list or an object does not
        converted = _scalars(values).astype("string")
    return converted, present & converted.isna()


def _timestamps(values: pd.Series) -> pd.Series:
    """Return ``values`` with every bare number as None: a timestamp is ISO 8601 text or a datetime, never an epoch."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        return pd.Series(None, index=values.index, dtype=object)
    if values.dtype != object or pd.api.types.infer_dtype(values, skipna=True) in _PLAIN_TIMESTAMPS:
        return values
    return values.map(lambda v: None if isinstance(v, numbers.Number | dict | list | tuple | set) else v)


def _scalars(values: pd.Series) -> pd.Series:
    """Return ``values`` with every nested value (a JSON list or object, which no column holds) as None."""
    if values.dtype != object or pd.api.types.infer_dtype(values, skipna=True) in _PLAIN_SCALARS:
        return values
    return values.map(lambda v: None if isinstance(v, dict | list | tuple | set) else v)


# What pandas' (compiled) type inference calls a column that holds no nested value, or no bare number
_PLAIN_SCALARS = frozenset(
    {
        "empty",
        "string",
        "bytes",
        "floating",
        "integer",
        "mixed-integer-float",
        "decimal",
        "boolean",
        "datetime",
        "datetime64",
        "date",
        "timedelta",
        "timedelta64",
    }
)
_PLAIN_TIMESTAMPS = frozenset({"empty", "string", "datetime", "datetime64", "date"})


def _refused_text(values: pd.Series) -> pd.Series:
    """Return, per value, why the store cannot hold it as text (a NUL, bytes that were not UTF-8), else None."""
    try:
        text = _scalars(values).astype("string")  # Arrow-backed: raises on a lone surrogate (undecodable bytes)
    except UnicodeEncodeError:
        return values.map(lambda v: _refused_reason(v) if isinstance(v, str) else None).astype(object)
    nul = text.str.contains("\x00", regex=False).fillna(False).astype(bool)
    reasons = pd.Series(None, index=values.index, dtype=object)
    reasons[nul] = "contains a NUL character, which the store cannot hold"
    return reasons


def _integer_bits(kind: sa.Integer) -> int:
    return next(bits for sa_type, bits in INTEGER_BOUNDS if isinstance(kind, sa_type))


_SURROGATES = re.compile("[\ud800-\udfff]")  # what invalid UTF-8 decodes to with errors="surrogateescape"


_BOOLEAN_TEXT = {"true": True, "t": True, "1": True, "false": False, "f": False, "0": False}


def _as_bool(value: object) -> bool | None:
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        return _BOOLEAN_TEXT.get(value.strip().lower())
    return None


def _type_name(column: sa.Column) -> str:
    kind = column.type
    for sa_type, name in ((sa.DateTime, "a timestamp"), (sa.Boolean, "a boolean")):
        if isinstance(kind, sa_type):
            return name
    if isinstance(kind, sa.Integer):
        bits = _integer_bits(kind)
        return f"an integer in [{-(2**bits)}, {2**bits - 1}]"
    if isinstance(kind, sa.Float):
        return "a finite number"
    if isinstance(kind, sa.LargeBinary):
        return "bytes"
    return "text"


def validate_frame(table_name: str, frame: pd.DataFrame, *, numbered: bool = False) -> Validated:
    """Return the rows of ``frame`` that fit ``table_name`` and an error for every field that does not.

    A missing optional column is filled with nulls; a missing required column rejects every row
    (naming the column); extra columns are ignored. Rows are named by their position in the batch,
    or with ``numbered`` by the frame's (unique, integer) index: a parsed file's record numbers.
    Repeats of a key follow the module's rule: identical ones count as unchanged, conflicting ones
    are rejected, or in an amendable table superseded by the newest report.
    """
    if table_name not in TABLES:
        raise UnknownTable(f"no ingestible table {table_name!r}; known: {sorted(TABLES)}")
    table = TABLES[table_name]
    if numbered and not (pd.api.types.is_integer_dtype(frame.index) and frame.index.is_unique):
        raise ValueError("a numbered batch needs a unique integer index")
    row_numbers = frame.index.to_numpy(dtype=np.int64) if numbered else np.arange(len(frame), dtype=np.int64)
    frame = frame.reset_index(drop=True)
    errors: list[RowError] = []
    bad_rows = np.zeros(len(frame), dtype=bool)
    ids = frame["study_id"].astype("string") if "study_id" in frame else pd.Series(pd.NA, index=frame.index)

    def flag(mask: pd.Series | np.ndarray, field: str, reason: str | Iterable[str]) -> None:
        positions = np.flatnonzero(np.asarray(mask, dtype=bool))
        reasons = [reason] * len(positions) if isinstance(reason, str) else list(reason)
        for pos, why in zip(positions, reasons, strict=True):
            sid = ids.iat[pos]
            errors.append(RowError(int(row_numbers[pos]), field, why, _named_id(sid)))
        bad_rows[positions] = True

    columns: dict[str, pd.Series] = {}
    for column in table.columns:
        if column.name not in frame:
            if not column.nullable:
                flag(np.ones(len(frame), dtype=bool), column.name, "required column is missing from the batch")
            columns[column.name] = pd.Series([None] * len(frame), dtype="object")
            continue
        raw = frame[column.name]
        if isinstance(column.type, sa.String):
            refused = _refused_text(raw)
            if refused.notna().any():
                flag(refused.notna(), column.name, refused.dropna().tolist())
                raw = raw.astype(object).mask(refused.notna())
        converted, unconvertible = _coerce(column, raw)
        if unconvertible.any():
            flag(
                unconvertible,
                column.name,
                [f"{raw[i]!r} is not {_type_name(column)}" for i in np.flatnonzero(unconvertible)],
            )
        if not column.nullable:
            flag(raw.isna(), column.name, "is required but missing")
        length = getattr(column.type, "length", None)
        if length and isinstance(column.type, sa.String):
            too_long = converted.str.len() > length
            flag(too_long.fillna(False), column.name, f"longer than {length} characters")
        rule = DOMAIN_RULES[table_name].get(column.name)
        if isinstance(rule, frozenset):
            unknown = converted.notna() & ~converted.isin(rule)
            if unknown.any():
                allowed = ", ".join(sorted(rule))
                flag(
                    unknown,
                    column.name,
                    [f"unknown value {converted[i]!r} (allowed: {allowed})" for i in np.flatnonzero(unknown)],
                )
        elif isinstance(rule, Pattern):
            unfit = (converted.notna() & ~converted.str.fullmatch(rule.regex).fillna(False)).astype(bool)
            if unfit.any():
                flag(unfit, column.name, f"is not {rule.name}")
        elif isinstance(rule, Between):
            outside = pd.Series(False, index=converted.index)
            if rule.low is not None:
                outside |= converted < rule.low
            if rule.high is not None:
                outside |= converted > rule.high
            outside = outside.fillna(False).astype(bool)
            if outside.any():
                bounds = (
                    f"[{rule.low if rule.low is not None else '-inf'}, {rule.high if rule.high is not None else 'inf'}]"
                )
                flag(outside, column.name, [f"{converted[i]} is outside {bounds}" for i in np.flatnonzero(outside)])
        columns[column.name] = converted

    typed = pd.DataFrame(columns, index=frame.index)
    for rule_fn in ROW_RULES[table_name]:
        mask, field, reason = rule_fn(typed)
        flag(mask.fillna(False).astype(bool), field, reason)

    valid = typed[~bad_rows]
    keys = primary_key(table)
    repeated = valid.duplicated(subset=keys, keep=False)
    if repeated.any():  # identical repeats: a re-delivery, counted as unchanged (compared only where keys repeat)
        identical = valid[repeated].duplicated(keep="first")
        valid = valid.drop(index=identical.index[identical.to_numpy()])
    superseded = None if table_name not in AMENDABLE else valid.iloc[:0]
    if repeated.any() and table_name in AMENDABLE:  # the newest report wins, then the later row
        order = valid.assign(_position=np.arange(len(valid))).sort_values([AMENDABLE[table_name], "_position"])
        newest = ~order.duplicated(subset=keys, keep="last").to_numpy()
        superseded = valid.loc[order.index[~newest]].sort_index()
        valid = valid.loc[order.index[newest]].sort_index()
    elif repeated.any():  # facts are written once: a repeat with other values is rejected, naming the row it repeats
        later = valid.duplicated(subset=keys, keep="first")
        if later.any():
            first_row = {
                tuple(key): int(row_numbers[pos])
                for pos, key in zip(valid.index, valid[keys].itertuples(index=False), strict=True)
                if not later[pos]
            }
            conflicting = valid[later]
            mask = np.zeros(len(frame), dtype=bool)
            mask[conflicting.index.to_numpy()] = True
            flag(
                mask,
                keys[0],
                [
                    f"repeats the key of row {first_row[tuple(key)]} with other values (the first delivery is kept)"
                    for key in conflicting[keys].itertuples(index=False)
                ],
            )
            valid = valid[~later]
    valid.index = pd.Index(row_numbers[valid.index.to_numpy()])
    if superseded is not None:
        superseded.index = pd.Index(row_numbers[superseded.index.to_numpy()])
    errors.sort(key=lambda e: (e.row_number, e.field))
    return Validated(valid=valid, errors=tuple(errors), superseded=superseded)


def _named_id(value: object) -> str | None:
    """The study id a reject names: only a well-formed pseudonym (never free text a sender put in the field)."""
    if value is None or pd.isna(value):
        return None
    text = str(value)
    return text if len(text) == STUDY_ID_LENGTH and all(c in "0123456789abcdef" for c in text) else None


def _refused_reason(value: str) -> str | None:
    if "\x00" in value:
        return "contains a NUL character, which the store cannot hold"
    return "is not valid UTF-8 text" if _SURROGATES.search(value) else None
