"""Which studies to label: the model's errors caught per label spent, and what 300 labels teach it.

One world: the ``new_hospital`` scenario (a hospital on an unseen scanner from day 10) at 200 studies per
site per day, scored by the small model of ``tests/worlds.py`` and monitored day by day (so that the drift
alert at the new site is open, as it would be in production). Kept between runs in PostgreSQL
(``--database``) with its DICOM files under ``data/bench-selection``.

1. **Errors caught.** Over days ``PERIOD`` (the new site live), a budget of 5% of the period's studies is
   spent by the mix of strategies and by each strategy alone. The filter's errors are its misses:
   studies it closed as normal that are abnormal in the simulator's truth (a study it sends to a
   radiologist is read anyway). The share of them among the picks, over 5% (what a random 5% catches
   on average), is the lift; every decision against the truth is counted beside it.
2. **What the labels teach.** The model is fine-tuned on 300 studies picked by the mix and, separately,
   on 300 random studies of the period (truth as the label, as a careful radiologist would give), several
   seeds each; AUROC at the new site and at the old sites on held-out later days, before and after.

``make bench-selection`` writes ``bench/results/selection.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.selection import SelectionConfig, pick, read_candidates, score_candidates  # noqa: E402
from pipeline.selection.select import open_drift_sites  # noqa: E402
from pipeline.store import make_engine  # noqa: E402
from pipeline.store.schema import Pick  # noqa: E402
from pipeline.training import TrainConfig  # noqa: E402
from pipeline.training.train import predict_probs, train  # noqa: E402
from tests.worlds import IMAGE_SIZE, NET, build_world, monitor_days, scenario, trained_model  # noqa: E402

NAME = "new_hospital"
DAYS = 25
PERIOD = range(10, 20)  # selection period: the new site is live, its drift alert open
HELD_OUT = range(20, 25)  # evaluation of the fine-tuned models
NEW_SITE = "riverside"
ADMIN_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"


def world(database: str, storage: Path, rebuild: bool) -> str:
    """Return the URL of the scenario's world, building it (and monitoring it) when not finished."""
    url = ADMIN_URL.rsplit("/", 1)[0] + f"/{database}"
    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        exists = conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :d"), {"d": database}).scalar()
    if exists and not rebuild:
        engine = make_engine(url)
        with engine.connect() as conn:
            done = conn.execute(sa.text("SELECT to_regclass('bench_world') IS NOT NULL")).scalar()
        engine.dispose()
        if done and storage.exists():
            admin.dispose()
            return url
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        conn.execute(sa.text(f'CREATE DATABASE "{database}"'))
    admin.dispose()
    from pipeline.inference import InferenceService

    loaded = trained_model(ROOT / "data" / "bench-drift")
    world_ = scenario(NAME).model_copy(update={"days": DAYS})
    print(f"building {NAME} ({DAYS} days) ...", flush=True)
    build_world(world_, url, storage, InferenceService(loaded, key="k", mc_samples=2))
    print("monitoring ...", flush=True)
    monitor_days(url, world_, range(5, PERIOD.stop))
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE bench_world (finished_at timestamptz)"))
        conn.execute(sa.text("INSERT INTO bench_world VALUES (now())"))
    engine.dispose()
    return url


def truth(url: str) -> pd.DataFrame:
    """Return every scored study with its truth, its error and its DICOM path."""
    engine = make_engine(url)
    with engine.connect() as conn:
        frame = pd.DataFrame(
            conn.execute(
                sa.text(
                    "SELECT l.study_id, l.site, l.prob_abnormal, l.decision, g.abnormal, g.day, s.dicom_uri "
                    "FROM inference_logs l JOIN ground_truth g USING (study_id) JOIN studies s USING (study_id) "
                    "WHERE l.status = 'ok'"
                )
            ).all(),
            columns=["study_id", "site", "prob", "decision", "abnormal", "day", "dicom_uri"],
        )
    engine.dispose()
    frame["error"] = (frame["decision"] == "abnormal") != frame["abnormal"].astype(bool)
    return frame


def errors_caught(url: str, studies: pd.DataFrame, budget_share: float, seed: int) -> dict[str, object]:
    """Spend ``budget_share`` of the period's studies by each strategy; return the share of errors caught."""
    world_ = scenario(NAME)
    day = world_.start + timedelta(days=PERIOD.stop - 1)
    period = studies[studies["day"].isin(PERIOD)]
    budget = round(budget_share * len(period))
    engine = make_engine(url)
    base = SelectionConfig(budget=budget, lookback_days=len(PERIOD), seed=seed)
    candidates = read_candidates(engine, day, base)
    drifting = open_drift_sites(engine)
    engine.dispose()
    closed = period["decision"] == "normal"
    abnormal = period["abnormal"].astype(bool)
    misses = set(period.loc[closed & abnormal, "study_id"])
    errors = set(period.loc[period["error"], "study_id"])
    strategies: dict[str, dict[Pick, float]] = {"mix": dict(base.shares)} | {str(p): {p: 1.0} for p in Pick}
    rows = {}
    for label, shares in strategies.items():
        config = SelectionConfig(budget=budget, lookback_days=len(PERIOD), shares=shares, seed=seed)
        scored = score_candidates(candidates, drifting, config)
        picks = pick(scored, budget, config, np.random.default_rng(seed))
        ids = set(picks["study_id"])
        rows[label] = {
            "picked": len(picks),
            "misses_caught": len(misses & ids),
            "share_of_misses": round(len(misses & ids) / len(misses), 4),
            "lift_misses": round(len(misses & ids) / len(misses) / budget_share, 2),
            "errors_caught": len(errors & ids),
            "share_of_errors": round(len(errors & ids) / len(errors), 4),
            "lift_errors": round(len(errors & ids) / len(errors) / budget_share, 2),
            "by_site": {str(k): int(v) for k, v in picks["site"].value_counts().items()},
        }
    return {
        "period_days": [PERIOD.start, PERIOD.stop - 1],
        "period_studies": len(period),
        "misses": len(misses),  # closed as normal, abnormal in truth: the filter's errors
        "errors": len(errors),  # every decision against the truth (mostly studies sent to a radiologist)
        "budget": budget,
        "budget_share": budget_share,
        "drifting_sites": sorted(drifting),
        "strategies": rows,
    }


