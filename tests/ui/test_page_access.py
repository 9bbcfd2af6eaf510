"""The monitoring page's door, on a real PostgreSQL store: its credential, its query parameters, its errors.

Served on its own the page asks for ``PIPELINE_WEB_TOKEN`` (a bearer token, or a browser's sign-in cookie), or
serves no one; every bad query parameter answers 4xx naming it; a failing store or MLflow answers a generic line,
never the store's address or SQL. FastAPI's TestClient talks to the real app.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote_from_bytes

import pytest
import sqlalchemy as sa
from fastapi import Depends, HTTPException, Request
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr
from sqlalchemy.engine import make_url

from pipeline.config import get_settings
from pipeline.store import make_engine, upgrade
from pipeline.web import PageConfig, create_app
from pipeline.web.access import COOKIE, SESSION_S, TokenGuard
from tests.ui.page_store import MODEL, fill_store

pytestmark = [
    pytest.mark.integration,
    # Starlette deprecates httpx in its TestClient; the warning is raised on import, hence the imports in fixtures
    pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient` is deprecated"),
]

TOKEN = "monitoring-page-token-for-tests"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
UNREACHABLE_MLFLOW = "http://127.0.0.1:9"  # the discard port: nothing answers there
PAGE = "/"
API = ("/api/sites", "/api/alerts", "/api/headline", "/api/drift", "/api/relabel-queue", "/api/models")
PATHS = (PAGE, *API)
#: What each endpoint takes besides nothing; api/models is global.
TAKES = {
    "/": ("site", "days"),
    "/api/sites": ("site", "days"),
    "/api/alerts": ("site",),
    "/api/headline": ("site", "days"),
    "/api/drift": ("site", "days"),
    "/api/relabel-queue": ("site",),
    "/api/models": (),
}


def page_config(db_url: str, **access: Any) -> PageConfig:
    return PageConfig(
        db_url=db_url, mlflow_tracking_uri=UNREACHABLE_MLFLOW, model_name=MODEL, registry_timeout_s=0.3, **access
    )


def client_for(config: PageConfig, **kwargs: Any) -> Any:
    from fastapi.testclient import TestClient

    return TestClient(create_app(config), **kwargs)


@pytest.fixture(scope="module")
def store_url(pg_database_factory: Callable[[], str]) -> str:
    """A PostgreSQL store with two sites' three monitored days, alerts, picks and a validation event."""
    url = pg_database_factory()
    engine = make_engine(url)
    upgrade(engine)
    fill_store(engine)
    engine.dispose()
    return url


@pytest.fixture(scope="module")
def missing_url(store_url: str) -> str:
    """The store's server with a database that does not exist, and a password the log must not show."""
    return make_url(store_url).set(database="pipeline_test_no_such_db", password="s3cret-pw").render_as_string(False)


@pytest.fixture(scope="module")
def client(store_url: str) -> Iterator[Any]:
    """The page served on its own with a token; requests carry it."""
    with client_for(page_config(store_url, token=SecretStr(TOKEN)), headers=BEARER) as client:
        yield client


@pytest.fixture(scope="module")
def clients(client: Any, missing_url: str) -> Iterator[dict[str, Any]]:
    """The page on the store, and on a database that does not exist (every query fails)."""
    with client_for(page_config(missing_url, token=SecretStr(TOKEN)), headers=BEARER) as broken:
        yield {"store": client, "missing database": broken}


def secrets_of(url: str) -> set[str]:
    """What a client must never read about the store: its database, user and host, and SQL."""
    parsed = make_url(url)
    return {str(parsed.database), str(parsed.username), str(parsed.host), "SELECT", "psycopg2", "sqlalche.me"}


def leaks(body: str, url: str, sent: str = "") -> set[str]:
    """Return the store's secrets found in ``body``, leaving out those the request itself held (echoed back)."""
    return {s for s in secrets_of(url) | {UNREACHABLE_MLFLOW} if s in body and s not in sent}


