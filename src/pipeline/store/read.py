"""Reading windows of the store into pandas frames, fast on PostgreSQL (``COPY .. TO``)."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pipeline.store.engine import is_postgres
from pipeline.store.schema import TABLES, labels, snapshot_items, test_set_items

# The column that places each table's rows in time, for windowed reads.
TIME_COLUMN = {
    "studies": "acquired_at",
    "inference_logs": "received_at",
    "shadow_logs": "received_at",
    "feedback": "reported_at",
    "ground_truth": "acquired_at",
}


def read_window(
    engine: Engine,
    table_name: str,
    start: datetime | None = None,
    end: datetime | None = None,
    *,
    sites: Sequence[str] | None = None,
    columns: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Return the rows of ``table_name`` whose time lies in ``[start, end)``, typed as the table.

    Args:
        engine: the store.
        table_name: one of ``pipeline.store.schema.TABLES``.
        start: inclusive lower bound (timezone-aware), or None for no bound.
        end: exclusive upper bound (timezone-aware), or None for no bound.
        sites: keep only these sites.
        columns: the columns to return (default: all). Leave out ``embedding`` unless needed:
            it is the widest column by far.

    Returns:
        A frame with timestamps as UTC-aware ``datetime64``, bytes columns as ``bytes``.
    """
    table = TABLES[table_name]
    names = list(columns) if columns is not None else [c.name for c in table.columns]
    unknown = sorted(set(names) - set(table.c.keys()))
    if unknown:
        raise KeyError(f"{table_name} has no column(s) {unknown}")
    query = sa.select(*(table.c[n] for n in names))
    time_col = table.c[TIME_COLUMN[table_name]]
    if start is not None:
        query = query.where(time_col >= start)
    if end is not None:
        query = query.where(time_col < end)
    if sites is not None:
        query = query.where(table.c.site.in_(list(sites)))
    frame = _read_postgres(engine, query) if is_postgres(engine) else _read_sqlalchemy(engine, query)
    return _typed(frame, table, names)


def _read_sqlalchemy(engine: Engine, query: sa.Select) -> pd.DataFrame:
    with engine.connect() as conn:
        result = conn.execute(query)
        return pd.DataFrame(result.fetchall(), columns=list(result.keys()))


