"""Bad invocations of the `pipeline` console script: one line on stderr, exit 2, no traceback, no secret.

Each case is a command with a wrong setting, an unreachable service, a missing file or a bad scenario; the
services are real and local (a closed port on 127.0.0.1, the PostgreSQL server at 127.0.0.1:5432 when it runs).
``--debug`` brings the traceback back.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result
from sqlalchemy.engine import make_url

from pipeline.cli import main
from pipeline.config import Settings, get_settings

#: Secret values set in every case's environment: none may show in any output.
SECRETS = {
    "PIPELINE_LABEL_STUDIO_TOKEN": "ls-token-Qm7x",
    "PIPELINE_PSEUDONYM_KEY": "pseudonym-key-Zr4t",
    "PIPELINE_SENTRY_DSN": "https://sentry-key-Jh2w@o1.ingest.sentry.io/1",
    "PIPELINE_WEB_TOKEN": "web-token-Kd9p",
}
DB_PASSWORD = "db-pass-Vw3n"
MLFLOW_PASSWORD = "ml-pass-Tb6c"
NEVER_SHOWN = (*SECRETS.values(), "sentry-key-Jh2w", DB_PASSWORD, MLFLOW_PASSWORD)


def closed_port() -> int:
    """A local TCP port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


PORT = closed_port()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> typing.Iterator[Path]:
    """A deployment on a SQLite file with every secret set, MLflow and Label Studio on a closed port."""
    for name in list(Settings.model_fields):
        monkeypatch.delenv(f"PIPELINE_{name.upper()}", raising=False)
    monkeypatch.setenv("PIPELINE_DB_URL", f"sqlite:///{tmp_path / 'store.db'}")
    monkeypatch.setenv("PIPELINE_STORAGE_ROOT", str(tmp_path / "storage"))
    monkeypatch.setenv("PIPELINE_MLFLOW_TRACKING_URI", f"http://127.0.0.1:{PORT}")
    monkeypatch.setenv("PIPELINE_LABEL_STUDIO_URL", f"http://127.0.0.1:{PORT}")
    monkeypatch.setenv("PIPELINE_LABEL_STUDIO_ATTEMPTS", "1")
    monkeypatch.setenv("PIPELINE_LABEL_STUDIO_BACKOFF_S", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def invoke(args: typing.Sequence[str], env: dict[str, str] | None = None) -> Result:
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(main, list(args), env=env)
    finally:
        get_settings.cache_clear()


def one_error_line(result: Result) -> str:
    """The one line a bad invocation leaves on stderr (after checking its exit code, and that nothing leaked)."""
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        pytest.fail(f"TRACEBACK {type(result.exception).__name__}: {result.exception}")
    everything = result.output + result.stderr
    assert not [s for s in NEVER_SHOWN if s in everything], everything
    assert "Traceback" not in everything
    assert result.exit_code == 2, everything
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


# --- settings -----------------------------------------------------------------------------------------------------

#: A wrong value for each kind of field; strings that are checked get their own.
WRONG_BY_TYPE = {int: "abc", float: "abc", bool: "maybe", dict: "{not json"}
WRONG_STRINGS = {
    "db_url": f"mysql://pipeline:{DB_PASSWORD}@db:3306/pipeline",
    "mlflow_tracking_uri": f"ftp://ml:{MLFLOW_PASSWORD}@mlflow",
    "label_studio_url": "localhost:8080",
    "log_level": "LOUD",
}
#: Free text (paths, names, secrets): no value is wrong for them.
FREE_TEXT = {
    "storage_root",
    "gx_project_dir",
    "model_name",
    "label_studio_token",
    "label_studio_document_root",
    "label_studio_project_prefix",
    "sentry_dsn",
    "web_token",
    "pseudonym_key",
}


def base_type(annotation: object) -> object:
    """``int`` for ``int | None``, ``dict`` for ``dict[str, Any]``."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return base_type(args[0])
    return typing.get_origin(annotation) or annotation


def wrong_value(name: str) -> str | None:
    if name in WRONG_STRINGS:
        return WRONG_STRINGS[name]
    return WRONG_BY_TYPE.get(base_type(Settings.model_fields[name].annotation))  # type: ignore[call-overload]


WRONG_SETTINGS = {name: value for name in Settings.model_fields if (value := wrong_value(name)) is not None}


def test_every_field_is_either_free_text_or_has_a_wrong_value_here() -> None:
    assert set(WRONG_SETTINGS) | FREE_TEXT == set(Settings.model_fields)
    assert not set(WRONG_SETTINGS) & FREE_TEXT


@pytest.mark.parametrize(("name", "value"), WRONG_SETTINGS.items(), ids=[f"{n}={v}" for n, v in WRONG_SETTINGS.items()])
def test_a_wrong_setting_is_one_line_naming_the_variable(env: Path, name: str, value: str) -> None:
    variable = f"PIPELINE_{name.upper()}"
    line = one_error_line(invoke(["config"], {variable: value}))
    assert line.startswith(f"error: {variable}: "), line


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("PIPELINE_RELABEL_DAILY_BUDGET", "abc", "error: PIPELINE_RELABEL_DAILY_BUDGET: 'abc' is not an integer"),
        ("PIPELINE_RELABEL_DAILY_BUDGET", "-1", "error: PIPELINE_RELABEL_DAILY_BUDGET: '-1' must be at least 0"),
        ("PIPELINE_RELABEL_SITE_CAP", "2", "error: PIPELINE_RELABEL_SITE_CAP: '2' must be at most 1"),
        ("PIPELINE_LABEL_STUDIO_BACKOFF_S", "inf", "error: PIPELINE_LABEL_STUDIO_BACKOFF_S: 'inf' is not a finite"),
        ("PIPELINE_TRAIN_NPROC", "0", "error: PIPELINE_TRAIN_NPROC: '0' must be at least 1"),
        ("PIPELINE_TIME_SCHEDULES", "maybe", "error: PIPELINE_TIME_SCHEDULES: 'maybe' is not a boolean"),
        (
            "PIPELINE_VALIDATION_CONFIG",
            "{not json",
            "error: PIPELINE_VALIDATION_CONFIG: not valid JSON (line 1 column 2)",
        ),
        ("PIPELINE_VALIDATION_CONFIG", "[1, 2]", "error: PIPELINE_VALIDATION_CONFIG: must be a JSON object"),
        ("PIPELINE_VALIDATION_CONFIG", '{"auroc_margn": 0.1}', "unknown field 'auroc_margn' of ValidationConfig"),
        ("PIPELINE_RETRAIN_DEFAULTS", '{"epoch": 3, "seed": 1}', "unknown field 'epoch' of RetrainParams"),
        ("PIPELINE_DB_URL", "mysql://pipeline:db-pass-Vw3n@db/pipeline", "error: PIPELINE_DB_URL: must be a sqlite://"),
        ("PIPELINE_DB_URL", "postgresql://pipeline:db-pass-Vw3n@db:port/pipeline", "error: PIPELINE_DB_URL: "),
        ("PIPELINE_MLFLOW_TRACKING_URI", "http://", "error: PIPELINE_MLFLOW_TRACKING_URI: "),
        ("PIPELINE_MLFLOW_TRACKING_URI", "mlflow:5000", "error: PIPELINE_MLFLOW_TRACKING_URI: "),
        ("PIPELINE_LABEL_STUDIO_URL", "ftp://ls", "error: PIPELINE_LABEL_STUDIO_URL: must be an http:// or https://"),
        ("PIPELINE_LOG_LEVEL", "loud", "error: PIPELINE_LOG_LEVEL: 'loud' is not a log level"),
    ],
)
def test_what_is_wrong_with_a_setting_is_said(env: Path, variable: str, value: str, says: str) -> None:
    line = one_error_line(invoke(["db", "current"], {variable: value}))
    assert says in line, line


def test_two_wrong_settings_are_both_named_in_the_one_line(env: Path) -> None:
    line = one_error_line(invoke(["config"], {"PIPELINE_RELABEL_DAILY_BUDGET": "abc", "PIPELINE_SHADOW_DAYS": "soon"}))
    assert "PIPELINE_RELABEL_DAILY_BUDGET: 'abc'" in line and "PIPELINE_SHADOW_DAYS: 'soon'" in line


def test_a_log_level_setting_is_read_whatever_its_case(env: Path) -> None:
    result = invoke(["config"], {"PIPELINE_LOG_LEVEL": "debug"})
    assert result.exit_code == 0 and "PIPELINE_LOG_LEVEL=DEBUG" in result.output


def test_config_never_prints_a_password_of_a_url(env: Path) -> None:
    result = invoke(["config"], {"PIPELINE_DB_URL": f"postgresql://pipeline:{DB_PASSWORD}@db:5432/pipeline"})
    assert result.exit_code == 0
    assert (
        DB_PASSWORD not in result.output
        and "PIPELINE_DB_URL=postgresql://pipeline:***@db:5432/pipeline" in result.output
    )


# --- the --log-level option: click's own usage error --------------------------------------------------------------


def test_an_unknown_log_level_option_is_a_usage_error(env: Path) -> None:
    result = invoke(["--log-level", "LOUD", "config"])
    assert result.exit_code == 2 and not isinstance(result.exception, ValueError)
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "'LOUD' is not one of" in errors[0], result.stderr


def test_the_log_level_option_takes_any_case(env: Path) -> None:
    assert invoke(["--log-level", "debug", "config"]).exit_code == 0


# --- services -----------------------------------------------------------------------------------------------------

GOOD_SCENARIO = (
    "name: tiny\nstart: 2026-01-05\ndays: 1\nimage_size: 32\nsites: [{id: a, daily_volume: 1, devices: [{id: d}]}]\n"
)


@dataclass(frozen=True)
class Bad:
    """A bad invocation: its arguments and environment (``{tmp}``, ``{port}`` filled in) and what its line says."""

    args: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    says: str = ""

    def run(self, tmp: Path) -> str:
        fill = {"tmp": str(tmp), "port": str(PORT)}
        args = [a.format(**fill) for a in self.args]
        env = {k: v.format(**fill) for k, v in self.env.items()}
        line = one_error_line(invoke(args, env))
        assert self.says.format(**fill) in line, line
        return line


BATCH = (
    "study_id,model_version,site,received_at,finished_at,status,latency_s,prob_abnormal,decision\n"
    f"{'0' * 32},1,a,2026-01-01T00:00:00Z,2026-01-01T00:00:01Z,ok,1.0,0.3,abnormal\n"
)
MLFLOW_DOWN = "error: MLflow at http://127.0.0.1:{port} cannot be reached"
PG_DOWN = {"PIPELINE_DB_URL": f"postgresql://pipeline:{DB_PASSWORD}@127.0.0.1:{{port}}/pipeline"}
STORE_DOWN = "error: the store at postgresql://pipeline:***@127.0.0.1:{port}/pipeline cannot be reached"

SERVICES = {
    "mlflow down: promote": Bad(("promote", "--version", "99", "--approver", "rm"), says=MLFLOW_DOWN),
    "mlflow down: reject": Bad(("reject", "--version", "2", "--approver", "rm", "--reason", "no"), says=MLFLOW_DOWN),
    "mlflow down: rollback": Bad(("rollback", "--to", "previous"), says=MLFLOW_DOWN),
    "mlflow down: validate": Bad(("validate", "--candidate", "2"), says=MLFLOW_DOWN),
    "mlflow down: simulate": Bad(("simulate", "--scenario", "{tmp}/good.yaml", "--no-progress"), says=MLFLOW_DOWN),
    "mlflow down, its password masked": Bad(
        ("promote", "--version", "99", "--approver", "rm"),
        {"PIPELINE_MLFLOW_TRACKING_URI": f"http://ml:{MLFLOW_PASSWORD}@127.0.0.1:{{port}}"},
        says="error: MLflow at http://ml:***@127.0.0.1:{port} cannot be reached",
    ),
    "label studio down: sync": Bad(("sync",), says="Label Studio at http://127.0.0.1:{port} is unavailable"),
    "store down: db current": Bad(("db", "current"), PG_DOWN, STORE_DOWN),
    "store down: db upgrade": Bad(("db", "upgrade"), PG_DOWN, STORE_DOWN),
    "store down: testsets list": Bad(("testsets", "list"), PG_DOWN, STORE_DOWN),
    "store down: select": Bad(("select", "--date", "2026-01-05"), PG_DOWN, STORE_DOWN),
    "store down: ingest": Bad(("ingest", "--table", "inference_logs", "{tmp}/batch.csv"), PG_DOWN, STORE_DOWN),
    "missing file: the expectation suites": Bad(
        ("monitor", "--start", "2026-01-05", "--end", "2026-01-06"),
        {"PIPELINE_GX_PROJECT_DIR": "{tmp}/no-gx"},
        says="error: no Great Expectations suites at {tmp}/no-gx",
    ),
}


@pytest.mark.parametrize("case", SERVICES.values(), ids=SERVICES.keys())
def test_an_unreachable_service_or_missing_file_is_one_line(env: Path, case: Bad) -> None:
    (env / "good.yaml").write_text(GOOD_SCENARIO)
    (env / "batch.csv").write_text(BATCH)
    case.run(env)


def test_a_missing_database_on_a_running_server_is_one_line(env: Path, pg_admin_url: str) -> None:
    """On the harness's server (the one at 127.0.0.1:5432, or the throwaway cluster it starts)."""
    missing = make_url(pg_admin_url).set(drivername="postgresql", database="pipeline_no_such_database")
    url = missing.set(password=DB_PASSWORD).render_as_string(hide_password=False)
    line = one_error_line(invoke(["db", "current"], {"PIPELINE_DB_URL": url}))
    shown = f"postgresql://{missing.username}:***@{missing.host}:{missing.port}/pipeline_no_such_database"
    assert f"the store at {shown}" in line
    assert "does not exist" in line or "authentication failed" in line, line


def test_with_mlflow_up_an_unknown_version_is_named(env: Path) -> None:
    line = invoke(
        ["promote", "--version", "99", "--approver", "rm"],
        {"PIPELINE_MLFLOW_TRACKING_URI": f"sqlite:///{env / 'mlflow.db'}"},
    )
    assert line.exit_code == 1, line.output
    assert "has no version '99'" in line.stderr and "cannot be reached" not in line.stderr


# --- scenarios ----------------------------------------------------------------------------------------------------

SCENARIOS = {
    "not a mapping": ("- a\n- b\n", "a scenario is a mapping, got list"),
    "events a number": (GOOD_SCENARIO + "events: 5\n", "events: a list of events, got int"),
    "events empty": (GOOD_SCENARIO + "events:\n", "events: a list of events, got nothing"),
    "an unknown key": (GOOD_SCENARIO + "hospitals: 3\n", "hospitals: Extra inputs are not permitted"),
    "a day that does not exist": (GOOD_SCENARIO.replace("2026-01-05", "2026-02-30"), "start: "),
    "a month that does not exist": (GOOD_SCENARIO.replace("2026-01-05", "2026-13-05"), "start: "),
    "not YAML": ("name: [x\n", "cannot read scenario"),
    "extends a missing file": ("extends: nowhere.yaml\nname: x\n", "nowhere.yaml"),
    "extends, events a number": ("extends: good.yaml\nevents: 5\n", "events"),
    "an unknown event": (GOOD_SCENARIO + "events: [{type: flood, day: 1}]\n", "events.0"),
    "not UTF-8": ("name: \xff\xfe\n", "cannot read scenario"),
}


@pytest.mark.parametrize(("text", "says"), SCENARIOS.values(), ids=SCENARIOS.keys())
def test_a_bad_scenario_is_one_line_naming_the_file_and_the_field(env: Path, text: str, says: str) -> None:
    (env / "good.yaml").write_text(GOOD_SCENARIO)
    bad = env / "bad.yaml"
    bad.write_bytes(text.encode("latin-1"))
    line = one_error_line(invoke(["simulate", "--scenario", str(bad), "--model", "none"]))
    assert str(bad) in line and says in line, line


def test_a_bad_scenario_is_named_before_mlflow_is_asked(env: Path) -> None:
    bad = env / "bad.yaml"
    bad.write_text(GOOD_SCENARIO + "events: 5\n")
    line = one_error_line(invoke(["simulate", "--scenario", str(bad)]))
    assert str(bad) in line and "MLflow" not in line


def test_a_missing_landing_folder_is_a_usage_error(env: Path) -> None:
    result = invoke(["ingest-landing", "--landing", str(env / "nowhere")])
    assert result.exit_code == 2 and "does not exist" in result.stderr


# --- the unexpected, and --debug ----------------------------------------------------------------------------------


def test_an_unexpected_error_is_one_line_and_exit_1(env: Path) -> None:
    @click.command("explode")
    def explode() -> None:
        raise KeyError("nobody expects this")

    main.add_command(explode)
    try:
        result = invoke(["explode"])
    finally:
        main.commands.pop("explode")
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "error: unexpected KeyError: 'nobody expects this' (run with --debug for the traceback)"
    )


