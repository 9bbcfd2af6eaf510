"""The monitoring page in headless Chromium, on a real monitored store, served by Airflow's own API server.

The store is PostgreSQL with a small monitored world: the shipped ``new_hospital`` scenario (Riverside joins
on day 10 with a scanner the model never saw) at 60 studies per site and day, 32-px images and a tiny
untrained network, monitored day by day and with the day's studies picked for labeling. MLflow is a real
server holding two versions with the verdicts the validation suite writes. Airflow loads ``plugins/`` and
mounts the page (``airflow api-server``); Debian's Chromium (``make browser``) opens it directly and inside
the Airflow UI, and must log no console error. Screenshots go to the test's folder and to
``docs/monitoring-page.png``.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from pipeline.demo.stack.ports import free_port
from pipeline.demo.stack.process import ManagedProcess, http_status, start_process
from pipeline.inference import InferenceService
from pipeline.model import NetConfig, NormalFilterNet
from pipeline.monitor import run_monitor
from pipeline.registry import LoadedModel
from pipeline.selection import SelectionConfig, select_for_relabeling
from pipeline.simulate.run import simulate
from pipeline.simulate.scenario import load_scenario, with_volume
from pipeline.store import make_engine, upgrade
from pipeline.validation.audit import record_event
from pipeline.web import PageConfig, create_app, open_alerts
from tests.harness import REPO_ROOT
from tests.harness.airflow_services import find_airflow_bin

pytestmark = pytest.mark.integration

CHROMIUM = Path(os.environ.get("PIPELINE_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("PIPELINE_TEST_CHROMEDRIVER", "/usr/bin/chromedriver"))
SCREENSHOT = REPO_ROOT / "docs" / "monitoring-page.png"
MODEL = "cxr-normal-filter-ui-test"
NEW_SITE = "riverside"
JOIN_DAY = 10
FIRST_MONITORED_DAY = 3  # drift needs 5 reference days: it is judged from day 7 on
UNREACHABLE_MLFLOW = "http://127.0.0.1:9"  # the discard port: nothing answers there
SECTIONS = ("alerts", "headline", "sites", "relabel-queue", "models")


# --- A small monitored world ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def store_url(pg_database_factory: Callable[[], str], tmp_path_factory: pytest.TempPathFactory) -> str:
    """A PostgreSQL store with 11 simulated days, days 3-10 monitored (drift included) and day 10's picks queued."""
    torch.manual_seed(0)
    net = NormalFilterNet(NetConfig(init_features=8, growth_rate=4, block_config=(2, 2)))
    service = InferenceService(LoadedModel(net, MODEL, "1", threshold=0.5, image_size=32), key="k", mc_samples=0)
    scenario = with_volume(load_scenario(REPO_ROOT / "scenarios" / "new_hospital.yaml"), per_site=60)
    scenario = scenario.model_copy(update={"image_size": 32})
    url = pg_database_factory()
    engine = make_engine(url)
    upgrade(engine)
    simulate(
        scenario,
        engine=engine,
        storage_root=tmp_path_factory.mktemp("dicom"),
        key="k",
        days=range(JOIN_DAY + 1),
        service_for=lambda _: service,
        progress=False,
    )
    for day in range(FIRST_MONITORED_DAY, JOIN_DAY + 1):
        start = datetime.combine(scenario.start + timedelta(days=day), datetime.min.time(), tzinfo=UTC)
        run_monitor(engine, start, start + timedelta(days=1))
    select_for_relabeling(engine, scenario.start + timedelta(days=JOIN_DAY), SelectionConfig(budget=40))
    engine.dispose()
    return url


