"""The monitoring page's FastAPI app: one HTML page and the JSON behind it.

It runs on its own (``uvicorn --factory pipeline.web:create_app``) or mounted inside Airflow's API
server by the plugin in ``plugins/``, which adds Airflow's authentication as a dependency. It only
reads: the store (``PIPELINE_DB_URL``) and MLflow's registry (``PIPELINE_MLFLOW_TRACKING_URI``).
Handlers are plain functions, so FastAPI runs their blocking database calls in its thread pool.

Airflow imports plugins in every component, so this module stays light: the store's modules (pandas,
pyarrow), matplotlib and MLflow are imported by the first request, not by :func:`create_app`.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import FastAPI, Query
from fastapi.params import Depends
from fastapi.requests import Request
from fastapi.responses import HTMLResponse, JSONResponse
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import SQLAlchemyError

from pipeline.web.registry import RegistryUnavailable, model_versions

DEFAULT_DAYS = 14
MAX_DAYS = 366

Site = Annotated[str | None, Query(description="Only this site (and alerts about all sites).", max_length=64)]
Days = Annotated[int, Query(ge=1, le=MAX_DAYS, description="Days up to the newest monitored window.")]


@dataclass(frozen=True)
class PageConfig:
    """Where the page reads from; ``None`` fields come from the pipeline's settings when first needed."""

    db_url: str | None = None
    mlflow_tracking_uri: str | None = None
    model_name: str | None = None
    registry_timeout_s: float = 3.0


class _Sources:
    """The store's engine (made on first use, not at import: Airflow imports plugins everywhere) and the names."""

    def __init__(self, config: PageConfig) -> None:
        self._config = config
        self._engine: Engine | None = None
        self._lock = threading.Lock()

    def _settings_value(self, name: str) -> str:
        from pipeline.config import get_settings

        return str(getattr(get_settings(), name))

    @property
    def db_url(self) -> str:
        return self._config.db_url or self._settings_value("db_url")

    @property
    def tracking_uri(self) -> str:
        return self._config.mlflow_tracking_uri or self._settings_value("mlflow_tracking_uri")

    @property
    def model_name(self) -> str:
        return self._config.model_name or self._settings_value("model_name")

    @property
    def registry_timeout_s(self) -> float:
        return self._config.registry_timeout_s

    @property
    def engine(self) -> Engine:
        with self._lock:
            if self._engine is None:
                from pipeline.store import make_engine

                self._engine = make_engine(self.db_url)
            return self._engine

    def dispose(self) -> None:
        with self._lock:
            if self._engine is not None:
                self._engine.dispose()
                self._engine = None


def store_label(url: str) -> str:
    """Return the store's URL with its password masked (for the page and error messages)."""
    return make_url(url).render_as_string(hide_password=True)


def create_app(config: PageConfig | None = None, *, dependencies: Sequence[Depends] | None = None) -> FastAPI:
    """Return the monitoring page's app: ``/`` (HTML), ``/api/*`` (JSON) and ``/health``.

    Args:
        config: where to read from; the pipeline's settings by default.
        dependencies: FastAPI dependencies run before every request (the Airflow plugin passes
            Airflow's authentication here).
    """
    sources = _Sources(config or PageConfig())
    app = FastAPI(
        title="Pipeline monitoring page",
        description="Alerts, the headline metric, drift, the relabel queue and model versions, per site.",
        dependencies=list(dependencies or ()),
        docs_url=None,
        redoc_url=None,
    )
    app.state.sources = sources

    @app.exception_handler(SQLAlchemyError)
    def _store_down(_request: Request, exc: SQLAlchemyError) -> JSONResponse:
        return JSONResponse(
            status_code=503,
            content={"detail": f"the store at {store_label(sources.db_url)} failed: {type(exc).__name__}: {exc}"},
        )

    # JSON answers are the records of ``pipeline.web.queries`` (frozen dataclasses) as FastAPI encodes them;
    # response_model=None keeps those modules out of create_app (see the module's docstring).
    @app.get("/", response_class=HTMLResponse)
    def page(site: Site = None, days: Days = DEFAULT_DAYS) -> HTMLResponse:
        from pipeline.web.page import gather, read_registry, render_page

        registry = read_registry(sources.tracking_uri, sources.model_name, timeout_s=sources.registry_timeout_s)
        overview = gather(
            sources.engine,
            store=store_label(sources.db_url),
            registry=registry,
            model_name=sources.model_name,
            days=days,
            site=site or None,
        )
        return HTMLResponse(render_page(overview))

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/sites", response_model=None)
    def sites(days: Days = DEFAULT_DAYS) -> list[Any]:
        from pipeline.web import queries

        return list(queries.site_summaries(sources.engine, queries.period_of(sources.engine, days)))

    @app.get("/api/alerts", response_model=None)
    def alerts(site: Site = None) -> list[Any]:
        from pipeline.web import queries

        return list(queries.open_alerts(sources.engine, site or None))

    @app.get("/api/headline", response_model=None)
    def headline(site: Site = None, days: Days = DEFAULT_DAYS) -> list[Any]:
        from pipeline.web import queries

        period = queries.period_of(sources.engine, days)
        return [] if period is None else list(queries.headline_series(sources.engine, period, site or None))

    @app.get("/api/drift", response_model=None)
    def drift(site: Site = None, days: Days = DEFAULT_DAYS) -> list[Any]:
        from pipeline.web import queries

        period = queries.period_of(sources.engine, days)
        return [] if period is None else list(queries.drift_scores(sources.engine, period, site or None))

    @app.get("/api/relabel-queue", response_model=None)
    def relabel_queue(site: Site = None) -> list[Any]:
        from pipeline.web import queries

        return list(queries.relabel_queue_counts(sources.engine, site or None))

    @app.get("/api/models", response_model=None)
    def models() -> dict[str, Any]:
        from pipeline.web import queries

        events = queries.recent_model_events(sources.engine, sources.model_name)
        answer: dict[str, Any] = {"model_name": sources.model_name, "events": events}
        try:
            versions = model_versions(sources.tracking_uri, sources.model_name, timeout_s=sources.registry_timeout_s)
        except RegistryUnavailable as exc:
            return answer | {"available": False, "notice": str(exc), "versions": []}
        return answer | {"available": True, "notice": None, "versions": versions}

    return app
