"""The settings are checked where they enter: a bad ``PIPELINE_*`` value is one line naming it, never a secret."""

from __future__ import annotations

import json
import os
import string
from collections.abc import Iterator
from contextlib import contextmanager
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config import (
    RETRAIN_PARAMS_FIELDS,
    VALIDATION_CONFIG_FIELDS,
    Settings,
    SettingsError,
    get_settings,
    load_settings,
    mask_url,
    redact,
    secret_values,
    variable,
)


@contextmanager
def environment(**values: str) -> Iterator[None]:
    """This process's environment without any ``PIPELINE_*`` variable but ``values`` (by field name)."""
    kept = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    with mock.patch.dict(os.environ, kept | {variable(k): v for k, v in values.items()}, clear=True):
        get_settings.cache_clear()
        try:
            yield
        finally:
            get_settings.cache_clear()


def error_of(**values: str) -> SettingsError:
    with environment(**values), pytest.raises(SettingsError) as caught:
        load_settings()
    return caught.value


def test_the_json_fields_known_here_are_the_models_fields() -> None:
    from pipeline.training.retrain import RetrainParams
    from pipeline.validation import ValidationConfig

    assert set(ValidationConfig.model_fields) == VALIDATION_CONFIG_FIELDS
    assert set(RetrainParams.model_fields) == RETRAIN_PARAMS_FIELDS


def test_each_bad_variable_gets_its_line_and_str_is_one_line() -> None:
    error = error_of(relabel_daily_budget="abc", validation_config="{not json", db_url="mysql://db/x")
    assert sorted(error.lines) == [
        "PIPELINE_DB_URL: must be a sqlite:// or postgresql:// URL, got 'mysql://db/x'",
        "PIPELINE_RELABEL_DAILY_BUDGET: 'abc' is not an integer",
        "PIPELINE_VALIDATION_CONFIG: not valid JSON (line 1 column 2)",
    ]
    assert len(str(error).splitlines()) == 1 and all(line in str(error) for line in error.lines)


def test_get_settings_raises_it_and_caches_nothing_then() -> None:
    with environment(relabel_daily_budget="abc"), pytest.raises(SettingsError, match="PIPELINE_RELABEL_DAILY"):
        get_settings()
    with environment(relabel_daily_budget="7"):
        assert get_settings().relabel_daily_budget == 7


@pytest.mark.parametrize(
    ("values", "says"),
    [
        (
            {"validation_config": '{"auroc_margn": 0.1}'},
            "unknown field 'auroc_margn' of ValidationConfig (did you mean",
        ),
        ({"retrain_defaults": '{"zzz": 1, "epoch": 2}'}, "unknown fields 'epoch', 'zzz' of RetrainParams"),
        ({"retrain_defaults": '"epochs"'}, "must be a JSON object of RetrainParams fields, got 'epochs'"),
        ({"validation_config": "[]"}, "must be a JSON object of ValidationConfig fields, got an array"),
        ({"validation_config": "[" * 100_000}, "PIPELINE_VALIDATION_CONFIG: not valid JSON"),
        ({"log_level": "loud"}, "'loud' is not a log level (one of DEBUG, INFO, WARNING, ERROR, CRITICAL, any case)"),
        ({"label_studio_url": "localhost:8080"}, "must be an http:// or https:// URL, got 'localhost:8080'"),
        ({"label_studio_url": "https://"}, "PIPELINE_LABEL_STUDIO_URL: 'https://' names no host"),
        ({"mlflow_tracking_uri": "mlflow:5000"}, "'mlflow:5000' is not a URI MLflow takes"),
        ({"mlflow_tracking_uri": " "}, "PIPELINE_MLFLOW_TRACKING_URI: is empty"),
        ({"db_url": "postgresql://u:pw@db:port/x"}, "is not a URL SQLAlchemy can parse"),
        ({"shadow_days": "nan"}, "PIPELINE_SHADOW_DAYS: 'nan' is not a finite number"),
        ({"relabel_site_cap": "0"}, "PIPELINE_RELABEL_SITE_CAP: '0' must be greater than 0"),
        ({"web_anonymous": "sometimes"}, "PIPELINE_WEB_ANONYMOUS: 'sometimes' is not a boolean"),
        ({"new_labels_threshold": "x" * 200}, "'" + "x" * 57 + "...' is not an integer"),
    ],
)
def test_what_is_wrong_is_said(values: dict[str, str], says: str) -> None:
    assert says in str(error_of(**values))


@pytest.mark.parametrize(
    "uri",
    [
        "http://mlflow:5000",
        "https://mlflow.example.org/",
        "file:///srv/mlruns",
        "./mlruns",
        "sqlite:///mlflow.db",
        "postgresql+psycopg2://mlflow:pw@db/mlflow",
        "mysql://mlflow@db/mlflow",
        "databricks",
    ],
)
def test_mlflow_takes_a_server_a_folder_or_a_database(uri: str) -> None:
    with environment(mlflow_tracking_uri=uri):
        assert load_settings().mlflow_tracking_uri == uri