# --- The credential ---------------------------------------------------------------------------------------------------
def test_every_endpoint_needs_the_token_but_health(store_url: str) -> None:
    with client_for(page_config(store_url, token=SecretStr(TOKEN))) as anonymous:
        for path in PATHS:
            for headers in ({}, {"Authorization": "Bearer wrong-token-of-the-same-size"}, {"Authorization": TOKEN}):
                answer = anonymous.get(path, headers=headers)
                assert answer.status_code == 401, (path, headers, answer.text)
                assert answer.headers["www-authenticate"].startswith("Bearer")
            assert anonymous.get(path, headers=BEARER).status_code == 200, path
            assert anonymous.get(path, headers={"Authorization": f"bearer  {TOKEN} "}).status_code == 200, path
        health = anonymous.get("/health")
        assert (health.status_code, health.json()) == (200, {"status": "ok"})
        assert anonymous.get("/openapi.json").status_code == 404  # the route list is no open door either


def test_a_browser_signs_in_once_and_its_cookie_opens_the_page_and_its_links(store_url: str) -> None:
    html = {"Accept": "text/html,application/xhtml+xml"}
    with client_for(page_config(store_url, token=SecretStr(TOKEN)), headers=html) as browser:
        door = browser.get(PAGE)
        assert door.status_code == 401 and '<form method="post" action="./sign-in">' in door.text
        assert 'action="../sign-in"' in browser.get("/api/alerts").text  # the form posts to the app's root
        assert browser.get("/sign-in").status_code == 200

        wrong = browser.post("/sign-in", data={"token": "not-the-token-at-all"}, follow_redirects=False)
        assert wrong.status_code == 401 and COOKIE not in wrong.headers.get("set-cookie", "")
        assert browser.post("/sign-in", content=b"token=" + b"x" * 5000, follow_redirects=False).status_code == 400

        signed_in = browser.post("/sign-in", data={"token": TOKEN}, follow_redirects=False)
        assert (signed_in.status_code, signed_in.headers["location"]) == (303, "./")
        cookie = signed_in.headers["set-cookie"]
        for flag in ("HttpOnly", "SameSite=strict", "Path=/", f"Max-Age={SESSION_S}"):
            assert flag in cookie, cookie
        assert TOKEN not in cookie  # a signature of an expiry, not the token

        page = browser.get(PAGE)
        assert page.status_code == 200 and "Open alerts" in page.text
        links = re.findall(r'href="(api/[a-z-]+)"', page.text)
        assert sorted(links) == sorted(p.lstrip("/") for p in API)
        for link in links:  # the page's own links, as the browser follows them: the cookie goes along
            assert browser.get(f"/{link}").status_code == 200, link

    guard = TokenGuard(SecretStr(TOKEN))
    good = guard.session()
    forged = {
        "expired": guard.session(now_s=0),
        "another token's": TokenGuard(SecretStr("another-token-entirely")).session(),
        "altered": good[:-1] + ("1" if good.endswith("0") else "0"),
        "stretched": f"{int(good.split('.')[0]) + SESSION_S}.{good.split('.')[1]}",
        "not one": "garbage",
    }
    for why, value in forged.items():
        with client_for(page_config(store_url, token=SecretStr(TOKEN)), cookies={COOKIE: value}) as browser:
            assert browser.get("/api/alerts").status_code == 401, why


def test_the_anonymous_flag_serves_without_a_credential(store_url: str) -> None:
    with client_for(page_config(store_url, anonymous=True)) as local:
        for path in PATHS:
            assert local.get(path).status_code == 200, path
        assert local.get("/sign-in", follow_redirects=False).status_code == 303


def test_without_a_token_the_page_serves_no_one(store_url: str) -> None:
    for access, line in (
        ({"anonymous": False}, "PIPELINE_WEB_TOKEN is not set"),
        ({"token": SecretStr("")}, "PIPELINE_WEB_TOKEN is not set"),
        ({"token": SecretStr("short")}, "PIPELINE_WEB_TOKEN is shorter than 16 characters"),
    ):
        with client_for(page_config(store_url, **access)) as nobody:
            for path in (*PATHS, "/sign-in"):
                answer = nobody.get(path, headers=BEARER)
                assert answer.status_code == 503 and line in answer.json()["detail"], (access, path)
            assert nobody.get("/health").status_code == 200