def test_a_refusal_a_command_explains_keeps_clicks_one_line(env: Path) -> None:
    result = invoke(["testsets", "freeze", "--by", "rm"])
    assert result.exit_code == 1 and result.stderr.startswith("Error: no test sets in the store to freeze")
    assert len(result.stderr.splitlines()) == 1


def pipeline(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The console script itself, in a fresh process."""
    script = Path(sys.executable).with_name("pipeline")
    return subprocess.run([str(script), *args], env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def process_env(env: Path) -> dict[str, str]:
    import os

    return dict(os.environ)


def test_the_console_script_says_one_line_and_exits_2(process_env: dict[str, str]) -> None:
    done = pipeline("config", env=process_env | {"PIPELINE_RELABEL_DAILY_BUDGET": "abc"})
    assert done.returncode == 2, done.stderr
    assert done.stderr == "error: PIPELINE_RELABEL_DAILY_BUDGET: 'abc' is not an integer\n"


def test_the_console_script_names_an_unreachable_store(process_env: dict[str, str]) -> None:
    url = f"postgresql://pipeline:{DB_PASSWORD}@127.0.0.1:{PORT}/pipeline"
    done = pipeline("db", "current", env=process_env | {"PIPELINE_DB_URL": url})
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"error: the store at postgresql://pipeline:***@127.0.0.1:{PORT}/pipeline cannot")
    assert len(done.stderr.splitlines()) == 1 and DB_PASSWORD not in done.stderr + done.stdout


def test_debug_shows_the_traceback(process_env: dict[str, str]) -> None:
    done = pipeline("--debug", "config", env=process_env | {"PIPELINE_RELABEL_DAILY_BUDGET": "abc"})
    assert done.returncode == 1
    assert "Traceback (most recent call last)" in done.stderr and "SettingsError" in done.stderr
    assert not [s for s in NEVER_SHOWN if s in done.stderr + done.stdout]
