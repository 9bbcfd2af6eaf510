"""The scenario half of ``bench_drift``: every shipped scenario monitored day by day, by us and by Evidently.

Worlds are PostgreSQL databases ``<prefix><scenario>`` (``tests/worlds.py``), kept between runs: a
world is reused when its database says it was finished (table ``bench_world``); ``--rebuild``
builds them again. The model is cached under ``data/bench-drift``.

Evidently sees the same daily windows: each site's day against that site's days 3 to 16 before it
(all sites' when it has fewer than 5 such days: a new site), the same 22 columns, its preset's
defaults. Its alert is the preset's own verdict, dataset drift (half the columns drifted or more);
the share of site-days with any drifted column is given beside it.
"""

from __future__ import annotations

import json
import subprocess
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

from pipeline.monitor.drift import CATEGORICAL_FEATURES, NUMERIC_FEATURES, read_drift_frame  # noqa: E402
from pipeline.store import make_engine  # noqa: E402
from tests.worlds import (  # noqa: E402
    INCIDENTS,
    build_world,
    copy_database,
    judge,
    monitor_days,
    scenario,
    trained_service,
)

EVIDENTLY = ROOT / ".venv-evidently" / "bin" / "python"
PEER = ROOT / "bench" / "evidently_peer.py"
FIRST_DAY = 5
COLUMNS = [*NUMERIC_FEATURES, *CATEGORICAL_FEATURES]


def _url(admin_url: str, name: str) -> str:
    return make_engine(admin_url).url.set(database=name).render_as_string(hide_password=False)


def _finished(admin_url: str, database: str) -> bool:
    engine = make_engine(_url(admin_url, database))
    try:
        with engine.connect() as conn:
            return bool(conn.execute(sa.text("SELECT count(*) FROM bench_world")).scalar_one())
    except sa.exc.SQLAlchemyError:
        return False
    finally:
        engine.dispose()


def _mark_finished(url: str) -> None:
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE IF NOT EXISTS bench_world (finished_at timestamptz)"))
        conn.execute(sa.text("INSERT INTO bench_world VALUES (now())"))
    engine.dispose()


def worlds(admin_url: str, prefix: str, work: Path, rebuild: bool) -> dict[str, str]:
    """Return the database URL of every scenario's world, building those not finished yet."""
    service = None

    def model() -> object:
        nonlocal service
        service = service or trained_service(ROOT / "data" / "bench-drift")
        return service

    stable_db = f"{prefix}stable"
    urls = {"stable": _url(admin_url, stable_db)}
    base = scenario("stable")
    if rebuild or not _finished(admin_url, stable_db):
        admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{stable_db}" WITH (FORCE)'))
            conn.execute(sa.text(f'CREATE DATABASE "{stable_db}"'))
        admin.dispose()
        build_world(base, urls["stable"], work / "stable", model())  # type: ignore[arg-type]
        _mark_finished(urls["stable"])
    for name in INCIDENTS:
        if name == "stable":
            continue
        database = f"{prefix}{name}"
        if not rebuild and _finished(admin_url, database):
            urls[name] = _url(admin_url, database)
            continue
        print(f"building {name} ...", flush=True)
        urls[name] = copy_database(urls["stable"], database)
        with make_engine(urls[name]).begin() as conn:
            conn.execute(sa.text("DROP TABLE IF EXISTS bench_world"))
        build_world(scenario(name), urls[name], work / name, model(), base=base)  # type: ignore[arg-type]
        _mark_finished(urls[name])
    return urls


