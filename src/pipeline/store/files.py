"""Batch files that inference services ship (CSV, JSON lines, JSON, Parquet), and the landing folder they arrive in.

An edge inference service that cannot reach the store drops a file per batch into
``<landing>/<table>/``; ``ingest_landing`` loads each in its own transaction, then moves it to
``<landing>/processed/<table>/``. A crash between the commit and the move only means the file
is loaded again next time, which changes nothing (ingest is idempotent).

Text formats are judged row by row: a line that does not parse is rejected with its line number
and the good rows load. A file that cannot be read at all (a damaged Parquet file, an empty CSV
header) or whose loading fails unexpectedly is moved to ``<landing>/quarantine/<table>/`` with a
``.reason`` file beside it (and a ``.traceback`` for an unexpected failure); the other files go
on. A store that cannot be reached stops the run and leaves every file where it is.
docs/ingest.md has the rules.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import logging
import shutil
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError

from pipeline.store.schema import TABLES
from pipeline.store.validate import RowError
from pipeline.store.write import IngestResult, ingest

log = logging.getLogger(__name__)

SUFFIXES = (".csv", ".jsonl", ".json", ".parquet")
"""Batch formats, matched without regard to case (``.CSV`` is a CSV file)."""

PROCESSED, QUARANTINE = "processed", "quarantine"
IN_FLIGHT_SUFFIXES = (".tmp", ".part", ".partial")
"""Names a shipper gives a file while it still writes it; such files, and hidden ones, are left for a later run."""


class UnreadableBatch(ValueError):
    """A batch file that cannot be parsed at all (as opposed to one with bad rows)."""


@dataclass(frozen=True)
class ParsedBatch:
    """The rows of a batch file and the lines that did not become rows.

    Args:
        rows: one row per record, indexed by its 0-based record number in the file.
        errors: a reject for every record that did not parse, under the same numbering.
    """

    rows: pd.DataFrame
    errors: tuple[RowError, ...] = ()


def _suffix(path: Path) -> str:
    return path.suffix.lower()


def read_batch_file(path: Path) -> ParsedBatch:
    """Return the rows of a CSV, JSON-lines, JSON-array or Parquet batch file, and the records that did not parse.

    Text formats carry ``embedding`` as base64 of the float16 bytes; bytes that are not UTF-8
    reach validation as text it rejects (naming the row and field), never a crash.

    Raises:
        UnreadableBatch: the file's format is unknown, or the file as a whole cannot be parsed; the message
            names the file.
    """
    suffix = _suffix(path)
    try:
        if suffix == ".parquet":
            return ParsedBatch(pd.read_parquet(path))
        if suffix not in SUFFIXES:
            raise UnreadableBatch(f"{path.name}: unknown batch format {path.suffix!r} (use one of {SUFFIXES})")
        text = path.read_bytes().decode("utf-8", errors="surrogateescape").removeprefix("\ufeff")
    except UnreadableBatch:
        raise
    except (ValueError, OSError, ImportError) as exc:  # pyarrow's errors are ValueErrors or OSErrors
        raise UnreadableBatch(f"{path.name}: cannot parse as {suffix[1:]}: {_one_line(exc)}") from exc
    if suffix == ".csv":
        parsed = _read_csv(path.name, text)
    elif suffix == ".json" and text.lstrip().startswith("["):
        parsed = _read_json_array(path.name, text)
    else:
        parsed = _read_json_lines(text)
    if "embedding" in parsed.rows:
        parsed.rows["embedding"] = parsed.rows["embedding"].map(_b64, na_action="ignore")
    return parsed


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


def _frame(records: list[dict[str, object]], numbers: list[int]) -> pd.DataFrame:
    # object columns: pandas' own inference would make Arrow strings, which raise on text that was not UTF-8
    if not records:
        return pd.DataFrame()
    return pd.DataFrame(records, index=pd.Index(numbers, dtype="int64"), dtype=object)


def _reject(number: int, reason: str) -> RowError:
    return RowError(number, "<record>", reason)


def _read_json_lines(text: str) -> ParsedBatch:
    records, numbers, errors = [], [], []
    for number, line in enumerate(text.split("\n")):  # only a newline ends a record (JSON strings may hold U+2028)
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            errors.append(_reject(number, f"line {number + 1} is not valid JSON ({_one_line(exc)})"))
            continue
        if not isinstance(record, dict):
            errors.append(_reject(number, f"line {number + 1} is a JSON {type(record).__name__}, not an object"))
            continue
        records.append(record)
        numbers.append(number)
    return ParsedBatch(_frame(records, numbers), tuple(errors))


def _read_json_array(name: str, text: str) -> ParsedBatch:
    try:
        items = json.loads(text)
    except ValueError as exc:
        raise UnreadableBatch(f"{name}: cannot parse as a JSON array: {_one_line(exc)}") from exc
    records, numbers, errors = [], [], []
    for number, item in enumerate(items):
        if isinstance(item, dict):
            records.append(item)
            numbers.append(number)
        else:
            errors.append(_reject(number, f"element {number} is a JSON {type(item).__name__}, not an object"))
    return ParsedBatch(_frame(records, numbers), tuple(errors))


def _read_csv(name: str, text: str) -> ParsedBatch:
    """Parse CSV record by record: a record with the wrong number of fields (or a NUL) is rejected with its line."""
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except (StopIteration, csv.Error) as exc:
        raise UnreadableBatch(f"{name}: no CSV header line ({_one_line(exc) if str(exc) else 'empty file'})") from exc
    header = [h.strip() for h in header]
    if not any(header) or len(set(header)) != len(header):
        raise UnreadableBatch(f"{name}: the CSV header must name each column once, got {header[:20]}")
    records: list[dict[str, object]] = []
    numbers: list[int] = []
    errors: list[RowError] = []
    number = 0
    while True:
        line = reader.line_num + 1
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            errors.append(_reject(number, f"line {line} cannot be parsed as CSV ({_one_line(exc)})"))
            number += 1
            continue
        if not values or (len(values) == 1 and not values[0].strip()):
            continue  # a blank line
        if len(values) != len(header):
            errors.append(_reject(number, f"line {line} has {len(values)} fields, the header {len(header)}"))
        else:
            records.append({k: (v if v != "" else None) for k, v in zip(header, values, strict=True)})
            numbers.append(number)
        number += 1
    return ParsedBatch(_frame(records, numbers), tuple(errors))


def _b64(value: object) -> object:
    try:
        return base64.b64decode(str(value), validate=True)
    except ValueError:
        return value  # left for validation to reject with the row and field named


def ingest_file(engine: Engine, table_name: str, path: Path) -> IngestResult:
    """Load one batch file into ``table_name``; the file's name is the batch's source."""
    parsed = read_batch_file(path)
    return ingest(engine, table_name, parsed.rows, source=path.name, errors=parsed.errors, numbered=True)


@dataclass(frozen=True)
class Quarantined:
    """A landing file that could not be loaded, where it now lies, and why."""

    table: str
    name: str
    reason: str
    this_run: bool  # False: quarantined by an earlier run, still waiting for someone to look
    moved: bool = True  # False: a file named on the command line, left where it is

    def __str__(self) -> str:
        if not self.moved:
            return f"not loaded {self.name}: {self.reason}"
        when = "" if self.this_run else " (earlier run)"
        return f"quarantined {self.table}/{self.name}{when}: {self.reason}"


@dataclass
class LandingReport:
    """What one pass over the landing folder did."""

    results: list[IngestResult] = field(default_factory=list)
    quarantined: list[Quarantined] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # entries that are no batch file, each with why

    @property
    def quarantined_now(self) -> list[Quarantined]:
        return [q for q in self.quarantined if q.this_run]


class StoreUnavailable(RuntimeError):
    """The store failed in a way no file is to blame for (unreachable, out of space): the run stops."""


def ingest_landing(engine: Engine, landing: Path) -> LandingReport:
    """Load every batch file waiting under ``landing/<table>/`` and move each to ``processed/`` once loaded.

    Each file is handled on its own: a file that cannot be parsed or whose loading fails for a reason
    of its own is moved to ``landing/quarantine/<table>/`` with a ``.reason`` file beside it (and a
    ``.traceback`` for an unexpected failure), and the others go on. Folders and files that are no
    batch are reported in ``ignored``; files quarantined by earlier runs are reported again.

    Raises:
        StoreUnavailable: the store cannot be reached or refuses work for a reason no file is to blame
            for; the file being loaded and every later one stay where they are.
    """
    report = LandingReport()
    if not landing.is_dir():
        return report
    report.ignored.extend(_stray_entries(landing))
    for table_name in TABLES:
        inbox = landing / table_name
        if not inbox.is_dir():
            continue
        for path in sorted(inbox.iterdir()):
            why = _not_a_batch(path)
            if why is not None:
                if why:
                    report.ignored.append(f"{table_name}/{path.name}: {why}")
                continue
            try:
                result = ingest_file(engine, table_name, path)
            except UnreadableBatch as exc:
                report.quarantined.append(_quarantine(landing, table_name, path, str(exc)))
                continue
            except (OperationalError, InterfaceError, DisconnectionError) as exc:
                raise StoreUnavailable(
                    f"the store failed while loading {table_name}/{path.name}: {_cause(exc)}"
                ) from exc
            except Exception as exc:  # a failure this file causes (a value the database refuses): set it aside
                reason = f"{path.name}: loading failed: {type(exc).__name__}: {_cause(exc)}"
                report.quarantined.append(_quarantine(landing, table_name, path, reason, traceback.format_exc()))
                continue
            _move(path, landing / PROCESSED / table_name)
            report.results.append(result)
    quarantined_now = {(q.table, q.name) for q in report.quarantined}
    report.quarantined.extend(q for q in _quarantined_before(landing) if (q.table, q.name) not in quarantined_now)
    return report


def _cause(exc: BaseException) -> str:
    """One line about a database error without its SQL or parameters (``DBAPIError`` carries both)."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        return _one_line(exc.orig).split(" LINE ")[0]
    return _one_line(exc)


