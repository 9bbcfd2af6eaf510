"""The monitoring page's FastAPI app: one HTML page and the JSON behind it.

It runs mounted inside Airflow's API server by the plugin in ``plugins/`` (``auth="airflow"``: Airflow's
authentication, passed as dependencies, guards it) or on its own (``uvicorn --factory pipeline.web:create_app``,
``auth="token"``: it asks for ``PIPELINE_WEB_TOKEN``, see :mod:`pipeline.web.access`). It only reads: the store
(``PIPELINE_DB_URL``) and MLflow's registry (``PIPELINE_MLFLOW_TRACKING_URI``). Handlers are plain functions, so
FastAPI runs their blocking database calls in its thread pool.

Every query parameter is checked where it enters: a malformed one, one an endpoint does not take, or one given
twice answers 4xx with a line naming it. A failing store or registry answers a generic line with a reference;
what failed (the store's URL without its password, the error, the SQL) goes to the server's log only.

Airflow imports plugins in every component, so this module stays light: the store's modules (pandas,
pyarrow), matplotlib and MLflow are imported by the first request, not by :func:`create_app`.
"""

from __future__ import annotations

import logging
import re
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args

from fastapi import APIRouter, Depends, FastAPI, Query, params
from fastapi.exceptions import RequestValidationError
from fastapi.requests import Request
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import SecretStr
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import SQLAlchemyError

from pipeline.web.access import Refused, TokenGuard, add_sign_in, refused
from pipeline.web.registry import RegistryUnavailable, model_versions

log = logging.getLogger(__name__)

DEFAULT_DAYS = 14
MAX_DAYS = 366
#: A site id as the page accepts it: what the simulator's scenarios allow (``[a-z0-9][a-z0-9-]*``) and what other
#: feeds plausibly send (capitals, ``.``, ``_``), within the store's 64 characters; no space or control character.
SITE_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
_SITE = re.compile(SITE_PATTERN)
_RULES = {
    "site": "a site id: 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit",
    "days": f"a whole number of days from 1 to {MAX_DAYS}",
}
#: Who guards the app: Airflow's authentication (passed as ``dependencies``) or the page's own token.
Auth = Literal["token", "airflow"]
_BACKENDS = {"postgresql": "PostgreSQL", "sqlite": "SQLite"}

Days = Annotated[int, Query(ge=1, le=MAX_DAYS, description="Days up to the newest monitored window.")]


class BadParameter(Exception):
    """A query parameter the endpoint cannot take: malformed (422), unknown, repeated or not applicable (400)."""

    def __init__(self, name: str, reason: str, *, status_code: int = 422) -> None:
        shown = name if len(name) <= 64 else f"{name[:61]}..."  # a name is anyone's text: keep the line short
        super().__init__(f"{shown}: {reason}")
        self.name = name
        self.reason = reason
        self.status_code = status_code


def _site(
    site: Annotated[str | None, Query(description="Only this site (and alerts about all sites).")] = None,
) -> str | None:
    """Return the ``site`` parameter, None when absent or empty (every site).

    Raises:
        BadParameter: it is no site id (see :data:`SITE_PATTERN`).
    """
    if not site:
        return None
    if _SITE.fullmatch(site) is None:
        raise BadParameter("site", f"expected {_RULES['site']}")
    return site


Site = Annotated[str | None, Depends(_site)]


def _takes(*names: str, note: dict[str, str] | None = None) -> params.Depends:
    """Return a dependency that rejects a query parameter not in ``names``, or one given twice.

    Args:
        names: the parameters the endpoint takes.
        note: why the endpoint does not take a parameter someone may expect it to (the 400's reason).
    """

    def check(request: Request) -> None:
        seen: set[str] = set()
        for name, _ in request.query_params.multi_items():
            if name not in names:
                takes = f"it takes {', '.join(names)}" if names else "it takes no parameter"
                reason = (note or {}).get(name) or f"not a parameter of {request.url.path} ({takes})"
                raise BadParameter(name, reason, status_code=400)
            if name in seen:
                raise BadParameter(name, "given more than once", status_code=400)
            seen.add(name)

    return Depends(check)


