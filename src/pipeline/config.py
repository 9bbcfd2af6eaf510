"""One settings object for the whole pipeline, read from ``PIPELINE_*`` environment variables.

In production the values come from Airflow connections and variables rendered into the environment of the worker;
locally the defaults give the embedded stack (SQLite, local files, local MLflow and Label Studio). Secrets are
``SecretStr``: they never show in ``repr`` or logs.

Every value is checked where it enters, when the settings are read (:func:`get_settings`, :func:`load_settings`): a
bad one raises :class:`SettingsError`, one line per bad variable naming it and what is wrong, never a secret's value
nor a URL's password (:func:`mask_url`). The CLI prints it as one line; a DAG task fails with it.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import typing
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import unquote, urlsplit

import pydantic_settings
from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_DATA_DIR = Path("data")

#: The level names ``PIPELINE_LOG_LEVEL`` and ``pipeline --log-level`` take (any case).
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

#: Fields of ``pipeline.validation.ValidationConfig`` and ``pipeline.training.retrain.RetrainParams``: the keys
#: ``PIPELINE_VALIDATION_CONFIG`` and ``PIPELINE_RETRAIN_DEFAULTS`` may hold. Named here because importing the
#: models would load torch into every process that reads the settings; ``tests/unit/test_settings.py`` pins them
#: to the models.
VALIDATION_CONFIG_FIELDS = frozenset(
    {
        "confidence",
        "auroc_margin",
        "auroc_min_class",
        "sensitivity_target",
        "sensitivity_target_by_site",
        "filtered_margin",
        "ece_margin",
        "calibration_loss_margin",
        "subgroup_margin",
        "subgroup_min_studies",
        "subgroup_min_class",
        "confident_normal_fraction",
        "unusual_margin",
        "min_positives",
        "max_latency_ms",
        "max_memory_mb",
        "reproduce_atol",
        "age_bands",
    }
)
RETRAIN_PARAMS_FIELDS = frozenset(
    {
        "base_version",
        "epochs",
        "learning_rate",
        "batch_size",
        "image_size",
        "window_days",
        "sites",
        "single_labels",
        "min_new_labels",
        "replay_base",
        "net",
        "seed",
        "wait_for_evidence",
    }
)
_JSON_FIELDS = {
    "validation_config": ("ValidationConfig", VALIDATION_CONFIG_FIELDS),
    "retrain_defaults": ("RetrainParams", RETRAIN_PARAMS_FIELDS),
}

#: URI schemes MLflow's tracking and registry stores take (``mlflow.tracking._tracking_service.utils``), besides a
#: plain local path; a database scheme may carry a driver (``postgresql+psycopg2``).
MLFLOW_SCHEMES = ("http", "https", "file", "databricks", "databricks-uc", "uc")
MLFLOW_DATABASES = ("sqlite", "postgresql", "mysql", "mssql")

# scheme://user:PASSWORD@ anywhere in a text; greedy up to the last '@' of the word, so a password holding an
# unencoded '@' or '/' is masked whole (masking too much beats showing a piece of it).
_URL_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@'\"]*:)(?P<password>[^\s'\"]+)@")
# scheme://user:NOT-A-PORT with no '@': a URL missing its host, whose "port" is most likely a password.
_URL_BAD_PORT = re.compile(
    r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@'\"\[\]]*:)(?P<password>[^\s/'\"@]*[^\d\s/'\"@][^\s/'\"@]*)"
    r"(?=[/\s'\"]|$)"
)
_SHOWN_CHARS = 60


def mask_url(text: str) -> str:
    """Return ``text`` with the password of every URL in it (``scheme://user:password@host``) replaced by ``***``,
    and the "port" of one without a host (``scheme://user:password``) too."""
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}***@", text)
    return _URL_BAD_PORT.sub(lambda m: f"{m['head']}***", text)


def _shown(value: object) -> str:
    """A value as an error message shows it: quoted, on one line, its URL passwords masked, long ones cut short."""
    text = mask_url(value if isinstance(value, str) else repr(value))
    if len(text) > _SHOWN_CHARS:
        text = text[: _SHOWN_CHARS - 3] + "..."
    return repr(text) if isinstance(value, str) else text


def _url_parts(value: str) -> tuple[str, str]:
    """``(scheme, host)`` of a URL, lower-cased.

    Raises:
        ValueError: a bracketed host that is not an IPv6 address, or a port that is not a number (said in words of
            its own: urllib's message would quote the text, a password perhaps).
    """
    try:
        parts = urlsplit(value)
        _ = parts.port  # a port that is not a number raises here
    except ValueError as exc:
        raise ValueError("a bad [IPv6] host" if "IPv6" in str(exc) else "a port that is not a number") from None
    return parts.scheme.lower(), (parts.hostname or "")


def _http_url(value: str) -> str:
    """``value`` when it is an ``http(s)://host`` URL; otherwise raise ValueError saying what is wrong."""
    try:
        scheme, host = _url_parts(value)
    except ValueError as exc:
        raise ValueError(f"{_shown(value)} is not a URL ({exc})") from None
    if scheme not in ("http", "https"):
        raise ValueError(f"must be an http:// or https:// URL, got {_shown(value)}")
    if not host:
        raise ValueError(f"{_shown(value)} names no host")
    return value


class SettingsError(ValueError):
    """``PIPELINE_*`` values that cannot be used.

    ``lines`` holds one line per bad variable, naming it and what is wrong (``PIPELINE_RELABEL_DAILY_BUDGET: 'abc'
    is not an integer``), never a secret's value nor a URL's password; ``str()`` is them on one line.
    """

    def __init__(self, lines: Sequence[str]) -> None:
        self.lines = tuple(lines)
        super().__init__("; ".join(self.lines))


class Settings(BaseSettings):
    """Pipeline configuration; every field maps to ``PIPELINE_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="PIPELINE_", extra="ignore", frozen=True)

    db_url: str = Field(
        default=f"sqlite:///{DEFAULT_DATA_DIR / 'pipeline.db'}",
        description="SQLAlchemy URL of the inference-log store (PostgreSQL in production).",
    )
    storage_root: str = Field(
        default=str(DEFAULT_DATA_DIR / "storage"),
        description="Root for DICOM files, renderings, reports (a folder or an fsspec URL).",
    )
    gx_project_dir: str = Field(
        default="great_expectations",
        description="The Great Expectations project holding the committed expectation suites.",
    )
    mlflow_tracking_uri: str = Field(
        default="http://127.0.0.1:5000",
        description="MLflow's tracking server (http(s)://), or a store MLflow opens itself (a folder, file:, sqlite:).",
    )
    model_name: str = Field(default="cxr-normal-filter", description="Registered model name.")
    train_nproc: int | None = Field(
        default=None,
        ge=1,
        description=(
            "Training processes (torchrun, DistributedDataParallel): one per CUDA device, or N on the CPU (gloo) "
            "where none is visible; unset: one per visible CUDA device, a single process without CUDA or with one."
        ),
    )
    label_studio_url: str = Field(default="http://127.0.0.1:8080")
    label_studio_token: SecretStr | None = None
    label_studio_document_root: str = Field(
        default=str(DEFAULT_DATA_DIR / "label-studio-files"),
        description=(
            "Folder Label Studio serves local files from (its LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT), at the same "
            "path on the pipeline's side: PNG renderings for labeling are written under it."
        ),
    )
    label_studio_project_prefix: str = Field(
        default="pipeline/",
        description="Prefix of the Label Studio project titles the pipeline owns (``<prefix><kind>``).",
    )
    label_studio_image_size_px: int = Field(
        default=1024, ge=16, description="Longest side of the PNG renderings shown to annotators, in pixels."
    )
    label_studio_attempts: int = Field(
        default=4, ge=1, description="Tries per Label Studio request on connection errors and 5xx answers."
    )
    label_studio_backoff_s: float = Field(
        default=1.0,
        ge=0,
        allow_inf_nan=False,
        description="First wait between two tries; it doubles after each failed try.",
    )
    new_labels_threshold: int = Field(
        default=50,
        ge=1,
        description="Labeled studies no snapshot holds yet that make a sync publish the 'new labels' asset.",
    )
    sentry_dsn: SecretStr | None = None
    web_token: SecretStr | None = Field(
        default=None,
        description=(
            "Bearer token the monitoring page asks for when served on its own (uvicorn); inside Airflow's API "
            "server, Airflow's sign-in guards it instead."
        ),
    )
    web_anonymous: bool = Field(
        default=False,
        description="Serve the monitoring page on its own without a credential (local use only).",
    )
    pseudonym_key: SecretStr = Field(
        default=SecretStr("local-demo-key-change-me"),
        description="Key of the keyed hash that turns StudyInstanceUIDs into pseudonymous ids.",
    )
    relabel_daily_budget: int = Field(default=200, ge=0)
    relabel_site_cap: float = Field(
        default=0.4, gt=0, le=1, description="Largest share of the daily budget one site may take."
    )
    # NoDecode: the validator below parses the JSON, so a bad one is named like any other bad value.
    validation_config: Annotated[dict[str, Any], NoDecode] = Field(
        default_factory=dict,
        description="This deployment's validation gate (JSON of ValidationConfig fields); a run's config wins.",
    )
    retrain_defaults: Annotated[dict[str, Any], NoDecode] = Field(
        default_factory=dict,
        description="Parameters of a retraining that new labels start (JSON of RetrainParams fields).",
    )
    time_schedules: bool = Field(
        default=True,
        description="Run the DAGs on their clocks; false leaves triggers and assets only (a replay of past days).",
    )
    log_level: str = Field(default="INFO", description="Level of the pipeline's own log messages (DEBUG, INFO, ...).")
    shadow_days: float = Field(
        default=3.0,
        ge=0,
        allow_inf_nan=False,
        description="Days a validated candidate scores live traffic beside the champion before approval (0: none).",
    )

    @field_validator("db_url")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        if not re.match(r"(sqlite|postgresql)(\+\w+)?://", value):
            raise ValueError(f"must be a sqlite:// or postgresql:// URL, got {_shown(value)}")
        try:
            _ = make_url(value).port  # parses the whole URL; a port that is not a number raises
        except (ArgumentError, ValueError):  # their messages may quote the text: say it in our words
            raise ValueError(f"{_shown(value)} is not a URL SQLAlchemy can parse (check the port)") from None
        return value

    @field_validator("mlflow_tracking_uri")
    @classmethod
    def _mlflow_uri(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("is empty: name MLflow's tracking server (http://host:port)")
        if value in ("databricks", "databricks-uc", "uc"):
            return value
        try:
            scheme, _host = _url_parts(value)
        except ValueError as exc:
            raise ValueError(f"{_shown(value)} is not a URI ({exc})") from None
        if scheme in ("http", "https"):
            return _http_url(value)
        if len(scheme) <= 1 or scheme in MLFLOW_SCHEMES or scheme.split("+")[0] in MLFLOW_DATABASES:
            return value  # a plain local path (a drive letter counts as none), a file: store or a database
        raise ValueError(
            f"{_shown(value)} is not a URI MLflow takes: use http(s)://host:port, a folder or file: path, or a "
            f"database URI ({', '.join(MLFLOW_DATABASES)})"
        )

    @field_validator("label_studio_url")
    @classmethod
    def _label_studio_url(cls, value: str) -> str:
        return _http_url(value)

    @field_validator("log_level", mode="before")
    @classmethod
    def _log_level(cls, value: Any) -> str:
        name = str(value).strip().upper()
        if name not in LOG_LEVELS:
            raise ValueError(f"{_shown(value)} is not a log level (one of {', '.join(LOG_LEVELS)}, any case)")
        return name

    @field_validator("validation_config", "retrain_defaults", mode="before")
    @classmethod
    def _json_object(cls, value: Any, info: ValidationInfo) -> Any:
        model, known = _JSON_FIELDS[str(info.field_name)]
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"not valid JSON (line {exc.lineno} column {exc.colno})") from None
            except RecursionError:
                raise ValueError("not valid JSON (nested too deeply)") from None
        if not isinstance(value, dict):
            kind = "an array" if isinstance(value, list) else f"{_shown(value)}"
            raise ValueError(f"must be a JSON object of {model} fields, got {kind}")
        unknown = sorted(str(key) for key in set(value) - known)
        if unknown:
            close = difflib.get_close_matches(unknown[0], sorted(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(sorted(known))})"
            names = ", ".join(_shown(key) for key in unknown)
            raise ValueError(f"unknown field{'s' if len(unknown) > 1 else ''} {names} of {model}{hint}")
        return value


#: Fields whose value never shows, not even in an error message.
SECRET_FIELDS = frozenset(
    name
    for name, info in Settings.model_fields.items()
    if SecretStr in (info.annotation, *typing.get_args(info.annotation))
)
#: Fields holding a URL that may carry a password.
URL_FIELDS = ("db_url", "mlflow_tracking_uri", "label_studio_url", "sentry_dsn")


def variable(field: str) -> str:
    """The environment variable of a settings field: ``PIPELINE_<FIELD>``."""
    return f"PIPELINE_{field.upper()}"


def _number(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _problem(field: str, error: ErrorDetails) -> str:
    """What is wrong with one value, in words."""
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind == "value_error":  # the validators above: their message says it all
        return str(ctx.get("error", error["msg"]))
    shown = "the value" if field in SECRET_FIELDS else _shown(error.get("input"))
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"{shown} is not an integer"
    if kind in ("float_parsing", "float_type"):
        return f"{shown} is not a number"
    if kind == "finite_number":
        return f"{shown} is not a finite number"
    if kind in ("bool_parsing", "bool_type"):
        return f"{shown} is not a boolean (true or false, 1 or 0, yes or no, on or off)"
    bounds = {
        "greater_than_equal": ("at least", "ge"),
        "greater_than": ("greater than", "gt"),
        "less_than_equal": ("at most", "le"),
        "less_than": ("less than", "lt"),
    }
    if kind in bounds:
        words, key = bounds[kind]
        return f"{shown} must be {words} {_number(ctx.get(key))}"
    return f"{shown}: {' '.join(str(error['msg']).split())}"


def settings_error(exc: ValidationError) -> SettingsError:
    """Return the :class:`SettingsError` of pydantic's ``exc``: one line per bad variable, its problems joined."""
    problems: dict[str, list[str]] = {}
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else ""
        said = problems.setdefault(field, [])
        if (problem := _problem(field, error)) not in said:
            said.append(problem)
    return SettingsError([f"{variable(f) if f else 'PIPELINE_*'}: {', '.join(p)}" for f, p in problems.items()])


def load_settings(**values: Any) -> Settings:
    """Return the settings of this process's environment (``values`` win over it, by field name).

    Raises:
        SettingsError: a value that cannot be used, each bad variable named on its own line.
    """
    try:
        return Settings(**values)
    except ValidationError as exc:
        raise settings_error(exc) from exc
    except pydantic_settings.SettingsError as exc:  # a source could not decode a value: it names the field
        raise SettingsError([" ".join(str(exc).split())]) from exc


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the process-wide settings, read once from the environment.

    Raises:
        SettingsError: a ``PIPELINE_*`` value that cannot be used, named (nothing is cached then).
    """
    return load_settings()


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """The secrets of ``environ`` (default this process's): the secret settings' values and the passwords of the
    URL settings, as written and URL-decoded; what no message may show. Longest first; values under 4 characters
    are left out (replacing them would blank ordinary words, and no real secret is that short)."""
    environ = os.environ if environ is None else environ
    found: list[str] = []
    for field in SECRET_FIELDS:
        found.append(environ.get(variable(field), ""))
    for field in URL_FIELDS:
        value = environ.get(variable(field), "")
        if match := _URL_PASSWORD.search(value):
            found.extend((match["password"], unquote(match["password"])))
    return sorted({s for s in found if len(s) >= 4}, key=len, reverse=True)


def redact(text: str, secrets: Iterable[str] | None = None) -> str:
    """Return ``text`` with URL passwords masked and every value of ``secrets`` (default :func:`secret_values`)
    replaced by ``***``: the last guard before a message leaves the process."""
    text = mask_url(text)
    for secret in secret_values() if secrets is None else secrets:
        text = text.replace(secret, "***")
    return text
