"""Hostile input, counted: DICOM files and landing batches the project never made, whole and damaged.

    python bench/bench_hostile.py --out bench/results/hostile.json

- **DICOM**: every file of pydicom's test data (the bundled set and pydicom-data's vendors' files), then damaged
  copies of each (cut at 10/50/90% and right after the header, 16 bytes flipped, 256 bytes zeroed, seeded) read by
  :func:`pipeline.dicom.load_study`. Counted: accepted, rejected per error type and per reason, crashes (any
  exception other than the reader's own errors) and messages that are not one line.
- **Landing**: a landing folder of batch files in every format, each row good or damaged at random (wrong types,
  out-of-range numbers, NUL bytes, undecodable bytes, broken lines, ids that are file names), plus files cut
  short, loaded by :func:`pipeline.store.files.ingest_landing` into a scratch PostgreSQL database; then the same
  folder again. Counted: good rows lost, bad rows written, crashes, files quarantined, and what the second pass
  changed.
- **Whole studies**: day batches of tags and inference rows (``ingest_batch``) with random damage in either;
  counted: studies with some rows written and others not.
"""

from __future__ import annotations

import argparse
import base64
import collections
import json
import os
import platform
import random
import re
import sys
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from pydicom.data import get_testdata_files

from pipeline.dicom import DicomError, load_study
from pipeline.store import ingest_batch, make_engine, upgrade
from pipeline.store.files import ingest_landing

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.harness.postgres import create_database, drop_database  # noqa: E402