@pytest.fixture(scope="module")
def registry(mlflow_server: str, store_url: str) -> str:
    """Two versions of the model with verdicts as the validation suite writes them: v1 champion, v2 failed."""
    client = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    client.create_registered_model(MODEL)
    engine = make_engine(store_url)
    verdicts = {
        "1": {"validation_status": "passed", "validation_threshold": "0.412000", "role": "champion"},
        "2": {
            "validation_status": "failed",
            "validation_threshold": "0.388000",
            "validated_against": "1",
            "validation_failed_checks": "subgroup_sensitivity",
            "validation_report": "runs:/0123/validation/validation.html",
        },
    }
    experiment = client.create_experiment(f"{MODEL}-runs")
    for version, tags in verdicts.items():
        run = client.create_run(experiment).info
        made = client.create_model_version(MODEL, source=f"{run.artifact_uri}/model", run_id=run.run_id, tags=tags)
        assert made.version == version
        record_event(engine, MODEL, version, "validated", "validation-suite", {"status": tags["validation_status"]})
    client.set_registered_model_alias(MODEL, "champion", "1")
    client.set_registered_model_alias(MODEL, "candidate", "2")
    engine.dispose()
    return mlflow_server


# --- Servers --------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def airflow_api(
    airflow_db: Path, store_url: str, registry: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """Base URL of ``airflow api-server`` with ``plugins/`` loaded (simple auth manager, everyone admin)."""
    workdir = tmp_path_factory.mktemp("airflow-api")
    port = free_port()
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "PIPELINE_DB_URL": store_url,
        "PIPELINE_MLFLOW_TRACKING_URI": registry,
        "PIPELINE_MODEL_NAME": MODEL,
    }
    argv = [str(find_airflow_bin()), "api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    process: ManagedProcess = start_process(
        "airflow api-server", argv, log_path=workdir / "api.log", env=env, cwd=workdir
    )
    base = f"http://127.0.0.1:{port}"
    try:
        process.wait_for_http(f"{base}/api/v2/monitor/health", timeout=240)
        yield base
    finally:
        process.stop()


@pytest.fixture(scope="module")
def page_without_mlflow(store_url: str) -> Iterator[str]:
    """URL of the page's app alone (uvicorn in a thread) with MLflow unreachable."""
    import uvicorn

    app = create_app(
        PageConfig(db_url=store_url, mlflow_tracking_uri=UNREACHABLE_MLFLOW, model_name=MODEL, anonymous=True)
    )
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="monitoring-page", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while http_status(f"http://127.0.0.1:{port}/health") != 200:
        assert time.monotonic() < deadline and thread.is_alive(), "the monitoring page did not start"
        time.sleep(0.1)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


# --- The browser ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Headless Debian Chromium through its own chromedriver (``make browser`` installs both)."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail(
            f"{CHROMIUM} or {CHROMEDRIVER} is missing: run `make browser` (apt-get install chromium chromium-driver)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1000",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def console_errors(driver) -> list[dict[str, object]]:
    """Return (and clear) the browser console's SEVERE entries: errors, failed loads, CSP violations."""
    return [entry for entry in driver.get_log("browser") if entry.get("level") == "SEVERE"]


