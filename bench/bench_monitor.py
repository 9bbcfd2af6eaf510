"""Benchmark: the whole monitoring run on a 1,000,000-study window, beside a plain read of the same rows.

The limit is a plain read of the window from PostgreSQL, what a notebook does first:
``pandas.read_sql`` of the window's inference logs and of its studies' DICOM tags, all columns.
The monitor run is everything ``pipeline monitor`` does: extract, the Great Expectations suites,
technical metrics, baselines, metrics and alerts written, the HTML report and Data Docs.
Runs alternate (plain, monitor, plain, ...) and the medians are compared.

It also measures where the expectations are fastest: the same suites through GX on PostgreSQL
(what the monitor does) and through GX on pandas frames read first.

    python bench/bench_monitor.py --rows 1000000 --repeats 3 --out bench/results/monitor.json
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa
from bench_store import synthetic_logs

from pipeline.logs import configure_logging
from pipeline.monitor import run_expectations, run_monitor
from pipeline.reports import write_run_report
from pipeline.store import ingest, make_engine, upgrade

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.factories import study_rows  # noqa: E402  (the same tag rows the tests use)

GX_PROJECT = ROOT / "great_expectations"
WINDOW = datetime(2026, 3, 2, tzinfo=UTC)


def window_rows(n: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return ``n`` inference-log rows over one day (3% errors) and their studies' tags (1% tag errors)."""
    # Sorted: production logs land in the store in the order they arrive.
    logs = synthetic_logs(n, 64, seed, start=WINDOW, days=1).sort_values("received_at", ignore_index=True)
    tags = study_rows(logs, seed=seed)
    rng = np.random.default_rng(seed)
    tags.loc[rng.random(n) < 0.01, "view_position"] = "LL"
    tags.loc[rng.random(n) < 0.01, "patient_age_years"] = None
    return logs, tags


def plain_read(engine: sa.Engine) -> int:
    """Read the window's logs and its studies' tags, all columns, with pandas."""
    end = WINDOW + timedelta(days=1)
    with engine.connect() as conn:
        logs = pd.read_sql_query(
            sa.text("SELECT * FROM inference_logs WHERE received_at >= :s AND received_at < :e"),
            conn,
            params={"s": WINDOW, "e": end},
        )
        tags = pd.read_sql_query(
            sa.text(
                "SELECT * FROM studies WHERE study_id IN "
                "(SELECT study_id FROM inference_logs WHERE received_at >= :s AND received_at < :e)"
            ),
            conn,
            params={"s": WINDOW, "e": end},
        )
    return len(logs) + len(tags)


def gx_on_pandas(engine: sa.Engine, work: Path) -> int:
    """Read the two views' columns into pandas, then run the same suites with GX's pandas engine."""
    from pipeline.monitor.expectations import _window_selects, gx_context

    end = WINDOW + timedelta(days=1)
    context = gx_context(GX_PROJECT, work / "gx-pandas")
    source = context.data_sources.add_pandas("frames")
    failed = 0
    for suite_name, select in _window_selects(WINDOW, end).items():
        with engine.connect() as conn:
            frame = pd.read_sql_query(select, conn)
        batch = source.add_dataframe_asset(suite_name).add_batch_definition_whole_dataframe("w")
        suite = context.suites.get(suite_name)
        # GX's pandas engine has no SQL: the two row-level SQL checks cannot run there and are skipped.
        sql_free = [copy.copy(e) for e in suite.expectations if e.expectation_type != "unexpected_rows_expectation"]
        for expectation in sql_free:
            expectation.id = None
        result = batch.get_batch(batch_parameters={"dataframe": frame}).validate(
            type(suite)(name=f"{suite_name}-pandas", expectations=sql_free),
            result_format={  # what the monitor asks of GX on PostgreSQL
                "result_format": "COMPLETE",
                "unexpected_index_column_names": ["study_id", "site"],
                "partial_unexpected_count": 5,
            },
        )
        failed += sum(not r.success for r in result.results)
    return failed


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--admin-url", default="postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--database", default="pipeline_bench_monitor")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    configure_logging()

    admin = sa.create_engine(args.admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)'))
        conn.execute(sa.text(f'CREATE DATABASE "{args.database}"'))
    url = admin.url.set(database=args.database)
    engine = make_engine(url.render_as_string(hide_password=False))
    upgrade(engine)
    print(f"generating and loading {args.rows:,} studies into one day window ...", flush=True)
    logs, tags = window_rows(args.rows)
    started = time.perf_counter()
    ingest(engine, "inference_logs", logs, source="bench")
    ingest(engine, "studies", tags, source="bench")
    del logs, tags
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM ANALYZE"))
    print(f"  loaded in {time.perf_counter() - started:.0f} s", flush=True)

    end = WINDOW + timedelta(days=1)
    times: dict[str, list[float]] = {"plain_read": [], "monitor_run": [], "gx_postgres": [], "gx_pandas": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        run_expectations(engine, WINDOW, end, project_dir=GX_PROJECT, data_dir=work / "warm")  # imports, caches
        for i in range(args.repeats):
            times["plain_read"].append(timed(lambda: plain_read(engine)))
            times["monitor_run"].append(
                timed(
                    lambda: write_run_report(
                        engine,
                        run_monitor(
                            engine,
                            WINDOW,
                            end,
                            gx_project_dir=GX_PROJECT,
                            gx_data_dir=work / "gx",
                            report_path=work / "report.html",
                        ),
                    )
                )
            )
            times["gx_postgres"].append(
                timed(lambda: run_expectations(engine, WINDOW, end, project_dir=GX_PROJECT, data_dir=work / "gx2"))
            )
            times["gx_pandas"].append(timed(lambda: gx_on_pandas(engine, work)))
            print(f"  round {i + 1}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in times.items()), flush=True)
        result = run_monitor(engine, WINDOW, end, gx_project_dir=GX_PROJECT, gx_data_dir=work / "gx")
    medians = {k: statistics.median(v) for k, v in times.items()}
    ratio = medians["monitor_run"] / medians["plain_read"]
    payload = {
        "benchmark": "monitor",
        "rows": args.rows,
        "repeats": args.repeats,
        "seconds": times,
        "median_s": medians,
        "monitor_over_plain_read": ratio,
        "limit": 3.0,
        "within_limit": ratio <= 3.0,
        "gx_pandas_over_postgres": medians["gx_pandas"] / medians["gx_postgres"],
        "expectations": len(result.quality.outcomes) if result.quality else 0,
        "failed_expectations": [o.key for o in result.quality.failed()] if result.quality else [],
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": _cpus()},
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    print(
        f"monitor run {medians['monitor_run']:.1f} s vs plain read {medians['plain_read']:.1f} s: "
        f"{ratio:.2f}x (limit 3x); GX on PostgreSQL {medians['gx_postgres']:.1f} s, "
        f"GX on pandas {medians['gx_pandas']:.1f} s (read included)"
    )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(payload, indent=2) + "\n")
    with admin.connect() as conn:
        engine.dispose()
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)'))
    return 0 if ratio <= 3.0 else 1


def _cpus() -> int:
    import os

    return os.cpu_count() or 0


if __name__ == "__main__":
    raise SystemExit(main())