def _read_postgres(engine: Engine, query: sa.Select) -> pd.DataFrame:
    """Stream ``query`` out with ``COPY .. TO`` and parse it with pyarrow's multi-threaded CSV reader."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    # Timestamps leave as naive UTC and bytes as bare hex: the forms pyarrow parses fastest.
    outputs: list[sa.ColumnElement] = []
    types: dict[str, object] = {}
    binary: set[str] = set()
    for column in query.selected_columns:
        if isinstance(column.type, sa.DateTime):
            outputs.append(sa.func.timezone("UTC", column).label(column.name))
            types[column.name] = pa.timestamp("us")
        elif isinstance(column.type, sa.LargeBinary):
            outputs.append(sa.func.encode(column, "hex").label(column.name))
            types[column.name] = pa.string()
            binary.add(column.name)
        else:
            outputs.append(column)
            if isinstance(column.type, sa.String | sa.Text):
                types[column.name] = pa.string()
    query = query.with_only_columns(*outputs)
    sql = str(query.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True}))
    options = pa_csv.ConvertOptions(column_types=types, strings_can_be_null=True, quoted_strings_can_be_null=False)
    table = _copy_out_parsed(engine, f"COPY ({sql}) TO STDOUT WITH (FORMAT csv, HEADER)", options)
    columns = {}
    for name in table.column_names:
        values = table.column(name)
        if name in types and types[name] == pa.timestamp("us"):
            columns[name] = pd.Series(values.to_numpy(), dtype="datetime64[us]").dt.tz_localize("UTC")
        elif name in binary:
            columns[name] = _unhex(values)
        else:
            columns[name] = values.to_pandas()
    return pd.DataFrame(columns)


def _copy_out_parsed(engine: Engine, copy_sql: str, options: Any) -> Any:
    """Run ``COPY .. TO STDOUT`` in a thread into a pipe that pyarrow parses as it arrives.

    PostgreSQL formats rows in its own process while pyarrow parses the blocks already sent, so
    a read costs about the slower of the two rather than their sum.
    """
    import pyarrow.csv as pa_csv

    read_fd, write_fd = os.pipe()
    failures: list[BaseException] = []

    def produce() -> None:
        with os.fdopen(write_fd, "wb") as sink:
            try:
                with engine.connect() as conn:
                    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
                    try:
                        cursor.copy_expert(copy_sql, sink, size=1 << 20)
                    finally:
                        cursor.close()
            except BaseException as exc:  # handed to the parsing thread below
                failures.append(exc)

    producer = threading.Thread(target=produce, name="copy-out", daemon=True)
    producer.start()
    try:
        with os.fdopen(read_fd, "rb") as source:
            table = pa_csv.read_csv(source, convert_options=options)
    finally:
        producer.join()
    if failures:
        raise failures[0]
    return table


def _unhex(values: Any) -> pd.Series:
    """Return a pyarrow column of hex strings as a Series of bytes (None where null), decoded in bulk."""
    import pyarrow as pa

    array = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    if not pa.types.is_string(array.type):
        array = array.cast(pa.string())
    n = len(array)
    valid = array.is_valid().to_numpy(zero_copy_only=False)
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int32)[array.offset : array.offset + n + 1]
    lengths = np.diff(offsets)[valid]
    out = np.full(n, None, dtype=object)
    if len(lengths) == 0:
        return pd.Series(out, dtype=object)
    if (lengths != lengths[0]).any():
        out[valid] = [bytes.fromhex(v) for v in array.filter(pa.array(valid)).to_pylist()]
        return pd.Series(out, dtype=object)
    width = int(lengths[0])
    # nulls are empty strings, so the valid values lie back to back in the data buffer
    flat = bytes.fromhex(memoryview(array.buffers()[2])[offsets[0] : offsets[-1]].tobytes().decode("ascii"))
    size = width // 2
    out[valid] = [flat[i : i + size] for i in range(0, len(flat), size)]
    return pd.Series(out, dtype=object)


def _typed(frame: pd.DataFrame, table: sa.Table, names: list[str]) -> pd.DataFrame:
    """Give every column its table type, whatever the backend returned."""
    out: dict[str, pd.Series] = {}
    for name in names:
        kind = table.c[name].type
        values = frame[name] if name in frame else pd.Series([], dtype="object")
        if isinstance(kind, sa.DateTime):
            out[name] = values if isinstance(values.dtype, pd.DatetimeTZDtype) else pd.to_datetime(values, utc=True)
        elif isinstance(kind, sa.Boolean):
            out[name] = values.map({True: True, False: False, "t": True, "f": False}).astype("boolean")
        elif isinstance(kind, sa.Integer):
            out[name] = pd.to_numeric(values).astype("Int64")
        elif isinstance(kind, sa.Float):
            out[name] = pd.to_numeric(values).astype("float64")
        elif isinstance(kind, sa.LargeBinary):
            out[name] = values.astype(object)
        else:
            out[name] = values.astype("string")
    return pd.DataFrame(out)


def labels_not_in_a_snapshot(engine: Engine) -> int:
    """Return how many labeled studies no dataset snapshot holds yet and no validation test set keeps out of
    training: what a retraining would learn anew."""
    query = sa.select(sa.func.count(sa.distinct(labels.c.study_id))).where(
        ~labels.c.study_id.in_(sa.select(snapshot_items.c.study_id)),
        ~labels.c.study_id.in_(sa.select(test_set_items.c.study_id)),
    )
    with engine.connect() as conn:
        return int(conn.execute(query).scalar_one())
