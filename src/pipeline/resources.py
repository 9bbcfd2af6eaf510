"""The pipeline's resources, built once from :class:`~pipeline.config.Settings`: the composition root.

Production (a DAG task, the ``pipeline`` CLI) builds them with :func:`production`; the demo and the tests build
their own with :meth:`Resources.from_settings`. The entries (``pipeline.entry``) take them and hand each stage the
engine, the registry, the Label Studio client or the storage root it needs as arguments: nothing below this layer
reads settings or environment variables.

    resources = production()
    with resources.store.begin() as conn: ...
    resources.registry.use()                  # MLflow's tracking URI for this process
    client = resources.label_studio.client()  # built on first use (a token is needed then, not before)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.config import Settings, get_settings

if TYPE_CHECKING:
    from label_studio_sdk import LabelStudio
    from sqlalchemy.engine import Engine


@dataclass(frozen=True)
class Registry:
    """The MLflow tracking server and the registered model the pipeline serves."""

    tracking_uri: str
    model_name: str

    def use(self) -> None:
        """Point MLflow's client in this process at the tracking server (what every registry call needs)."""
        import mlflow

        mlflow.set_tracking_uri(self.tracking_uri)


@dataclass(frozen=True)
class LabelStudioServer:
    """Where annotators work: the server, its token and the pipeline's projects and renderings there."""

    url: str
    token: str | None = field(repr=False)
    document_root: Path
    project_prefix: str
    image_size_px: int
    attempts: int
    backoff_s: float

    def client(self) -> LabelStudio:
        """A label-studio-sdk client retrying transient failures.

        Raises:
            ValueError: no token is configured.
        """
        from pipeline.labeling import make_client

        return make_client(url=self.url, token=self.token, attempts=self.attempts, backoff_s=self.backoff_s)


@dataclass(frozen=True)
class Storage:
    """The storage root: DICOM files, renderings, snapshots' caches, reports and Data Docs live under it."""

    root: Path

    @property
    def landing(self) -> Path:
        """Where batch files of inference logs land (``<root>/landing/<table>/``)."""
        return self.root / "landing"

    @property
    def training(self) -> Path:
        """Checkpoints and the decoded-study cache of retraining runs."""
        return self.root / "training"

    @property
    def data_docs(self) -> Path:
        """Great Expectations' validation results and Data Docs."""
        return self.root / "gx"


@dataclass(frozen=True)
class AlertSink:
    """Sentry: off unless a DSN is configured."""

    dsn: str | None = field(repr=False)

    def start(self) -> bool:
        """Initialise sentry-sdk in this process (once); return whether alerts go to Sentry."""
        from pipeline.alerts import init_sentry

        return init_sentry(self.dsn)


@dataclass(frozen=True)
class Resources:
    """What the entries hand to the stages, and the settings that tune them (budgets, the gate, defaults)."""

    settings: Settings
    store: Engine
    registry: Registry
    label_studio: LabelStudioServer
    storage: Storage
    alerts: AlertSink
    gx_project_dir: Path

    @classmethod
    def from_settings(cls, settings: Settings) -> Resources:
        """Build the resources ``settings`` describe (nothing connects yet: engines and clients are lazy)."""
        from pipeline.store import make_engine

        token, dsn = settings.label_studio_token, settings.sentry_dsn
        return cls(
            settings=settings,
            store=make_engine(settings.db_url),
            registry=Registry(settings.mlflow_tracking_uri, settings.model_name),
            label_studio=LabelStudioServer(
                url=settings.label_studio_url,
                token=token.get_secret_value() if token else None,
                document_root=Path(settings.label_studio_document_root),
                project_prefix=settings.label_studio_project_prefix,
                image_size_px=settings.label_studio_image_size_px,
                attempts=settings.label_studio_attempts,
                backoff_s=settings.label_studio_backoff_s,
            ),
            storage=Storage(Path(settings.storage_root)),
            alerts=AlertSink(dsn.get_secret_value() if dsn else None),
            gx_project_dir=Path(settings.gx_project_dir),
        )

    @property
    def pseudonym_key(self) -> str:
        """The key of the keyed hash that turns StudyInstanceUIDs into pseudonymous ids."""
        return self.settings.pseudonym_key.get_secret_value()


def production() -> Resources:
    """The resources of this process's ``PIPELINE_*`` environment (what a DAG task and the CLI use)."""
    return Resources.from_settings(get_settings())
