"""The drift check on frames drawn from known distributions: quiet on noise, the right site and kind on a shift."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit, logit

from pipeline.alerts import Kind
from pipeline.monitor.drift import CATEGORICAL_FEATURES, NUMERIC_FEATURES, DriftThresholds, check_drift
from pipeline.store import encode_embedding

DAYS = 17  # 14 reference days, 2 between, the window


def world(
    rng: np.random.Generator,
    *,
    per_day: int = 200,
    sites: tuple[str, ...] = ("a", "b"),
    shift: dict[str, float] | None = None,
    prevalence: dict[str, float] | None = None,
    new_manufacturer: str | None = None,
) -> tuple[pd.DataFrame, np.ndarray]:
    """Return studies over DAYS days per site and their day index (0 the window).

    Disease y ~ Bernoulli(prevalence); the model's score x ~ N(+-1, 1), its probability calibrated at
    prevalence 0.25; img_mean depends on y a little (a finding brightens the lung), so a prevalence
    change moves it too. ``shift`` adds to a numeric feature at a site in the window only.
    """
    frames = []
    for site in sites:
        for day in range(-DAYS + 1, 1):
            n = per_day
            window = day == 0
            pi = (prevalence or {}).get(site, 0.25) if window else 0.25
            y = rng.random(n) < pi
            x = rng.normal(np.where(y, 1.0, -1.0), 1.0)
            prob = expit(2.0 * x + logit(0.25))
            frame = pd.DataFrame({f: rng.normal(10.0, 2.0, n) for f in NUMERIC_FEATURES})
            frame["img_mean"] = rng.normal(0.45 + 0.05 * y, 0.03, n)
            frame["prob_abnormal"] = prob
            frame["entropy"] = -(prob * np.log(prob) + (1 - prob) * np.log1p(-prob))
            frame["bits_stored"] = 12.0
            for f in CATEGORICAL_FEATURES:
                frame[f] = rng.choice(["x", "y", "z"], n, p=[0.6, 0.3, 0.1])
            frame["decision"] = np.where(prob >= 0.1, "abnormal", "normal")
            if window and new_manufacturer and site == sites[-1]:
                frame["manufacturer"] = new_manufacturer
            if window:
                for feature, delta in (shift or {}).get(site, {}).items():
                    frame[feature] += delta
            emb = np.column_stack([x, rng.normal(0, 1, (n, 7))]).astype(np.float32)
            frame["embedding"] = [encode_embedding(e) for e in emb]
            frame["site"] = site
            frame["study_id"] = [f"{site}{day}{i}" for i in range(n)]
            frame["threshold"] = 0.1
            frame["_day"] = day
            frames.append(frame)
    frame = pd.concat(frames, ignore_index=True)
    for f in CATEGORICAL_FEATURES:
        frame[f] = frame[f].astype(str)
    return frame.drop(columns="_day"), frame["_day"].to_numpy()


def run(frame, day, **kwargs):
    return check_drift(frame, day=day, reference=day <= -3, config=DriftThresholds(**kwargs))


def test_no_drift_no_finding_over_many_windows():
    rng = np.random.default_rng(0)
    alarms = 0
    for _ in range(20):
        result = run(*world(rng))
        alarms += len(result.findings)
        assert set(result.evaluated) == {"a", "b", "*"}
    assert alarms == 0


def test_a_brightness_shift_is_a_covariate_shift_at_that_site_naming_img_mean():
    result = run(*world(np.random.default_rng(1), shift={"b": {"img_mean": 0.02}}))
    assert [(str(f.kind), f.site, f.statistic) for f in result.findings] == [("drift", "b", "covariate_shift")]
    b = result.sites["b"]
    assert b.drifted()[0].feature == "img_mean" and "img_mean" in result.findings[0].message
    assert len(b.samples) == 10 and all(s.startswith("b0") for s in b.samples)
    assert "img_mean" in b.values


def test_a_prevalence_drop_is_labelled_prevalence_with_ppv_and_npv():
    result = run(*world(np.random.default_rng(2), per_day=400, prevalence={"a": 0.05}))
    [finding] = [f for f in result.findings if f.kind == Kind.DRIFT]
    assert (finding.site, finding.statistic) == ("a", "prevalence_shift")
    a = result.sites["a"]
    assert a.prevalence_window == pytest.approx(0.05, abs=0.03)
    assert {"prob_abnormal"} <= {f.feature for f in a.drifted()}
    assert "PPV" in finding.message and "threshold" in finding.message
    # the label-free estimate, reweighted to the new prevalence, does not mistake it for a performance drop
    assert not [f for f in result.findings if f.kind == Kind.PERFORMANCE]


def test_a_site_with_no_history_is_compared_with_all_sites():
    frame, day = world(np.random.default_rng(3), sites=("a", "b", "new"), new_manufacturer="Carestream")
    keep = (frame["site"] != "new") | (day == 0)
    result = run(frame[keep].reset_index(drop=True), day[keep.to_numpy()])
    new = result.sites["new"]
    assert new.reference == "all sites"
    assert new.drifted()[0].feature == "manufacturer"
    [finding] = result.findings
    assert finding.site == "new" and "compared with all sites" in finding.message


def test_a_less_confident_model_is_a_performance_alert():
    frame, day = world(np.random.default_rng(4))
    window = (frame["site"] == "a").to_numpy() & (day == 0)
    p = frame.loc[window, "prob_abnormal"].to_numpy()
    frame.loc[window, "prob_abnormal"] = 0.25 + 0.3 * (p - 0.25)  # scores squeezed towards the prior
    result = run(frame, day)
    [performance] = [f for f in result.findings if f.kind == Kind.PERFORMANCE]
    assert performance.site == "a" and performance.value < performance.threshold


def test_a_tag_gone_missing_is_drift_and_its_studies_are_sampled():
    frame, day = world(np.random.default_rng(6))
    window = (frame["site"] == "b").to_numpy() & (day == 0)
    frame["view_position"] = frame["view_position"].astype(object)
    frame.loc[window & (np.arange(len(frame)) % 3 == 0), "view_position"] = None
    result = run(frame, day)
    b = result.sites["b"]
    assert b.drifted()[0].feature == "view_position"
    assert len(b.samples) == 10 and all(s.startswith("b0") for s in b.samples)


def test_too_few_studies_are_not_judged():
    frame, day = world(np.random.default_rng(5), per_day=30)
    result = run(frame, day)
    assert result.findings == () and set(result.insufficient) == {"a", "b"}


def test_a_fixed_reference_needs_its_period():
    with pytest.raises(ValueError, match="reference_start"):
        DriftThresholds(reference="fixed")
