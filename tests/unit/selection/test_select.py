"""Selection without a store: k-center spreads picks, quotas pass on what a strategy cannot fill, caps hold."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pipeline.selection import SelectionConfig, duplicate_radius, pick, score_candidates, spread
from pipeline.store.schema import Pick
from pipeline.training.snapshot import reserved_for_testing
from pipeline.validation import ServedUnit
from tests.factories import inference_log_rows


def test_spread_keeps_priority_order_but_skips_near_duplicates_while_others_are_left():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    points = np.vstack([c + rng.normal(0, 0.1, (25, 2)) for c in centres])  # 4 clusters of 25 near-duplicates
    order = np.arange(100)  # best first: the whole first cluster, then the second, ...
    assert spread(points, order, 4, [], radius=1.0) == [0, 25, 50, 75]
    assert spread(points, order, 6, [], radius=1.0) == [0, 25, 50, 75, 1, 2]  # the set-aside fill up, in order
    rest = [i for i in order if i not in (0, 25)]
    assert spread(points, rest, 3, [0, 25], radius=1.0) == [50, 75, 1]  # earlier picks count too
    assert spread(None, order, 3, [], radius=1.0) == [0, 1, 2]  # no embeddings: plain priority order


def test_duplicate_radius_is_a_low_quantile_of_random_pair_distances():
    points = np.random.default_rng(1).normal(size=(500, 8))
    radius = duplicate_radius(points, 0.02, np.random.default_rng(2))
    pairs = np.linalg.norm(points[:250] - points[250:], axis=1)
    assert np.quantile(pairs, 0.005) < radius < np.quantile(pairs, 0.1)
    assert duplicate_radius(None, 0.02, np.random.default_rng(2)) == 0.0


def candidates(n: int = 400, seed: int = 0) -> pd.DataFrame:
    frame = inference_log_rows(n, seed=seed)
    frame["site"] = np.where(np.arange(n) < n // 2, "st-anna", np.where(np.arange(n) % 2, "north-general", "riverside"))
    wrong = np.arange(n) % 20 == 0  # 5% overturned by a radiologist
    frame["agrees_with_model"] = np.where(wrong, False, None)
    frame["final_abnormal"] = np.where(wrong, frame["decision"] == "normal", None)
    return frame


def test_every_error_is_picked_first_and_every_pick_says_why():
    config = SelectionConfig(budget=60, site_cap=1.0)
    scored = score_candidates(candidates(), {}, config)
    picks = pick(scored, 60, config, np.random.default_rng(0))
    assert len(picks) == 60 and picks["study_id"].is_unique
    errors = set(scored.loc[scored["is_error"], "study_id"])
    assert len(errors) == 20
    # error share 0.3 of 60 = 18 of the 20; the drift share (no drifting site) passes to errors first
    assert errors <= set(picks["study_id"])
    for row in picks.itertuples():
        reasons = json.loads(row.reasons)
        assert row.strategy in reasons
        if row.study_id in errors:
            assert reasons["error"]["radiologist_abnormal"] != (row.decision == "abnormal")


def test_a_drifting_site_gets_half_the_budget_for_drift_within_its_own_cap():
    config = SelectionConfig(budget=100, site_cap=0.3, drift_site_cap=0.6)
    scored = score_candidates(candidates(), {"riverside": "a1"}, config)
    picks = pick(scored, 100, config, np.random.default_rng(0))
    per_site = picks["site"].value_counts()
    assert per_site["riverside"] <= 60 and per_site.drop("riverside").max() <= 30
    drift = picks[picks["strategy"] == str(Pick.DRIFT)]
    assert 45 <= len(drift) <= 50 and set(drift["site"]) == {"riverside"}  # half the budget, less what the cap took
    assert all(json.loads(r)["drift"] == {"alert_id": "a1"} for r in drift["reasons"])
    quiet = pick(score_candidates(candidates(), {}, config), 100, config, np.random.default_rng(0))
    assert quiet["site"].value_counts().max() <= 30 and str(Pick.DRIFT) not in set(quiet["strategy"])


def test_uncertain_picks_are_more_uncertain_than_the_rest():
    config = SelectionConfig(budget=40, site_cap=1.0, shares={Pick.UNCERTAIN: 1.0})
    scored = score_candidates(candidates(), {}, config)
    picks = pick(scored, 40, config, np.random.default_rng(0))
    assert set(picks["strategy"]) == {"uncertain"}
    rest = scored[~scored["study_id"].isin(picks["study_id"])]
    assert picks["uncertain_priority"].median() > rest["uncertain_priority"].quantile(0.75)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"budget": -1}, "budget must be >= 0"),
        ({"site_cap": 0.0}, "site_cap must lie in"),
        ({"drift_site_cap": 1.5}, "drift_site_cap must lie in"),
        ({"drift_share_on_alert": -0.1}, "drift_share_on_alert must lie in"),
        ({"shares": {"oracle": 1.0}}, "unknown strategies"),
        ({"shares": {Pick.ERROR: 0.0}}, "not all 0"),
        ({"lookback_days": 0}, "lookback_days must be >= 1"),
    ],
)
def test_bad_configuration_is_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SelectionConfig(**kwargs)


def test_a_site_short_of_evidence_gets_a_sample_of_its_reserved_patients_and_training_picks_skip_them():
    frame = candidates(600, seed=3)
    frame["patient_key"] = frame["study_id"]
    frame["reserved"] = reserved_for_testing(frame["patient_key"])
    assert 0.15 < frame["reserved"].mean() < 0.35
    config = SelectionConfig(budget=50)
    drifting = {"riverside": "alert-1"}
    frame["scanner"] = "Carestream DRX-Evolution"
    scored = score_candidates(frame, drifting, config, short={ServedUnit("riverside", None, 200): 12})
    picks = pick(scored, 50, config, np.random.default_rng(0))

    evidence = picks[picks["strategy"] == "evidence"]
    assert len(evidence) == round(config.evidence_share * 50)
    chosen = frame.set_index("study_id").loc[evidence["study_id"]]
    assert (chosen["site"] == "riverside").all() and chosen["reserved"].all()
    assert chosen["final_abnormal"].isna().all()  # no radiologist's outcome yet: the label is news
    assert json.loads(evidence["reasons"].iloc[0])["evidence"] == {
        "for": "riverside",
        "abnormal_in_evidence": 12,
        "needed": 40,
    }
    training = picks[picks["strategy"].isin(["error", "uncertain", "drift"])]
    assert not frame.set_index("study_id").loc[training["study_id"], "reserved"].any()

    enough = pick(score_candidates(frame, drifting, config, short={}), 50, config, np.random.default_rng(0))
    assert "evidence" not in set(enough["strategy"])  # evidence enough: the whole budget trains
