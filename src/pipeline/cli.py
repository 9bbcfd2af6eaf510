"""The ``pipeline`` console script: one subcommand per stage, the same functions the DAG tasks call."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import click

from pipeline.config import get_settings
from pipeline.logs import configure_logging


def write_json(path: Path | None, payload: Any) -> None:
    """Write ``payload`` as JSON to ``path`` (atomically), when a path was given."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    tmp.replace(path)


JSON_OPTION = click.option(
    "--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Write a machine-readable result here."
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--log-level", default=None, help="Log level of the pipeline's own messages (default INFO).")
def main(log_level: str | None) -> None:
    """Keep a chest X-ray model safe in production: monitor, relabel, retrain, validate, promote.

    Configuration comes from PIPELINE_* environment variables (see `pipeline config`).
    """
    configure_logging(log_level)


@main.command("config")
@JSON_OPTION
def show_config(json_path: Path | None) -> None:
    """Print the effective configuration (secrets masked)."""
    settings = get_settings()
    values = {k: (str(v) if v is not None else None) for k, v in settings.model_dump().items()}
    for key, value in values.items():
        click.echo(f"PIPELINE_{key.upper()}={value if value is not None else ''}")
    write_json(json_path, values)


@main.group()
def db() -> None:
    """Manage the inference-log store's schema."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Alembic revision to migrate to.")
def db_upgrade(revision: str) -> None:
    """Create or migrate the store's tables (safe to run again)."""
    from pipeline.store import current_revision, make_engine, upgrade

    engine = make_engine(get_settings().db_url)
    upgrade(engine, revision)
    click.echo(f"store at revision {current_revision(engine)}")


@db.command("current")
def db_current() -> None:
    """Print the store's schema revision (empty for a new database)."""
    from pipeline.store import current_revision, make_engine

    click.echo(current_revision(make_engine(get_settings().db_url)) or "")


@main.command()
@click.option("--table", "table_name", required=True, type=click.Choice(["studies", "inference_logs", "feedback"]))
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@JSON_OPTION
def ingest(table_name: str, files: tuple[Path, ...], json_path: Path | None) -> None:
    """Load batch files (CSV, JSON lines, Parquet) into the store, idempotently.

    Bad rows are rejected with the row and field named; the rest of each batch loads.
    Exits 1 when any row was rejected.
    """
    from pipeline.store import make_engine
    from pipeline.store.files import ingest_file

    engine = make_engine(get_settings().db_url)
    results = [ingest_file(engine, table_name, path) for path in files]
    for result in results:
        click.echo(result.summary())
        for error in result.errors:
            click.echo(f"  rejected {error}", err=True)
    write_json(json_path, [_result_json(r) for r in results])
    if any(r.rejected for r in results):
        sys.exit(1)


@main.command("ingest-landing")
@click.option("--landing", type=click.Path(file_okay=False, path_type=Path), help="Default: <storage root>/landing.")
@JSON_OPTION
def ingest_landing(landing: Path | None, json_path: Path | None) -> None:
    """Load every batch file waiting in the landing folder, then move it to processed/ (or quarantine/)."""
    from pipeline.store import make_engine
    from pipeline.store.files import ingest_landing as run

    settings = get_settings()
    results = run(make_engine(settings.db_url), landing or Path(settings.storage_root) / "landing")
    for result in results:
        click.echo(result.summary())
    write_json(json_path, [_result_json(r) for r in results])


@main.command()
@click.option(
    "--scenario", "scenario_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "--days", type=click.IntRange(min=1), default=None, help="Days to simulate (default: the scenario's length)."
)
@click.option(
    "--start",
    "start_date",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=None,
    help="First day (default: the scenario's start).",
)
@click.option("--seed", type=int, default=None, help="Override the scenario's seed.")
@click.option("--image-size", type=click.IntRange(32, 4096), default=None, help="Override the scenario's image size.")
@click.option(
    "--volume-scale",
    type=click.FloatRange(0, 100),
    default=None,
    help="Multiply every site's daily volume (e.g. 0.1 for a quick run).",
)
@click.option(
    "--model",
    default="champion",
    show_default=True,
    help="Alias or version the inference service scores with; 'none' only registers the studies' tags.",
)
@click.option("--progress/--no-progress", default=True, show_default=True)
@JSON_OPTION
def simulate(
    scenario_path: Path,
    days: int | None,
    start_date: Any,
    seed: int | None,
    image_size: int | None,
    volume_scale: float | None,
    model: str,
    progress: bool,
    json_path: Path | None,
) -> None:
    """Play the hospitals and the production inference service of a scenario.

    DICOM files go to storage; ground truth and feedback to the store; the inference service
    (the registered model by alias) scores each study and logs it. Deterministic for a seed;
    simulating a day again changes nothing.
    """
    from pipeline.simulate.run import simulate as run
    from pipeline.simulate.scenario import days_between, load_scenario, with_volume
    from pipeline.store import make_engine, upgrade

    settings = get_settings()
    try:
        scenario = load_scenario(scenario_path)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    if seed is not None:
        scenario = scenario.model_copy(update={"seed": seed})
    if volume_scale is not None:
        scenario = with_volume(scenario, factor=volume_scale)
    day_indexes = days_between(scenario, start_date.date() if start_date else None, days)
    engine = make_engine(settings.db_url)
    upgrade(engine)
    summary = run(
        scenario,
        engine=engine,
        storage_root=Path(settings.storage_root),
        key=settings.pseudonym_key.get_secret_value(),
        days=day_indexes,
        image_size=image_size,
        service_for=None if model == "none" else _service_factory(settings, default=model),
        progress=progress,
    )
    click.echo(
        f"{scenario.name}: {summary.studies} studies over {len(summary.days)} days "
        f"({summary.abnormal} abnormal, {summary.feedback} outcomes to come back, {summary.inference_logs} inference "
        f"logs of which {summary.failed} failed); per site: {summary.per_site}"
    )
    write_json(json_path, summary.as_dict())


@main.command()
@click.option(
    "--scenario",
    "scenario_path",
    default="scenarios/new_hospital.yaml",
    show_default=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
)
@click.option("--days", type=click.IntRange(min=1), default=30, show_default=True, help="Days to play.")
@click.option(
    "--volume-scale",
    type=click.FloatRange(0.05, 4.0),
    default=0.5,
    show_default=True,
    help="Scale every site's volume.",
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=".demo",
    show_default=True,
    help="Everything the demo writes (emptied first).",
)
@click.option("--keep-running", is_flag=True, help="Leave the services up at the end to look around (Ctrl-C stops).")
@JSON_OPTION
def demo(
    scenario_path: Path, days: int, volume_scale: float, workdir: Path, keep_running: bool, json_path: Path | None
) -> None:
    """The whole loop on this machine: drift at a new hospital, labels, retraining, validation, approval, promotion.

    Starts MLflow, Label Studio and Airflow standalone, trains the first champion and plays the scenario day by day
    through the Airflow scheduler. The store is a SQLite file in the workdir unless PIPELINE_DB_URL names one.
    """
    import signal
    import sys
    import time

    from pipeline.demo import DemoConfig, DemoError, run_demo

    config = DemoConfig(
        scenario=scenario_path.resolve(),
        days=days,
        volume_scale=volume_scale,
        workdir=workdir.resolve(),
        keep_running=keep_running,
    )
    started = time.monotonic()
    # A plain `kill` must stop the services too: turn SIGTERM into an exit, which runs their clean-up.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    def say(line: str) -> None:
        click.echo(f"[{time.monotonic() - started:6.0f}s] {line}")

    try:
        result = run_demo(config, say=say)
    except DemoError as exc:
        raise click.ClickException(f"{exc}\n(the services' logs are under {config.workdir})") from exc
    click.echo("\n" + result.table())
    click.echo(f"\nReport: {result.report}")
    click.echo("Look around: " + "   ".join(f"{name} {url}" for name, url in result.urls.items()))
    write_json(json_path, result.summary)
    if keep_running:
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


@main.command()
@click.option("--start", "start", required=True, type=click.DateTime(), help="Window start (UTC), e.g. 2026-01-30.")
@click.option("--end", "end", required=True, type=click.DateTime(), help="Window end (UTC, exclusive).")
@JSON_OPTION
@click.option(
    "--html",
    "html_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the HTML report here (default: <storage root>/reports/monitoring/).",
)
def monitor(start: Any, end: Any, json_path: Path | None, html_path: Path | None) -> None:
    """Check one window of the inference logs: data quality (Great Expectations) and technical health per
    site and model version; metrics, alerts, an HTML report and Data Docs.

    Running a window again leaves the same metrics and alerts.
    """
    from pipeline.alerts import init_sentry_from_settings
    from pipeline.monitor import EmptyWindow, run_monitor_from_settings

    init_sentry_from_settings()
    try:
        result, engine = run_monitor_from_settings(_utc(start), _utc(end), report_path=html_path)
    except EmptyWindow as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"{result.studies} studies in {result.window_start:%Y-%m-%d %H:%M}..{result.window_end:%Y-%m-%d %H:%M} UTC"
    )
    for finding in result.findings:
        click.echo(
            f"  {finding.severity.upper():8} [{finding.kind}] {finding.site} {finding.feature}: {finding.message}"
        )
    if result.insufficient:
        click.echo(f"  insufficient data: {', '.join(result.insufficient)}")
    for outcome in result.quality.failed() if result.quality else []:
        click.echo(f"  expectation failed [{outcome.suite}] {outcome.description}: {outcome.unexpected} rows")
    click.echo(f"report: {result.report_path}")
    if result.quality and result.quality.data_docs:
        click.echo(f"data docs: {result.quality.data_docs}")
    write_json(json_path, result.as_json(engine))


@main.command()
@click.option("--date", "day", required=True, type=click.DateTime(formats=["%Y-%m-%d"]), help="The selection's day.")
@click.option(
    "--budget",
    type=click.IntRange(min=0),
    default=None,
    help="Studies to pick for the day (default: PIPELINE_RELABEL_DAILY_BUDGET).",
)
@JSON_OPTION
def select(day: Any, budget: int | None, json_path: Path | None) -> None:
    """Pick the studies worth a radiologist's time (errors, uncertain, drifting sites, a random control) into
    the relabel queue, under a daily budget with per-site caps.

    Running a day again tops it up to its budget; a study is never picked twice.
    """
    from pipeline.selection import SelectionConfig, select_for_relabeling
    from pipeline.store import make_engine

    settings = get_settings()
    try:
        config = SelectionConfig(
            budget=settings.relabel_daily_budget if budget is None else budget, site_cap=settings.relabel_site_cap
        )
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    selection = select_for_relabeling(make_engine(settings.db_url), day.date(), config)
    click.echo(
        f"{day:%Y-%m-%d}: picked {len(selection.picks)} ({selection.already_picked} picked earlier for this day)"
    )
    for strategy, count in sorted(selection.counts().items()):
        click.echo(f"  {strategy:10} {count:5}   ({selection.candidates.get(strategy, 0)} candidates)")
    write_json(json_path, selection.as_json())


@main.command("push")
@JSON_OPTION
def push(json_path: Path | None) -> None:
    """Put the queued picks into Label Studio: a rendered image without patient identifiers, the model's
    answer and score pre-filled. Tasks already there are found again, never duplicated."""
    from pipeline.tasks import push_to_label_studio

    summary = _label_studio(push_to_label_studio)
    click.echo(f"pushed {summary['pushed']} ({summary['created']} created, {summary['found']} found again)")
    if summary["unrenderable"]:
        click.echo(f"  {len(summary['unrenderable'])} studies could not be rendered; they stay queued", err=True)
    write_json(json_path, summary)


@main.command("sync")
@JSON_OPTION
def sync(json_path: Path | None) -> None:
    """Pull finished annotations from Label Studio into the label store (incremental, safe to repeat);
    agreement per project; disagreements go to adjudication."""
    from pipeline.tasks import sync_labels

    summary = _label_studio(sync_labels)
    click.echo(f"{summary['new']} new labels, {summary['updated']} updated")
    for project, p in summary["projects"].items():
        kappa = "" if p["kappa"] is None else f", {p['kappa_statistic']} {p['kappa']:.3f}"
        click.echo(f"  {project:14} {p['new']:5} new{kappa}")
    if summary["new_labels_ready"]:
        click.echo(f"enough new labels for retraining (>= {summary['new_labels_threshold']})")
    write_json(json_path, summary)


def _label_studio(call: Any) -> Any:
    from pipeline.labeling import LabelStudioUnavailable

    try:
        return call()
    except LabelStudioUnavailable as exc:
        raise click.ClickException(str(exc)) from exc


@main.command("train")
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="YAML of RetrainParams (base_version, epochs, learning_rate, batch_size, image_size, window_days, ...).",
)
@click.option("--progress/--no-progress", default=True, show_default=True)
@JSON_OPTION
def train_command(config_path: Path | None, progress: bool, json_path: Path | None) -> None:
    """Fine-tune the champion (or train from scratch) on a fresh dataset snapshot, with a sample of the base dataset
    replayed beside it (replay_base), and register a candidate in MLflow with its lineage. A bar per epoch; an
    interrupted run resumes from its last checkpoint."""
    import mlflow
    import yaml
    from pydantic import ValidationError

    from pipeline.registry import ModelNotFound
    from pipeline.store import make_engine
    from pipeline.training import TrainingDataError
    from pipeline.training.bootstrap import BaseDatasetError, base_manifest
    from pipeline.training.distributed import DistributedTrainingFailed, TooFewDevices
    from pipeline.training.retrain import RetrainParams, retrain
    from pipeline.validation import ValidationConfig

    settings = get_settings()
    try:
        raw = yaml.safe_load(config_path.read_text()) if config_path else {}
        params = RetrainParams.model_validate(raw or {})
    except (yaml.YAMLError, ValidationError) as exc:
        raise click.ClickException(f"{config_path}: {exc}") from exc
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    try:
        result = retrain(
            make_engine(settings.db_url),
            params,
            model_name=settings.model_name,
            work_dir=Path(settings.storage_root) / "training",
            progress=progress,
            base_dataset=base_manifest(settings.storage_root),
            evidence_positives=ValidationConfig.model_validate(settings.validation_config).min_positives,
        )
    except (TrainingDataError, ModelNotFound, TooFewDevices, DistributedTrainingFailed, BaseDatasetError) as exc:
        raise click.ClickException(str(exc)) from exc
    if result.version is None:
        click.echo(result.reason)
    else:
        click.echo(
            f"candidate version {result.version} (validation AUROC {result.best_val_auroc:.3f}) from snapshot "
            f"{result.snapshot_hash}: {result.counts.get('total', 0)} studies, {result.skipped_studies} unreadable"
        )
    write_json(json_path, result.as_json())


