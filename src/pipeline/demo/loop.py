"""``make demo``: the whole loop on one machine, driven day by day through the real Airflow scheduler.

The demo starts the embedded stack (a tracking server, Label Studio and ``airflow standalone``, each on a free
loopback port under the demo's folder), trains the first champion, and plays a scenario day by day:

1. the hospitals send the day's studies and the production inference service scores them with whatever
   version is champion at that moment (the simulator plays both);
2. the driver triggers ``monitor_inference`` for the day's data interval and ``select_for_relabeling`` for the day,
   as their clocks would (``PIPELINE_TIME_SCHEDULES=false`` turns the clocks off, so the days are the scenario's,
   not today's);
3. annotator bots answer the Label Studio tasks from the simulator's ground truth, with a little noise;
4. the driver triggers ``sync_annotations``; from there on everything follows from assets: new labels start
   ``retrain_model``, its candidate ``validate_candidate``, a passed validation ``promote_model``, whose approval
   request a release manager answers through the REST API (signed in as that user). The driver waits until the
   scheduler has nothing left to do before the next day.

What it measured goes to a summary table, ``summary.json`` and an HTML report with plots.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from pipeline.demo.stack import REPO_ROOT
from pipeline.store.schema import alerts

log = logging.getLogger(__name__)

#: The DAGs the demo waits for before it starts.
DAG_IDS = (
    "monitor_inference",
    "select_for_relabeling",
    "sync_annotations",
    "retrain_model",
    "validate_candidate",
    "promote_model",
)
#: DAGs that start from assets: their queued asset events mean the scheduler is about to create a run.
ASSET_DAGS = ("select_for_relabeling", "retrain_model", "validate_candidate", "promote_model")
ADMIN = "admin"
RELEASE_MANAGER = "release-manager"
ML_ENGINEER = "ml-engineer"
#: The two relabeling bots (two annotators, so agreement and adjudication are real) and the adjudicator.
ANNOTATORS = ("annotator-1@pipeline.local", "annotator-2@pipeline.local")
ADJUDICATOR = "chief-radiologist@pipeline.local"


class DemoError(RuntimeError):
    """The demo could not go on; the message says what failed and where its log is."""


@dataclass(frozen=True)
class DemoConfig:
    """What the demo plays and how.

    Args:
        scenario: the world (a new hospital joins on the scenario's ``site_joins`` day).
        days: days played from the scenario's start.
        volume_scale: every site's daily volume is scaled by this (the demo's time limit on 2 cores).
        workdir: everything the demo writes: services' data and logs, DICOM files, the report. Emptied first.
        relabel_budget: studies picked for labeling per day (two annotators label each).
        new_labels_threshold: labeled studies no snapshot holds yet that start a retraining.
        retrain: the retraining's parameters when new labels start it.
        testsets_day: the day after which the release manager builds the first validation test sets (each
            validation then brings them up to the served population: Riverside's evidence joins them).
        annotator_error_rate: share of each bot's answers that are deliberately wrong.
        gate: the validation gate of this deployment (``ValidationConfig`` fields; the defaults hold sensitivity
            at 0.99).
        keep_running: leave the services up at the end (Ctrl-C stops them).
    """

    scenario: Path = REPO_ROOT / "scenarios" / "new_hospital.yaml"
    days: int = 30
    volume_scale: float = 0.5
    workdir: Path = REPO_ROOT / ".demo"
    relabel_budget: int = 50
    new_labels_threshold: int = 350
    testsets_day: int = 8
    annotator_error_rate: float = 0.02
    gate: dict[str, Any] = field(default_factory=dict)
    retrain: dict[str, Any] = field(default_factory=lambda: {"epochs": 6, "learning_rate": 2e-4})
    keep_running: bool = False


@dataclass
class DayRecord:
    """What happened on one simulated day."""

    day: int
    date: str
    studies: int
    champion: str
    seconds: float
    alerts_opened: list[str] = field(default_factory=list)
    selected: int = 0
    annotated: int = 0
    runs: list[str] = field(default_factory=list)


@dataclass
class DemoResult:
    """The summary a person reads at the end, and where the rest is."""

    summary: dict[str, Any]
    days: list[DayRecord]
    per_day: pd.DataFrame
    report: Path
    urls: dict[str, str]

    def table(self) -> str:
        """The summary table."""
        s = self.summary
        rows = [
            ("drift alert at the new site", _days(s["detection_delay_days"])),
            (
                "labels spent (studies / annotations)",
                f"{s['labels']['studies']} / {s['labels']['annotations']} "
                f"({s['labels'].get('evidence_picks', 0)} studies picked for the test sets)",
            ),
            *(
                (
                    f"validation of version {v['version']} against {v['against']}",
                    f"{v['status']}{' (' + v['failed'] + ')' if v['status'] == 'failed' else ''}; test sets cover "
                    f"{', '.join(v['sites']) or 'no site with enough evidence'}",
                )
                for v in s.get("validations", [])
            ),
            ("candidates trained / validated / promoted", "{trained} / {validated} / {promoted}".format(**s["models"])),
            (
                "champion at the end (versions that served days)",
                f"version {s['models']['champion']} ({', '.join(s['models']['served_by'])})",
            ),
            ("the new champion served from", _day(s["models"]["promoted_on_day"])),
            ("new-site AUROC before -> after", f"{_f(s['auroc']['new_before'])} -> {_f(s['auroc']['new_after'])}"),
            (
                "stable sites' AUROC before -> after",
                f"{_f(s['auroc']['stable_before'])} -> {_f(s['auroc']['stable_after'])}",
            ),
            ("gap new vs stable after", _f(s["auroc"]["gap_after"])),
            ("stable sites' sensitivity, worst week", _f(s["sensitivity"]["stable_worst_week"])),
            (
                "share filtered as normal, stable / new (after)",
                f"{_f(s['filtered']['stable_after'])} / {_f(s['filtered']['new_after'])}",
            ),
            ("wall time", f"{s['seconds'] / 60:.1f} min"),
        ]
        width = max(len(r[0]) for r in rows)
        lines = [f"  {name:<{width}}  {value}" for name, value in rows]
        checks = [f"  [{'x' if ok else ' '}] {what}" for what, ok in s["done_when"].items()]
        return "\n".join(["Summary", *lines, "", "Done when", *checks])


def _f(value: float | None) -> str:
    return "n/a" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.3f}"


def _day(value: int | None) -> str:
    return "never" if value is None else f"day {value} (AUROC 'after' is from that day on)"


def _days(value: float | None) -> str:
    return "none" if value is None else f"{value:.0f} day(s) after it joined (0 = the day it joined)"


# --- the stack ----------------------------------------------------------------------------------------------------
@dataclass
class Stack:
    """The running services and the settings every process of the demo shares."""

    env: dict[str, str]
    urls: dict[str, str]
    credentials: dict[str, str]
    airflow_api: Any  # AirflowApi signed in as the admin
    release_manager_api: Any


@contextlib.contextmanager
def running_stack(config: DemoConfig, db_url: str, say: Callable[[str], None]) -> Iterator[Stack]:
    """Start MLflow and Label Studio side by side, then Airflow standalone with the pipeline's settings."""
    from pipeline.demo.stack.airflow import start_standalone
    from pipeline.demo.stack.label_studio import LabelStudioAdmin, start_label_studio
    from pipeline.demo.stack.mlflow_server import start_mlflow_server

    work = config.workdir
    stops: list[Callable[[], None]] = []

    def stop_all() -> None:
        for stop in reversed(stops):
            with contextlib.suppress(Exception):
                stop()

    try:
        started = time.monotonic()
        with ThreadPoolExecutor(2) as pool:
            mlflow_f = pool.submit(start_mlflow_server, f"sqlite:///{work / 'mlflow.db'}", work / "mlflow")
            ls_f = pool.submit(start_label_studio, work / "label-studio", admin=LabelStudioAdmin())
            mlflow_server = mlflow_f.result()
            stops.append(mlflow_server.process.stop)
            label_studio, ls_process = ls_f.result()
            stops.append(ls_process.stop)
        say(f"MLflow and Label Studio up in {time.monotonic() - started:.0f}s")
        env = {
            "PIPELINE_DB_URL": db_url,
            "PIPELINE_STORAGE_ROOT": str(work / "storage"),
            "PIPELINE_GX_PROJECT_DIR": str(REPO_ROOT / "great_expectations"),
            "PIPELINE_PSEUDONYM_KEY": secrets.token_hex(16),
            "PIPELINE_MLFLOW_TRACKING_URI": mlflow_server.tracking_uri,
            "PIPELINE_LABEL_STUDIO_URL": label_studio.url,
            "PIPELINE_LABEL_STUDIO_TOKEN": label_studio.token,
            "PIPELINE_LABEL_STUDIO_DOCUMENT_ROOT": str(label_studio.document_root),
            "PIPELINE_TIME_SCHEDULES": "false",
            "PIPELINE_SHADOW_DAYS": "0",
            "PIPELINE_RELABEL_DAILY_BUDGET": str(config.relabel_budget),
            "PIPELINE_NEW_LABELS_THRESHOLD": str(config.new_labels_threshold),
            "PIPELINE_VALIDATION_CONFIG": json.dumps(config.gate),
            "PIPELINE_RETRAIN_DEFAULTS": json.dumps(config.retrain),
            "MLFLOW_TRACKING_URI": mlflow_server.tracking_uri,
        }
        started = time.monotonic()
        airflow = start_standalone(
            work / "airflow",
            users={ADMIN: "admin", RELEASE_MANAGER: "admin", ML_ENGINEER: "op"},
            expected_dags=DAG_IDS,
            extra_env={
                **env,
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
                # Several tasks at once: most of a task is starting a process and waiting on a server.
                "AIRFLOW__CORE__PARALLELISM": "3",
                "AIRFLOW__SCHEDULER__MAX_TIS_PER_QUERY": "16",
                # One torch thread per task: the two cores are shared with the hospitals' side (the driver, also
                # one thread), and torch's OpenMP threads spinning against each other made a retraining 10x slower.
                "OMP_NUM_THREADS": "1",
            },
        )
        stops.append(airflow.stop)
        say(f"Airflow standalone up in {time.monotonic() - started:.0f}s")
        urls = {
            "Airflow": airflow.url,
            "Monitoring page": f"{airflow.url}/pipeline-monitoring/",
            "MLflow": mlflow_server.tracking_uri,
            "Label Studio": label_studio.url,
        }
        credentials = {f"Airflow {user}": password for user, password in airflow.passwords.items()} | {
            f"Label Studio {label_studio.username}": label_studio.password
        }
        yield Stack(
            env=env,
            urls=urls,
            credentials=credentials,
            airflow_api=airflow.api_as(ADMIN),
            release_manager_api=airflow.api_as(RELEASE_MANAGER),
        )
    finally:
        if not config.keep_running:
            stop_all()


# --- the scheduler's work -----------------------------------------------------------------------------------------
def _busy(api: Any) -> list[str]:
    """Runs queued or running, and DAGs with queued asset events (a run about to be created)."""
    busy = [
        f"{r['dag_id']}/{r['dag_run_id']}" for state in ("queued", "running") for r in api.dag_runs("~", state=state)
    ]
    for dag_id in ASSET_DAGS:
        if api.request("GET", f"/dags/{dag_id}/assets/queuedEvents").get("queued_events"):
            busy.append(f"{dag_id} (asset events queued)")
    return busy


def _answer_approvals(api: Any, say: Callable[[str], None], answered: list[dict[str, Any]]) -> None:
    """Approve every waiting promotion as the release manager, after reading the request (the verdict is in it)."""
    for request in api.waiting_requests():
        ti, subject = request["task_instance"], request["subject"]
        passed = "passed validation" in request["body"]
        option = "Approve" if passed else "Reject"
        api.answer(request, option, reason="validation passed; shadow report read" if passed else "not a pass")
        answered.append(
            {"subject": subject, "answer": option, "run": ti["dag_run_id"], "at": datetime.now(UTC).isoformat()}
        )
        say(f"release manager: {option} -- {subject} ({ti['dag_id']}/{ti['dag_run_id']}, try {ti['try_number']})")


def settle(
    admin_api: Any,
    release_manager_api: Any,
    say: Callable[[str], None],
    answered: list[dict[str, Any]],
    *,
    timeout: float = 1800.0,
) -> None:
    """Wait until the scheduler has nothing left to run (twice in a row: an asset event may be about to start a
    run), answering approval requests on the way.

    Raises:
        DemoError: a run of the loop failed, a task anywhere failed, or time ran out.
    """
    for _ in range(2):
        _wait(admin_api, release_manager_api, say, answered, lambda busy: not busy, timeout=timeout)
        time.sleep(2.0)
    if failed := sorted(run for run, state in _loop_runs(admin_api).items() if state == "failed"):
        raise DemoError(f"{', '.join(failed)} failed: see its task logs in the Airflow UI")


def _wait(
    admin_api: Any,
    release_manager_api: Any,
    say: Callable[[str], None],
    answered: list[dict[str, Any]],
    done: Callable[[list[str]], bool],
    *,
    timeout: float,
) -> None:
    """Poll what Airflow is busy with until ``done(busy)``, answering approval requests and saying what it waits
    for every 30 s."""
    started = last_note = time.monotonic()
    while not done(busy := _busy(admin_api)):
        _answer_approvals(release_manager_api, say, answered)
        if time.monotonic() - last_note > 30:
            say(f"  waiting for {', '.join(sorted(busy))}")
            last_note = time.monotonic()
        if time.monotonic() - started > timeout:
            raise DemoError(f"Airflow still busy after {timeout:.0f}s: {busy}")
        time.sleep(1.0)
    _answer_approvals(release_manager_api, say, answered)


# --- the days -----------------------------------------------------------------------------------------------------
def run_demo(config: DemoConfig, *, say: Callable[[str], None] = print) -> DemoResult:
    """Run the whole demo; raise :class:`DemoError` when a step fails (the services' logs are under the workdir)."""
    from pipeline.config import get_settings
    from pipeline.simulate.scenario import load_scenario, with_volume
    from pipeline.store import make_engine, upgrade

    begun = time.monotonic()
    # The demo speaks in its own progress lines; the libraries' chatter goes to the services' logs.
    logging.getLogger("pipeline").setLevel(logging.WARNING)
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    warnings.filterwarnings("ignore")
    work = config.workdir
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    db_url = os.environ.get("PIPELINE_DB_URL") or f"sqlite:///{work / 'store.sqlite'}"
    engine = make_engine(db_url)
    upgrade(engine)
    _refuse_a_used_store(engine, db_url)
    scenario = with_volume(load_scenario(config.scenario), factor=config.volume_scale)
    joins = [e for e in scenario.events if e.type == "site_joins"]
    if not joins:
        raise DemoError(f"{config.scenario} has no site_joins event: the demo needs a new hospital")
    new_site, join_day = joins[0].site.id, joins[0].day
    if config.days <= join_day + 2:
        raise DemoError(f"--days {config.days} ends before the loop can close (the new site joins on day {join_day})")

    with running_stack(config, db_url, say) as stack:
        credentials = work / "credentials.json"
        credentials.touch(mode=0o600)
        credentials.write_text(json.dumps(stack.credentials, indent=2))
        say("look while it runs: " + "   ".join(f"{name} {url}" for name, url in stack.urls.items()))
        say(f"  (sign-in names and passwords, made for this run: {credentials})")
        os.environ.update(stack.env)
        get_settings.cache_clear()
        say("training the first champion on the stable sites' base data ...")
        first = _bootstrap(config, say)
        days, answered = _play(config, scenario, engine, stack, say)
        summary, per_day = summarise(engine, scenario, new_site, join_day, days, first, answered)
        summary["seconds"] = time.monotonic() - begun
        summary["done_when"] = done_when(summary)
        report = write_report(work / "report.html", summary, per_day, days, stack.urls)
        (work / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        result = DemoResult(summary, days, per_day, report, stack.urls)
        if config.keep_running:
            say(f"the services keep running; Ctrl-C stops them (sign-in: {credentials})")
        return result


def _refuse_a_used_store(engine: sa.Engine, db_url: str) -> None:
    with engine.connect() as conn:
        held = conn.execute(sa.text("SELECT count(*) FROM studies")).scalar_one()
    if held:
        raise DemoError(
            f"the store at {engine.url.render_as_string(hide_password=True)} already holds {held} studies: "
            "the demo needs an empty one (unset PIPELINE_DB_URL to use a fresh SQLite file)"
        )


def _bootstrap(config: DemoConfig, say: Callable[[str], None]) -> str:
    import mlflow

    from pipeline.config import get_settings
    from pipeline.simulate.scenario import load_scenario
    from pipeline.training.bootstrap import BootstrapConfig, bootstrap

    settings = get_settings()
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    started, boot = time.monotonic(), BootstrapConfig()
    # MLflow prints the registration to stderr: it goes to the workdir's bootstrap.log, beside the services' logs.
    with (config.workdir / "bootstrap.log").open("w") as chatter, contextlib.redirect_stderr(chatter):
        result = bootstrap(
            load_scenario(REPO_ROOT / "scenarios" / "stable.yaml"),
            model_name=settings.model_name,
            storage_root=Path(settings.storage_root),
            key=settings.pseudonym_key.get_secret_value(),
            config=boot,
            new_site=load_scenario(config.scenario),
            progress=False,
            nproc=settings.train_nproc,
            on_epoch=lambda epoch, metrics: say(
                f"  epoch {epoch + 1}/{boot.train.epochs}: validation AUROC {metrics['val_auroc']:.3f} "
                f"({metrics['epoch_s']:.0f}s)"
            ),
        )
    say(
        f"champion: version {result.version}, AUROC {result.test_auroc_stable:.3f} on the stable sites' test days, "
        f"{result.test_auroc_new_site:.3f} on the new site's scanner ({time.monotonic() - started:.0f}s)"
    )
    return str(result.version)


def _play(
    config: DemoConfig,
    scenario: Any,
    engine: sa.Engine,
    stack: Stack,
    say: Callable[[str], None],
) -> tuple[list[DayRecord], list[dict[str, Any]]]:
    """Play the days. A day's own runs (monitoring, selection) are waited for before the next day's; the rest (the
    syncs, and a retraining, validation and promotion that new labels start) go on while the next days arrive, as
    they would in production. The days after a promotion are served by the new champion."""
    import torch

    from pipeline.config import get_settings
    from pipeline.inference import registry_services
    from pipeline.registry import CHAMPION, version_for
    from pipeline.simulate.run import simulate

    torch.set_num_threads(1)  # the other core is Airflow's (see running_stack)
    settings = get_settings()
    services = registry_services(settings.model_name, key=settings.pseudonym_key.get_secret_value())
    api, rm_api = stack.airflow_api, stack.release_manager_api
    records: list[DayRecord] = []
    answered: list[dict[str, Any]] = []
    loop_runs: dict[str, str] = {}

    def play_day(day: int) -> DayRecord:
        when = scenario.start + timedelta(days=day)
        champion = version_for(settings.model_name, CHAMPION) or "?"
        summary = simulate(
            scenario,
            engine=engine,
            storage_root=Path(settings.storage_root),
            key=settings.pseudonym_key.get_secret_value(),
            days=[day],
            service_for=services,
            progress=False,
        )
        return DayRecord(day=day, date=when.isoformat(), studies=summary.studies, champion=champion, seconds=0.0)

    # The driver works a day ahead of the scheduler: while Airflow checks day d-1 and picks its studies, the
    # annotators answer the open tasks and the hospitals send day d+1. Day d-1's own runs must be done before the
    # driver moves past day d, so the scheduler is never more than a day behind.
    in_flight: list[tuple[DayRecord, datetime, list[tuple[str, str]], float]] = []
    annotators = ThreadPoolExecutor(1, thread_name_prefix="annotators")  # they work while the hospitals send
    labeling: tuple[Future[int], DayRecord] | None = None  # the annotators' work, and the day it started on
    upcoming = play_day(0)
    for day in range(config.days):
        record = upcoming
        started = time.monotonic()
        when = date.fromisoformat(record.date)
        start = datetime.combine(when, dtime(0), tzinfo=UTC)
        run_id = f"demo__{record.date}"
        runs = [
            (
                "monitor_inference",
                api.trigger(
                    "monitor_inference",
                    logical_date=start,
                    data_interval=(start, start + timedelta(days=1)),
                    run_id=run_id,
                ),
            ),
            (
                "select_for_relabeling",
                api.trigger(
                    "select_for_relabeling",
                    {"day": record.date},
                    logical_date=start + timedelta(days=1, hours=1, minutes=30),
                    run_id=run_id,
                ),
            ),
        ]
        in_flight.append((record, start, runs, started))
        if day == config.testsets_day:
            _build_test_sets(engine, say)
        if labeling is not None:
            labeling[1].annotated = labeling[0].result()
        labeling = annotators.submit(_label_and_sync, engine, config, api, record.date), record
        upcoming = play_day(day + 1) if day + 1 < config.days else upcoming
        while len(in_flight) > (1 if day + 1 < config.days else 0):
            done, done_start, done_runs, done_started = in_flight.pop(0)
            wait_for_runs(api, rm_api, done_runs, say, answered)
            done.alerts_opened = sorted(_drift_sites_first_seen(engine, done_start))
            done.selected = _queued_for(engine, done_start.date())
            now = _loop_runs(api)
            if failed := sorted(run for run, state in now.items() if state == "failed"):
                raise DemoError(f"{', '.join(failed)} failed: see its task logs in the Airflow UI")
            done.runs = [f"{run.split('/')[0]} {state}" for run, state in now.items() if loop_runs.get(run) != state]
            loop_runs = now
            done.seconds = time.monotonic() - done_started
            records.append(done)
            say(_day_line(done, config.days))
    if labeling is not None:
        labeling[1].annotated = labeling[0].result()
    annotators.shutdown()
    # The last day's picks are labeled the day after the demo ends.
    say("last day played; waiting for what is still running ...")
    settle(api, rm_api, say, answered)
    return records, answered


def wait_for_runs(
    admin_api: Any,
    release_manager_api: Any,
    runs: Sequence[tuple[str, str]],
    say: Callable[[str], None],
    answered: list[dict[str, Any]],
    *,
    timeout: float = 1800.0,
) -> None:
    """Wait until ``runs`` (dag id, run id) have finished, answering approval requests meanwhile.

    Raises:
        DemoError: one of them did not succeed, a task anywhere failed, or time ran out.
    """
    names = {f"{dag_id}/{run_id}" for dag_id, run_id in runs}
    _wait(admin_api, release_manager_api, say, answered, lambda busy: not names & set(busy), timeout=timeout)
    for dag_id, run_id in runs:
        state = admin_api.dag_run_state(dag_id, run_id)
        if state != "success":
            raise DemoError(f"DAG run {dag_id}/{run_id} ended {state}: see its task logs in the Airflow UI")


def _label_and_sync(engine: sa.Engine, config: DemoConfig, api: Any, day: str) -> int:
    """The annotators answer every open task (the picks so far); a sync on ``day`` brings their labels in. Return
    the annotations made."""
    annotated = _annotate(engine, config)
    if annotated:
        day_start = datetime.combine(date.fromisoformat(day), dtime(0), tzinfo=UTC)
        api.trigger("sync_annotations", logical_date=day_start + timedelta(days=1, hours=23), run_id=f"demo__{day}")
    return annotated


def _loop_runs(api: Any) -> dict[str, str]:
    """The state of every run of the DAGs that new labels set off, by ``dag_id/run_id``."""
    return {
        f"{r['dag_id']}/{r['dag_run_id']}": str(r["state"])
        for dag_id in ("retrain_model", "validate_candidate", "promote_model")
        for r in api.dag_runs(dag_id)
    }


def _day_line(r: DayRecord, total: int) -> str:
    bits = [f"day {r.day + 1:>2}/{total} {r.date}", f"{r.studies} studies served by v{r.champion}"]
    if r.alerts_opened:
        bits.append(f"DRIFT ALERT at {', '.join(r.alerts_opened)}")
    if r.selected:
        bits.append(f"{r.selected} picked for labeling")
    if r.annotated:
        bits.append(f"{r.annotated} annotations of the open tasks")
    if r.runs:
        bits.append(", ".join(r.runs))
    return " | ".join(bits) + f" ({r.seconds:.0f}s)"


def _drift_sites_first_seen(engine: sa.Engine, window_start: datetime) -> set[str]:
    """Sites whose drift alert was first seen in the window starting at ``window_start``."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(alerts.c.site).where(alerts.c.kind == "drift", alerts.c.first_seen == window_start).distinct()
        )
        return {r.site for r in rows}


def _queued_for(engine: sa.Engine, day: date) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                sa.text("SELECT count(*) FROM relabel_queue WHERE picked_for = :d"), {"d": day.isoformat()}
            ).scalar_one()
        )


def _annotate(engine: sa.Engine, config: DemoConfig) -> int:
    """The annotators answer every open task: two on each labeling project, the adjudicator on disagreements."""
    from pipeline.demo import annotator as bot
    from pipeline.labeling import ProjectKind, find_project
    from pipeline.resources import production

    server = production().label_studio
    client = server.client()
    done = 0
    for kind in ProjectKind:
        project = find_project(client, kind, prefix=server.project_prefix)
        if project is None:
            continue
        bots = (ADJUDICATOR,) if kind == ProjectKind.ADJUDICATION else ANNOTATORS
        for i, annotator in enumerate(bots):
            rate = 0.0 if annotator == ADJUDICATOR else config.annotator_error_rate
            done += bot.annotate(engine, client, project, error_rate=rate, seed=i + 1, annotator=annotator).annotated
    return done


def _build_test_sets(engine: sa.Engine, say: Callable[[str], None]) -> None:
    from pipeline.validation import TestSetConfig, build_test_sets

    built = build_test_sets(engine, TestSetConfig(), reason="the release manager's first build")
    say("release manager built the validation test sets: " + ", ".join(f"{n} {len(s.items)}" for n, s in built.items()))


# --- what it measured ---------------------------------------------------------------------------------------------
def served(engine: sa.Engine) -> pd.DataFrame:
    """Every served study with its truth: day, site, version, probability, decision, abnormal."""
    query = sa.text(
        "SELECT g.day, l.site, l.model_version, l.prob_abnormal, l.decision, g.abnormal "
        "FROM inference_logs l JOIN ground_truth g ON g.study_id = l.study_id WHERE l.status = 'ok'"
    )
    with engine.connect() as conn:
        frame = pd.read_sql(query, conn)
    frame["abnormal"] = frame["abnormal"].astype(bool)
    frame["referred"] = frame["decision"] != "normal"
    return frame


def _auroc(part: pd.DataFrame) -> float:
    from sklearn.metrics import roc_auc_score

    if part["abnormal"].nunique() < 2:
        return float("nan")
    return float(roc_auc_score(part["abnormal"], part["prob_abnormal"]))


def _sensitivity(part: pd.DataFrame) -> float:
    positives = part[part["abnormal"]]
    return float(positives["referred"].mean()) if len(positives) else float("nan")


def summarise(
    engine: sa.Engine,
    scenario: Any,
    new_site: str,
    join_day: int,
    days: Sequence[DayRecord],
    first: str,
    answered: list[dict[str, Any]],
) -> tuple[dict[str, Any], pd.DataFrame]:
    """The demo's figures from the store and the registry."""
    from mlflow import MlflowClient

    from pipeline.config import get_settings
    from pipeline.registry import CHAMPION, version_for
    from pipeline.registry import tags as tag

    frame = served(engine)
    frame["group"] = np.where(frame["site"] == new_site, "new", "stable")
    per_day = (
        frame.groupby(["day", "group"])
        .apply(
            lambda p: pd.Series(
                {
                    "studies": len(p),
                    "auroc": _auroc(p),
                    "sensitivity": _sensitivity(p),
                    "filtered": float((~p["referred"]).mean()),
                    "version": ",".join(sorted(set(p["model_version"]))),
                }
            ),
            include_groups=False,
        )
        .reset_index()
    )
    promoted_on = next((d.day for d in days if d.champion != first), None)
    before = frame[frame["model_version"] == first]
    after = frame[frame["day"] >= promoted_on] if promoted_on is not None else frame.iloc[0:0]
    stable = frame[frame["group"] == "stable"].assign(week=lambda f: f["day"] // 7)
    weekly = stable.groupby("week").apply(_sensitivity, include_groups=False)

    detected = next((d.day for d in days if new_site in d.alerts_opened), None)
    settings = get_settings()
    client = MlflowClient()
    versions = client.search_model_versions(f"name = '{settings.model_name}'")
    validated = [v for v in versions if v.tags.get(tag.VALIDATION_STATUS) == "passed"]
    with engine.connect() as conn:
        labels = conn.execute(sa.text("SELECT count(DISTINCT study_id), count(*) FROM labels")).one()
        evidence_picks = conn.execute(sa.text("SELECT count(*) FROM relabel_queue WHERE strategy = 'evidence'")).one()
    validations = [
        {
            "version": v.version,
            "status": v.tags[tag.VALIDATION_STATUS],
            "against": v.tags.get(tag.VALIDATED_AGAINST),
            "failed": v.tags.get(tag.VALIDATION_FAILED_CHECKS, ""),
            "sites": [s for s in v.tags.get(tag.VALIDATION_SITES, "").split(",") if s and s != "none"],
            "evidence": v.tags.get(tag.VALIDATION_EVIDENCE, ""),
        }
        for v in sorted(versions, key=lambda v: int(v.version))
        if v.tags.get(tag.VALIDATED_AT)
    ]

    def group(part: pd.DataFrame, g: str) -> pd.DataFrame:
        return part[part["group"] == g]

    new_before = group(before[before["day"] >= join_day], "new")
    summary: dict[str, Any] = {
        "scenario": scenario.name,
        "days": len(days),
        "studies": len(frame),
        "new_site": new_site,
        "join_day": join_day,
        "detection_delay_days": None if detected is None else detected - join_day,
        "labels": {"studies": int(labels[0]), "annotations": int(labels[1]), "evidence_picks": int(evidence_picks[0])},
        "validations": validations,
        "models": {
            "first": first,
            # the champion now: a promotion the last day's labels set off may end after the last day
            "champion": version_for(settings.model_name, CHAMPION) or (days[-1].champion if days else first),
            "trained": max(len(versions) - 1, 0),
            "validated": len(validated),
            "promoted": sum(1 for v in versions if v.tags.get(tag.PROMOTED_AT)),
            "served_by": sorted({d.champion for d in days}, key=lambda v: v.zfill(9)),
            "promoted_on_day": promoted_on,
            "approvals": answered,
        },
        "auroc": {
            "new_before": _auroc(new_before),
            "stable_before": _auroc(group(before, "stable")),
            "new_after": _auroc(group(after, "new")),
            "stable_after": _auroc(group(after, "stable")),
        },
        "sensitivity": {
            "stable_by_week": {int(k): float(v) for k, v in weekly.items()},
            "stable_worst_week": float(weekly.min()) if len(weekly) else None,
            "stable_worst_day": float(per_day.loc[per_day["group"] == "stable", "sensitivity"].min()),
            "new_before": _sensitivity(new_before),
            "new_after": _sensitivity(group(after, "new")),
        },
        "filtered": {
            "stable_after": float((~group(after, "stable")["referred"]).mean()) if len(after) else None,
            "new_after": float((~group(after, "new")["referred"]).mean()) if len(after) else None,
        },
    }
    a = summary["auroc"]
    a["gap_after"] = a["stable_after"] - a["new_after"] if len(after) else None
    return summary, per_day


def done_when(summary: dict[str, Any]) -> dict[str, bool]:
    """The issue's bar, line by line."""
    delay = summary["detection_delay_days"]
    gap = summary["auroc"]["gap_after"]
    worst = summary["sensitivity"]["stable_worst_week"]
    return {
        "drift alert for the new site within 1 simulated day": delay is not None and delay <= 1,
        "a promoted new champion": summary["models"]["promoted"] >= 1,
        "the new site's evidence in a passed verdict": any(
            v["status"] == "passed" and summary["new_site"] in v["sites"] for v in summary.get("validations", [])
        ),
        "new-site AUROC within 0.03 of the stable sites' after promotion": gap is not None and gap <= 0.03,
        "sensitivity >= 0.99 on the stable sites throughout (every week)": worst is not None and worst >= 0.99,
        "within 20 minutes": summary["seconds"] <= 20 * 60,
    }


def write_report(
    path: Path, summary: dict[str, Any], per_day: pd.DataFrame, days: Sequence[DayRecord], urls: dict[str, str]
) -> Path:
    """One self-contained HTML page: the summary, the plots over time and the day-by-day log."""
    from pipeline.reports.figures import png_base64, pyplot

    plt = pyplot()
    figures = []
    promoted_on = summary["models"]["promoted_on_day"]
    for metric, title in (
        ("auroc", "AUROC by day"),
        ("sensitivity", "Sensitivity at the operating point by day"),
        ("filtered", "Share closed as normal by day"),
    ):
        fig, ax = plt.subplots(figsize=(8, 3))
        for g, colour in (("stable", "tab:blue"), ("new", "tab:red")):
            part = per_day[per_day["group"] == g]
            ax.plot(part["day"], part[metric], marker="o", ms=3, color=colour, label=f"{g} site(s)")
        ax.axvline(summary["join_day"], color="grey", ls=":", label="new site joins")
        if promoted_on is not None:
            ax.axvline(promoted_on, color="green", ls="--", label="new champion serves")
        if metric == "sensitivity":
            ax.axhline(0.99, color="black", lw=0.8, label="0.99")
        ax.set_title(title)
        ax.set_xlabel("day")
        ax.legend(fontsize=7, loc="lower left")
        fig.tight_layout()
        figures.append(f'<img alt="{title}" src="data:image/png;base64,{png_base64(fig)}">')
    checks = "".join(f"<li>{'&#9745;' if ok else '&#9744;'} {what}</li>" for what, ok in summary["done_when"].items())
    links = "".join(f'<li>{name}: <a href="{url}">{url}</a></li>' for name, url in urls.items())
    log_rows = "".join(
        f"<tr><td>{r.day}</td><td>{r.date}</td><td>{r.studies}</td><td>v{r.champion}</td>"
        f"<td>{', '.join(r.alerts_opened)}</td><td>{r.selected}</td><td>{r.annotated}</td>"
        f"<td>{'<br>'.join(r.runs)}</td></tr>"
        for r in days
    )
    summary_json = json.dumps({k: v for k, v in summary.items() if k != "done_when"}, indent=2, default=str)
    path.write_text(
        f"""<!doctype html><html><head><meta charset="utf-8"><title>Demo: {summary["scenario"]}</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto}}td,th{{padding:2px 8px;border-bottom:1px solid #ddd;
font-size:13px;vertical-align:top}}pre{{background:#f6f6f6;padding:1em;font-size:12px}}</style></head><body>
<h1>The loop, closed: {summary["scenario"]}</h1>
<p>{summary["studies"]} studies over {summary["days"]} days; {summary["new_site"]} joined on day {summary["join_day"]}.</p>
<h2>Done when</h2><ul>{checks}</ul>
<h2>Over time</h2>{"".join(figures)}
<h2>The services</h2><ul>{links}</ul>
<h2>Day by day</h2><table><tr><th>day</th><th>date</th><th>studies</th><th>champion</th><th>drift alert</th>
<th>picked</th><th>annotations</th><th>runs</th></tr>{log_rows}</table>
<h2>Figures</h2><pre>{summary_json}</pre></body></html>""",
        encoding="utf-8",
    )
    return path
