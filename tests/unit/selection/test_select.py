"""Selection without a store: k-center spreads picks, quotas pass on what a strategy cannot fill, caps hold."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pipeline.selection import SelectionConfig, k_center, pick, score_candidates
from pipeline.store.schema import Pick
from tests.factories import inference_log_rows


def test_k_center_takes_one_from_each_cluster_before_a_second_from_any():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    points = np.vstack([c + rng.normal(0, 0.1, (25, 2)) for c in centres])  # 4 clusters of 25 near-duplicates
    picked = k_center(points, np.arange(100), 4)
    assert sorted(i // 25 for i in picked) == [0, 1, 2, 3]
    assert picked[0] == 0  # the first in priority order starts


def test_k_center_seeded_with_earlier_picks_avoids_their_neighbourhood():
    points = np.array([[0.0], [0.1], [5.0], [9.9], [10.0]])
    assert k_center(points, np.array([1, 2, 3]), 1, chosen=np.array([0, 4])) == [2]


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


def test_a_drifting_site_gets_drift_picks_within_its_cap():
    config = SelectionConfig(budget=100, site_cap=0.3)
    scored = score_candidates(candidates(), {"riverside": "a1"}, config)
    picks = pick(scored, 100, config, np.random.default_rng(0))
    assert picks["site"].value_counts().max() <= 30
    drift = picks[picks["strategy"] == str(Pick.DRIFT)]
    assert len(drift) > 0 and set(drift["site"]) == {"riverside"}
    assert all(json.loads(r)["drift"] == {"alert_id": "a1"} for r in drift["reasons"])


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
        ({"shares": {"oracle": 1.0}}, "unknown strategies"),
        ({"shares": {Pick.ERROR: 0.0}}, "not all 0"),
        ({"lookback_days": 0}, "lookback_days must be >= 1"),
    ],
)
def test_bad_configuration_is_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SelectionConfig(**kwargs)
