"""Scenario files: every shipped one loads, bad ones fail naming the field, events change the world as configured."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.simulate.scenario import EVENT_TYPES, ScenarioError, days_between, load_scenario
from pipeline.simulate.world import model_on, sites_on

SCENARIOS = sorted((Path(__file__).resolve().parents[3] / "scenarios").glob("*.yaml"))


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_shipped_scenarios_load(path):
    scenario = load_scenario(path)
    assert scenario.name == path.stem
    assert sites_on(scenario, scenario.days - 1)


def test_the_shipped_set_covers_the_required_incidents():
    names = {p.stem for p in SCENARIOS}
    assert {"stable", "new_hospital", "children_appear", "brightness_drift", "prevalence_drop", "tag_errors"} <= names
    assert "error_burst" in names
    assert load_scenario(SCENARIOS[0].with_name("stable.yaml")).days >= 60


def test_docs_show_every_event_type():
    docs = (Path(__file__).resolve().parents[3] / "docs" / "scenarios.md").read_text()
    for event_type in EVENT_TYPES:
        assert f"type: {event_type}" in docs, f"docs/scenarios.md has no example of {event_type}"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return path


BASE = """
name: t
start: 2026-01-01
sites:
  - id: a
    devices: [{id: a1}]
"""


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (
            "sites:\n  - id: a\n    devices: [{id: a1, brightnes: 0.1}]\n",
            "sites.0.devices.0.brightnes: Extra inputs are not permitted",
        ),
        (
            "sites:\n  - id: a\n    devices: [{id: a1, contrast: -1}]\n",
            "sites.0.devices.0.contrast: Input should be greater than 0",
        ),
        ("colour: blue\n", "colour: Extra inputs are not permitted"),
        ("events:\n  - {type: prevalence_change, day: 3, site: nowhere, prevalence: 0.1}\n", "unknown site 'nowhere'"),
        ("events:\n  - {type: volcano, day: 3}\n", "events.0"),
        (
            "events:\n  - {type: error_burst, day: 1, error_type: gremlins, rate: 0.1}\n",
            "events.0.error_burst.error_type",
        ),
        (
            "events:\n  - {type: device_swap, day: 1, site: a, replaces: zz, device: {id: a2}}\n",
            "site 'a' has no device 'zz'",
        ),
    ],
)
def test_bad_scenarios_fail_naming_the_field(tmp_path, extra, needle):
    text = BASE if extra.startswith("events") or extra.startswith("colour") else BASE.split("sites:")[0]
    with pytest.raises(ScenarioError, match=r"s\.yaml") as info:
        load_scenario(write(tmp_path, text + extra))
    assert needle in str(info.value)


def test_extends_keeps_the_parent_events_and_adds_its_own(tmp_path):
    (tmp_path / "parent.yaml").write_text(
        BASE + "events:\n  - {type: prevalence_change, day: 2, site: a, prevalence: 0.1}\n"
    )
    child = tmp_path / "child.yaml"
    child.write_text(
        "extends: parent.yaml\nname: child\nevents:\n  - {type: model_version_change, day: 5, model: '3'}\n"
    )
    scenario = load_scenario(child)
    assert scenario.name == "child"
    assert [e.type for e in scenario.events] == ["prevalence_change", "model_version_change"]
    assert model_on(scenario, 4) == "champion" and model_on(scenario, 5) == "3"


def test_not_yaml_or_missing(tmp_path):
    with pytest.raises(ScenarioError, match="cannot read scenario"):
        load_scenario(tmp_path / "missing.yaml")
    with pytest.raises(ScenarioError, match="a scenario is a mapping"):
        load_scenario(write(tmp_path, "- just\n- a list\n"))


def test_world_applies_each_event_on_its_day(tmp_path):
    events = """
events:
  - {type: calibration_drift, day: 10, site: a, days: 5, brightness: 0.1}
  - {type: device_added, day: 3, site: a, device: {id: a2, manufacturer: GE}}
  - {type: device_swap, day: 6, site: a, replaces: a1, device: {id: a3, manufacturer: Canon}}
  - {type: site_joins, day: 4, site: {id: b, devices: [{id: b1}]}}
  - {type: population_change, day: 2, site: a, child_share: 0.3}
  - {type: tag_error_change, day: 2, site: a, tag_errors: {missing_age: 0.5}}
  - {type: positioning_problem, day: 2, days: 3, site: a, positioning: {apex_cut_rate: 0.4}}
  - {type: error_burst, day: 7, days: 2, error_type: timeout, rate: 0.2}
"""
    scenario = load_scenario(write(tmp_path, BASE + events))

    def site(day: int, site_id: str = "a"):
        return {s.id: s for s in sites_on(scenario, day)}[site_id]

    assert [d.id for d in site(2).devices] == ["a1"]
    assert [d.id for d in site(3).devices] == ["a1", "a2"]
    assert [d.id for d in site(6).devices] == ["a2", "a3"]
    assert {s.id for s in sites_on(scenario, 3)} == {"a"} and {s.id for s in sites_on(scenario, 4)} == {"a", "b"}
    assert site(9).devices[0].brightness == 0.0
    assert site(11).devices[0].brightness == pytest.approx(0.04)
    assert site(20).devices[0].brightness == pytest.approx(0.1)
    assert site(1).population.child_share == 0.0 and site(2).population.child_share == 0.3
    assert site(2).tag_errors.missing_age == 0.5
    assert site(4).positioning.apex_cut_rate == 0.4 and site(5).positioning.apex_cut_rate == 0.01
    assert site(7).failure_rates["timeout"] == 0.2 and site(8, "b").failure_rates["timeout"] == 0.2
    assert site(9).failure_rates["timeout"] == 0.002


def test_days_between():
    scenario = load_scenario(SCENARIOS[0].with_name("stable.yaml"))
    assert days_between(scenario, None, 3) == [0, 1, 2]
    assert days_between(scenario, scenario.start.replace(day=scenario.start.day + 2), 2) == [2, 3]
    with pytest.raises(ScenarioError, match="before the scenario's start"):
        days_between(scenario, scenario.start.replace(year=2020), 1)