@dataclass(frozen=True)
class PageConfig:
    """Where the page reads from and who it lets in; ``None`` fields come from the pipeline's settings.

    ``token`` and ``anonymous`` matter to ``create_app(auth="token")`` only. When either is given, the two of
    them say it all (a missing token is no token); when neither is, ``PIPELINE_WEB_TOKEN`` and
    ``PIPELINE_WEB_ANONYMOUS`` do.
    """

    db_url: str | None = None
    mlflow_tracking_uri: str | None = None
    model_name: str | None = None
    registry_timeout_s: float = 3.0
    token: SecretStr | None = None
    anonymous: bool | None = None


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
    """Return the store's URL with its password masked (for the server's log; clients never see it)."""
    return make_url(url).render_as_string(hide_password=True)


def _store_kind(url: str) -> str:
    """Return how the page names the store to its readers: its backend (``PostgreSQL``), never its URL."""
    backend = make_url(url).get_backend_name()
    return _BACKENDS.get(backend, backend)


def _reference() -> str:
    """Return a short id that ties a client's generic error line to the server log's details."""
    return uuid.uuid4().hex[:12]


def _token_guard(config: PageConfig) -> TokenGuard:
    """Return the page's own credential check, from ``config`` when it names one, else from the settings."""
    if config.token is not None or config.anonymous is not None:
        guard = TokenGuard(config.token, bool(config.anonymous))
    else:
        from pipeline.config import get_settings

        settings = get_settings()
        guard = TokenGuard(settings.web_token, settings.web_anonymous)
    if guard.problem is not None:
        log.error("monitoring page: %s", guard.problem)
    elif guard.open:
        log.warning("monitoring page: serving without a credential (PIPELINE_WEB_ANONYMOUS): for local use only")
    elif guard.anonymous:
        log.warning("monitoring page: PIPELINE_WEB_ANONYMOUS is ignored, a token is set and required")
    return guard


