"""The store's entries: migrate the schema, load batch files of inference logs (``ingest_inference_logs``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.resources import Resources
    from pipeline.store.write import IngestResult

#: Rejected rows a summary names at most (the rest are counted, and kept in ``ingest_rejects``).
MAX_REJECTS_NAMED = 100


def migrate(res: Resources, revision: str = "head") -> str | None:
    """Migrate the store to ``revision`` (safe to run again); return the revision it is at."""
    from pipeline.store import current_revision, upgrade

    upgrade(res.store, revision)
    return current_revision(res.store)


def revision(res: Resources) -> str | None:
    """The store's schema revision (None for a new database)."""
    from pipeline.store import current_revision

    return current_revision(res.store)


def ingest_files(res: Resources, table: str, files: Sequence[Path]) -> dict[str, Any]:
    """Load batch files (CSV, JSON lines, Parquet) into ``table``, each in its own transaction; return counts."""
    from pipeline.store.files import ingest_file

    return _summary([ingest_file(res.store, table, path) for path in files])


def ingest_landing(res: Resources, landing: Path | None = None) -> dict[str, Any]:
    """Load every batch file waiting in ``landing`` (default ``<storage root>/landing``), then move it to
    ``processed/`` (or ``quarantine/``); return counts per file and in all, and the first rejects named."""
    from pipeline.store.files import ingest_landing as run

    return _summary(run(res.store, landing or res.storage.landing))


def _summary(results: Sequence[IngestResult]) -> dict[str, Any]:
    return {
        "files": [_file_json(r) for r in results],
        "written": sum(r.written for r in results),
        "unchanged": sum(r.unchanged for r in results),
        "rejected": sum(r.rejected for r in results),
        "rejects": [str(e) for r in results for e in r.errors][:MAX_REJECTS_NAMED],
    }


def _file_json(result: IngestResult) -> dict[str, Any]:
    payload = dataclasses.asdict(result)
    payload["errors"] = [str(e) for e in result.errors]
    payload["unchanged"] = result.unchanged
    payload["summary"] = result.summary()
    return payload
