"""Benchmark: studies/s of validating one candidate against the champion on 5,000 test studies at 128x128 on CPU.

    python bench/bench_validate.py --out bench/results/validate.json

A scratch PostgreSQL database on the local server gets the stable world simulated at 128 px, with every
study's outcome reported (feedback rate 1) so that the regression test set alone holds ``--studies``
labeled studies. A scratch MLflow (SQLite file store) holds a champion and a candidate, both the
project's CPU network (MONAI DenseNet, ``densenet_small``: 32 initial features, growth 8, blocks 4-4-4;
untrained, so the verdict says nothing, the time does). DenseNet121 is the GPU network; on 2 CPU
cores it would make scoring, not decoding, the cost. Each
repeat runs :func:`pipeline.validation.validate` end to end: resolve and load both versions from the
registry, read the test sets, decode every DICOM once per model, score with both, run every check.
Figures: the median wall time over ``--repeats`` runs and studies/s (unique test studies / time),
beside the time to decode the studies alone and to score them alone (the two costs inside; both models are at one size here, so each study is decoded once).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import mlflow
import sqlalchemy as sa
import torch

from pipeline.model import NetConfig, NormalFilterNet, PrepareStudyd, finish
from pipeline.registry import CHAMPION, ensure_experiment, log_and_register, register_candidate, set_alias
from pipeline.simulate.run import simulate
from pipeline.simulate.scenario import load_scenario, with_volume
from pipeline.store import make_engine, upgrade
from pipeline.validation import TestSetConfig, ValidationConfig, build_test_sets, latest_test_sets, validate

ROOT = Path(__file__).resolve().parents[1]
ADMIN_URL = os.environ.get("PIPELINE_BENCH_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
SIZE = 128


def _database() -> str:
    name = f"bench_validate_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return sa.engine.make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def _drop(url: str) -> None:
    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{sa.engine.make_url(url).database}" WITH (FORCE)'))
    admin.dispose()


def _world(studies: int, storage: Path, url: str) -> None:
    world = load_scenario(ROOT / "scenarios" / "stable.yaml")
    per_site = 500
    days = -(-studies // (per_site * len(world.sites)))
    world = with_volume(world, per_site=per_site)
    world = world.model_copy(update={"image_size": SIZE, "feedback": world.feedback.model_copy(update={"rate": 1.0})})
    engine = make_engine(url)
    upgrade(engine)
    started = time.perf_counter()
    simulate(world, engine=engine, storage_root=storage, key="k", days=list(range(days)), progress=True)
    print(f"simulated {days} days in {time.perf_counter() - started:.0f} s", flush=True)
    build_test_sets(engine, TestSetConfig(regression_size=studies, per_site=studies))
    engine.dispose()


def _models(name: str, artifacts: Path) -> None:
    # artifacts in the scratch folder: a SQLite tracking store alone would put them in ./mlruns
    mlflow.set_experiment(experiment_id=ensure_experiment(name, artifact_location=artifacts.as_uri()))
    torch.manual_seed(0)
    with mlflow.start_run(run_name="champion"):
        set_alias(
            name,
            CHAMPION,
            log_and_register(NormalFilterNet(NetConfig()), model_name=name, image_size=SIZE, threshold=0.5),
        )
    torch.manual_seed(1)
    with mlflow.start_run(run_name="candidate"):
        register_candidate(
            NormalFilterNet(NetConfig()),
            model_name=name,
            image_size=SIZE,
            threshold=0.5,
            snapshot_hash="bench",
            parent_version="1",
            params={"bench": True},
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)

    with tempfile.TemporaryDirectory(prefix="bench-validate-") as tmp:
        work = Path(tmp)
        mlflow.set_tracking_uri(f"sqlite:///{work / 'mlflow.db'}")
        url = _database()
        try:
            _world(args.studies, work / "storage", url)
            name = "bench-normal-filter"
            _models(name, work / "artifacts")
            engine = make_engine(url)
            uris = sorted({u for s in latest_test_sets(engine).values() for u in s.items["dicom_uri"]})
            config = ValidationConfig(sensitivity_target=0.95, max_latency_ms=10_000, max_memory_mb=10_000)
            runs, studies = [], 0
            for repeat in range(args.repeats):
                started = time.perf_counter()
                verdict = validate(engine, name, "2", config=config, progress=lambda line: None)
                runs.append(time.perf_counter() - started)
                studies = verdict.studies
                print(
                    f"run {repeat + 1}: {studies} studies in {runs[-1]:.1f} s ({studies / runs[-1]:.1f} studies/s)",
                    flush=True,
                )

            prepare, normalise = PrepareStudyd(SIZE), finish(train=False)
            started = time.perf_counter()
            images = [normalise({"image": prepare({"image": u})["image"]})["image"] for u in uris]
            decode_s = time.perf_counter() - started
            model = NormalFilterNet(NetConfig()).eval()
            started = time.perf_counter()
            with torch.no_grad():
                for i in range(0, len(images), 64):
                    torch.sigmoid(model(torch.stack(images[i : i + 64])))
            score_s = time.perf_counter() - started
            engine.dispose()
        finally:
            _drop(url)

    median = statistics.median(runs)
    result = {
        "benchmark": "validate one candidate against the champion (pipeline.validation.validate), CPU",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__},
        "network": "densenet_small (MONAI DenseNet, 32 initial features, growth 8, blocks 4-4-4), both models",
        "image_size": SIZE,
        "test_studies": studies,
        "repeats": args.repeats,
        "seconds": runs,
        "median_seconds": median,
        "studies_per_second": studies / median,
        "decode_only_studies_per_second": len(uris) / decode_s,
        "score_only_studies_per_second_one_model": len(uris) / score_s,
        "note": "each run decodes every study once (both models at 128 px) and scores it with both models",
    }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