def _registry() -> tuple[Any, Any]:
    """Return (settings, store engine) with MLflow pointed at the configured server."""
    import mlflow

    from pipeline.store import make_engine

    settings = get_settings()
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    return settings, make_engine(settings.db_url)


@main.group("testsets", invoke_without_command=True)
@click.option("--prevalence", type=click.FloatRange(0.001, 0.999), default=0.05, show_default=True)
@click.option("--regression-size", type=click.IntRange(min=1), default=2000, show_default=True)
@JSON_OPTION
@click.pass_context
def testsets_command(ctx: click.Context, prevalence: float, regression_size: int, json_path: Path | None) -> None:
    """Build the fixed validation test sets from the store's labeled studies (a new version only where they changed).

    The subcommands show the stored versions, bring them up to the served population, and freeze them.
    """
    from pipeline.store import upgrade

    _, engine = _registry()
    upgrade(engine)  # the versions' table is read and written below: a new store gets it first
    if ctx.invoked_subcommand is not None:
        return
    from pipeline.validation import TestSetConfig, build_test_sets

    built = build_test_sets(engine, TestSetConfig(prevalence=prevalence, regression_size=regression_size))
    for test_set in built.values():
        click.echo(test_set.describe())
    write_json(
        json_path, {n: {"hash": s.hash, "studies": len(s.items), "abnormal": s.n_abnormal} for n, s in built.items()}
    )


