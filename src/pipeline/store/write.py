"""Idempotent, all-or-nothing loading of batches into the store.

A batch is validated first (``pipeline.store.validate``); the valid rows and a record of every
rejected field are written in one transaction, so a failure leaves nothing half-written. A batch
may hold several tables (a study's tags, its inference rows, its outcome): they are written in
one transaction, and a study one of whose rows is rejected is written in none of them.
Re-ingesting the same rows changes nothing: rows are keyed (study id, model version) and
written insert-if-absent (the first delivery of a fact wins), except feedback, where the newest
report (``reported_at``) wins and the row it replaced is kept in ``amendments``.

PostgreSQL takes the bulk path: ``COPY`` straight into the table under a savepoint, and only
when that meets rows already present, ``COPY`` into a temporary staging table and
``INSERT .. ON CONFLICT``. SQLite takes batched ``INSERT .. ON CONFLICT``.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import queue
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from pipeline.store.engine import insert_for, is_postgres
from pipeline.store.schema import TABLES, amendments, ingest_rejects
from pipeline.store.validate import AMENDABLE, RowError, Validated, primary_key, validate_frame

log = logging.getLogger(__name__)

# Tables whose rows may be corrected by a newer report; the others are immutable facts.
UPDATABLE = frozenset(AMENDABLE)
COPY_CHUNK_ROWS = 100_000
KEYS_PER_QUERY = 1000


@dataclass(frozen=True)
class IngestResult:
    """What one batch did to the store."""

    table: str
    source: str
    received: int
    written: int  # rows inserted (or, for updatable tables, inserted or updated)
    rejected: int
    errors: tuple[RowError, ...]
    amended: int = 0  # of the written rows, those that replaced an older report (kept in ``amendments``)

    @property
    def unchanged(self) -> int:
        """Rows that were valid but already present (or repeated within the batch)."""
        return self.received - self.rejected - self.written

    def summary(self) -> str:
        amended = f" ({self.amended} amending an earlier report)" if self.amended else ""
        return (
            f"{self.table} from {self.source}: {self.received} received, {self.written} written{amended}, "
            f"{self.unchanged} already present, {self.rejected} rejected"
        )


def ingest(
    engine: Engine,
    table_name: str,
    frame: pd.DataFrame,
    source: str,
    *,
    errors: Iterable[RowError] = (),
    numbered: bool = False,
) -> IngestResult:
    """Validate ``frame`` and write its valid rows to ``table_name`` in one transaction.

    Args:
        engine: the store.
        table_name: one of ``pipeline.store.schema.TABLES``.
        frame: one row per record, columns named as the table's (extra columns are ignored).
        source: where the batch came from (a file name, a service id); rejects are recorded under it.
        errors: rows of the batch already rejected before they became rows (a line of a file that did
            not parse); they are counted as received and recorded with the others.
        numbered: name rows by ``frame``'s index (a parsed file's record numbers), not by position.

    Returns:
        The counts and every rejected field, each naming its row and reason.
    """
    batch = ingest_batch(engine, {table_name: frame}, source, errors={table_name: tuple(errors)}, numbered=numbered)
    return batch[table_name]


def ingest_batch(
    engine: Engine,
    frames: Mapping[str, pd.DataFrame],
    source: str,
    *,
    errors: Mapping[str, tuple[RowError, ...]] | None = None,
    numbered: bool = False,
) -> dict[str, IngestResult]:
    """Validate the rows of several tables and write them in one transaction, each study whole or not at all.

    A study (``study_id``) with a rejected row in any of the tables has its other rows of the batch
    rejected too, naming the row that failed; tables are written in the order given.

    Returns:
        Per table, the counts and every rejected field.
    """
    prior = {name: tuple((errors or {}).get(name, ())) for name in frames}
    checked = _whole_studies(
        {name: validate_frame(name, frame, numbered=numbered) for name, frame in frames.items()}, prior
    )
    results: dict[str, IngestResult] = {}
    with engine.begin() as conn:
        for name, batch in checked.items():
            table = TABLES[name]
            rows, amended = batch.valid, 0
            stale: tuple[RowError, ...] = ()
            if name in UPDATABLE:
                rows, amended, stale = _amend(conn, table, batch, source)
            written = _write_postgres(conn, table, rows) if is_postgres(engine) else _write_sqlite(conn, table, rows)
            every_error = tuple(sorted((*prior[name], *batch.errors, *stale), key=lambda e: (e.row_number, e.field)))
            _record_rejects(conn, every_error, name, source)
            rejected = len({e.row_number for e in every_error})
            received = len(frames[name]) + len({e.row_number for e in prior[name]})
            results[name] = IngestResult(name, source, received, written, rejected, every_error, amended)
    for result in results.values():
        log.log(logging.WARNING if result.rejected else logging.INFO, result.summary())
    return results


def _whole_studies(checked: dict[str, Validated], prior: Mapping[str, tuple[RowError, ...]]) -> dict[str, Validated]:
    """Reject, in every table of the batch, the rows of a study that has a rejected row in another table."""
    if len(checked) < 2:
        return checked
    failed: dict[str, str] = {}
    for name, batch in checked.items():
        for error in (*prior[name], *batch.errors):
            if error.study_id is not None:
                failed.setdefault(error.study_id, f"{name} row {error.row_number}, field {error.field!r}")
    if not failed:
        return checked
    out = {}
    for name, batch in checked.items():
        if "study_id" not in batch.valid or batch.valid.empty:
            out[name] = batch
            continue
        ids = batch.valid["study_id"].astype(str)
        dropped = ids.isin(list(failed))
        cascade = tuple(
            RowError(int(row), "study_id", f"not written: another row of this study was rejected ({failed[sid]})", sid)
            for row, sid in ids[dropped].items()
        )
        out[name] = replace(batch, valid=batch.valid[~dropped], errors=(*batch.errors, *cascade))
    return out


def _canonical(row: Mapping[str, object]) -> str:
    """Return a row as JSON that compares equal across backends (UTC timestamps, nulls for NaN)."""

    def plain(value: object) -> object:
        if value is None or (isinstance(value, float) and value != value) or value is pd.NA or value is pd.NaT:
            return None
        if isinstance(value, datetime | pd.Timestamp):
            return _utc(value).isoformat()
        if isinstance(value, np.generic):
            return value.item()
        return value

    return json.dumps({k: plain(v) for k, v in row.items()}, sort_keys=True, default=str)


def _amend(
    conn: Connection, table: sa.Table, batch: Validated, source: str
) -> tuple[pd.DataFrame, int, tuple[RowError, ...]]:
    """Return the rows of an amendable table to write, how many amend a stored row, and the stale ones' rejects.

    A row newer than (or as new as) the stored one with other values replaces it, and the stored row is
    kept in ``amendments``; an older one is rejected; rows a newer report of the same batch replaced are
    kept in ``amendments`` too.
    """
    keys, newer = primary_key(table), AMENDABLE[table.name]
    if len(keys) != 1:
        raise ValueError(f"amendable table {table.name} needs a one-column key")
    key = keys[0]
    rows = batch.valid
    stored: dict[object, dict[str, object]] = {}
    wanted = rows[key].tolist()
    for start in range(0, len(wanted), KEYS_PER_QUERY):
        chunk = wanted[start : start + KEYS_PER_QUERY]
        for record in conn.execute(sa.select(table).where(table.c[key].in_(chunk))).mappings():
            stored[record[key]] = dict(record)
    records = rows.astype(object).where(rows.notna(), None).to_dict("index")
    keep, audit, stale = [], [], []
    for row_number, record in records.items():
        before = stored.get(record[key])
        if before is None:
            keep.append(row_number)
        elif _canonical(before) == _canonical(record):
            continue  # a re-delivery
        elif _utc(record[newer]) < _utc(before[newer]):
            stale.append(
                RowError(
                    int(row_number),
                    newer,
                    f"older than the report already stored ({newer} {_utc(before[newer]).isoformat()})",
                    str(record[key]),
                )
            )
        else:
            keep.append(row_number)
            audit.append((str(record[key]), before))
    amended = len(audit)
    if batch.superseded is not None:
        for record in batch.superseded.astype(object).where(batch.superseded.notna(), None).to_dict("records"):
            audit.append((str(record[key]), record))
    _record_amendments(conn, table.name, source, audit)
    return rows.loc[keep], amended, tuple(stale)


def _utc(value: object) -> pd.Timestamp:
    """A timestamp in UTC; a naive one (SQLite gives timestamps back without their zone) is read as UTC."""
    moment = pd.Timestamp(value)
    return moment.tz_localize("UTC") if moment.tzinfo is None else moment.tz_convert("UTC")


def _record_amendments(
    conn: Connection, table_name: str, source: str, replaced: Sequence[tuple[str, Mapping[str, object]]]
) -> None:
    if not replaced:
        return
    now = datetime.now(UTC)
    rows = []
    for study_id, row in replaced:
        text = _canonical(row)
        rows.append(
            {
                "table_name": table_name,
                "study_id": study_id,
                "source": source,
                "replaced": text,
                "replaced_digest": hashlib.sha256(text.encode()).hexdigest(),
                "amended_at": now,
            }
        )
    conn.execute(insert_for(conn)(amendments).on_conflict_do_nothing(), rows)


def _record_rejects(conn: Connection, errors: tuple[RowError, ...], table_name: str, source: str) -> None:
    if not errors:
        return
    now = datetime.now(UTC)
    rows = [
        {
            "source": source,
            "table_name": table_name,
            "row_number": e.row_number,
            "field": e.field,
            "study_id": e.study_id,
            "reason": e.reason,
            "rejected_at": now,
        }
        for e in errors
    ]
    conn.execute(insert_for(conn)(ingest_rejects).on_conflict_do_nothing(), rows)


def _upsert(conn: Connection, table: sa.Table, source: sa.Table | None = None) -> sa.Executable:
    """Return an INSERT .. ON CONFLICT for ``table`` (from ``source`` when given, else from parameters)."""
    insert = insert_for(conn)
    keys = primary_key(table)
    stmt = insert(table).from_select(list(source.c.keys()), sa.select(source)) if source is not None else insert(table)
    if table.name in UPDATABLE:
        changed = {c.name: stmt.excluded[c.name] for c in table.columns if c.name not in keys}
        return stmt.on_conflict_do_update(index_elements=keys, set_=changed)
    return stmt.on_conflict_do_nothing(index_elements=keys)


def _write_sqlite(conn: Connection, table: sa.Table, frame: pd.DataFrame) -> int:
    if frame.empty:
        return 0
    records = frame.astype(object).where(frame.notna(), None).to_dict("records")
    before = conn.execute(sa.select(sa.func.total_changes())).scalar_one()
    conn.execute(_upsert(conn, table), records)
    return int(conn.execute(sa.select(sa.func.total_changes())).scalar_one() - before)


_HEX_PAIRS = np.array([list(f"{b:02x}".encode()) for b in range(256)], dtype=np.uint8)  # (256, 2)


def _hex_bytea(values: pd.Series) -> object:
    """Return bytes values as a pyarrow string array of PostgreSQL's ``\\x..`` hex text."""
    import pyarrow as pa

    present = values.notna().to_numpy()
    blobs = [bytes(v) for v in values[present]]
    width = len(blobs[0]) if blobs else 0
    if not blobs or any(len(b) != width for b in blobs):
        return pa.array([None if v is None else "\\x" + bytes(v).hex() for v in values], type=pa.string())
    octets = np.frombuffer(b"".join(blobs), dtype=np.uint8).reshape(len(blobs), width)
    text = np.full((len(values), 2 + 2 * width), ord("0"), dtype=np.uint8)
    text[:, :2] = np.frombuffer(b"\\x", dtype=np.uint8)
    text[present, 2:] = _HEX_PAIRS[octets].reshape(len(blobs), 2 * width)
    fixed = pa.array(text.view(f"S{2 + 2 * width}").ravel(), type=pa.binary(2 + 2 * width))
    return pa.compute.if_else(pa.array(present), fixed.cast(pa.string()), pa.scalar(None, pa.string()))