def _items(frame: pd.DataFrame) -> list[dict[str, object]]:
    return [{"image": uri, "label": int(y)} for uri, y in zip(frame["dicom_uri"], frame["abnormal"], strict=True)]


def _aurocs(model: object, held: pd.DataFrame) -> dict[str, float]:
    import torch
    from monai.data import DataLoader, Dataset

    from pipeline.model import preprocess

    loader = DataLoader(Dataset(_items(held), preprocess(IMAGE_SIZE)), batch_size=128)
    probs = predict_probs(model, loader, torch.device("cpu"))  # type: ignore[arg-type]
    new = (held["site"] == NEW_SITE).to_numpy()
    labels = held["abnormal"].astype(int).to_numpy()
    return {
        "new_site": round(float(roc_auc_score(labels[new], probs[new])), 4),
        "old_sites": round(float(roc_auc_score(labels[~new], probs[~new])), 4),
    }


def fine_tuning(url: str, studies: pd.DataFrame, labels: int, seeds: list[int], epochs: int) -> dict[str, object]:
    """Fine-tune on ``labels`` studies picked by the mix and on as many random ones; AUROC on held-out days."""
    world_ = scenario(NAME)
    day = world_.start + timedelta(days=PERIOD.stop - 1)
    period = studies[studies["day"].isin(PERIOD)]
    held = studies[studies["day"].isin(HELD_OUT)]
    champion = trained_model(ROOT / "data" / "bench-drift").model
    before = _aurocs(champion, held)
    engine = make_engine(url)
    config = SelectionConfig(budget=labels, lookback_days=len(PERIOD))
    candidates = read_candidates(engine, day, config)
    drifting = open_drift_sites(engine)
    engine.dispose()
    runs = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        scored = score_candidates(
            candidates, drifting, SelectionConfig(budget=labels, lookback_days=len(PERIOD), seed=seed)
        )
        chosen = pick(scored, labels, SelectionConfig(budget=labels, lookback_days=len(PERIOD), seed=seed), rng)
        arms = {
            "selected": period[period["study_id"].isin(set(chosen["study_id"]))],
            "random": period.sample(n=labels, random_state=seed),
        }
        for arm, train_set in arms.items():
            # Early stopping on 200 other studies of the period, the same for both arms.
            rest = period[~period["study_id"].isin(set(train_set["study_id"]))].sample(n=200, random_state=seed + 1)
            started = time.monotonic()
            result = train(
                _items(train_set),
                _items(rest),
                TrainConfig(
                    image_size=IMAGE_SIZE, epochs=epochs, learning_rate=1e-3, patience=epochs, seed=seed, net=NET
                ),
                init_model=champion,
                progress=False,
            )
            after = _aurocs(result.model, held)
            runs.append(
                {
                    "seed": seed,
                    "arm": arm,
                    "new_site_share": round(float((train_set["site"] == NEW_SITE).mean()), 3),
                    "errors_in_labels": int(train_set["error"].sum()),
                    "misses_in_labels": int(
                        ((train_set["decision"] == "normal") & train_set["abnormal"].astype(bool)).sum()
                    ),
                    "auroc_after": after,
                    "gain_new_site": round(after["new_site"] - before["new_site"], 4),
                    "gain_old_sites": round(after["old_sites"] - before["old_sites"], 4),
                    "seconds": round(time.monotonic() - started, 1),
                }
            )
            print(json.dumps(runs[-1]), flush=True)
    table = pd.DataFrame(runs)
    median = table.groupby("arm")[["gain_new_site", "gain_old_sites"]].median()
    return {
        "labels": labels,
        "epochs": epochs,
        "seeds": seeds,
        "held_out_days": [HELD_OUT.start, HELD_OUT.stop - 1],
        "held_out_studies": {
            "new_site": int((held["site"] == NEW_SITE).sum()),
            "old_sites": int((held["site"] != NEW_SITE).sum()),
        },
        "auroc_before": before,
        "median_gain": {arm: {k: round(float(v), 4) for k, v in row.items()} for arm, row in median.iterrows()},
        "runs": runs,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", default="bench_selection")
    parser.add_argument("--storage", type=Path, default=ROOT / "data" / "bench-selection")
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--labels", type=int, default=300)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    url = world(args.database, args.storage, args.rebuild)
    studies = truth(url)
    results: dict[str, object] = {
        "machine": {"python": platform.python_version(), "measured": datetime.now(UTC).isoformat(timespec="seconds")},
        "world": {"scenario": NAME, "days": DAYS, "studies": len(studies), "new_site": NEW_SITE},
        "errors_caught": errors_caught(url, studies, 0.05, seed=0),
    }
    print(json.dumps(results["errors_caught"], indent=2), flush=True)
    results["fine_tuning"] = fine_tuning(url, studies, args.labels, list(range(args.seeds)), args.epochs)
    text = json.dumps(results, indent=2, default=str)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
