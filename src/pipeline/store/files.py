"""Batch files that inference services ship (CSV, JSON lines, Parquet), and the landing folder they arrive in.

An edge inference service that cannot reach the store drops a file per batch into
``<landing>/<table>/``; ``ingest_landing`` loads each in its own transaction, then moves it to
``<landing>/processed/<table>/``. A crash between the commit and the move only means the file
is loaded again next time, which changes nothing (ingest is idempotent).
"""

from __future__ import annotations

import base64
import logging
import shutil
from pathlib import Path

import pandas as pd
from sqlalchemy.engine import Engine

from pipeline.store.schema import TABLES
from pipeline.store.write import IngestResult, ingest

log = logging.getLogger(__name__)

SUFFIXES = (".csv", ".jsonl", ".parquet")


class UnreadableBatch(ValueError):
    """A batch file that cannot be parsed at all (as opposed to one with bad rows)."""


def read_batch_file(path: Path) -> pd.DataFrame:
    """Return the rows of a CSV, JSON-lines or Parquet batch file.

    Text formats carry ``embedding`` as base64 of the float16 bytes.

    Raises:
        UnreadableBatch: the file's format is unknown or it does not parse; the message names the file.
    """
    try:
        if path.suffix == ".csv":
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
        elif path.suffix == ".jsonl":
            frame = pd.read_json(path, lines=True, dtype=False)
        elif path.suffix == ".parquet":
            return pd.read_parquet(path)
        else:
            raise UnreadableBatch(f"{path.name}: unknown batch format {path.suffix!r} (use one of {SUFFIXES})")
    except (ValueError, OSError) as exc:
        if isinstance(exc, UnreadableBatch):
            raise
        raise UnreadableBatch(f"{path.name}: cannot parse as {path.suffix[1:]}: {exc}") from exc
    if "embedding" in frame:
        frame["embedding"] = frame["embedding"].map(_b64, na_action="ignore")
    return frame


def _b64(value: object) -> object:
    try:
        return base64.b64decode(str(value), validate=True)
    except ValueError:
        return value  # left for validation to reject with the row and field named


def ingest_file(engine: Engine, table_name: str, path: Path) -> IngestResult:
    """Load one batch file into ``table_name``; the file's name is the batch's source."""
    return ingest(engine, table_name, read_batch_file(path), source=path.name)


def ingest_landing(engine: Engine, landing: Path) -> list[IngestResult]:
    """Load every batch file waiting under ``landing/<table>/`` and move each to ``processed/`` once loaded.

    A file that cannot be parsed is moved to ``landing/quarantine/<table>/`` with a ``.reason`` file
    beside it, and the others go on.
    """
    results = []
    for table_name in TABLES:
        inbox = landing / table_name
        for path in sorted(p for p in inbox.glob("*") if p.suffix in SUFFIXES):
            try:
                result = ingest_file(engine, table_name, path)
            except UnreadableBatch as exc:
                _move(path, landing / "quarantine" / table_name)
                (landing / "quarantine" / table_name / f"{path.name}.reason").write_text(f"{exc}\n")
                log.error("quarantined %s", exc)
                continue
            _move(path, landing / "processed" / table_name)
            results.append(result)
    return results


def _move(path: Path, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.move(str(path), folder / path.name)
