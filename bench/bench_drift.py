"""Benchmark: our drift checks beside Evidently's DataDriftPreset, on speed and on the shipped scenarios.

1. **Speed** (``--rows``): a window of a million studies against a reference of a million (14
   reference days, two sites), the product's 22 monitored columns (14 numeric, 8 categorical).
   Ours: ``pipeline.monitor.drift.check_drift`` (per site and overall, thresholds calibrated on the
   reference days, tests, CUSUM, prevalence and label-free performance). Evidently: its
   ``DataDriftPreset`` on the same frames, in its own venv (``make venv-evidently``). Each run is a
   fresh process: its peak resident memory is the figure, medians over ``--repeats``.
2. **Scenarios** (``--scenarios``): every shipped scenario's 60 days at 200 studies per site per
   day (``tests/worlds.py``), monitored day by day by the product; the same daily windows (each site's
   day against its reference days) through Evidently's preset. Detection delays and false alarms of
   both, and the label-free AUROC estimate against the simulator's truth per scenario and site.

    python bench/bench_drift.py --rows 1000000 --repeats 3 --scenarios --out bench/results/drift.json
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.monitor.drift import CATEGORICAL_FEATURES, NUMERIC_FEATURES, DriftThresholds, check_drift  # noqa: E402

EVIDENTLY = ROOT / ".venv-evidently" / "bin" / "python"
PEER = ROOT / "bench" / "evidently_peer.py"
REFERENCE_DAYS = 14


def synthetic(rows: int, *, seed: int, day: int) -> pd.DataFrame:
    """Return ``rows`` studies shaped like the product's (two sites); ``day`` 0 is the window (slightly brighter)."""
    rng = np.random.default_rng(seed)
    y = rng.random(rows) < 0.25
    score = rng.normal(np.where(y, 1.2, -1.2), 1.0)
    prob = 1.0 / (1.0 + np.exp(-(2.4 * score - 1.1)))
    frame = pd.DataFrame(
        {
            "study_id": np.char.add(f"s{seed}-", np.arange(rows).astype(str)),
            "site": np.where(rng.random(rows) < 0.5, "st-anna", "lakeside"),
            "threshold": 0.1,
            "kvp": rng.choice([110.0, 120.0, 125.0], rows),
            "exposure_mas": rng.gamma(8.0, 0.25, rows),
            "pixel_spacing_mm": rng.choice([0.139, 0.148, 0.15], rows),
            "patient_age_years": np.clip(rng.normal(57, 16, rows), 0, 100),
            "bits_stored": rng.choice([10.0, 12.0, 14.0], rows),
            "img_mean": rng.normal(0.45 + (0.01 if day == 0 else 0.0), 0.03, rows),
            "img_std": rng.normal(0.2, 0.02, rows),
            "img_p01": rng.normal(0.05, 0.01, rows),
            "img_p50": rng.normal(0.45, 0.04, rows),
            "img_p99": rng.normal(0.9, 0.02, rows),
            "img_clipped_frac": rng.beta(1, 200, rows),
            "prob_abnormal": prob,
            "entropy": -(prob * np.log(prob + 1e-12) + (1 - prob) * np.log(1 - prob + 1e-12)),
            "epistemic_var": rng.gamma(2.0, 0.001, rows),
        }
    )
    for column, levels in {
        "modality": ["DX", "CR"],
        "manufacturer": ["Agfa", "Fujifilm", "Siemens", "Philips"],
        "model_name": ["DX-D 600", "FCR Capsula", "Ysio Max", "DigitalDiagnost C90"],
        "view_position": ["PA", "AP", "LL"],
        "body_part": ["CHEST"],
        "photometric": ["MONOCHROME1", "MONOCHROME2"],
        "patient_sex": ["F", "M"],
    }.items():
        frame[column] = pd.Categorical(rng.choice(levels, rows), categories=levels)
    frame["decision"] = pd.Categorical(np.where(prob >= 0.1, "abnormal", "normal"))
    return frame