@testsets_command.command("list")
@JSON_OPTION
def testsets_list(json_path: Path | None) -> None:
    """Every stored version of every test set: size, abnormal studies, why it exists, who froze it; * is current."""
    from pipeline.validation import test_set_versions

    _, engine = _registry()
    versions = test_set_versions(engine)
    for row in versions.itertuples(index=False):
        frozen = f" FROZEN by {row.frozen_by}" if row.frozen_by else ""
        click.echo(
            f"{'*' if row.current else ' '} {row.name:<28} {row.test_set_hash[:12]} {str(row.created_at)[:19]} "
            f"{row.n_items:>5} studies {row.n_abnormal:>4} abnormal{frozen}  {row.reason}"
        )
    write_json(json_path, json.loads(versions.to_json(orient="records", date_format="iso")))


@testsets_command.command("follow")
@JSON_OPTION
def testsets_follow(json_path: Path | None) -> None:
    """Add the evidence of every served site and scanner the sets lack (what each validation does first)."""
    from pipeline.validation import follow_served_population

    _, engine = _registry()
    following = follow_served_population(engine)
    for line in following.changes + following.blocked or ["every served site and scanner has its evidence"]:
        click.echo(line)
    write_json(json_path, {"changes": following.changes, "blocked": following.blocked})


