"""Simulated worlds for the drift test and benchmark: a trained normal filter and every scenario's 60 days.

The shipped scenarios all extend ``stable.yaml`` and share its seed, so on most site-days they send
exactly the studies the stable world sends (``pipeline.simulate.world.changed_sites``). The stable
world is simulated once into a PostgreSQL database; each scenario's database is a copy of it
(``CREATE DATABASE .. TEMPLATE``) in which only the changed site-days are deleted and simulated again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
import torch
from filelock import FileLock

from pipeline.inference import InferenceService
from pipeline.model import NetConfig, NormalFilterNet
from pipeline.registry import LoadedModel
from pipeline.simulate.run import simulate
from pipeline.simulate.scenario import Scenario, load_scenario, with_volume
from pipeline.simulate.world import changed_sites
from pipeline.store import make_engine, upgrade
from pipeline.training import TrainConfig
from pipeline.training.bootstrap import _items, base_manifest, write_base_dataset
from pipeline.training.train import train

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ROOT / "scenarios"
IMAGE_SIZE = 64
KEY = "k"
NET = NetConfig(init_features=16, growth_rate=8, block_config=(3, 3, 3))


def training_items(root: Path) -> tuple[list[dict], list[dict]]:
    """The tests' training data, rendered under ``root``: days 0-3 of the stable world on another seed (its
    three hospitals, 200 studies each a day), and day 4 to validate on."""
    base = load_scenario(SCENARIOS / "stable.yaml")
    base = base.model_copy(update={"seed": base.seed + 1000})
    return _items(base, range(0, 4), root, KEY, IMAGE_SIZE), _items(base, range(4, 5), root, KEY, IMAGE_SIZE)


def trained_model(cache: Path) -> LoadedModel:
    """Return a small normal filter trained on 4 days of the stable sites (cached in ``cache``; the first of the
    run's workers to ask trains it while the others wait).

    About two minutes on one CPU thread; AUROC about 0.94 on held-out stable-site studies.
    """
    weights = cache / "normal-filter.pt"
    model = NormalFilterNet(NET)
    cache.mkdir(parents=True, exist_ok=True)
    with FileLock(cache / "train.lock"):
        if weights.exists():
            state = torch.load(weights, weights_only=True)
            threshold = float(state.pop("_threshold"))
            model.load_state_dict(state)
        else:
            train_items, val_items = training_items(cache / "base")
            config = TrainConfig(image_size=IMAGE_SIZE, epochs=12, net=NET)
            result = train(train_items, val_items, config, progress=False)
            model, threshold = result.model, result.threshold
            torch.save({**model.state_dict(), "_threshold": torch.tensor(threshold)}, weights)
    model.eval()
    return LoadedModel(model, "normal-filter", "1", threshold=threshold, image_size=IMAGE_SIZE)


def trained_service(cache: Path, *, mc_samples: int = 2) -> InferenceService:
    """Return the inference service of :func:`trained_model`."""
    return InferenceService(trained_model(cache), key=KEY, mc_samples=mc_samples)


def scenario(name: str, volume: int = 200) -> Scenario:
    """Return a shipped scenario at ``volume`` studies per site per day, at the worlds' image size."""
    loaded = with_volume(load_scenario(SCENARIOS / f"{name}.yaml"), per_site=volume)
    return loaded.model_copy(update={"image_size": IMAGE_SIZE})


def build_world(
    world: Scenario,
    url: str,
    storage: Path,
    service: InferenceService,
    *,
    base: Scenario | None = None,
    on_day: Callable[[int], None] | None = None,
    until: int | None = None,
) -> int:
    """Simulate ``world`` into the (migrated) store at ``url``, its days before ``until`` (default: all); with
    ``base``, the store already holds ``base``'s world and only the site-days where ``world`` differs are
    replaced. Return the studies simulated."""
    engine = make_engine(url)
    upgrade(engine)
    started, simulated = time.monotonic(), 0
    try:
        for day in range(world.days if until is None else min(until, world.days)):
            sites = None
            if base is not None:
                sites = changed_sites(world, base, day)
                if not sites:
                    continue
                _delete_site_days(engine, base.name, day, sites)
            summary = simulate(
                world,
                engine=engine,
                storage_root=storage,
                key=KEY,
                days=[day],
                service_for=lambda _: service,
                sites=sites,
                progress=False,
            )
            simulated += summary.studies
            if on_day is not None:
                on_day(day)
    finally:
        engine.dispose()
    log.info("%s: %d studies simulated in %.0f s", world.name, simulated, time.monotonic() - started)
    return simulated


def _delete_site_days(engine: sa.Engine, scenario: str, day: int, sites: set[str]) -> None:
    ids = "SELECT study_id FROM ground_truth WHERE scenario = :scenario AND day = :day AND site = ANY(:sites)"
    with engine.begin() as conn:
        for table in ("feedback", "inference_logs", "studies"):
            conn.execute(
                sa.text(f"DELETE FROM {table} WHERE study_id IN ({ids})"),
                {"scenario": scenario, "day": day, "sites": sorted(sites)},
            )
        conn.execute(
            sa.text("DELETE FROM ground_truth WHERE scenario = :scenario AND day = :day AND site = ANY(:sites)"),
            {"scenario": scenario, "day": day, "sites": sorted(sites)},
        )


@dataclass(frozen=True)
class Incident:
    """An injected event as the monitor should see it: an alert of ``kind`` at ``site`` from ``onset``,
    by ``deadline`` at the latest, naming one of ``features`` (or with one of them as its statistic)."""

    kind: str
    site: str
    onset: int
    deadline: int
    features: frozenset[str]
    until: int | None = None  # the last day the event lasts (default: to the end)


# What each shipped scenario injects, and what explains it. "Within 1 simulated day": the deadline is
# onset + 1; a gradual drift must be caught before it reaches its full size.
INCIDENTS: dict[str, tuple[Incident, ...]] = {
    "stable": (),
    "brightness_drift": (
        Incident(
            "drift", "lakeside", 15, 15 + 14 - 2, frozenset({"img_mean", "img_p50", "img_p01", "img_p99", "embedding"})
        ),
    ),
    "children_appear": (Incident("drift", "north-general", 20, 21, frozenset({"patient_age_years"})),),
    "error_burst": (
        Incident("technical", "st-anna", 25, 26, frozenset({"cuda_oom"}), until=26),
        Incident("technical", "*", 40, 41, frozenset({"timeout"}), until=40),
    ),
    "new_hospital": (
        Incident(
            "drift",
            "riverside",
            10,
            11,
            frozenset(
                {"manufacturer", "model_name", "exposure_mas", "embedding", "img_p99", "img_p50", "img_std", "entropy"}
            ),
        ),
    ),
    "positioning": (
        Incident("drift", "lakeside", 12, 13, frozenset({"view_position", "embedding", "img_mean"}), until=25),
    ),
    "prevalence_drop": (Incident("drift", "st-anna", 20, 21, frozenset({"prevalence_shift"})),),
    "site_outage": (
        Incident("technical", "lakeside", 20, 21, frozenset({"volume"}), until=21),
        Incident("technical", "north-general", 35, 36, frozenset({"volume"})),
    ),
    "tag_errors": (Incident("drift", "north-general", 18, 19, frozenset({"view_position", "body_part"})),),
}


def watched_days(name: str, first: int, margin: int = 2) -> range:
    """The days a test watches ``name``: from ``margin`` days before its first incident's onset to ``margin`` days
    after its last deadline (never before ``first``); for a scenario with no incident, every day from ``first`` to
    the end of the others' windows. ``make bench-drift`` watches every day of every scenario."""
    incidents = INCIDENTS[name]
    if not incidents:
        return range(first, max(watched_days(other, first, margin).stop for other in INCIDENTS if INCIDENTS[other]))
    start = max(first, min(i.onset for i in incidents) - margin)
    return range(start, max(i.deadline for i in incidents) + margin + 1)


@dataclass(frozen=True)
class Raised:
    """An alert opened (or reopened) by the day's monitoring run."""

    day: int
    kind: str
    site: str
    feature: str
    statistic: str
    message: str

    def names(self, features: frozenset[str]) -> bool:
        return bool({self.feature, self.statistic} & features) or any(f in self.message for f in features)


def monitor_days(url: str, world: Scenario, days: range, **kwargs: object) -> list[Raised]:
    """Run the monitor (technical health, drift, performance) on each day of ``days``; return what it raised."""
    from datetime import UTC, datetime, timedelta

    from pipeline.monitor import run_monitor

    engine = make_engine(url)
    raised = []
    try:
        for day in days:
            start = datetime.combine(world.start + timedelta(days=day), datetime.min.time(), tzinfo=UTC)
            result = run_monitor(engine, start, start + timedelta(days=1), **kwargs)  # type: ignore[arg-type]
            new = {c.alert_id for c in result.changes if c.event in ("opened", "reopened")}
            raised.extend(
                Raised(day, str(f.kind), f.site, f.feature, f.statistic, f.message)
                for f in result.findings
                if f.alert_id in new
            )
    finally:
        engine.dispose()
    return raised


@dataclass(frozen=True)
class Verdict:
    """How the monitor did on one scenario: the day each incident was caught (None: missed) and the false alarms."""

    scenario: str
    detected: dict[Incident, int | None]
    false_alarms: list[Raised]

    def delays(self) -> dict[Incident, int | None]:
        return {i: None if d is None else d - i.onset for i, d in self.detected.items()}


def judge(name: str, raised: list[Raised], last_day: int, grace_days: int = 2) -> Verdict:
    """Match what the monitor raised with the scenario's incidents.

    An incident is caught on the first day from its onset that an alert of its kind, at its site
    (any site for ``*``), naming one of its features, was opened. An alert is a false alarm when
    no incident is under way at its site (within ``grace_days`` of the incident's end).
    """
    incidents = INCIDENTS[name]
    detected: dict[Incident, int | None] = {}
    for incident in incidents:
        days = [
            r.day
            for r in raised
            if r.kind == incident.kind
            and incident.site in ("*", r.site)
            and incident.onset <= r.day <= incident.deadline
            and r.names(incident.features)
        ]
        detected[incident] = min(days) if days else None

    def explained(r: Raised) -> bool:
        return any(
            i.site in ("*", r.site) and i.onset <= r.day <= (last_day if i.until is None else i.until) + grace_days
            for i in incidents
        )

    return Verdict(name, detected, [r for r in raised if not explained(r)])


def small_world(
    url: str, storage: Path, *, per_site: int = 20, image_px: int = 64, days: tuple[int, ...] = (0,)
) -> None:
    """Simulate ``days`` of the stable scenario at ``per_site`` studies per site into ``url`` (migrated here):
    real DICOM files under ``storage``, ground truth, feedback and inference logs from a tiny untrained model
    (seeded): enough for the labeling loop, which needs studies, not a good model."""
    torch.manual_seed(0)
    model = NormalFilterNet(NetConfig(init_features=8, growth_rate=4, block_config=(2, 2)))
    service = InferenceService(LoadedModel(model, "m", "1", threshold=0.5, image_size=32), key="k", mc_samples=0)
    world = with_volume(load_scenario(ROOT / "scenarios" / "stable.yaml"), per_site=per_site)
    world = world.model_copy(update={"image_size": image_px})
    engine = make_engine(url)
    upgrade(engine)
    simulate(
        world,
        engine=engine,
        storage_root=storage,
        key="k",
        days=list(days),
        service_for=lambda _: service,
        progress=False,
    )
    engine.dispose()


def small_base_dataset(storage: Path, *, per_site: int = 6, image_px: int = 64) -> Path:
    """Render a base dataset (train: days 0-1, val: day 2 of the stable sites, another seed) under ``storage``
    and write its manifest where retraining looks for it; return the manifest's path."""
    world = with_volume(load_scenario(ROOT / "scenarios" / "stable.yaml"), per_site=per_site)
    world = world.model_copy(update={"seed": world.seed + 1000})
    root = base_manifest(storage).parent
    splits = {
        "train": _items(world, range(0, 2), root, KEY, image_px),
        "val": _items(world, range(2, 3), root, KEY, image_px),
    }
    return write_base_dataset(splits, storage)[1]
