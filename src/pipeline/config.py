"""One settings object for the whole pipeline, read from ``PIPELINE_*`` environment variables.

In production the values come from Airflow connections and variables rendered into the
environment of the worker; locally the defaults give the embedded stack (SQLite, local files,
local MLflow and Label Studio). Secrets are ``SecretStr``: they never show in ``repr`` or logs.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATA_DIR = Path("data")


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
    mlflow_tracking_uri: str = Field(default="http://127.0.0.1:5000")
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
        default=1.0, ge=0, description="First wait between two tries; it doubles after each failed try."
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
    validation_config: dict[str, Any] = Field(
        default_factory=dict,
        description="This deployment's validation gate (JSON of ValidationConfig fields); a run's config wins.",
    )
    retrain_defaults: dict[str, Any] = Field(
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
        description="Days a validated candidate scores live traffic beside the champion before approval (0: none).",
    )

    @field_validator("db_url")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        if not value.startswith(("sqlite", "postgresql")):
            raise ValueError(
                f"PIPELINE_DB_URL must be a sqlite:// or postgresql:// URL, got scheme of {value.split(':', 1)[0]!r}"
            )
        return value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the process-wide settings, read once from the environment."""
    return Settings()