@testsets_command.command("freeze")
@click.option("--by", "by", required=True, help="Who freezes them (the release manager's name).")
@click.option(
    "--version",
    "versions",
    multiple=True,
    metavar="NAME=HASH",
    help="Freeze this version of a set (a unique hash prefix will do; repeatable). Default: every current version.",
)
def testsets_freeze(by: str, versions: tuple[str, ...]) -> None:
    """Freeze the test sets: validation judges on exactly these versions, and following the population waits."""
    from pipeline.validation import TestSetNotFound, freeze_test_sets

    chosen = {}
    for item in versions:
        name, sep, digest = item.partition("=")
        if not sep or not name or not digest:
            raise click.BadParameter(
                f"{item!r} is not NAME=HASH (for example regression=3f2a9c1e)", param_hint="--version"
            )
        chosen[name] = digest
    _, engine = _registry()
    try:
        frozen = freeze_test_sets(engine, by, chosen or None)
    except (TestSetNotFound, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    for test_set in frozen.values():
        click.echo(f"frozen: {test_set.describe()}")


@testsets_command.command("unfreeze")
def testsets_unfreeze() -> None:
    """Lift the freeze: validation goes back to the latest versions, which follow the served population."""
    from pipeline.validation import unfreeze_test_sets

    _, engine = _registry()
    click.echo(f"unfroze {unfreeze_test_sets(engine)} versions")


@main.command("validate")
@click.option("--candidate", required=True, help="The version (or alias) to validate.")
@click.option(
    "--champion", default="champion", show_default=True, help="The version (or alias) it must not be worse than."
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="YAML of the gate's margins (ValidationConfig: auroc_margin, sensitivity_target, ...).",
)
@click.option("--html", "html_path", type=click.Path(dir_okay=False, path_type=Path), help="Write the report here too.")
@click.option(
    "--record/--no-record", default=True, show_default=True, help="Write the verdict onto the version in MLflow."
)
@JSON_OPTION
def validate_command(
    candidate: str,
    champion: str,
    config_path: Path | None,
    html_path: Path | None,
    record: bool,
    json_path: Path | None,
) -> None:
    """Validate a candidate against the champion on the fixed test sets; exit 1 when the verdict is FAILED."""
    import shutil
    import tempfile

    import yaml
    from pydantic import ValidationError as ConfigError

    from pipeline.reports.validation import write_validation_report
    from pipeline.validation import ValidationConfig, ValidationError, record_verdict, validate

    try:
        raw = yaml.safe_load(config_path.read_text()) if config_path else {}
        config = ValidationConfig.model_validate(raw or {})
    except (yaml.YAMLError, ConfigError) as exc:
        raise click.ClickException(f"{config_path}: {exc}") from exc
    settings, engine = _registry()
    try:
        verdict = validate(
            engine, settings.model_name, candidate, champion=champion, config=config, progress=click.echo
        )
    except ValidationError as exc:
        raise click.ClickException(str(exc)) from exc
    if record:
        folder = Path(tempfile.mkdtemp(prefix="validation-"))
        click.echo(f"report: {record_verdict(engine, verdict, report_dir=folder)}")
        if html_path is not None:
            html_path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(folder / "validation.html", html_path)
    elif html_path is not None:
        html_path.parent.mkdir(parents=True, exist_ok=True)
        write_validation_report(verdict, html_path)
    write_json(json_path, verdict.to_json())
    if not verdict.passed:
        sys.exit(1)


@main.command("promote")
@click.option("--version", "version", required=True, help="The validated version to make champion.")
@click.option("--approver", required=True, help="Who approves (recorded on the version and in the audit trail).")
@click.option("--note", default="", help="What the approver wants on record.")
@JSON_OPTION
def promote_command(version: str, approver: str, note: str, json_path: Path | None) -> None:
    """Make a version the champion: refused unless its validation passed against the champion serving now."""
    from pipeline.validation import PromotionRefused, promote

    settings, engine = _registry()
    try:
        change = promote(engine, settings.model_name, version, approver, note=note)
    except PromotionRefused as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"version {change.champion} is the champion (previous {change.previous}), approved by {change.actor}"
        if change.changed
        else f"version {change.champion} already is the champion"
    )
    write_json(json_path, dataclasses.asdict(change))


