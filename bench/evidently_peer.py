"""Peer benchmark: Evidently 0.7's ``DataDriftPreset`` on a reference frame against current frames.

Runs in its own virtualenv (Evidently 0.7 needs pandas<3, the project runs pandas 3), so it
imports nothing from the project: only the standard library, pandas, pyarrow and evidently.

    make venv-evidently
    .venv-evidently/bin/python bench/evidently_peer.py --reference ref.parquet \\
        --current cur1.parquet cur2.parquet --categorical view_position,site --out peer.json
    .venv-evidently/bin/python bench/evidently_peer.py --pairs manifest.json \\
        --categorical view_position,site --out peer.json

Per current frame it records the wall seconds of ``report.run(...)`` (median over ``--repeats``
and every run), Evidently's own verdicts (dataset drift, drifted columns, per-column score and
method) and, for the whole process, the peak RSS.

With ``--pairs`` it reads a JSON manifest, a list of ``{"id", "reference", "current"}`` objects
(relative paths resolve against the manifest's folder), and records the same fields per pair plus
its ``id`` and reference. Loaded references (frame and Evidently dataset) are cached by path, the
``REFERENCE_CACHE_SIZE`` most recently used kept. A pair whose reference or current frame has
fewer than ``MIN_ROWS`` rows is recorded with a ``skipped`` reason instead of being run. The verdicts are read from the snapshot:
``DriftedColumnsCount`` (count and share, with its ``share < drift_share`` test) and one
``ValueDrift`` per column (score, resolved method and threshold, with its drift test).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import evidently
import pandas as pd
import pyarrow.parquet as pq
from evidently import DataDefinition, Dataset, Report
from evidently.presets import DataDriftPreset

EXIT_BAD_INPUT = 2
REFERENCE_CACHE_SIZE = 8  # reference frames (and their datasets) kept in memory in --pairs mode
MIN_ROWS = 2  # a pair with a smaller reference or current frame is skipped, not run
PROGRESS_EVERY = 25  # pairs between progress lines on stderr


class BadInput(Exception):
    """A named file is missing or unreadable, or a named column is absent or of the wrong type."""


@dataclass(frozen=True)
class ColumnDrift:
    """Evidently's verdict on one column: the ``ValueDrift`` score, method and threshold."""

    drifted: bool
    score: float
    method: str
    threshold: float | None


@dataclass(frozen=True)
class FrameResult:
    """One current frame against the reference: timings (s) and Evidently's verdicts."""

    file: str
    rows: int
    seconds: float
    seconds_runs: list[float]
    dataset_seconds: float
    dataset_drift: bool
    drifted_columns: list[str]
    drifted_count: int
    drift_share: float
    columns: dict[str, ColumnDrift]


@dataclass(frozen=True)
class ColumnPlan:
    """The columns to compare, split by the type declared to Evidently."""

    numerical: list[str]
    categorical: list[str]

    @property
    def all(self) -> list[str]:
        return self.numerical + self.categorical


def peak_rss_mb() -> float:
    """Return this process's peak resident set size in MiB (``ru_maxrss`` is KiB on Linux)."""
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / (1024 * 1024) if sys.platform == "darwin" else maxrss / 1024


def split_names(value: str | None) -> list[str]:
    """Return the names of a comma-separated option, without blanks."""
    return [name.strip() for name in (value or "").split(",") if name.strip()]


def parquet_columns(path: Path) -> list[str]:
    """Return the column names of a parquet file from its schema, without reading its rows."""
    if not path.is_file():
        raise BadInput(f"{path}: no such file")
    try:
        return list(pq.read_schema(path).names)
    except (OSError, ValueError) as exc:  # pyarrow raises ArrowInvalid (a ValueError) on non-parquet
        raise BadInput(f"{path}: not a readable parquet file ({exc})") from exc