def _day(frame: pd.DataFrame, start: datetime) -> np.ndarray:
    return ((frame["received_at"] - pd.Timestamp(start)) // pd.Timedelta(days=1)).to_numpy(dtype=np.int64)


def label_free(url: str, name: str) -> list[dict[str, object]]:
    """Return, per site, the AUROC from the simulator's truth beside the estimates the monitor gave each day.

    Reads what monitoring wrote (``monitor_metrics``) for every daily window from FIRST_DAY: the
    label-free ``expected`` AUROC and the site's ``estimated`` AUROC (recalibrated on recent outcomes
    where they reject the probabilities' calibration; none under a covariate shift no outcome has
    checked yet). Each is averaged over the days it exists, beside the mean of the days' true AUROC
    (days with both classes); ``abs_error`` compares the estimate with the truth of the same days.
    """
    world = scenario(name)
    origin = pd.Timestamp(datetime.combine(world.start, datetime.min.time(), tzinfo=UTC))
    engine = make_engine(url)
    with engine.connect() as conn:
        truth = pd.DataFrame(
            conn.execute(
                sa.text(
                    "SELECT l.site, l.received_at, l.prob_abnormal, g.abnormal FROM inference_logs l "
                    "JOIN ground_truth g USING (study_id) WHERE l.status = 'ok'"
                )
            ).all(),
            columns=["site", "received_at", "prob", "abnormal"],
        )
        estimates = pd.DataFrame(
            conn.execute(
                sa.text(
                    "SELECT site, window_start, metric, value FROM monitor_metrics WHERE metric IN "
                    "('performance.expected_auroc', 'performance.estimated_auroc') AND site <> '*'"
                )
            ).all(),
            columns=["site", "window_start", "metric", "value"],
        )
    engine.dispose()
    truth["day"] = (pd.to_datetime(truth["received_at"], utc=True) - origin) // pd.Timedelta(days=1)
    daily = (
        truth[truth["day"] >= FIRST_DAY]
        .groupby(["site", "day"])
        .apply(
            lambda d: (
                roc_auc_score(d["abnormal"].astype(int), d["prob"].astype(float))
                if d["abnormal"].nunique() == 2
                else np.nan
            ),
            include_groups=False,
        )
        .rename("true")
        .dropna()
        .reset_index()
    )
    estimates["day"] = (pd.to_datetime(estimates["window_start"], utc=True) - origin) // pd.Timedelta(days=1)
    wide = estimates.pivot_table(index=["site", "day"], columns="metric", values="value").reset_index()
    joined = daily.merge(wide, on=["site", "day"], how="left")
    rows = []
    for site, part in joined.groupby("site"):
        expected = part.dropna(subset=["performance.expected_auroc"])
        estimated = part.dropna(subset=["performance.estimated_auroc"])
        if estimated.empty:
            continue
        rows.append(
            {
                "scenario": name,
                "site": str(site),
                "days": len(part),
                "true_auroc": round(float(part["true"].mean()), 4),
                "expected_auroc": round(float(expected["performance.expected_auroc"].mean()), 4),
                "expected_abs_error": round(
                    abs(float(expected["performance.expected_auroc"].mean() - expected["true"].mean())), 4
                ),
                "estimated_auroc": round(float(estimated["performance.estimated_auroc"].mean()), 4),
                "days_without_estimate": int(len(part) - len(estimated)),
                "abs_error": round(
                    abs(float(estimated["performance.estimated_auroc"].mean() - estimated["true"].mean())), 4
                ),
            }
        )
    return rows


def evidently_days(url: str, name: str, work: Path) -> list[dict[str, object]]:
    """Run Evidently's preset on every site-day from FIRST_DAY + 2 against its reference days; return its verdicts."""
    world = scenario(name)
    start = datetime.combine(world.start, datetime.min.time(), tzinfo=UTC)
    engine = make_engine(url)
    frame = read_drift_frame(engine, start, start + timedelta(days=world.days))
    engine.dispose()
    frame["day"] = _day(frame, start)
    folder = work / f"evidently-{name}"
    folder.mkdir(parents=True, exist_ok=True)
    pairs = []
    for day in range(FIRST_DAY + 2, world.days):
        today = frame[frame["day"] == day]
        history = frame[(frame["day"] >= day - 16) & (frame["day"] <= day - 3)]
        for site, current in today.groupby("site"):
            own = history[history["site"] == site]
            reference = own if own["day"].nunique() >= 5 else history
            if len(current) < 50 or reference.empty:
                continue
            ref_path = folder / f"ref-{site}-{day}.parquet"
            cur_path = folder / f"cur-{site}-{day}.parquet"
            reference[COLUMNS].to_parquet(ref_path)
            current[COLUMNS].to_parquet(cur_path)
            pairs.append({"id": f"{site}|{day}", "reference": str(ref_path), "current": str(cur_path)})
    manifest = folder / "pairs.json"
    manifest.write_text(json.dumps(pairs))
    out = folder / "result.json"
    subprocess.run(
        [
            str(EVIDENTLY),
            str(PEER),
            "--pairs",
            str(manifest),
            "--categorical",
            ",".join(CATEGORICAL_FEATURES),
            "--columns",
            ",".join(COLUMNS),
            "--out",
            str(out),
        ],
        check=True,
    )
    result = json.loads(out.read_text())
    verdicts = []
    for pair in result["pairs"]:
        if "skipped" in pair:
            continue
        site, day = pair["id"].split("|")
        verdicts.append(
            {
                "site": site,
                "day": int(day),
                "dataset_drift": bool(pair["dataset_drift"]),
                "drifted": list(pair["drifted_columns"]),
                "seconds": pair["seconds"],
            }
        )
    return verdicts


def _evidently_verdict(name: str, verdicts: list[dict[str, object]], last_day: int) -> dict[str, object]:
    incidents = INCIDENTS[name]
    delays = {}
    for incident in incidents:
        if incident.kind != "drift":
            delays[f"{incident.kind}:{incident.site}@{incident.onset}"] = "not its job"
            continue
        days = [
            v["day"]
            for v in verdicts
            if v["dataset_drift"] and v["site"] == incident.site and v["day"] >= incident.onset  # type: ignore[operator]
        ]
        delays[f"{incident.kind}:{incident.site}@{incident.onset}"] = (min(days) - incident.onset) if days else None  # type: ignore[type-var,operator]

    def explained(v: dict[str, object]) -> bool:
        return any(
            i.site in ("*", v["site"]) and i.onset <= v["day"] <= (last_day if i.until is None else i.until) + 2  # type: ignore[operator]
            for i in incidents
        )

    quiet = [v for v in verdicts if not explained(v)]
    return {
        "delays": delays,
        "false_alarm_days": sum(bool(v["dataset_drift"]) for v in quiet),
        "site_days_with_a_drifted_column": round(float(np.mean([bool(v["drifted"]) for v in quiet])), 3)
        if quiet
        else None,
        "site_days": len(verdicts),
        "seconds_median": float(np.median([v["seconds"] for v in verdicts])) if verdicts else None,
    }


def scenarios(
    work: Path,
    *,
    admin_url: str = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres",
    prefix: str = "bench_drift_",
    rebuild: bool = False,
    evidently: bool | list[str] = True,
    progress_file: Path | None = None,
    only: list[str] | None = None,
) -> dict[str, object]:
    """Return per scenario our detection delays and false alarms beside Evidently's, and the label-free AUROC check.

    ``evidently`` may name the scenarios to run it on (about 3 minutes each); each scenario's row is
    appended to ``progress_file`` as a JSON line as soon as it is done.
    """
    urls = worlds(admin_url, prefix, work, rebuild)
    table = []
    label_free_rows = []
    for name, url in urls.items():
        if only is not None and name not in only:
            continue
        world = scenario(name)
        engine = make_engine(url)
        with engine.begin() as conn:  # a fresh start: what an earlier run of the bench left
            conn.execute(sa.text("DELETE FROM alerts"))
            conn.execute(sa.text("DELETE FROM monitor_metrics"))
        engine.dispose()
        started = time.monotonic()
        raised = monitor_days(url, world, range(FIRST_DAY, world.days))
        ours_seconds = time.monotonic() - started
        verdict = judge(name, raised, world.days - 1)
        row: dict[str, object] = {
            "scenario": name,
            "ours": {
                "delays": {f"{i.kind}:{i.site}@{i.onset}": d for i, d in verdict.delays().items()},
                "false_alarms": [
                    {"day": r.day, "kind": r.kind, "site": r.site, "statistic": r.statistic, "message": r.message}
                    for r in verdict.false_alarms
                ],
                "alerts": [
                    {"day": r.day, "kind": r.kind, "site": r.site, "feature": r.feature, "statistic": r.statistic}
                    for r in raised
                ],
                "seconds_per_day": round(ours_seconds / (world.days - FIRST_DAY), 3),
            },
        }
        if EVIDENTLY.exists() and (evidently is True or (isinstance(evidently, list) and name in evidently)):
            row["evidently"] = _evidently_verdict(name, evidently_days(url, name, work), world.days - 1)
        row["label_free_auroc"] = label_free(url, name)
        label_free_rows.extend(row["label_free_auroc"])  # type: ignore[arg-type]
        table.append(row)
        if progress_file is not None:
            with progress_file.open("a") as out:
                out.write(json.dumps(row, default=str) + "\n")
        print(json.dumps(row["ours"]["delays"]), name, flush=True)  # type: ignore[index]
    return {
        "table": table,
        "label_free_auroc": label_free_rows,
        "label_free_max_abs_error": max(r["abs_error"] for r in label_free_rows),  # type: ignore[type-var]
        "expected_max_abs_error": max(r["expected_abs_error"] for r in label_free_rows),  # type: ignore[type-var]
    }
