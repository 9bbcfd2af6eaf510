"""Row validation before anything is written: every bad row is named with its field and reason.

The rules are read from the SQLAlchemy table (types, NOT NULL, string lengths) plus the
domain rules below (enumerations, ranges, rules across fields). Validation is vectorised
over a pandas frame so a million-row batch is checked in about a second.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import sqlalchemy as sa

from pipeline.store.schema import TABLES, Decision, ErrorType, Status


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


DOMAIN_RULES: dict[str, dict[str, Between | frozenset[str]]] = {
    "inference_logs": {
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
        "decision": frozenset(Decision),
        "prob_abnormal": Between(0.0, 1.0),
        "threshold": Between(0.0, 1.0),
        "latency_s": Between(0.0, None),
        "entropy": Between(0.0, None),
    },
    "studies": {
        "patient_sex": frozenset({"M", "F", "O"}),
        "rows": Between(1, None),
        "columns": Between(1, None),
        "bits_stored": Between(1, 32),
        "img_clipped_frac": Between(0.0, 1.0),
    },
    "feedback": {},
    "ground_truth": {"patient_sex": frozenset({"M", "F", "O"}), "view": frozenset({"PA", "AP"})},
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
        converted = pd.to_datetime(values, utc=True, errors="coerce", format="ISO8601")
    elif isinstance(kind, sa.Boolean):
        converted = values.map(_as_bool).astype("boolean")
    elif isinstance(kind, sa.Integer):
        converted = pd.to_numeric(values, errors="coerce")
        fractional = converted.notna() & (converted != np.floor(converted.fillna(0)))
        converted = converted.mask(fractional).astype("Int64")
    elif isinstance(kind, sa.Float):
        converted = pd.to_numeric(values, errors="coerce").astype("float64")
        converted = converted.mask(~np.isfinite(converted.fillna(0.0)))
    elif isinstance(kind, sa.LargeBinary):
        converted = values.map(lambda v: v if isinstance(v, bytes | bytearray | memoryview) else None)
        converted = converted.where(present, None)
    else:  # strings
        converted = values.astype("string")
    return converted, present & converted.isna()


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
    for sa_type, name in ((sa.DateTime, "a timestamp"), (sa.Boolean, "a boolean"), (sa.Integer, "an integer")):
        if isinstance(kind, sa_type):
            return name
    if isinstance(kind, sa.Float):
        return "a finite number"
    if isinstance(kind, sa.LargeBinary):
        return "bytes"
    return "text"


def validate_frame(table_name: str, frame: pd.DataFrame) -> Validated:
    """Return the rows of ``frame`` that fit ``table_name`` and an error for every field that does not.

    A missing optional column is filled with nulls; a missing required column rejects every row
    (naming the column); extra columns are ignored. Rows repeating a key already seen earlier in the
    same batch are dropped silently (the first wins), since re-delivery is normal for log shippers.
    """
    if table_name not in TABLES:
        raise UnknownTable(f"no ingestible table {table_name!r}; known: {sorted(TABLES)}")
    table = TABLES[table_name]
    frame = frame.reset_index(drop=True)
    errors: list[RowError] = []
    bad_rows = np.zeros(len(frame), dtype=bool)
    ids = frame["study_id"].astype("string") if "study_id" in frame else pd.Series(pd.NA, index=frame.index)

    def flag(mask: pd.Series | np.ndarray, field: str, reason: str | Iterable[str]) -> None:
        positions = np.flatnonzero(np.asarray(mask, dtype=bool))
        reasons = [reason] * len(positions) if isinstance(reason, str) else list(reason)
        for pos, why in zip(positions, reasons, strict=True):
            sid = ids.iat[pos]
            errors.append(RowError(int(pos), field, why, None if pd.isna(sid) else str(sid)))
        bad_rows[positions] = True

    columns: dict[str, pd.Series] = {}
    for column in table.columns:
        if column.name not in frame:
            if not column.nullable:
                flag(np.ones(len(frame), dtype=bool), column.name, "required column is missing from the batch")
            columns[column.name] = pd.Series([None] * len(frame), dtype="object")
            continue
        raw = frame[column.name]
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
    valid = valid[~valid.duplicated(subset=primary_key(table), keep="first")]
    errors.sort(key=lambda e: (e.row_number, e.field))
    return Validated(valid=valid, errors=tuple(errors))