def plan_columns(reference: Path, columns: list[str], categorical: list[str]) -> ColumnPlan:
    """Return the columns to compare: ``columns`` (default: all of the reference) plus ``categorical``.

    Args:
        reference: the reference parquet file.
        columns: names to compare; empty means every column of the reference.
        categorical: names declared categorical; every other compared column is numerical.
    """
    names = columns or parquet_columns(reference)
    wanted = names + [name for name in categorical if name not in names]
    numerical = [name for name in wanted if name not in categorical]
    return ColumnPlan(numerical=numerical, categorical=[name for name in wanted if name in categorical])


def check_columns(path: Path, plan: ColumnPlan) -> None:
    """Raise :class:`BadInput` naming the file and the first compared column it lacks."""
    present = set(parquet_columns(path))
    missing = [name for name in plan.all if name not in present]
    if missing:
        raise BadInput(f"{path}: column(s) {', '.join(missing)} not in the file")


def read_frame(path: Path, plan: ColumnPlan) -> pd.DataFrame:
    """Return the compared columns of a parquet file; numerical ones must have a numeric dtype."""
    frame = pd.read_parquet(path, columns=plan.all)
    for name in plan.numerical:
        if not (pd.api.types.is_numeric_dtype(frame[name]) and not pd.api.types.is_bool_dtype(frame[name])):
            raise BadInput(f"{path}: column {name} is {frame[name].dtype}, not numeric; name it in --categorical")
    return frame


def to_dataset(frame: pd.DataFrame, definition: DataDefinition) -> Dataset:
    """Return an Evidently dataset of ``frame`` with every column's type declared (nothing inferred)."""
    return Dataset.from_pandas(frame, data_definition=definition)


def read_verdicts(snapshot_dict: dict[str, Any]) -> tuple[bool, int, float, dict[str, ColumnDrift]]:
    """Return (dataset drift, drifted count, drifted share, per-column verdicts) from ``Snapshot.dict()``.

    Dataset drift is the outcome of the preset's own test on ``DriftedColumnsCount`` (it fails when
    the share of drifted columns reaches the preset's ``drift_share``, 0.5 by default); a column
    has drifted when its ``ValueDrift`` test fails.
    """
    failed = {test["metric_config"]["metric_id"]: test["status"] == "FAIL" for test in snapshot_dict["tests"]}
    dataset_drift: bool | None = None
    count, share = 0, 0.0
    columns: dict[str, ColumnDrift] = {}
    for metric in snapshot_dict["metrics"]:
        kind = metric["config"]["type"].rsplit(":", 1)[-1]
        if kind == "DriftedColumnsCount":
            count, share = int(metric["value"]["count"]), float(metric["value"]["share"])
            dataset_drift = failed[metric["id"]]
        elif kind == "ValueDrift":
            config = metric["config"]
            columns[config["column"]] = ColumnDrift(
                drifted=failed[metric["id"]],
                score=float(metric["value"]),
                method=str(config.get("method")),
                threshold=config.get("threshold"),
            )
    if dataset_drift is None:
        raise RuntimeError("the snapshot holds no DriftedColumnsCount result; is this Evidently 0.7?")
    return dataset_drift, count, share, columns


def run_frame(
    path: Path,
    reference: Dataset,
    plan: ColumnPlan,
    definition: DataDefinition,
    repeats: int,
) -> FrameResult:
    """Return the timings and verdicts of ``DataDriftPreset`` on one current frame against the reference."""
    return run_loaded_frame(path, read_frame(path, plan), reference, plan, definition, repeats)