@main.command("reject")
@click.option("--version", "version", required=True)
@click.option("--approver", required=True, help="Who rejects.")
@click.option("--reason", required=True, help="Why (recorded).")
def reject_command(version: str, approver: str, reason: str) -> None:
    """Record that a candidate was turned down, by whom and why; the champion stays."""
    from pipeline.validation import PromotionRefused, reject

    settings, engine = _registry()
    try:
        reject(engine, settings.model_name, version, approver, reason)
    except PromotionRefused as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"version {version} rejected by {approver}")


@main.command("rollback")
@click.option("--to", "to", required=True, help="A version that served before, or 'previous'.")
@click.option("--actor", default="on-call", show_default=True, help="Who rolls back (recorded).")
@click.option("--reason", default="", help="Why (recorded).")
@JSON_OPTION
def rollback_command(to: str, actor: str, reason: str, json_path: Path | None) -> None:
    """Move the champion alias back to a version that served before: the short-term answer to an incident."""
    from pipeline.validation import PromotionRefused, rollback

    settings, engine = _registry()
    try:
        change = rollback(engine, settings.model_name, to, actor, reason=reason)
    except PromotionRefused as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"version {change.champion} is the champion again (was {change.previous})")
    write_json(json_path, dataclasses.asdict(change))


def _utc(moment: Any) -> Any:
    from datetime import UTC

    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _service_factory(settings: Any, default: str) -> Any:
    """Return a function giving the inference service for a model alias or version, shadow attached."""
    import mlflow

    from pipeline.inference import registry_services
    from pipeline.registry import ModelNotFound

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    services = registry_services(settings.model_name, key=settings.pseudonym_key.get_secret_value(), default=default)

    def service_for(alias_or_version: str) -> Any:
        try:
            return services(alias_or_version)
        except ModelNotFound as exc:
            raise click.ClickException(f"{exc}: run `pipeline bootstrap` first, or pass --model none") from exc

    return service_for