def full_page_screenshot(driver, *paths: Path) -> None:
    """Save the whole page (not just the viewport) as PNG to every path."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1400, min(int(height) + 120, 12000))
    try:
        for path in paths:
            path.parent.mkdir(parents=True, exist_ok=True)
            assert driver.save_screenshot(str(path)), path
    finally:
        driver.set_window_size(1400, 1000)


def alert_rows(driver) -> set[tuple[str, str]]:
    from selenium.webdriver.common.by import By

    rows = driver.find_elements(By.CSS_SELECTOR, "#alerts tr.alert")
    return {(str(r.get_attribute("data-site")), str(r.get_attribute("data-feature"))) for r in rows}


# --- Tests ----------------------------------------------------------------------------------------------------------
def test_airflow_loads_the_plugin_and_serves_the_page(airflow_api: str, store_url: str) -> None:
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{airflow_api}/api/v2/plugins", timeout=30) as response:
        plugins = {p["name"]: p for p in json.load(response)["plugins"]}
    plugin = plugins["pipeline_monitoring"]
    assert [a["url_prefix"] for a in plugin["fastapi_apps"]] == ["/pipeline-monitoring"]
    [view] = plugin["external_views"]
    assert (view["name"], view["href"], view["url_route"], view["destination"]) == (
        "Monitoring",
        "pipeline-monitoring/",
        "pipeline-monitoring",
        "nav",
    )
    # the page's JSON through Airflow's server: the store's open alerts
    with opener.open(f"{airflow_api}/pipeline-monitoring/api/alerts", timeout=60) as response:
        served = {(a["site"], a["feature"]) for a in json.load(response)}
    engine = make_engine(store_url)
    assert served == {(a.site, a.feature) for a in open_alerts(engine)}
    engine.dispose()


# Starlette deprecates httpx in its TestClient; the warning is raised on import, hence the import in the test.
@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient` is deprecated")
def test_the_plugin_puts_the_page_behind_airflows_authentication() -> None:
    import importlib.util

    from fastapi.testclient import TestClient

    spec = importlib.util.spec_from_file_location(
        "monitoring_page_plugin", REPO_ROOT / "plugins" / "monitoring_page.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    [entry] = module.MonitoringPagePlugin.fastapi_apps
    with TestClient(entry["app"]) as client:  # no Airflow session cookie, no bearer token
        for path in ("/", "/api/alerts", "/api/models"):
            answer = client.get(path)
            assert answer.status_code == 401, (path, answer.status_code, answer.text)


def test_the_page_shows_the_open_alerts_and_verdicts_without_console_errors(
    browser, airflow_api: str, store_url: str, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    engine = make_engine(store_url)
    expected = {(a.site, a.feature) for a in open_alerts(engine)}
    drift = {(a.site, a.feature) for a in open_alerts(engine) if a.kind == "drift"}
    engine.dispose()
    assert any(site == NEW_SITE for site, _ in drift), f"the scenario raised no drift alert at {NEW_SITE}: {expected}"

    browser.get(f"{airflow_api}/pipeline-monitoring/")
    assert browser.title.startswith("Monitoring")
    for section in SECTIONS:
        assert browser.find_element(By.ID, section).is_displayed(), section
    assert alert_rows(browser) == expected
    text = browser.find_element(By.TAG_NAME, "body").text
    for site, feature in expected:
        assert site.replace("*", "all sites") in text and feature in text
    assert browser.find_element(By.ID, f"site-{NEW_SITE}").find_elements(By.CSS_SELECTOR, "img.heatmap")
    images = browser.find_elements(By.TAG_NAME, "img")
    assert images and all(browser.execute_script("return arguments[0].naturalWidth", img) > 0 for img in images)
    versions = browser.find_elements(By.CSS_SELECTOR, "#models tr.model-version")
    assert [v.text.split()[:3] for v in versions] == [["v2", "candidate", "failed"], ["v1", "champion", "passed"]]
    assert "subgroup_sensitivity" in browser.find_element(By.ID, "models").text
    queue = browser.find_element(By.ID, "relabel-queue").text
    assert NEW_SITE in queue and "Nothing picked" not in queue
    full_page_screenshot(browser, tmp_path / "monitoring-page.png", SCREENSHOT)
    assert console_errors(browser) == []

    # one site's page: its alerts and those about all sites only
    browser.get(f"{airflow_api}/pipeline-monitoring/?site={NEW_SITE}")
    assert alert_rows(browser) == {(s, f) for s, f in expected if s in (NEW_SITE, "*")}
    assert console_errors(browser) == []


def test_the_page_is_in_the_airflow_ui(browser, airflow_api: str, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{airflow_api}/plugin/pipeline-monitoring")
    frame = WebDriverWait(browser, 60).until(
        expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "iframe[src*='pipeline-monitoring']"))
    )
    console_errors(browser)  # the Airflow UI's own messages are not this page's
    browser.switch_to.frame(frame)
    try:
        WebDriverWait(browser, 60).until(expected_conditions.presence_of_element_located((By.ID, "alerts")))
        assert alert_rows(browser)
    finally:
        browser.switch_to.default_content()
    browser.save_screenshot(str(tmp_path / "in-airflow.png"))


def test_the_page_says_so_when_mlflow_is_down(browser, page_without_mlflow: str, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    started = time.monotonic()
    browser.get(page_without_mlflow)
    assert time.monotonic() - started < 30
    models = browser.find_element(By.ID, "models").text
    assert "The model registry is unreachable (reference" in models and UNREACHABLE_MLFLOW not in models
    assert "validation-suite" in models  # the store's audit trail is still there
    assert alert_rows(browser)
    browser.save_screenshot(str(tmp_path / "mlflow-down.png"))
    assert console_errors(browser) == []