def to_copy_csv(frame: pd.DataFrame) -> Iterator[bytes]:
    """Yield ``frame`` as CSV chunks in the form PostgreSQL's ``COPY .. (FORMAT csv)`` reads.

    Timestamps are written as naive UTC (the COPY session runs in UTC: formatting with a zone is
    ten times slower in pyarrow), bytes as ``\\x`` hex, nulls as empty unquoted fields.
    """
    import pyarrow as pa
    import pyarrow.compute
    import pyarrow.csv as pa_csv

    options = pa_csv.WriteOptions(include_header=False)
    for start in range(0, len(frame), COPY_CHUNK_ROWS):
        chunk = frame.iloc[start : start + COPY_CHUNK_ROWS]
        arrays = []
        for name in chunk.columns:
            column = chunk[name]
            if isinstance(column.dtype, pd.DatetimeTZDtype):
                arrays.append(pa.array(column.dt.tz_convert("UTC").dt.tz_localize(None)))
            elif column.dtype == object and _is_bytes(_first_present(column)):
                arrays.append(_hex_bytea(column))
            else:
                arrays.append(pa.Array.from_pandas(column))
        sink = io.BytesIO()
        pa_csv.write_csv(pa.Table.from_arrays(arrays, names=list(chunk.columns)), sink, options)
        yield sink.getvalue()