def test_served_on_its_own_it_takes_the_token_or_the_flag_from_the_environment(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``uvicorn --factory pipeline.web:create_app`` calls ``create_app()``: the settings decide."""
    from fastapi.testclient import TestClient

    monkeypatch.setenv("PIPELINE_DB_URL", store_url)
    for name in ("PIPELINE_WEB_TOKEN", "PIPELINE_WEB_ANONYMOUS"):
        monkeypatch.delenv(name, raising=False)
    cases = [({"PIPELINE_WEB_TOKEN": TOKEN}, 401, 200), ({"PIPELINE_WEB_ANONYMOUS": "true"}, 200, 200), ({}, 503, 503)]
    try:
        for env, without, with_token in cases:
            with monkeypatch.context() as scoped:
                for name, value in env.items():
                    scoped.setenv(name, value)
                get_settings.cache_clear()
                with TestClient(create_app()) as served:
                    assert served.get("/api/alerts").status_code == without, env
                    assert served.get("/api/alerts", headers=BEARER).status_code == with_token, env
    finally:
        get_settings.cache_clear()


def test_inside_airflow_the_dependencies_passed_guard_it(store_url: str) -> None:
    from fastapi.testclient import TestClient

    def signed_in(request: Request) -> None:  # stands in for Airflow's requires_access_view
        if request.headers.get("x-airflow-user") != "ops":
            raise HTTPException(401, "not signed in to Airflow")

    with pytest.raises(ValueError, match="Airflow's authentication"):
        create_app(page_config(store_url), auth="airflow")
    with pytest.raises(ValueError, match="auth must be one of"):
        create_app(page_config(store_url), auth="none")  # type: ignore[arg-type]  (the point of the test)
    app = create_app(page_config(store_url), auth="airflow", dependencies=[Depends(signed_in)])
    with TestClient(app) as inside:
        assert inside.get("/api/alerts", headers=BEARER).status_code == 401  # the page's token means nothing here
        assert inside.get("/api/alerts", headers={"x-airflow-user": "ops"}).status_code == 200
        assert inside.get("/sign-in").status_code == 404  # Airflow signs people in
        assert inside.get("/health").status_code == 200


# --- Query parameters -------------------------------------------------------------------------------------------------
def test_every_endpoint_honours_site_or_says_it_cannot(client: Any) -> None:
    def sites_in(path: str, site: str) -> set[str]:
        answer = client.get(path, params={"site": site})
        assert answer.status_code == 200, (path, answer.text)
        return {row["site"] for row in answer.json()}

    for path in ("/api/sites", "/api/alerts", "/api/headline", "/api/drift", "/api/relabel-queue"):
        everywhere = {row["site"] for row in client.get(path).json()}
        assert {"riverside", "st-anna"} <= everywhere, path
        assert sites_in(path, "riverside") == {"riverside"}, path
        assert sites_in(path, "st-anna") == {"st-anna"}, path
        assert sites_in(path, "nowhere") == set(), path
    assert client.get("/api/alerts", params={"site": ""}).json() == client.get("/api/alerts").json()  # empty: all

    one = client.get(PAGE, params={"site": "riverside"}).text
    assert "img_mean" in one and "cuda_oom" not in one and "(the same for every site)" in one

    models = client.get("/api/models", params={"site": "riverside"})
    assert models.status_code == 400 and "the same for every site" in models.json()["detail"]


BAD_VALUES = {
    "site": ["\x00", "a\x00b", "river side", "riverside\n", "-riverside", "*", "a" * 65, "../etc", "é", "'; --"],
    "days": ["0", "367", "-1", "x", "1.5", "", "\x00", "9" * 5000],
}


@pytest.mark.parametrize("path", PATHS)
def test_a_bad_parameter_answers_4xx_naming_it(client: Any, path: str) -> None:
    for name in TAKES[path]:
        for value in BAD_VALUES[name]:
            answer = client.get(path, params={name: value})
            assert answer.status_code == 422, (path, name, value, answer.text)
            assert answer.json()["detail"].startswith(f"query parameter {name}: expected"), answer.text
    for name in {"site", "days", "token", "sort"} - set(TAKES[path]):
        answer = client.get(path, params={name: "1"})
        assert answer.status_code == 400 and f"query parameter {name}:" in answer.json()["detail"], (path, name)
    for name in TAKES[path]:
        twice = client.get(f"{path}?{name}=1&{name}=2")
        assert twice.status_code == 400 and "more than once" in twice.json()["detail"], (path, name)
    assert client.get(f"{path}?site=%00").status_code in (400, 422)  # the finding: PostgreSQL refuses NUL


# --- Failures ---------------------------------------------------------------------------------------------------------
def test_a_missing_database_answers_a_generic_503_and_logs_the_details(
    clients: dict[str, Any], missing_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    broken = clients["missing database"]
    for path in PATHS:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="pipeline.web"):
            answer = broken.get(path)
        assert answer.status_code == 503, (path, answer.text)
        detail = answer.json()["detail"]
        assert detail.startswith("the store is unavailable (reference "), detail
        assert leaks(answer.text, missing_url) == set(), path
        reference = detail.split("reference ", 1)[1].split(":", 1)[0]
        logged = "\n".join(r.getMessage() for r in caplog.records)
        assert reference in logged and "pipeline_test_no_such_db" in logged, logged  # the details: server-side
        assert "s3cret-pw" not in logged


def test_a_dropped_table_answers_a_generic_503(pg_url: str, caplog: pytest.LogCaptureFixture) -> None:
    engine = make_engine(pg_url)
    upgrade(engine)
    fill_store(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE alerts"))
    engine.dispose()
    with client_for(page_config(pg_url, token=SecretStr(TOKEN)), headers=BEARER) as client:
        for path in (PAGE, "/api/sites", "/api/alerts"):
            with caplog.at_level(logging.WARNING, logger="pipeline.web"):
                answer = client.get(path)
            assert answer.status_code == 503 and leaks(answer.text, pg_url) == set(), (path, answer.text)
        assert "SELECT" in caplog.text  # the failed SQL is in the server's log, not the answer
        assert client.get("/api/headline").status_code == 200  # what does not read alerts still works


def test_mlflow_down_is_a_generic_notice(client: Any, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="pipeline.web"):
        models = client.get("/api/models").json()
        page = client.get(PAGE).text
    assert models["available"] is False and models["notice"].startswith("the model registry is unavailable")
    assert "The model registry is unreachable (reference" in page
    assert UNREACHABLE_MLFLOW not in models["notice"] and UNREACHABLE_MLFLOW not in page
    assert UNREACHABLE_MLFLOW in caplog.text


# --- Whatever arrives -------------------------------------------------------------------------------------------------
#: Text made of what breaks parsers and databases (NUL, controls, quotes, %, RTL override) among plain characters.
NASTY = st.text(alphabet=st.sampled_from("\x00\x01\x1f\x7f\t\n\r '\"%*;=&-._/\\é€\u202e\ufffdaZ09"), max_size=12)
VALUES = st.one_of(
    NASTY,
    NASTY,
    st.text(max_size=80),
    st.integers(min_value=-5, max_value=400).map(str),
    st.sampled_from(["riverside", "st-anna", "", "\x00", "%00", "*", "SELECT", "1; DROP TABLE alerts"]),
)
#: The parameters the page takes, each maybe (days mostly valid, so that a bad site gets as far as the store),
#: and now and then more: any name, or one of theirs again.
QUERIES = st.tuples(
    st.fixed_dictionaries({}, optional={"site": VALUES, "days": st.one_of(st.integers(1, 366).map(str), VALUES)}).map(
        lambda d: list(d.items())
    ),
    st.one_of(
        st.just([]), st.lists(st.tuples(st.one_of(st.sampled_from(["site", "days"]), NASTY), VALUES), max_size=2)
    ),
).map(lambda parts: parts[0] + parts[1])


@pytest.mark.parametrize("store", ["store", "missing database"])
@settings(max_examples=150, deadline=None, derandomize=True)
@given(path=st.sampled_from(PATHS), query=QUERIES)
def test_no_query_makes_the_page_fail_or_tell_where_its_store_is(
    clients: dict[str, Any], store_url: str, missing_url: str, store: str, path: str, query: list[tuple[str, str]]
) -> None:
    answer = clients[store].get(path, params=query)
    assert answer.status_code < 500 or (store == "missing database" and answer.status_code == 503), answer.text
    sent = " ".join(f"{name} {value}" for name, value in query)
    assert leaks(answer.text, store_url if store == "store" else missing_url, sent) == set()


@settings(max_examples=60, deadline=None, derandomize=True)
@given(path=st.sampled_from(PATHS), raw=st.binary(max_size=48))
def test_no_raw_query_string_makes_the_page_fail(client: Any, store_url: str, path: str, raw: bytes) -> None:
    answer = client.get(f"{path}?{quote_from_bytes(raw, safe='=&')}")
    assert answer.status_code < 500, (raw, answer.text)
    assert leaks(answer.text, store_url, raw.decode("utf-8", "replace")) == set()