def speed_frames(rows: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Return the reference (``rows`` over 14 days) and the window (``rows``) in one frame, and each row's day."""
    per_day = rows // REFERENCE_DAYS
    parts = [synthetic(per_day, seed=d, day=-d) for d in range(REFERENCE_DAYS, 0, -1)]
    parts.append(synthetic(rows, seed=100, day=0))
    days = np.concatenate([np.full(len(p), -d) for p, d in zip(parts, [*range(REFERENCE_DAYS, 0, -1), 0], strict=True)])
    return pd.concat(parts, ignore_index=True), days


def _ours_once(rows: int) -> None:
    """Child process: build the frames, time one ``check_drift``, print the seconds and the peak RSS."""
    frame, days = speed_frames(rows)
    started = time.perf_counter()
    result = check_drift(frame, day=days, reference=days < 0, config=DriftThresholds(gap_days=0))
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    drifted = {s: [f.feature for f in d.drifted()] for s, d in result.sites.items()}
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak, "drifted": drifted}))


def speed(rows: int, repeats: int, work: Path) -> dict[str, object]:
    ours = []
    for k in range(repeats):
        out = subprocess.run(
            [sys.executable, __file__, "--child-ours", str(rows)], check=True, capture_output=True, text=True
        )
        ours.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"ours {k + 1}/{repeats}: {ours[-1]['seconds']:.2f} s, {ours[-1]['peak_rss_mb']:.0f} MB", flush=True)
    result: dict[str, object] = {
        "rows": {"reference": rows // REFERENCE_DAYS * REFERENCE_DAYS, "window": rows},
        "columns": {"numeric": len(NUMERIC_FEATURES), "categorical": len(CATEGORICAL_FEATURES)},
        "ours": {
            "seconds_median": statistics.median(r["seconds"] for r in ours),
            "seconds_runs": [r["seconds"] for r in ours],
            "peak_rss_mb": max(r["peak_rss_mb"] for r in ours),
            "drifted": ours[0]["drifted"],
        },
    }
    if not EVIDENTLY.exists():
        result["evidently"] = "not run: build its venv with `make venv-evidently`"
        return result
    frame, days = speed_frames(rows)
    columns = [*NUMERIC_FEATURES, *CATEGORICAL_FEATURES]
    for c in CATEGORICAL_FEATURES:
        frame[c] = frame[c].astype(str)
    frame.loc[days < 0, columns].to_parquet(work / "reference.parquet")
    frame.loc[days == 0, columns].to_parquet(work / "current.parquet")
    del frame
    out = work / "evidently.json"
    subprocess.run(
        [
            str(EVIDENTLY),
            str(PEER),
            "--reference",
            str(work / "reference.parquet"),
            "--current",
            str(work / "current.parquet"),
            "--categorical",
            ",".join(CATEGORICAL_FEATURES),
            "--columns",
            ",".join(columns),
            "--repeats",
            str(repeats),
            "--out",
            str(out),
        ],
        check=True,
    )
    peer = json.loads(out.read_text())
    frame_result = peer["frames"][0]
    result["evidently"] = {
        "version": peer["evidently_version"],
        "seconds_median": frame_result["seconds"],
        "seconds_runs": frame_result["seconds_runs"],
        "peak_rss_mb": peer["peak_rss_mb"],
        "drifted": frame_result["drifted_columns"],
    }
    ours_median = result["ours"]["seconds_median"]  # type: ignore[index]
    result["speedup"] = frame_result["seconds"] / ours_median
    return result


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--child-ours":
        _ours_once(int(sys.argv[2]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scenarios", action="store_true", help="also run every shipped scenario (about an hour)")
    parser.add_argument("--db-prefix", default="bench_drift_", help="databases of the scenario worlds (kept)")
    parser.add_argument("--rebuild", action="store_true", help="simulate the scenario worlds again")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--only", default=None, help="comma-separated scenarios to run (default: all)")
    parser.add_argument(
        "--evidently-on", default=None, help="comma-separated scenarios to run Evidently on (default: all)"
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    results: dict[str, object] = {"machine": {"cpus": _cpus(), "python": platform.python_version()}}
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_speed:
            results["speed"] = speed(args.rows, args.repeats, Path(tmp))
        if args.scenarios:
            from bench_drift_scenarios import scenarios

            chosen = True if args.evidently_on is None else args.evidently_on.split(",")
            progress = None if args.out is None else args.out.with_suffix(".partial.jsonl")
            results["scenarios"] = scenarios(
                Path(tmp),
                prefix=args.db_prefix,
                rebuild=args.rebuild,
                evidently=chosen,
                progress_file=progress,
                only=None if args.only is None else args.only.split(","),
            )
    text = json.dumps(results, indent=2, default=str)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    sys.exit(main())