def _is_bytes(value: object) -> bool:
    return isinstance(value, bytes | bytearray | memoryview)


def _first_present(values: pd.Series) -> object:
    index = values.first_valid_index()
    return None if index is None else values[index]


class _ChunkReader(io.RawIOBase):
    """A file object over byte chunks made by a background thread, for ``copy_expert`` to stream.

    Serializing the next chunk (pyarrow releases the GIL) overlaps with PostgreSQL parsing the
    last one, so a bulk load costs about the slower of the two rather than their sum.
    """

    def __init__(self, chunks: Iterator[bytes], depth: int = 2) -> None:
        self._queue: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=depth)
        self._pending = b""
        self._done = False
        self._thread = threading.Thread(target=self._produce, args=(chunks,), daemon=True)
        self._thread.start()

    def _produce(self, chunks: Iterator[bytes]) -> None:
        try:
            for chunk in chunks:
                self._queue.put(chunk)
        except BaseException as exc:  # handed to the reading thread, which re-raises it
            self._queue.put(exc)
        else:
            self._queue.put(None)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        while not self._done and (size < 0 or len(self._pending) < size):
            item = self._queue.get()
            if isinstance(item, BaseException):
                raise item
            if item is None:
                self._done = True
            else:
                self._pending += item
        if size < 0:
            out, self._pending = self._pending, b""
        else:
            out, self._pending = self._pending[:size], self._pending[size:]
        return out