def _not_a_batch(path: Path) -> str | None:
    """Why ``path`` is not loaded: None for a batch file, "" for one silently left (in flight), else the reason."""
    if path.name.startswith(".") or _suffix(path) in IN_FLIGHT_SUFFIXES:
        return ""
    if path.is_dir():
        return "a folder inside a table's landing folder (batch files go directly in it)"
    if not path.is_file():
        return "not a regular file"
    if _suffix(path) not in SUFFIXES:
        return f"not a batch file: {path.suffix or 'no suffix'!r} is none of {', '.join(SUFFIXES)}"
    return None


def _stray_entries(landing: Path) -> list[str]:
    known = {*TABLES, PROCESSED, QUARANTINE}
    stray = []
    for entry in sorted(landing.iterdir()):
        if entry.name.startswith(".") or entry.name in known:
            continue
        kind = "folder" if entry.is_dir() else "file"
        stray.append(f"{entry.name}: a {kind} that names no table (tables: {', '.join(TABLES)})")
    return stray


def _quarantine(landing: Path, table_name: str, path: Path, reason: str, trace: str | None = None) -> Quarantined:
    folder = landing / QUARANTINE / table_name
    target = _move(path, folder)
    (folder / f"{target.name}.reason").write_text(reason.replace("\n", " ") + "\n")
    if trace is not None:
        (folder / f"{target.name}.traceback").write_text(trace)
    log.error("quarantined %s/%s: %s", table_name, target.name, reason)
    return Quarantined(table_name, target.name, reason, this_run=True)


def _quarantined_before(landing: Path) -> list[Quarantined]:
    found = []
    for table_name in TABLES:
        folder = landing / QUARANTINE / table_name
        if not folder.is_dir():
            continue
        for reason_file in sorted(folder.glob("*.reason")):
            name = reason_file.name.removesuffix(".reason")
            if (folder / name).exists():
                found.append(Quarantined(table_name, name, reason_file.read_text().strip(), this_run=False))
    return found


def _move(path: Path, folder: Path) -> Path:
    """Move ``path`` into ``folder``; a different file of the same name already there is kept (the new one is renamed)."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / path.name
    if target.exists() and _digest(target) != _digest(path):
        stem, suffix = path.name[: -len(path.suffix)] if path.suffix else path.name, path.suffix
        n = 1
        while (target := folder / f"{stem}.{n}{suffix}").exists():
            n += 1
    shutil.move(str(path), target)
    return target


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
