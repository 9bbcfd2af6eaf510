"""One settings object for the whole pipeline, read from ``PIPELINE_*`` environment variables.

In production the values come from Airflow connections and variables rendered into the
environment of the worker; locally the defaults give the embedded stack (SQLite, local files,
local MLflow and Label Studio). Secrets are ``SecretStr``: they never show in ``repr`` or logs.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

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
    label_studio_url: str = Field(default="http://127.0.0.1:8080")
    label_studio_token: SecretStr | None = None
    sentry_dsn: SecretStr | None = None
    pseudonym_key: SecretStr = Field(
        default=SecretStr("local-demo-key-change-me"),
        description="Key of the keyed hash that turns StudyInstanceUIDs into pseudonymous ids.",
    )
    relabel_daily_budget: int = Field(default=200, ge=0)
    relabel_site_cap: float = Field(
        default=0.4, gt=0, le=1, description="Largest share of the daily budget one site may take."
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