def _copy_into(cursor: object, table_name: str, columns: list[str], frame: pd.DataFrame) -> None:
    column_list = ", ".join(f'"{c}"' for c in columns)
    cursor.execute("SET LOCAL TIME ZONE 'UTC'")  # type: ignore[attr-defined]
    sql = f"COPY {table_name} ({column_list}) FROM STDIN WITH (FORMAT csv)"
    cursor.copy_expert(sql, _ChunkReader(to_copy_csv(frame[columns])), size=1 << 20)  # type: ignore[attr-defined]


def _write_postgres(conn: Connection, table: sa.Table, frame: pd.DataFrame) -> int:
    import psycopg2.errors

    if frame.empty:
        return 0
    columns = [c.name for c in table.columns]
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        if table.name not in UPDATABLE:
            cursor.execute("SAVEPOINT pipeline_bulk_copy")
            try:
                _copy_into(cursor, table.name, columns, frame)
            except psycopg2.errors.UniqueViolation:
                cursor.execute("ROLLBACK TO SAVEPOINT pipeline_bulk_copy")
                log.debug("%s: some rows already present, taking the staged upsert path", table.name)
            else:
                cursor.execute("RELEASE SAVEPOINT pipeline_bulk_copy")
                return len(frame)
        stage = f"_stage_{table.name}"
        cursor.execute(f"CREATE TEMP TABLE {stage} (LIKE {table.name} INCLUDING DEFAULTS) ON COMMIT DROP")
        _copy_into(cursor, stage, columns, frame)
    finally:
        cursor.close()
    staged = sa.Table(stage, sa.MetaData(), *(sa.Column(c.name, c.type) for c in table.columns))
    written = conn.execute(_upsert(conn, table, staged)).rowcount
    conn.execute(sa.text(f"DROP TABLE {stage}"))
    return int(written)


def encode_embedding(vector: np.ndarray) -> bytes:
    """Return ``vector`` (shape (D,)) as compact little-endian float16 bytes (2*D bytes)."""
    return np.asarray(vector, dtype="<f2").tobytes()


def decode_embeddings(blobs: pd.Series | list[bytes]) -> np.ndarray:
    """Return the embeddings in ``blobs`` as a float32 array of shape (N, D).

    Raises:
        ValueError: when the blobs do not all have the same length.
    """
    items = [bytes(b) for b in blobs]
    if not items:
        return np.zeros((0, 0), dtype=np.float32)
    sizes = {len(b) for b in items}
    if len(sizes) != 1:
        raise ValueError(f"embeddings of different sizes in one batch: {sorted(s // 2 for s in sizes)} values")
    flat = np.frombuffer(b"".join(items), dtype="<f2")
    return flat.reshape(len(items), -1).astype(np.float32)