def run_loaded_frame(
    path: Path,
    frame: pd.DataFrame,
    reference: Dataset,
    plan: ColumnPlan,
    definition: DataDefinition,
    repeats: int,
) -> FrameResult:
    """Return the timings and verdicts of ``DataDriftPreset`` on ``frame`` (read from ``path``)."""
    started = time.perf_counter()
    current = to_dataset(frame, definition)
    dataset_seconds = time.perf_counter() - started
    runs: list[float] = []
    snapshot = None
    for _ in range(repeats):
        # include_tests attaches the preset's own verdicts (dataset drift, per-column drift).
        report = Report([DataDriftPreset(columns=plan.all)], include_tests=True)
        started = time.perf_counter()
        snapshot = report.run(current, reference)
        runs.append(time.perf_counter() - started)
    assert snapshot is not None
    dataset_drift, count, share, columns = read_verdicts(snapshot.dict())
    drifted = [name for name, column in columns.items() if column.drifted]
    if len(drifted) != count:
        print(
            f"warning: {path}: DriftedColumnsCount says {count} drifted, the ValueDrift tests {len(drifted)}",
            file=sys.stderr,
        )
    return FrameResult(
        file=str(path),
        rows=len(frame),
        seconds=statistics.median(runs),
        seconds_runs=runs,
        dataset_seconds=dataset_seconds,
        dataset_drift=dataset_drift,
        drifted_columns=drifted,
        drifted_count=count,
        drift_share=share,
        columns=columns,
    )


def data_definition(plan: ColumnPlan) -> DataDefinition:
    """Return the Evidently data definition declaring every compared column's type."""
    return DataDefinition(
        numerical_columns=plan.numerical,
        categorical_columns=plan.categorical,
        text_columns=[],
        datetime_columns=[],
        unknown_columns=[],
        list_columns=[],
    )


def run(reference_path: Path, current_paths: list[Path], plan: ColumnPlan, repeats: int) -> dict[str, Any]:
    """Return the benchmark's JSON document: versions, reference rows, one entry per frame, peak RSS."""
    for path in [reference_path, *current_paths]:
        check_columns(path, plan)
    definition = data_definition(plan)
    reference_frame = read_frame(reference_path, plan)
    reference = to_dataset(reference_frame, definition)
    frames: list[FrameResult] = []
    for index, path in enumerate(current_paths, start=1):
        result = run_frame(path, reference, plan, definition, repeats)
        frames.append(result)
        print(
            f"frame {index}/{len(current_paths)}: {result.seconds:.2f} s, {len(result.drifted_columns)} drifted",
            file=sys.stderr,
        )
    return {
        "evidently_version": evidently.__version__,
        "pandas_version": pd.__version__,
        "python_version": platform.python_version(),
        "reference": str(reference_path),
        "reference_rows": len(reference_frame),
        "numerical_columns": plan.numerical,
        "categorical_columns": plan.categorical,
        "repeats": repeats,
        "drift_share_threshold": DataDriftPreset().drift_share,
        "frames": [asdict(frame) for frame in frames],
        "peak_rss_mb": peak_rss_mb(),
    }


@dataclass(frozen=True)
class Pair:
    """One manifest entry: a current frame to compare against a reference frame."""

    id: str
    reference: Path
    current: Path


@dataclass(frozen=True)
class LoadedReference:
    """A reference frame's row count and its Evidently dataset (None when too small to run)."""

    rows: int
    dataset: Dataset | None


def read_manifest(path: Path) -> list[Pair]:
    """Return the pairs of a JSON manifest; relative paths resolve against the manifest's folder."""
    if not path.is_file():
        raise BadInput(f"{path}: no such file")
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BadInput(f"{path}: not a readable JSON file ({exc})") from exc
    if not isinstance(entries, list) or not entries:
        raise BadInput(f"{path}: the manifest must be a non-empty JSON list of pairs")
    pairs: list[Pair] = []
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        fields = ("id", "reference", "current")
        if not isinstance(entry, dict) or not all(isinstance(entry.get(key), str) and entry[key] for key in fields):
            raise BadInput(f"{path}: entry {index} is not an object with string id, reference and current")
        if entry["id"] in seen:
            raise BadInput(f"{path}: entry {index} repeats the id {entry['id']!r}")
        seen.add(entry["id"])
        reference, current = (path.parent / entry[key] for key in ("reference", "current"))
        pairs.append(Pair(id=entry["id"], reference=reference, current=current))
    return pairs


def skip_reason(reference_rows: int, current_rows: int) -> str | None:
    """Return why a pair is not run (a frame under ``MIN_ROWS`` rows), or None to run it."""
    small = [
        f"{name} frame has {rows} row(s)"
        for name, rows in (("reference", reference_rows), ("current", current_rows))
        if rows < MIN_ROWS
    ]
    return f"{'; '.join(small)}, fewer than {MIN_ROWS}" if small else None


