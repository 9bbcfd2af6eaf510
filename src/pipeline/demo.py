"""The demo: the product on embedded defaults, start to end, with a summary people can read.

Today it migrates the store, simulates a few days of the new-hospital scenario and shows what
landed; each stage that lands adds its step here until the loop is closed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from pipeline.config import Settings
from pipeline.simulate.run import SimulationSummary, simulate
from pipeline.simulate.scenario import days_between, load_scenario
from pipeline.store import make_engine, read_window, upgrade


@dataclass(frozen=True)
class DemoResult:
    """What the demo did and what the store holds afterwards."""

    simulation: SimulationSummary
    per_day_site: pd.DataFrame  # one row per (date, site)
    table_counts: dict[str, int]


def run_demo(
    settings: Settings, scenario_path: Path, *, start_day: int, days: int, progress: bool = True
) -> DemoResult:
    """Migrate the store, simulate ``days`` days from ``start_day``, and summarise what landed."""
    engine = make_engine(settings.db_url)
    upgrade(engine)
    scenario = load_scenario(scenario_path)
    first = scenario.start + pd.Timedelta(days=start_day)
    summary = simulate(
        scenario,
        engine=engine,
        storage_root=Path(settings.storage_root),
        key=settings.pseudonym_key.get_secret_value(),
        days=days_between(scenario, first, days),
        progress=progress,
    )
    studies = read_window(engine, "studies", columns=["study_id", "site", "acquired_at", "img_mean", "manufacturer"])
    truth = read_window(engine, "ground_truth", columns=["study_id", "abnormal"])
    joined = studies.merge(truth, on="study_id", how="left")
    joined["date"] = joined["acquired_at"].dt.date
    per_day_site = (
        joined.groupby(["date", "site"])
        .agg(
            studies=("study_id", "size"),
            abnormal_share=("abnormal", "mean"),
            mean_intensity=("img_mean", "mean"),
            manufacturers=("manufacturer", lambda m: ", ".join(sorted(set(m.dropna())))),
        )
        .reset_index()
    )
    with engine.connect() as conn:
        counts = {
            name: int(conn.execute(sa.text(f"SELECT count(*) FROM {name}")).scalar_one())
            for name in ("studies", "inference_logs", "feedback", "ground_truth", "ingest_rejects")
        }
    return DemoResult(summary, per_day_site, counts)
