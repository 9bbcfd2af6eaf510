"""The store's entries: migrate the schema, load batch files of inference logs (``ingest_inference_logs``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.resources import Resources
    from pipeline.store.files import LandingReport
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
    """Load batch files (CSV, JSON lines, JSON, Parquet) into ``table``, each in its own transaction; return counts.

    A file that cannot be parsed at all is reported (``quarantined`` with its reason) and the others load;
    the file stays where it is.
    """
    from pipeline.store.files import LandingReport, Quarantined, UnreadableBatch, ingest_file

    report = LandingReport()
    for path in files:
        try:
            report.results.append(ingest_file(res.store, table, path))
        except UnreadableBatch as exc:
            report.quarantined.append(Quarantined(table, path.name, str(exc), this_run=True, moved=False))
    return _summary(report)


def ingest_landing(res: Resources, landing: Path | None = None) -> dict[str, Any]:
    """Load every batch file waiting in ``landing`` (default ``<storage root>/landing``), then move it to
    ``processed/`` (or ``quarantine/``); return counts per file and in all, the first rejects named, the files
    quarantined (this run and still waiting from earlier ones) and the entries that are no batch file."""
    from pipeline.store.files import ingest_landing as run

    res.alerts.start()  # a quarantined file is logged as an error: an event for the on-call engineer
    return _summary(run(res.store, landing or res.storage.landing))


def _summary(report: LandingReport) -> dict[str, Any]:
    results = report.results
    now = report.quarantined_now
    return {
        "files": [_file_json(r) for r in results]
        + [{"name": q.name, "table": q.table, "quarantined": True, "reason": q.reason, "summary": str(q)} for q in now],
        "written": sum(r.written for r in results),
        "amended": sum(r.amended for r in results),
        "unchanged": sum(r.unchanged for r in results),
        "rejected": sum(r.rejected for r in results),
        "quarantined": len(now),
        "quarantined_before": len(report.quarantined) - len(now),
        "waiting_in_quarantine": [str(q) for q in report.quarantined if not q.this_run],
        "unknown": list(report.ignored),
        "rejects": [str(e) for r in results for e in r.errors][:MAX_REJECTS_NAMED],
    }


def _file_json(result: IngestResult) -> dict[str, Any]:
    payload = dataclasses.asdict(result)
    payload["name"] = result.source
    payload["errors"] = [str(e) for e in result.errors][:MAX_REJECTS_NAMED]
    payload["unchanged"] = result.unchanged
    payload["quarantined"] = False
    payload["reason"] = None
    payload["summary"] = result.summary()
    return payload