def run_pairs(manifest: Path, pairs: list[Pair], plan: ColumnPlan, repeats: int) -> dict[str, Any]:
    """Return the ``--pairs`` JSON document: versions, one entry per pair (run or skipped), peak RSS."""
    for path in dict.fromkeys(path for pair in pairs for path in (pair.reference, pair.current)):
        check_columns(path, plan)
    definition = data_definition(plan)
    cache: OrderedDict[Path, LoadedReference] = OrderedDict()

    def load_reference(path: Path) -> LoadedReference:
        if path in cache:
            cache.move_to_end(path)
            return cache[path]
        frame = read_frame(path, plan)
        loaded = LoadedReference(len(frame), to_dataset(frame, definition) if len(frame) >= MIN_ROWS else None)
        cache[path] = loaded
        if len(cache) > REFERENCE_CACHE_SIZE:
            cache.popitem(last=False)
        return loaded

    results: list[dict[str, Any]] = []
    seconds: list[float] = []
    for index, pair in enumerate(pairs, start=1):
        reference = load_reference(pair.reference)
        frame = read_frame(pair.current, plan)
        reason = skip_reason(reference.rows, len(frame))
        entry: dict[str, Any] = {"id": pair.id, "reference": str(pair.reference), "reference_rows": reference.rows}
        if reason is not None or reference.dataset is None:
            entry |= {"file": str(pair.current), "rows": len(frame), "skipped": reason}
        else:
            result = run_loaded_frame(pair.current, frame, reference.dataset, plan, definition, repeats)
            seconds.append(result.seconds)
            entry |= asdict(result)
        results.append(entry)
        if index % PROGRESS_EVERY == 0 or index == len(pairs):
            so_far = f"{statistics.median(seconds):.2f} s median so far" if seconds else "none run so far"
            print(f"pair {index}/{len(pairs)}: {so_far}", file=sys.stderr)
    return {
        "evidently_version": evidently.__version__,
        "pandas_version": pd.__version__,
        "python_version": platform.python_version(),
        "manifest": str(manifest),
        "numerical_columns": plan.numerical,
        "categorical_columns": plan.categorical,
        "repeats": repeats,
        "drift_share_threshold": DataDriftPreset().drift_share,
        "pairs": results,
        "skipped_count": sum("skipped" in entry for entry in results),
        "peak_rss_mb": peak_rss_mb(),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Return the command line's options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", type=Path, help="reference parquet file (with --current)")
    parser.add_argument("--current", type=Path, nargs="+", help="current parquet file(s) (with --reference)")
    parser.add_argument(
        "--pairs",
        type=Path,
        metavar="MANIFEST",
        help='JSON list of {"id", "reference", "current"} pairs (instead of --reference/--current)',
    )
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--columns", help="comma-separated columns to compare (default: all of the reference)")
    parser.add_argument("--categorical", help="comma-separated columns declared categorical (the rest numerical)")
    parser.add_argument("--repeats", type=int, default=1, help="report.run calls per frame (median reported)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be 1 or more")
    if args.pairs is not None and (args.reference is not None or args.current is not None):
        parser.error("--pairs cannot be combined with --reference/--current")
    if args.pairs is None and (args.reference is None or args.current is None):
        parser.error("give --reference and --current, or --pairs")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write its JSON; return the exit code (2 on a bad file, manifest or column)."""
    args = parse_args(argv)
    try:
        columns, categorical = split_names(args.columns), split_names(args.categorical)
        if args.pairs is not None:
            pairs = read_manifest(args.pairs)
            plan = plan_columns(pairs[0].reference, columns, categorical)
            document = run_pairs(args.pairs, pairs, plan, args.repeats)
        else:
            plan = plan_columns(args.reference, columns, categorical)
            document = run(args.reference, args.current, plan, args.repeats)
    except BadInput as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
