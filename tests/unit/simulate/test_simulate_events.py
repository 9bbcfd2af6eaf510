"""Every event type has its intended, measurable effect on the generated data (DICOM tags and stats, ground truth)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.simulate.run import simulate
from pipeline.simulate.scenario import Scenario, load_scenario, with_volume
from pipeline.simulate.world import changed_sites
from pipeline.store import make_engine, read_window, upgrade

SCENARIOS = Path(__file__).resolve().parents[3] / "scenarios"


def scaled(scenario: Scenario, volume: int, size: int = 32) -> Scenario:
    """Return ``scenario`` with every site (also those joining later) at ``volume`` studies a day."""
    return with_volume(scenario, per_site=volume).model_copy(update={"image_size": size})


def run(tmp_path: Path, name: str, days: list[int], volume: int, size: int = 32) -> pd.DataFrame:
    """Simulate ``days`` of a shipped scenario; return studies joined with ground truth."""
    engine = make_engine(f"sqlite:///{tmp_path / 'store.db'}")
    upgrade(engine)
    scenario = scaled(load_scenario(SCENARIOS / f"{name}.yaml"), volume, size)
    simulate(scenario, engine=engine, storage_root=tmp_path / "storage", key="k", days=days, progress=False)
    studies = read_window(engine, "studies")
    truth = read_window(engine, "ground_truth")
    return studies.merge(truth, on=["study_id", "site"], suffixes=("", "_truth"))


def test_every_shipped_scenario_runs_30_days(tmp_path):
    for path in sorted(SCENARIOS.glob("*.yaml")):
        scenario = scaled(load_scenario(path), volume=3, size=32)
        engine = make_engine(f"sqlite:///{tmp_path / path.stem}.db")
        upgrade(engine)
        summary = simulate(
            scenario, engine=engine, storage_root=tmp_path / path.stem, key="k", days=range(30), progress=False
        )
        assert summary.days == list(range(30))
        assert summary.studies > 100 and summary.unreadable == 0
        assert summary.rejected == 0 or path.stem == "tag_errors"  # its wrong BodyPartExamined: not a chest study
        assert len(read_window(engine, "studies", columns=["study_id"])) == summary.studies - summary.rejected


def test_brightness_drift_moves_mean_intensity_by_the_configured_amount(tmp_path):
    frame = run(tmp_path, "brightness_drift", [12, 35], volume=60, size=64)
    lake = frame[frame.site == "lakeside"].groupby("day")["img_mean"].mean()
    others = frame[frame.site != "lakeside"].groupby("day")["img_mean"].mean()
    assert lake[35] - lake[12] == pytest.approx(0.15, abs=0.03)
    assert abs(others[35] - others[12]) < 0.02


def test_children_move_the_age_distribution(tmp_path):
    frame = run(tmp_path, "children_appear", [15, 25], volume=120)
    north = frame[frame.site == "north-general"]
    child_share = north.groupby("day")["patient_age_years"].apply(lambda a: float((a < 16).mean()))
    assert child_share[15] == 0.0
    assert child_share[25] == pytest.approx(0.35, abs=0.1)


def test_prevalence_change_moves_the_ground_truth_rate(tmp_path):
    frame = run(tmp_path, "prevalence_drop", [10, 11, 30, 31], volume=150)
    anna = frame[frame.site == "st-anna"]
    before = anna[anna.day < 20]["abnormal"].mean()
    after = anna[anna.day >= 20]["abnormal"].mean()
    assert before == pytest.approx(0.25, abs=0.06)
    assert after == pytest.approx(0.05, abs=0.03)


def test_error_burst_raises_the_injected_failure_rate(tmp_path):
    frame = run(tmp_path, "error_burst", [20, 25, 40], volume=150)
    failing = frame.assign(failed=frame["injected_failure"].notna())
    rate = failing.groupby(["day", "site"])["failed"].mean()
    assert rate[(20, "st-anna")] < 0.02
    assert rate[(25, "st-anna")] == pytest.approx(0.15, abs=0.06)
    assert rate[(25, "lakeside")] < 0.02
    assert all(rate[(40, site)] == pytest.approx(0.1, abs=0.05) for site in ("st-anna", "lakeside", "north-general"))
    assert set(failing[failing.day == 25]["injected_failure"].dropna()) >= {"cuda_oom"}


def test_tag_errors_show_in_the_stored_tags(tmp_path):
    frame = run(tmp_path, "tag_errors", [10, 25], volume=150)
    north = frame[frame.site == "north-general"]
    missing_age = north.groupby("day")["patient_age_years"].apply(lambda a: float(a.isna().mean()))
    wrong_view = north.assign(wrong=north["view_position"] != north["view"]).groupby("day")["wrong"].mean()
    assert missing_age[10] == 0.0 and missing_age[25] == pytest.approx(0.3, abs=0.1)
    assert wrong_view[10] == 0.0 and wrong_view[25] == pytest.approx(0.2, abs=0.08)


def test_new_hospital_brings_a_new_site_and_scanner(tmp_path):
    frame = run(tmp_path, "new_hospital", [9, 10], volume=60, size=64)
    assert "riverside" not in set(frame[frame.day == 9].site)
    river = frame[frame.site == "riverside"]
    assert set(river["manufacturer"]) == {"Carestream"}
    assert river["img_mean"].mean() < frame[frame.site != "riverside"]["img_mean"].mean() - 0.08


def test_positioning_problem_cuts_the_apex_and_goes_away(tmp_path):
    frame = run(tmp_path, "positioning", [5, 15, 30], volume=150)
    lake = frame[frame.site == "lakeside"]
    cut = lake.groupby("day")["organ_fully_captured"].apply(lambda s: float((~s.astype(bool)).mean()))
    ap = lake.groupby("day")["view"].apply(lambda s: float((s == "AP").mean()))
    assert cut[15] > cut[5] + 0.08 and cut[30] < 0.05
    assert ap[15] == pytest.approx(0.5, abs=0.12)


def test_simulating_a_day_again_changes_nothing(tmp_path):
    first = run(tmp_path, "stable", [3], volume=20)
    second = run(tmp_path, "stable", [3], volume=20)
    assert len(first) == len(second) > 30
    pd.testing.assert_frame_equal(
        first.sort_values("study_id").reset_index(drop=True), second.sort_values("study_id").reset_index(drop=True)
    )


def test_no_patient_identifier_reaches_the_store_or_file_names(tmp_path):
    frame = run(tmp_path, "stable", [0], volume=10)
    import pydicom

    path = Path(frame["dicom_uri"].iloc[0])
    ds = pydicom.dcmread(path)
    secrets = {str(ds.PatientName), str(ds.PatientID), str(ds.AccessionNumber), str(ds.StudyInstanceUID)}
    text = frame.astype(str).to_csv()
    assert not any(s in text for s in secrets)
    assert not any(s in str(p) for p in (tmp_path / "storage").rglob("*") for s in secrets)
    assert np.all(frame["study_id"].str.fullmatch(r"[0-9a-f]{32}"))


def test_outage_silences_a_site_and_a_volume_change_lowers_it(tmp_path):
    frame = run(tmp_path, "site_outage", [19, 20, 21, 22, 34, 36], volume=100)
    per_day = frame.groupby(["day", "site"]).size().unstack(fill_value=0)
    assert per_day.loc[19, "lakeside"] > 70 and per_day.loc[20, "lakeside"] == 0 == per_day.loc[21, "lakeside"]
    assert per_day.loc[22, "lakeside"] > 70
    assert per_day.loc[36, "north-general"] == pytest.approx(40, abs=15)
    assert per_day.loc[34, "north-general"] > 70


@pytest.mark.parametrize(
    ("name", "day", "changed"),
    [
        ("stable", 30, set()),
        ("prevalence_drop", 19, set()),
        ("prevalence_drop", 20, {"st-anna"}),
        ("new_hospital", 10, {"riverside"}),
        ("positioning", 25, {"lakeside"}),
        ("positioning", 26, set()),  # the problem lasted 14 days
        ("error_burst", 40, {"st-anna", "north-general", "lakeside"}),
    ],
)
def test_changed_sites_are_the_site_days_a_scenario_adds_to_the_stable_world(name, day, changed):
    base = load_scenario(SCENARIOS / "stable.yaml")
    assert changed_sites(load_scenario(SCENARIOS / f"{name}.yaml"), base, day) == changed


def test_a_variant_simulated_over_the_stable_world_equals_the_variant_simulated_alone(tmp_path: Path) -> None:
    base = scaled(load_scenario(SCENARIOS / "stable.yaml"), 6)
    variant = scaled(load_scenario(SCENARIOS / "prevalence_drop.yaml"), 6)
    alone = make_engine(f"sqlite:///{tmp_path / 'alone.db'}")
    shared = make_engine(f"sqlite:///{tmp_path / 'shared.db'}")
    for engine in (alone, shared):
        upgrade(engine)
    simulate(variant, engine=alone, storage_root=tmp_path / "a", key="k", days=[20], progress=False)
    simulate(base, engine=shared, storage_root=tmp_path / "b", key="k", days=[20], progress=False)
    sites = changed_sites(variant, base, 20)
    truth = read_window(shared, "ground_truth")
    replaced = set(truth.loc[truth["site"].isin(sites), "study_id"])
    with shared.begin() as conn:
        for table in ("ground_truth", "studies"):
            conn.exec_driver_sql(f"DELETE FROM {table} WHERE study_id IN ({','.join(repr(i) for i in replaced)})")
    simulate(variant, engine=shared, storage_root=tmp_path / "b", key="k", days=[20], sites=sites, progress=False)
    columns = ["study_id", "site", "abnormal", "patient_age_years", "view"]
    a = read_window(alone, "ground_truth")[columns].sort_values("study_id", ignore_index=True)
    b = read_window(shared, "ground_truth")[columns].sort_values("study_id", ignore_index=True)
    pd.testing.assert_frame_equal(a, b)