def test_a_log_level_of_any_case_is_read_in_capitals() -> None:
    with environment(log_level=" warning "):
        assert load_settings().log_level == "WARNING"


def test_the_json_fields_take_json_from_the_environment_and_objects_in_code() -> None:
    with environment(validation_config='{"auroc_margin": 0.1}'):
        assert load_settings().validation_config == {"auroc_margin": 0.1}
    assert load_settings(retrain_defaults={"epochs": 2}).retrain_defaults == {"epochs": 2}
    with pytest.raises(SettingsError, match="PIPELINE_RETRAIN_DEFAULTS: unknown field 'epoch'"):
        load_settings(retrain_defaults={"epoch": 2})


def test_a_password_in_a_url_never_shows() -> None:
    for values in (
        {"db_url": "mysql://pipeline:Sekr3t-pw@db/pipeline"},
        {"db_url": "postgresql://pipeline:Sekr3t-pw@db:port/pipeline"},
        {"db_url": "postgresql://pipeline:Sekr3t-pw/pipeline"},
        {"mlflow_tracking_uri": "ftp://ml:Sekr3t-pw@mlflow"},
        {"label_studio_url": "ftp://ls:Sekr3t-pw@ls"},
        {"label_studio_url": "http://ls:Sekr3t-pw"},
    ):
        assert "Sekr3t-pw" not in str(error_of(**values)), values


def test_mask_url_hides_passwords_and_keeps_the_rest() -> None:
    assert mask_url("postgresql://u:p%40ss@db:5432/x") == "postgresql://u:***@db:5432/x"
    assert mask_url("at http://a:b@c/d and sqlite:///e.db") == "at http://a:***@c/d and sqlite:///e.db"
    assert mask_url("http://127.0.0.1:5000/x") == "http://127.0.0.1:5000/x"
    assert mask_url("http://[::1]:5000") == "http://[::1]:5000"


def test_redact_hides_every_secret_of_the_environment() -> None:
    with environment(label_studio_token="tok-1234", db_url="postgresql://u:p%40ss-word@db/x", pseudonym_key="key-5678"):
        secrets = secret_values()
        assert {"tok-1234", "key-5678", "p%40ss-word", "p@ss-word"} <= set(secrets)
        said = redact("tok-1234 key-5678 p@ss-word postgresql://u:p%40ss-word@db/x")
    assert said == "*** *** *** postgresql://u:***@db/x"


# --- any value at all ---------------------------------------------------------------------------------------------

#: Settings whose values are parsed (numbers, booleans, JSON, URLs, names): any text must load or be one line.
PARSED = [
    "relabel_daily_budget",
    "relabel_site_cap",
    "label_studio_attempts",
    "label_studio_backoff_s",
    "shadow_days",
    "train_nproc",
    "time_schedules",
    "web_anonymous",
    "validation_config",
    "retrain_defaults",
    "log_level",
    "db_url",
    "mlflow_tracking_uri",
    "label_studio_url",
]
#: What an environment variable can hold: any text but NUL and lone surrogates.
ENV_TEXT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=40)
JSON_TEXT = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=6) | st.sampled_from(sorted(RETRAIN_PARAMS_FIELDS)), inner, max_size=3)
    ),
    max_leaves=6,
).map(json.dumps)


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(PARSED), value=ENV_TEXT | JSON_TEXT)
def test_any_value_loads_or_is_one_line_naming_its_variable(name: str, value: str) -> None:
    with environment(**{name: value}):
        try:
            loaded = load_settings()
        except SettingsError as exc:
            assert len(exc.lines) == 1 and exc.lines[0].startswith(f"{variable(name)}: "), exc.lines
            assert len(str(exc).splitlines()) == 1, str(exc)
        else:
            assert isinstance(loaded, Settings)


PASSWORD = st.text(string.ascii_letters + string.digits + "-_.~%!$&*", min_size=4, max_size=12).map("Pw-{}".format)


@settings(max_examples=150, deadline=None)
@given(
    name=st.sampled_from(["db_url", "mlflow_tracking_uri", "label_studio_url"]),
    scheme=st.sampled_from(["mysql", "ftp", "postgresql", "http", "sqlite", "x"]),
    password=PASSWORD,
    rest=st.text(string.ascii_letters + string.digits + ":/.[]@", max_size=12),
)
def test_no_error_shows_the_password_of_a_url(name: str, scheme: str, password: str, rest: str) -> None:
    with environment(**{name: f"{scheme}://user:{password}@{rest}"}):
        try:
            load_settings()
        except SettingsError as exc:
            assert password not in str(exc), str(exc)