@main.command()
@click.option(
    "--scenario",
    "scenario_path",
    default="scenarios/stable.yaml",
    show_default=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
)
@click.option(
    "--new-site-scenario",
    default="scenarios/new_hospital.yaml",
    show_default=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Its joining site is the unseen-scanner test set.",
)
@click.option("--train-days", type=click.IntRange(min=1), default=7, show_default=True)
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--image-size", type=click.IntRange(16, 1024), default=64, show_default=True, help="Network input size.")
@click.option("--force", is_flag=True, help="Train a new champion even if one exists.")
@click.option("--progress/--no-progress", default=True, show_default=True)
@JSON_OPTION
def bootstrap(
    scenario_path: Path,
    new_site_scenario: Path,
    train_days: int,
    epochs: int,
    image_size: int,
    force: bool,
    progress: bool,
    json_path: Path | None,
) -> None:
    """Train the first champion on the stable sites' base dataset and register it in MLflow (alias champion).

    Does nothing when a champion exists, unless --force.
    """
    import mlflow

    from pipeline.simulate.scenario import load_scenario
    from pipeline.training import TrainConfig
    from pipeline.training.bootstrap import BootstrapConfig
    from pipeline.training.bootstrap import bootstrap as run

    settings = get_settings()
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    config = BootstrapConfig(train_days=train_days, train=TrainConfig(image_size=image_size, epochs=epochs))
    result = run(
        load_scenario(scenario_path),
        model_name=settings.model_name,
        storage_root=Path(settings.storage_root),
        key=settings.pseudonym_key.get_secret_value(),
        config=config,
        new_site=load_scenario(new_site_scenario),
        force=force,
        progress=progress,
    )
    if result.created:
        click.echo(
            f"{result.model_name} version {result.version} is champion: AUROC {result.test_auroc_stable:.3f} on held-out "
            f"stable-site studies, {result.test_auroc_new_site or float('nan'):.3f} on the unseen scanner; "
            f"threshold {result.threshold:.4f}"
        )
    else:
        click.echo(f"{result.model_name} already has a champion: version {result.version}")
    write_json(json_path, dataclasses.asdict(result))


def _result_json(result: Any) -> dict[str, Any]:
    payload = dataclasses.asdict(result)
    payload["errors"] = [str(e) for e in result.errors]
    payload["unchanged"] = result.unchanged
    return payload


if __name__ == "__main__":
    main()
