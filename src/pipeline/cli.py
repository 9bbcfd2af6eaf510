"""The ``pipeline`` console script: one subcommand per stage, calling the same entry functions as the DAG tasks.

Each command parses its options, calls one function of ``pipeline.entry`` with this process's resources, and
formats the summary it returns. What can go wrong is one line on stderr, never a traceback (``--debug`` shows it):

- exit 1: rejected or quarantined input, a failed check (a FAILED verdict), or a refusal a command explains
  (``click.ClickException``: ``Error: ...``);
- exit 2: a bad invocation: click's usage errors, and the expected failures :class:`PipelineCLI` turns into
  ``error: ...``: a bad ``PIPELINE_*`` value, an unreachable service (named with its URL, password masked), an
  error MLflow or the store answered with, a missing file, a bad scenario file;
- exit 1 for anything unexpected too (a bug, most likely): ``error: unexpected <Type>: <message> (run with --debug
  for the traceback)``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pipeline.config import LOG_LEVELS, get_settings, mask_url, redact
from pipeline.logs import configure_logging
from pipeline.resources import production

if TYPE_CHECKING:
    from pydantic import ValidationError

    from pipeline.resources import Resources

#: Exit code of an expected failure (``error: <line>``), as click's usage errors.
EXPECTED_FAILURE = 2
#: Exit code of an unexpected one (a bug, most likely), as Python's own for an uncaught exception.
UNEXPECTED_FAILURE = 1


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


def _loaded(module: str, name: str) -> type[BaseException] | None:
    """The exception class ``module.name`` when that module is already imported (nothing raised it otherwise)."""
    found = getattr(sys.modules.get(module), name, None)
    return found if isinstance(found, type) and issubclass(found, BaseException) else None


def _instance(exc: BaseException, *classes: type[BaseException] | None) -> bool:
    return isinstance(exc, tuple(c for c in classes if c is not None))


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the exceptions it was raised from or during, innermost last."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _connection_failure(exc: BaseException) -> BaseException | None:
    """The connection error ``exc`` comes from (requests', urllib3's or the operating system's), if any."""
    kinds = (
        _loaded("requests.exceptions", "ConnectionError"),
        _loaded("requests.exceptions", "Timeout"),
        _loaded("urllib3.exceptions", "MaxRetryError"),
        _loaded("urllib3.exceptions", "NewConnectionError"),
        ConnectionError,
        TimeoutError,
    )
    for link in _chain(exc):
        if _instance(link, *kinds) or "Failed to establish a new connection" in str(link):
            return link
    return None


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def expected_failure(exc: Exception) -> str | None:
    """The one line an expected failure is told in (no ``error:`` prefix yet), or None for an unexpected one.

    Expected: bad settings, a bad scenario file, a service that does not answer (MLflow, Label Studio, the store),
    an error MLflow or the store answered with, a missing or unwritable file.
    """
    from pipeline.config import SettingsError
    from pipeline.resources import ServiceUnreachable, check_store, connection_reason

    if _instance(
        exc,
        SettingsError,
        ServiceUnreachable,
        _loaded("pipeline.simulate.scenario", "ScenarioError"),
        _loaded("pipeline.labeling.client", "LabelStudioUnavailable"),
    ):
        return str(exc)
    if _instance(exc, _loaded("sqlalchemy.exc", "OperationalError"), _loaded("sqlalchemy.exc", "InterfaceError")):
        from pipeline.store import make_engine

        engine = make_engine(get_settings().db_url)
        try:
            check_store(engine)  # the connection failing is "cannot be reached"; else the store answered this
        except ServiceUnreachable as down:
            return str(down)
        finally:
            engine.dispose()
        orig = getattr(exc, "orig", None)
        return f"the store at {engine.url.render_as_string(hide_password=True)}: {_first_line(str(orig or exc))}"
    if _instance(exc, _loaded("mlflow.exceptions", "MlflowException")) or _instance(
        exc, _loaded("requests.exceptions", "RequestException")
    ):
        uri = mask_url(get_settings().mlflow_tracking_uri)
        if (cause := _connection_failure(exc)) is not None:
            return f"MLflow at {uri} cannot be reached ({connection_reason(cause)})"
        return f"MLflow at {uri}: {_first_line(getattr(exc, 'message', None) or str(exc))}"
    if isinstance(exc, OSError) and (exc.filename is not None or isinstance(exc, FileNotFoundError)):
        if exc.filename is None:
            return str(exc)  # a missing file the raiser described itself
        also = f" -> {exc.filename2}" if exc.filename2 is not None else ""
        return f"{exc.filename}{also}: {exc.strerror or exc}"
    if (cause := _connection_failure(exc)) is not None:
        return f"cannot connect ({connection_reason(cause)})"
    return None


class PipelineCLI(click.Group):
    """The top-level group: what a command raises ends in one line on stderr.

    Click's own errors (usage: exit 2; ``ClickException``: exit 1) stay as they are; an expected failure
    (:func:`expected_failure`) prints ``error: <line>`` and exits 2; anything else prints ``error: unexpected
    <Type>: <message> (run with --debug for the traceback)`` and exits 1. With ``--debug`` the exception
    propagates, traceback and all. Every line passes :func:`pipeline.config.redact` (no secret, no password).
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort, EOFError):
            raise
        except Exception as exc:
            if ctx.params.get("debug"):
                raise
            try:
                line = expected_failure(exc)
            except Exception:  # telling it failed too (no settings to name the store by): say it as unexpected
                line = None
            if line is None:
                said = " ".join(redact(str(exc)).split())
                click.echo(
                    f"error: unexpected {type(exc).__name__}: {said} (run with --debug for the traceback)", err=True
                )
                ctx.exit(UNEXPECTED_FAILURE)
            click.echo(f"error: {' '.join(redact(str(line)).split())}", err=True)
            ctx.exit(EXPECTED_FAILURE)


@click.group(cls=PipelineCLI, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default=None,
    help="Level of the pipeline's own log messages (default: PIPELINE_LOG_LEVEL, INFO).",
)
@click.option("--debug", is_flag=True, help="Let a failure show its traceback instead of one line.")
def main(log_level: str | None, debug: bool) -> None:
    """Keep a chest X-ray model safe in production: monitor, relabel, retrain, validate, promote.

    Configuration comes from PIPELINE_* environment variables (see `pipeline config`); a bad value stops every
    command before it starts, named.

    Exit codes: 0 done; 1 rejected or quarantined input, a failed check or a refusal; 2 a bad invocation: a wrong
    option or setting, an unreachable service, a missing file, a bad scenario (one line on stderr; --debug shows
    the traceback).
    """
    del debug  # PipelineCLI.invoke reads it from the context
    settings = get_settings()  # bad settings stop here, before any command: one line from PipelineCLI
    configure_logging(log_level or settings.log_level)


def _resources(*, mlflow: bool = False) -> Resources:
    """This process's resources; with ``mlflow``, the tracking server asked first whether it answers.

    Asked first because MLflow's client retries a server that is down for minutes, and the registry's lookups then
    read as "no such version".
    """
    res = production()
    if mlflow:
        res.registry.check()
    return res


@main.command("config")
@JSON_OPTION
def show_config(json_path: Path | None) -> None:
    """Print the effective configuration (secrets and URL passwords masked)."""
    settings = get_settings()
    values = {k: (mask_url(str(v)) if v is not None else None) for k, v in settings.model_dump().items()}
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
    from pipeline.entry import store

    click.echo(f"store at revision {store.migrate(production(), revision)}")


@db.command("current")
def db_current() -> None:
    """Print the store's schema revision (empty for a new database)."""
    from pipeline.entry import store

    click.echo(store.revision(production()) or "")


def _report_ingest(summary: dict[str, Any], json_path: Path | None) -> None:
    """Print one line per file (its counts, or why it was quarantined), rejects and ignored entries on stderr;
    exit 1 when a row was rejected or a file quarantined by this run."""
    for result in summary.get("files", []):
        if result.get("quarantined"):
            name = result.get("name") or result.get("source") or "a file"
            reason = str(result.get("reason") or "unreadable").removeprefix(f"{name}: ")
            click.echo(f"quarantined {name}: {reason}")
        else:
            click.echo(result.get("summary", ""))
        for error in result.get("errors", []):
            click.echo(f"  rejected {error}", err=True)
    for entry in summary.get("unknown", []):
        click.echo(f"ignored {entry}", err=True)
    if waiting := summary.get("quarantined_before", 0):
        click.echo(f"still in quarantine from earlier runs: {waiting} file{'s' if waiting != 1 else ''}", err=True)
    write_json(json_path, summary.get("files", []))
    if summary.get("rejected", 0) or summary.get("quarantined", 0):
        sys.exit(1)


@main.command()
@click.option(
    "--table", "table_name", required=True, type=click.Choice(["studies", "inference_logs", "shadow_logs", "feedback"])
)
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@JSON_OPTION
def ingest(table_name: str, files: tuple[Path, ...], json_path: Path | None) -> None:
    """Load batch files (CSV, JSON lines, Parquet) into the store, idempotently.

    Bad rows are rejected with the row and field named; the rest of each batch loads. One line per file.

    Exit codes: 0 every row loaded (or was there already); 1 a row was rejected or a file quarantined; 2 it could
    not run (one line on stderr).
    """
    from pipeline.entry import store

    _report_ingest(store.ingest_files(production(), table_name, files), json_path)


@main.command("ingest-landing")
@click.option(
    "--landing",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Default: <storage root>/landing.",
)
@JSON_OPTION
def ingest_landing(landing: Path | None, json_path: Path | None) -> None:
    """Load every batch file waiting in the landing folder, then move it to processed/ (or quarantine/).

    One line per file; what the folder holds that is not a batch file is listed as ignored on stderr.

    Exit codes: 0 everything loaded; 1 a row was rejected or a file quarantined by this run; 2 it could not run
    (one line on stderr).
    """
    from pipeline.entry import store

    _report_ingest(store.ingest_landing(production(), landing), json_path)


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
    from pipeline.simulate.scenario import ScenarioError, load_scenario

    load_scenario(scenario_path)  # a bad file is named before any service is asked, and before the imports below
    res = _resources(mlflow=model != "none")
    from pipeline.entry import simulation
    from pipeline.registry import ModelNotFound

    try:
        summary = simulation.simulate(
            res,
            scenario_path,
            days=days,
            start=start_date.date() if start_date else None,
            seed=seed,
            image_size=image_size,
            volume_scale=volume_scale,
            model=None if model == "none" else model,
            progress=progress,
        )
    except ScenarioError:
        raise  # exit 2, as a bad file
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    except ModelNotFound as exc:
        raise click.ClickException(f"{exc}: run `pipeline bootstrap` first, or pass --model none") from exc
    click.echo(
        f"{summary['scenario']}: {summary['studies']} studies over {len(summary['days'])} days "
        f"({summary['abnormal']} abnormal, {summary['feedback']} outcomes to come back, {summary['inference_logs']} "
        f"inference logs of which {summary['failed']} failed); per site: {summary['per_site']}"
    )
    write_json(json_path, {k: v for k, v in summary.items() if k != "scenario"})


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

    from pipeline.demo.loop import DemoConfig, DemoError, run_demo

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
    from pipeline.entry import monitoring
    from pipeline.monitor import EmptyWindow

    try:
        summary = monitoring.check_window(production(), start, end, report_path=html_path, detail=True)
    except EmptyWindow as exc:
        raise click.ClickException(str(exc)) from exc
    detail = summary["detail"]
    click.echo(f"{summary['studies']} studies in {start:%Y-%m-%d %H:%M}..{end:%Y-%m-%d %H:%M} UTC")
    for finding in detail["findings"]:
        click.echo(
            f"  {finding['severity'].upper():8} [{finding['kind']}] {finding['site']} {finding['feature']}: "
            f"{finding['message']}"
        )
    if summary["insufficient_data"]:
        click.echo(f"  insufficient data: {', '.join(summary['insufficient_data'])}")
    for outcome in detail["failed_expectations"]:
        click.echo(f"  expectation failed [{outcome['suite']}] {outcome['description']}: {outcome['unexpected']} rows")
    click.echo(f"report: {summary['report']}")
    if detail.get("data_docs"):
        click.echo(f"data docs: {detail['data_docs']}")
    write_json(json_path, detail)


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
    from pydantic import ValidationError

    from pipeline.entry import labeling

    try:
        summary = labeling.select(production(), day.date(), budget, studies=True)
    except ValidationError as exc:
        raise click.ClickException(_problems(exc)) from exc
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{day:%Y-%m-%d}: picked {summary['picked']} ({summary['already_picked']} picked earlier for this day)")
    for strategy, count in sorted(summary["by_strategy"].items()):
        click.echo(f"  {strategy:10} {count:5}   ({summary['candidates'].get(strategy, 0)} candidates)")
    write_json(json_path, summary)


@main.command("push")
@JSON_OPTION
def push(json_path: Path | None) -> None:
    """Put the queued picks into Label Studio: a rendered image without patient identifiers, the model's
    answer and score pre-filled. Tasks already there are found again, never duplicated."""
    from pipeline.entry import labeling

    summary = _label_studio(labeling.push)
    click.echo(f"pushed {summary['pushed']} ({summary['created']} created, {summary['found']} found again)")
    if summary["unrenderable"]:
        click.echo(f"  {len(summary['unrenderable'])} studies could not be rendered; they stay queued", err=True)
    write_json(json_path, summary)


@main.command("sync")
@JSON_OPTION
def sync(json_path: Path | None) -> None:
    """Pull finished annotations from Label Studio into the label store (incremental, safe to repeat);
    agreement per project; disagreements go to adjudication."""
    from pipeline.entry import labeling

    summary = _label_studio(labeling.sync)
    click.echo(f"{summary['new']} new labels, {summary['updated']} updated")
    for project, p in summary["projects"].items():
        kappa = "" if p["kappa"] is None else f", {p['kappa_statistic']} {p['kappa']:.3f}"
        click.echo(f"  {project:14} {p['new']:5} new{kappa}")
    if summary["new_labels_ready"]:
        click.echo(f"enough new labels for retraining (>= {summary['new_labels_threshold']})")
    write_json(json_path, summary)


def _label_studio(call: Any) -> Any:
    """Run a labeling entry with this process's resources; no token is one line (Label Studio down is one line too,
    exit 2, from :class:`PipelineCLI`)."""
    try:
        return call(production())
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc


def _problems(exc: ValidationError) -> str:
    """A pydantic ValidationError on one line: ``field.path: what is wrong`` for each problem."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in exc.errors())


def _yaml_mapping(path: Path | None, fields: str) -> dict[str, Any]:
    """The mapping in the YAML file at ``path`` (empty without one); a file that is no YAML mapping is one line."""
    import yaml

    if path is None:
        return {}
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, ValueError) as exc:  # ValueError: not UTF-8, or a date that does not exist
        raise click.ClickException(f"{path}: {' '.join(str(exc).split())}") from exc
    if raw is not None and not isinstance(raw, dict):
        raise click.ClickException(f"{path}: a mapping of {fields} fields, got {type(raw).__name__}")
    return raw or {}


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
    from pydantic import ValidationError

    from pipeline.entry import training
    from pipeline.registry import ModelNotFound
    from pipeline.training import TrainingDataError
    from pipeline.training.bootstrap import BaseDatasetError
    from pipeline.training.distributed import DistributedTrainingFailed, TooFewDevices

    res = production()
    raw = _yaml_mapping(config_path, "RetrainParams")
    try:
        training.retrain_params(res, raw, "manual")
    except ValidationError as exc:
        raise click.ClickException(f"{config_path}: {_problems(exc)}") from exc
    res.registry.check()
    try:
        result = training.retrain(res, raw, trigger="manual", progress=progress)
    except (TrainingDataError, ModelNotFound, TooFewDevices, DistributedTrainingFailed, BaseDatasetError) as exc:
        raise click.ClickException(str(exc)) from exc
    if result["version"] is None:
        click.echo(result["reason"])
    else:
        click.echo(
            f"candidate version {result['version']} (validation AUROC {result['best_val_auroc']:.3f}) from snapshot "
            f"{result['snapshot_hash']}: {result['counts'].get('total', 0)} studies, {result['skipped_studies']} "
            "unreadable"
        )
    write_json(json_path, result)


@main.group("testsets", invoke_without_command=True)
@click.option("--prevalence", type=click.FloatRange(0.001, 0.999), default=0.05, show_default=True)
@click.option("--regression-size", type=click.IntRange(min=1), default=2000, show_default=True)
@JSON_OPTION
@click.pass_context
def testsets_command(ctx: click.Context, prevalence: float, regression_size: int, json_path: Path | None) -> None:
    """Build the fixed validation test sets from the store's labeled studies (a new version only where they changed).

    The subcommands show the stored versions, bring them up to the served population, and freeze them.
    """
    if ctx.invoked_subcommand is not None:
        return
    from pipeline.entry import release

    built = release.build_test_sets(production(), prevalence=prevalence, regression_size=regression_size)
    for test_set in built.values():
        click.echo(test_set.pop("describe"))
    write_json(json_path, built)


@testsets_command.command("list")
@JSON_OPTION
def testsets_list(json_path: Path | None) -> None:
    """Every stored version of every test set: size, abnormal studies, why it exists, who froze it; * is current."""
    from pipeline.entry import release

    versions = release.test_set_versions(production())
    for row in versions:
        frozen = f" FROZEN by {row['frozen_by']}" if row["frozen_by"] else ""
        click.echo(
            f"{'*' if row['current'] else ' '} {row['name']:<28} {row['test_set_hash'][:12]} "
            f"{str(row['created_at'])[:19].replace('T', ' ')} {row['n_items']:>5} studies {row['n_abnormal']:>4} "
            f"abnormal{frozen}  {row['reason']}"
        )
    write_json(json_path, versions)


@testsets_command.command("follow")
@JSON_OPTION
def testsets_follow(json_path: Path | None) -> None:
    """Add the evidence of every served site and scanner the sets lack (what each validation does first)."""
    from pipeline.entry import release

    following = release.follow_served_population(production())
    for line in following["changes"] + following["blocked"] or ["every served site and scanner has its evidence"]:
        click.echo(line)
    write_json(json_path, following)


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
    from pipeline.entry import release
    from pipeline.validation import TestSetNotFound

    chosen = {}
    for item in versions:
        name, sep, digest = item.partition("=")
        if not sep or not name or not digest:
            raise click.BadParameter(
                f"{item!r} is not NAME=HASH (for example regression=3f2a9c1e)", param_hint="--version"
            )
        chosen[name] = digest
    try:
        frozen = release.freeze_test_sets(production(), by, chosen or None)
    except (TestSetNotFound, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    for described in frozen:
        click.echo(f"frozen: {described}")


@testsets_command.command("unfreeze")
def testsets_unfreeze() -> None:
    """Lift the freeze: validation goes back to the latest versions, which follow the served population."""
    from pipeline.entry import release

    click.echo(f"unfroze {release.unfreeze_test_sets(production())} versions")


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
    from pydantic import ValidationError as ConfigError

    from pipeline.entry import release
    from pipeline.validation import ValidationError

    res = production()
    raw = _yaml_mapping(config_path, "ValidationConfig")
    try:
        release.gate_config(res, raw)
    except ConfigError as exc:
        raise click.ClickException(f"{config_path}: {_problems(exc)}") from exc
    res.registry.check()
    try:
        summary = release.validate(
            res, candidate, champion, raw, record=record, html_path=html_path, progress=click.echo
        )
    except ValidationError as exc:
        raise click.ClickException(str(exc)) from exc
    if summary["report"]:
        click.echo(f"report: {summary['report']}")
    write_json(json_path, summary["verdict"])
    if summary["status"] != "passed":
        sys.exit(1)


@main.command("promote")
@click.option("--version", "version", required=True, help="The validated version to make champion.")
@click.option("--approver", required=True, help="Who approves (recorded on the version and in the audit trail).")
@click.option("--note", default="", help="What the approver wants on record.")
@JSON_OPTION
def promote_command(version: str, approver: str, note: str, json_path: Path | None) -> None:
    """Make a version the champion: refused unless its validation passed against the champion serving now."""
    res = _resources(mlflow=True)  # before the imports below, which take seconds
    from pipeline.entry import release
    from pipeline.validation import PromotionRefused

    answer = release.Answer(approve=True, by=approver, reason=note, source="the pipeline CLI")
    try:
        outcome = release.decide(res, version, answer)
    except PromotionRefused as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"version {outcome['champion']} is the champion (previous {outcome['previous']}), approved by {outcome['actor']}"
        if outcome["changed"]
        else f"version {outcome['champion']} already is the champion"
    )
    write_json(json_path, outcome)


@main.command("reject")
@click.option("--version", "version", required=True)
@click.option("--approver", required=True, help="Who rejects.")
@click.option("--reason", required=True, help="Why (recorded).")
def reject_command(version: str, approver: str, reason: str) -> None:
    """Record that a candidate was turned down, by whom and why; the champion stays."""
    res = _resources(mlflow=True)
    from pipeline.entry import release
    from pipeline.validation import PromotionRefused

    answer = release.Answer(approve=False, by=approver, reason=reason, source="the pipeline CLI")
    try:
        release.decide(res, version, answer)
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
    res = _resources(mlflow=True)
    from pipeline.entry import release
    from pipeline.validation import PromotionRefused

    try:
        change = release.rollback(res, to, actor, reason=reason)
    except PromotionRefused as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"version {change['champion']} is the champion again (was {change['previous']})")
    write_json(json_path, change)


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
    from pipeline.entry import training

    result = training.bootstrap(
        _resources(mlflow=True),
        scenario_path,
        new_site=new_site_scenario,
        train_days=train_days,
        epochs=epochs,
        image_size=image_size,
        force=force,
        progress=progress,
    )
    if result["created"]:
        click.echo(
            f"{result['model_name']} version {result['version']} is champion: AUROC {result['test_auroc_stable']:.3f} "
            f"on held-out stable-site studies, {result['test_auroc_new_site'] or float('nan'):.3f} on the unseen "
            f"scanner; threshold {result['threshold']:.4f}"
        )
    else:
        click.echo(f"{result['model_name']} already has a champion: version {result['version']}")
    write_json(json_path, result)


if __name__ == "__main__":
    main()
