"""Benchmark: bulk-load and read back inference-log rows on PostgreSQL, beside plain COPY.

The limit is PostgreSQL's own ``COPY`` of the same rows, already serialized as CSV, into and
out of the same table with the same indexes. Ours includes everything a caller pays for:
validation, serialization, the idempotent write, and parsing into a typed frame.

    python bench/bench_store.py --rows 1000000 --repeats 3 --out bench/results/store.json
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa

from pipeline.store import encode_embedding, ingest, make_engine, read_window, upgrade
from pipeline.store.write import to_copy_csv


def synthetic_logs(
    n: int, embedding_dim: int, seed: int = 0, *, start: datetime | None = None, days: int = 30
) -> pd.DataFrame:
    """Return ``n`` realistic inference-log rows over ``days`` from ``start``: 3% errors, 10 sites, one model version."""
    rng = np.random.default_rng(seed)
    t0 = start or datetime(2026, 1, 1, tzinfo=UTC)
    received = pd.Series(pd.to_datetime(t0) + pd.to_timedelta(rng.integers(0, days * 86400, n), unit="s"))
    failed = rng.random(n) < 0.03
    prob = rng.beta(1.2, 4.0, n)
    frame = pd.DataFrame(
        {
            "study_id": [f"{i:032x}" for i in rng.permutation(n)],
            "model_version": "3",
            "site": rng.choice([f"site-{k:02d}" for k in range(10)], n),
            "received_at": received,
            "finished_at": received + pd.to_timedelta(rng.gamma(2.0, 0.2, n), unit="s"),
            "status": np.where(failed, "error", "ok"),
            "error_type": np.where(failed, "timeout", None),
            "error_detail": None,
            "latency_s": rng.gamma(2.0, 0.2, n),
            "prob_abnormal": np.where(failed, np.nan, prob),
            "threshold": 0.2,
            "decision": np.where(failed, None, np.where(prob < 0.2, "normal", "abnormal")),
            "entropy": np.where(failed, np.nan, -(prob * np.log(prob) + (1 - prob) * np.log1p(-prob))),
            "epistemic_var": np.where(failed, np.nan, rng.gamma(1.0, 0.01, n)),
        }
    )
    vectors = rng.normal(size=(n, embedding_dim)).astype(np.float16)
    frame["embedding"] = [encode_embedding(v) if not f else None for v, f in zip(vectors, failed, strict=True)]
    return frame


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--embedding-dim", type=int, default=64)
    parser.add_argument("--admin-url", default="postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--out", type=Path, default=Path("bench/results/store.json"))
    args = parser.parse_args(argv)

    admin = make_engine(args.admin_url, isolation_level="AUTOCOMMIT")
    db_name = "pipeline_bench_store"
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"))
        conn.execute(sa.text(f"CREATE DATABASE {db_name}"))
    engine = make_engine(admin.url.set(database=db_name).render_as_string(hide_password=False))
    upgrade(engine)

    print(f"generating {args.rows:,} rows ...", flush=True)
    frame = synthetic_logs(args.rows, args.embedding_dim)
    columns = list(frame.columns)
    csv_bytes = b"".join(to_copy_csv(frame))
    column_list = ", ".join(f'"{c}"' for c in columns)
    print(f"{len(csv_bytes) / 2**20:.0f} MiB as CSV", flush=True)

    def truncate() -> None:
        with engine.begin() as conn:
            conn.execute(sa.text("TRUNCATE inference_logs"))

    def plain_copy_in() -> None:
        with engine.begin() as conn:
            cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            cursor.copy_expert(
                f"COPY inference_logs ({column_list}) FROM STDIN WITH (FORMAT csv)", io.BytesIO(csv_bytes)
            )

    def plain_copy_out() -> None:
        with engine.connect() as conn:
            cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            cursor.copy_expert("COPY (SELECT * FROM inference_logs) TO STDOUT WITH (FORMAT csv, HEADER)", io.BytesIO())

    loaded_rows: list[int] = []
    times: dict[str, list[float]] = {k: [] for k in ("copy_in", "ingest", "reingest", "copy_out", "read")}
    for i in range(args.repeats):
        truncate()
        times["copy_in"].append(timed(plain_copy_in))
        truncate()
        times["ingest"].append(timed(lambda: ingest(engine, "inference_logs", frame, source="bench")))
        times["reingest"].append(timed(lambda: ingest(engine, "inference_logs", frame, source="bench")))
        times["copy_out"].append(timed(plain_copy_out))
        times["read"].append(timed(lambda: loaded_rows.append(len(read_window(engine, "inference_logs")))))
        print(f"repeat {i + 1}/{args.repeats}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()), flush=True)
    if set(loaded_rows) != {args.rows}:
        print(f"read back {loaded_rows} rows, expected {args.rows}", file=sys.stderr)
        return 1

    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "benchmark": "store",
        "rows": args.rows,
        "embedding_dim": args.embedding_dim,
        "repeats": args.repeats,
        "csv_mib": round(len(csv_bytes) / 2**20, 1),
        "median_s": {k: round(v, 3) for k, v in med.items()},
        "rows_per_s": {k: round(args.rows / v) for k, v in med.items()},
        "load_ratio_vs_copy": round(med["ingest"] / med["copy_in"], 2),
        "reingest_ratio_vs_copy": round(med["reingest"] / med["copy_in"], 2),
        "read_ratio_vs_copy": round(med["read"] / med["copy_out"], 2),
        "target_ratio": 2.0,
        "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version()},
        "postgres": engine.connect().execute(sa.text("SHOW server_version")).scalar_one(),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    result["within_target"] = max(result["load_ratio_vs_copy"], result["read_ratio_vs_copy"]) <= 2.0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    engine.dispose()
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
