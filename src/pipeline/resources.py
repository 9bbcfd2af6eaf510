"""The pipeline's resources, built once from :class:`~pipeline.config.Settings`: the composition root.

Production (a DAG task, the ``pipeline`` CLI) builds them with :func:`production`; the demo and the tests build
their own with :meth:`Resources.from_settings`. The entries (``pipeline.entry``) take them and hand each stage the
engine, the registry, the Label Studio client or the storage root it needs as arguments: nothing below this layer
reads settings or environment variables.

    resources = production()
    with resources.store.begin() as conn: ...
    resources.registry.use()                  # MLflow's tracking URI for this process
    client = resources.label_studio.client()  # built on first use (a token is needed then, not before)

Nothing connects when they are built; :meth:`Registry.check` and :func:`check_store` ask a service whether it
answers, and raise :class:`ServiceUnreachable` naming it and where it was looked for (its password masked).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from pipeline.config import Settings, get_settings, mask_url

if TYPE_CHECKING:
    from label_studio_sdk import LabelStudio
    from sqlalchemy.engine import Engine


class ServiceUnreachable(RuntimeError):
    """A service the pipeline needs did not answer; the message names it, where it was asked (no password) and why.

    Attributes:
        service: ``MLflow``, ``the store``, ...
        where: the URL asked, its password masked.
        reason: what the connection attempt said, on one line.
    """

    def __init__(self, service: str, where: str, reason: str) -> None:
        self.service, self.where, self.reason = service, mask_url(where), mask_url(reason)
        super().__init__(f"{self.service} at {self.where} cannot be reached ({self.reason})")


def connection_reason(exc: BaseException | str) -> str:
    """What a failed connection said, short and on one line: the operating system's words (``Connection
    refused``, ``Name or service not known``) where the message holds them, else its first line."""
    text = str(exc)
    if match := re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text):
        return match[1].strip()
    if "timed out" in text.lower() or "timeout" in type(exc).__name__.lower():
        return "timed out"
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return first or type(exc).__name__


@dataclass(frozen=True)
class Registry:
    """The MLflow tracking server and the registered model the pipeline serves."""

    tracking_uri: str
    model_name: str

    def use(self) -> None:
        """Point MLflow's client in this process at the tracking server (what every registry call needs)."""
        import mlflow

        mlflow.set_tracking_uri(self.tracking_uri)

    def check(self, timeout_s: float = 5.0) -> None:
        """Ask the tracking server whether it answers (once, without MLflow's retries, which take minutes).

        Any HTTP answer counts, even an error status: only a connection that fails is unreachable. A file or
        database URI has no server to ask.

        Raises:
            ServiceUnreachable: the server did not answer within ``timeout_s``.
        """
        parts = urlsplit(self.tracking_uri)
        if parts.scheme.lower() not in ("http", "https"):
            return
        import urllib.error
        import urllib.request

        host = f"[{parts.hostname}]" if parts.hostname and ":" in parts.hostname else parts.hostname
        netloc = f"{host}:{parts.port}" if parts.port else str(host)  # without user:password, which urllib refuses
        health = parts._replace(netloc=netloc, path=parts.path.rstrip("/") + "/health", query="", fragment="")
        try:
            with urllib.request.urlopen(health.geturl(), timeout=timeout_s):
                pass
        except urllib.error.HTTPError:
            return  # it answered
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ServiceUnreachable("MLflow", self.tracking_uri, connection_reason(reason)) from exc


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


def check_store(engine: Engine) -> None:
    """Open (and close) one connection to the store.

    Raises:
        ServiceUnreachable: no connection opens (server down, no such database, refused credentials, a SQLite file
            that cannot be opened); the store is named by its URL without the password.
    """
    from sqlalchemy.exc import DBAPIError

    try:
        with engine.connect():
            pass
    except DBAPIError as exc:
        reason = " ".join(str(exc.orig).split("\n")[0].split()) if exc.orig is not None else connection_reason(exc)
        raise ServiceUnreachable("the store", engine.url.render_as_string(hide_password=True), reason) from exc


def production() -> Resources:
    """The resources of this process's ``PIPELINE_*`` environment (what a DAG task and the CLI use)."""
    return Resources.from_settings(get_settings())