ADMIN_URL = os.environ.get("PIPELINE_BENCH_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
KEY = "bench-hostile-key"


def damaged_copies(data: bytes, rng: random.Random) -> list[tuple[str, bytes]]:
    """Seeded damage of one file: cuts, flipped bytes, a zeroed range."""
    copies = [(f"cut{int(share * 100)}", data[: int(len(data) * share)]) for share in (0.1, 0.5, 0.9)]
    copies.append(("header-only", data[:132] + data[132 : min(len(data), 400)]))
    flipped = bytearray(data)
    for _ in range(16):
        if flipped:
            flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
    copies.append(("flipped", bytes(flipped)))
    zeroed = bytearray(data)
    start = rng.randrange(max(len(zeroed) - 256, 1))
    zeroed[start : start + 256] = bytes(len(zeroed[start : start + 256]))
    copies.append(("zeroed", bytes(zeroed)))
    return copies


def run_dicom(seed: int, work: Path) -> dict[str, object]:
    rng = random.Random(seed)
    outcomes: collections.Counter[str] = collections.Counter()
    reasons: collections.Counter[str] = collections.Counter()
    crashes: list[str] = []
    multiline: list[str] = []
    files = sorted(p for p in set(get_testdata_files("**/*")) if Path(p).is_file())
    originals = damaged = 0

    def read(name: str, path: Path, kind: str) -> None:
        try:
            load_study(path, KEY)
        except DicomError as exc:
            outcomes[f"{kind}: rejected {exc.error_type}"] += 1
            reasons[_reason_words(str(exc))] += 1
            if "\n" in str(exc) or not str(exc).strip():
                multiline.append(name)
        except Exception as exc:  # a crash: what the run exists to count
            crashes.append(f"{name}: {type(exc).__name__}: {exc}")
        else:
            outcomes[f"{kind}: accepted"] += 1

    for source in files:
        data = Path(source).read_bytes()
        originals += 1
        read(Path(source).name, Path(source), "original")
        for label, copy in damaged_copies(data, rng):
            damaged += 1
            target = work / f"{Path(source).stem}.{label}.dcm"
            target.write_bytes(copy)
            read(target.name, target, "damaged")
    return {
        "files": originals,
        "damaged_copies": damaged,
        "outcomes": dict(sorted(outcomes.items())),
        "reasons": dict(reasons.most_common()),
        "crashes": len(crashes),
        "crash_examples": crashes[:10],
        "messages_not_one_line": len(multiline),
    }


def _reason_words(message: str) -> str:
    """The kind of a reader's reason: its words before any detail in parentheses, without quoted values."""
    text = message.split(": ", 1)[-1].split(" (", 1)[0]
    return " ".join(re.sub(r"'[^']*'", "", text).split())


# --- landing ---------------------------------------------------------------------------------------------------
def _good_row(i: int, rng: random.Random) -> dict[str, object]:
    prob = rng.random()
    received = datetime(2026, 1, 5, 8, tzinfo=UTC).timestamp() + i
    return {
        "study_id": uuid.UUID(int=rng.getrandbits(128)).hex,
        "model_version": "1",
        "site": rng.choice(["st-anna", "north-general", "riverside"]),
        "received_at": datetime.fromtimestamp(received, UTC).isoformat(),
        "finished_at": datetime.fromtimestamp(received + 0.5, UTC).isoformat(),
        "status": "ok",
        "latency_s": 0.5,
        "prob_abnormal": prob,
        "threshold": 0.2,
        "decision": "normal" if prob < 0.2 else "abnormal",
        "entropy": 0.3,
        "epistemic_var": 0.01,
        "embedding": base64.b64encode(bytes(rng.getrandbits(8) for _ in range(32))).decode(),
    }


DAMAGES = (
    ("prob_abnormal", 9.5),
    ("prob_abnormal", "high"),
    ("threshold", 10**40),
    ("status", "melted"),
    ("study_id", "IM0001.dcm"),
    ("site", "x" * 80),
    ("model_version", "v\x00"),
    ("site", "caf\udce9"),  # bytes that were not UTF-8
    ("received_at", "2026-13-45T99:00"),
    ("received_at", 1767225600),
    ("latency_s", [1, 2]),
    ("embedding", "not base64!"),
)


def _write_batch(path: Path, rows: list[dict[str, object]], fmt: str, noise: list[str]) -> None:
    if fmt == "csv":
        columns = list(rows[0])
        lines = [",".join(columns)]
        for row in rows:
            lines.append(",".join(json.dumps(row[c]) if isinstance(row[c], list) else str(row[c]) for c in columns))
        lines[1:1] = noise
        path.write_bytes("\n".join(lines).encode("utf-8", errors="surrogateescape") + b"\n")
    elif fmt == "json":
        path.write_bytes(json.dumps(rows).encode("utf-8", errors="surrogateescape"))
    else:
        lines = [json.dumps(row, ensure_ascii=False) for row in rows] + noise
        path.write_bytes("\n".join(lines).encode("utf-8", errors="surrogateescape") + b"\n")


def run_landing(seed: int, files: int, url: str, work: Path) -> dict[str, object]:
    rng = random.Random(seed)
    engine = make_engine(url)
    upgrade(engine)
    landing = work / "landing"
    inbox = landing / "inference_logs"
    inbox.mkdir(parents=True)
    good_ids: set[str] = set()
    bad_ids: set[str] = set()
    noise_lines = 0
    serial = 0
    for n in range(files):
        fmt = rng.choice(["csv", "jsonl", "json"])
        rows = []
        for _ in range(rng.randint(1, 60)):
            row = _good_row(serial, rng)
            serial += 1
            if rng.random() < 0.3:
                column, value = rng.choice(DAMAGES)
                if column == "study_id":
                    bad_ids.add(str(row["study_id"]))
                row[column] = value
                bad_ids.add(str(row["study_id"]))
            else:
                good_ids.add(str(row["study_id"]))
            rows.append(row)
        noise = [rng.choice(['{"study_id": ', "garbage", "1,2,3", "[]"]) for _ in range(rng.randint(0, 2))]
        noise_lines += len(noise)
        _write_batch(inbox / f"edge-{n:03d}.{fmt}", rows, fmt, noise)
    for n, whole in enumerate(sorted(inbox.iterdir())[:3]):  # uploads cut short, and a file of no known format
        (inbox / f"cut-{n}.parquet").write_bytes(b"PAR1" + whole.read_bytes()[:100])
    (inbox / "notes.txt").write_text("not a batch")
    crashes: list[str] = []
    try:
        first = ingest_landing(engine, landing)
    except Exception as exc:
        crashes.append(f"{type(exc).__name__}: {exc}")
        first = None
    with engine.connect() as conn:
        stored = {s for (s,) in conn.execute(sa.text("SELECT study_id FROM inference_logs"))}
        rows_after_first = len(stored)
        rejects_after_first = conn.execute(sa.text("SELECT count(*) FROM ingest_rejects")).scalar_one()
    for processed in (landing / "processed" / "inference_logs").glob("*"):  # every file delivered again
        processed.rename(inbox / processed.name)
    second = ingest_landing(engine, landing)
    with engine.connect() as conn:
        rows_after_second = conn.execute(sa.text("SELECT count(*) FROM inference_logs")).scalar_one()
        rejects_after_second = conn.execute(sa.text("SELECT count(*) FROM ingest_rejects")).scalar_one()
    engine.dispose()
    return {
        "files": files + 4,
        "good_rows": len(good_ids),
        "damaged_rows": len(bad_ids),
        "noise_lines": noise_lines,
        "good_rows_lost": len(good_ids - stored),
        "damaged_rows_written": len(bad_ids & stored),
        "crashes": len(crashes),
        "crash_examples": crashes,
        "quarantined": 0 if first is None else len(first.quarantined_now),
        "quarantine_reasons": [] if first is None else sorted({q.reason for q in first.quarantined_now})[:10],
        "ignored": 0 if first is None else len(first.ignored),
        "rejected_rows": None if first is None else sum(r.rejected for r in first.results),
        "second_pass_rows_written": rows_after_second - rows_after_first,
        "second_pass_rejects_recorded": rejects_after_second - rejects_after_first,
        "second_pass_reports_quarantine": len(second.quarantined),
    }


def run_whole_studies(seed: int, days: int, url: str) -> dict[str, object]:
    import pandas as pd

    rng = random.Random(seed)
    engine = make_engine(url)
    upgrade(engine)
    for day in range(days):
        logs, tags = [], []
        for i in range(rng.randint(20, 80)):
            row = _good_row(i, rng)
            row["embedding"] = base64.b64decode(str(row["embedding"]))
            tag = {
                "study_id": row["study_id"],
                "site": row["site"],
                "acquired_at": row["received_at"],
                "dicom_uri": f"dicom/{row['study_id']}.dcm",
                "manufacturer": "Agfa",
                "rows": 2048,
            }
            if rng.random() < 0.15:
                column, value = rng.choice((("manufacturer", "Agfa\x00"), ("rows", 2**40), ("site", "")))
                tag[column] = value
            if rng.random() < 0.15:
                column, value = rng.choice(DAMAGES[:4])
                row[column] = value
            logs.append(row)
            tags.append(tag)
        ingest_batch(engine, {"studies": pd.DataFrame(tags), "inference_logs": pd.DataFrame(logs)}, f"day-{day}")
    with engine.connect() as conn:
        tagged = {s for (s,) in conn.execute(sa.text("SELECT study_id FROM studies"))}
        logged = {s for (s,) in conn.execute(sa.text("SELECT study_id FROM inference_logs"))}
    engine.dispose()
    return {"days": days, "studies_written": len(tagged & logged), "half_written": len(tagged ^ logged)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=22)
    parser.add_argument("--landing-files", type=int, default=60)
    parser.add_argument("--days", type=int, default=20)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "hostile.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "dicom").mkdir()
        dicom = run_dicom(args.seed, work / "dicom")
        print(f"DICOM: {dicom['files']} files, {dicom['damaged_copies']} damaged copies, {dicom['crashes']} crashes")
        urls = [create_database(ADMIN_URL, prefix="bench_hostile_") for _ in range(2)]
        try:
            landing = run_landing(args.seed, args.landing_files, urls[0], work)
            whole = run_whole_studies(args.seed, args.days, urls[1])
        finally:
            for url in urls:
                drop_database(ADMIN_URL, url)
    print(f"landing: {landing['good_rows']} good rows, {landing['good_rows_lost']} lost, {landing['crashes']} crashes")
    print(f"whole studies: {whole['studies_written']} written, {whole['half_written']} half-written")
    result = {
        "benchmark": "hostile",
        "seed": args.seed,
        "dicom": dicom,
        "landing": landing,
        "whole_studies": whole,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