def create_app(
    config: PageConfig | None = None,
    *,
    auth: Auth = "token",
    dependencies: Sequence[params.Depends] | None = None,
) -> FastAPI:
    """Return the monitoring page's app: ``/`` (HTML), ``/api/*`` (JSON), ``/health`` (open) and, with a token,
    ``/sign-in``.

    Args:
        config: where to read from and, for ``auth="token"``, the credential; the pipeline's settings by default.
        auth: ``"token"`` (served on its own): every request but ``/health`` needs ``PIPELINE_WEB_TOKEN`` as a
            bearer token or the sign-in's cookie, and without a token none is served unless the anonymous flag is
            set; ``"airflow"``: ``dependencies`` hold Airflow's authentication and the page asks for nothing more.
        dependencies: FastAPI dependencies run before every request but ``/health`` (the Airflow plugin passes
            Airflow's authentication here).

    Raises:
        ValueError: an unknown ``auth``, or ``auth="airflow"`` without the dependencies that authenticate.
    """
    if auth not in get_args(Auth):
        raise ValueError(f"auth must be one of {get_args(Auth)}, got {auth!r}")
    if auth == "airflow" and not dependencies:
        raise ValueError("auth='airflow' relies on Airflow's authentication: pass it as dependencies")
    config = config or PageConfig()
    sources = _Sources(config)
    guards = list(dependencies or ())
    app = FastAPI(
        title="Pipeline monitoring page",
        description="Alerts, the headline metric, drift, the relabel queue and model versions, per site.",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,  # Starlette serves it outside every dependency: it would be the one open door
    )
    app.state.sources = sources
    if auth == "token":
        guard = _token_guard(config)
        guards.insert(0, Depends(guard.check))
        app.state.guard = guard
        add_sign_in(app, guard)
    app.add_exception_handler(Refused, refused)  # type: ignore[arg-type]

    @app.exception_handler(SQLAlchemyError)
    def _store_down(request: Request, exc: SQLAlchemyError) -> JSONResponse:
        reference = _reference()
        log.error(
            "monitoring page: request %s for %s: the store at %s failed: %s: %s",
            reference,
            request.url.path,
            store_label(sources.db_url),
            type(exc).__name__,
            exc,
        )
        return JSONResponse(
            status_code=503,
            content={"detail": f"the store is unavailable (reference {reference}: the server's log has the details)"},
        )

    @app.exception_handler(BadParameter)
    def _bad_parameter(_request: Request, exc: BadParameter) -> JSONResponse:
        return JSONResponse(status_code=exc.status_code, content={"detail": f"query parameter {exc}"})

    @app.exception_handler(RequestValidationError)
    def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        lines = []
        for error in exc.errors():
            name = str(error.get("loc", ("", "?"))[-1])
            lines.append(f"{name}: expected {_RULES[name]}" if name in _RULES else f"{name}: {error.get('msg')}")
        return JSONResponse(status_code=422, content={"detail": f"query parameter {'; '.join(lines)}"})

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    router = APIRouter(dependencies=guards)
    site_and_days = _takes("site", "days")
    only_site = _takes("site")

    def route(path: str, taken: params.Depends, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        # response_model=None: the JSON answers are the frozen dataclasses of ``pipeline.web.queries`` as FastAPI
        # encodes them, and naming them here would import those modules in create_app (see the module's docstring).
        return router.get(path, dependencies=[taken], response_model=None, **kwargs)

    @route("/", site_and_days, response_class=HTMLResponse)
    def page(site: Site = None, days: Days = DEFAULT_DAYS) -> HTMLResponse:
        from pipeline.web.page import gather, read_registry, render_page

        registry = read_registry(sources.tracking_uri, sources.model_name, timeout_s=sources.registry_timeout_s)
        overview = gather(
            sources.engine,
            store=_store_kind(sources.db_url),
            registry=registry,
            model_name=sources.model_name,
            days=days,
            site=site,
        )
        return HTMLResponse(render_page(overview))

    @route("/api/sites", site_and_days)
    def sites(site: Site = None, days: Days = DEFAULT_DAYS) -> list[Any]:
        from pipeline.web import queries

        return list(queries.site_summaries(sources.engine, queries.period_of(sources.engine, days), site))

    @route("/api/alerts", only_site)
    def alerts(site: Site = None) -> list[Any]:
        from pipeline.web import queries

        return list(queries.open_alerts(sources.engine, site))

    @route("/api/headline", site_and_days)
    def headline(site: Site = None, days: Days = DEFAULT_DAYS) -> list[Any]:
        from pipeline.web import queries

        period = queries.period_of(sources.engine, days)
        return [] if period is None else list(queries.headline_series(sources.engine, period, site))

    @route("/api/drift", site_and_days)
    def drift(site: Site = None, days: Days = DEFAULT_DAYS) -> list[Any]:
        from pipeline.web import queries

        period = queries.period_of(sources.engine, days)
        return [] if period is None else list(queries.drift_scores(sources.engine, period, site))

    @route("/api/relabel-queue", only_site)
    def relabel_queue(site: Site = None) -> list[Any]:
        from pipeline.web import queries

        return list(queries.relabel_queue_counts(sources.engine, site))

    global_registry = {"site": "api/models is the same for every site (one registered model serves them all)"}

    @route("/api/models", _takes(note=global_registry))
    def models() -> dict[str, Any]:
        from pipeline.web import queries

        events = queries.recent_model_events(sources.engine, sources.model_name)
        answer: dict[str, Any] = {"model_name": sources.model_name, "events": events}
        try:
            versions = model_versions(sources.tracking_uri, sources.model_name, timeout_s=sources.registry_timeout_s)
        except RegistryUnavailable as exc:
            reference = _reference()
            log.warning("monitoring page: request %s for /api/models: %s", reference, exc)
            notice = f"the model registry is unavailable (reference {reference}: the server's log has the details)"
            return answer | {"available": False, "notice": notice, "versions": []}
        return answer | {"available": True, "notice": None, "versions": versions}

    app.include_router(router)
    return app
