"""The gate's clinical checks on scored sets whose truth is known: each sabotage fails its own check."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.validation.checks import CANDIDATE, CHAMPION, ValidationConfig, age_band, clinical_checks
from pipeline.validation.testsets import (
    REGRESSION,
    TYPICAL_ERRORS,
    UNUSUAL,
    ServedUnit,
    TestSetConfig,
    draw_test_sets,
)

CONFIG = ValidationConfig(sensitivity_target=0.95)
SITES = ("a", "b", "c")


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p / (1 - p))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def _scores(labels: np.ndarray, separation: float, rng: np.random.Generator) -> np.ndarray:
    """Calibrated probabilities of a model whose logits separate the classes by ``separation`` sd."""
    prevalence = labels.mean()
    logits = rng.normal(size=labels.size) + separation * (labels - 0.5)
    # the calibrated posterior of that Gaussian model
    return _sigmoid(separation * logits + np.log(prevalence / (1 - prevalence)))


def _frame(n: int, prevalence: float, rng: np.random.Generator) -> pd.DataFrame:
    labels = (rng.random(n) < prevalence).astype(int)
    return pd.DataFrame(
        {
            "study_id": [f"s{rng.integers(1e12)}-{i}" for i in range(n)],
            "label": labels,
            "site": rng.choice(SITES, size=n),
            "manufacturer": rng.choice(["Agfa", "Siemens"], size=n),
            "age_band": rng.choice(["16-40", "40-65", "65-200"], size=n),
            "patient_sex": rng.choice(["F", "M"], size=n),
            "view_position": "PA",
            "reason": "sample",
        }
    )


def _sets(candidate: callable, seed: int = 0) -> dict[str, pd.DataFrame]:  # type: ignore[valid-type]
    rng = np.random.default_rng(seed)
    sets = {REGRESSION: _frame(3000, 0.25, rng)}
    for site in SITES:
        sets[f"real_balance:{site}"] = _frame(1000, 0.05, rng).assign(site=site)
    sets[UNUSUAL] = _frame(200, 0.3, rng).assign(reason="child")
    for frame in sets.values():
        frame[CHAMPION] = _scores(frame["label"].to_numpy(), 2.0, rng)
        frame[CANDIDATE] = candidate(frame, rng)
    champion_wrong = (sets[REGRESSION][CHAMPION] >= 0.3) != (sets[REGRESSION]["label"] == 1)
    sets[TYPICAL_ERRORS] = sets[REGRESSION][champion_wrong].reset_index(drop=True)
    return sets


def _failed(sets: dict[str, pd.DataFrame]) -> set[str]:
    checks, _ = clinical_checks(sets, CONFIG)
    return {c.name for c in checks if c.failed}


def test_a_better_model_passes_every_clinical_check() -> None:
    sets = _sets(lambda f, rng: _scores(f["label"].to_numpy(), 2.6, rng))
    checks, thresholds = clinical_checks(sets, CONFIG)
    assert [c.name for c in checks if c.failed] == []
    assert thresholds.candidate.sensitivity_lower >= 0.95
    errors = next(c for c in checks if c.name == "typical_errors")
    assert errors.numbers["errors_candidate"] < errors.numbers["errors_champion"]


def test_a_model_as_good_as_the_champion_passes_the_non_inferiority_margin() -> None:
    sets = _sets(lambda f, rng: _scores(f["label"].to_numpy(), 2.0, rng), seed=1)
    assert "auroc_noninferiority[regression]" not in _failed(sets)


def test_shuffled_labels_and_flipped_outputs_fail_non_inferiority() -> None:
    shuffled = _sets(lambda f, rng: rng.permutation(f[CHAMPION].to_numpy()))
    flipped = _sets(lambda f, rng: 1.0 - f[CHAMPION].to_numpy())
    for sets in (shuffled, flipped):
        failed = _failed(sets)
        assert "auroc_noninferiority[regression]" in failed and "operating_point" in failed


def test_a_merely_overconfident_model_fails_calibration_only_there() -> None:
    sets = _sets(lambda f, rng: _sigmoid(4.0 * _logit(f[CHAMPION].to_numpy())))
    checks, _ = clinical_checks(sets, CONFIG)
    calibration = next(c for c in checks if c.name == "calibration")
    assert calibration.failed and calibration.numbers["ece_candidate"] > calibration.numbers["ece_champion"] + 0.03
    assert not next(c for c in checks if c.name == "auroc_noninferiority[regression]").failed


def test_a_model_with_shifted_logits_fails_calibration_on_the_log_loss_it_wastes() -> None:
    sets = _sets(lambda f, rng: _sigmoid(_logit(f[CHAMPION].to_numpy()) + 2.0))
    checks, _ = clinical_checks(sets, CONFIG)
    calibration = next(c for c in checks if c.name == "calibration")
    numbers = calibration.numbers
    assert calibration.failed
    assert numbers["calibration_loss_candidate"] > numbers["calibration_loss_champion"] + 0.02
    assert numbers["platt_intercept_candidate"] == pytest.approx(-2.0, abs=0.3)
    assert not next(c for c in checks if c.name == "auroc_noninferiority[regression]").failed


def test_a_model_broken_at_one_site_fails_the_subgroup_check_naming_it() -> None:
    def broken_at_c(frame: pd.DataFrame, rng: np.random.Generator) -> np.ndarray:
        good = _scores(frame["label"].to_numpy(), 2.2, rng)
        noise = rng.random(len(frame))
        return np.where(frame["site"] == "c", noise, good)

    checks, _ = clinical_checks(_sets(broken_at_c), CONFIG)
    subgroups = next(c for c in checks if c.name == "subgroups")
    assert subgroups.failed and "site=c" in subgroups.summary
    worse = {r["subgroup"] for r in subgroups.numbers["subgroups"] if r["worse"]}
    assert "site=c" in worse and "site=a" not in worse


def test_a_model_confidently_normal_on_unusual_studies_fails_the_unusual_data_check() -> None:
    def confident_on_unusual(frame: pd.DataFrame, rng: np.random.Generator) -> np.ndarray:
        good = _scores(frame["label"].to_numpy(), 2.2, rng)
        return np.where(frame["reason"] == "child", 0.001, good)

    checks, _ = clinical_checks(_sets(confident_on_unusual), CONFIG)
    unusual = next(c for c in checks if c.name == "unusual_data")
    assert unusual.failed and unusual.numbers["closed_as_normal_candidate"] == 1.0
    assert unusual.numbers["by_reason"]["child"] == 1.0


def test_too_few_abnormal_studies_for_the_sensitivity_bound_fail_the_operating_point_clearly() -> None:
    sets = _sets(lambda f, rng: _scores(f["label"].to_numpy(), 2.6, rng))
    strict = ValidationConfig(sensitivity_target=0.999)
    checks, _ = clinical_checks(sets, strict)
    op = next(c for c in checks if c.name == "operating_point")
    assert op.failed and "needs at least 2995" in op.summary


def test_an_empty_regression_set_is_refused() -> None:
    sets = _sets(lambda f, rng: f[CHAMPION].to_numpy())
    sets[REGRESSION] = sets[REGRESSION].iloc[:0]
    with pytest.raises(ValueError, match="regression test set has 0 studies"):
        clinical_checks(sets, CONFIG)


def test_age_bands() -> None:
    bands = age_band(pd.Series([3.0, 16.0, 70.0, None]), (0.0, 16.0, 65.0, 200.0))
    assert bands.tolist() == ["0-16", "16-65", "65-200", "unknown"]


def test_test_sets_are_drawn_to_their_rules() -> None:
    rng = np.random.default_rng(0)
    n = 2000
    pool = pd.DataFrame(
        {
            "study_id": [f"s{i:05d}" for i in range(n)],
            "dicom_uri": [f"/d/{i}.dcm" for i in range(n)],
            "label": (rng.random(n) < 0.25).astype(int),
            "site": rng.choice(SITES, size=n),
            "patient_key": [f"p{i // 2}" for i in range(n)],
            "patient_age_years": np.where(rng.random(n) < 0.05, 8.0, 50.0),
            "manufacturer": np.where(rng.random(n) < 0.02, "RareCo", "Agfa"),
            "overturned": rng.random(n) < 0.1,
        }
    )
    unusable = pd.DataFrame(
        [("s00001", "/d/1.dcm", 1, "a", "p0", "positioning")],
        columns=["study_id", "dicom_uri", "label", "site", "patient_key", "reason"],
    )
    sets = draw_test_sets(pool, unusable, TestSetConfig(regression_size=500, per_site=300))
    assert len(sets[REGRESSION]) == 500
    assert set(sets[UNUSUAL]["reason"]) == {"child", "rare_manufacturer", "positioning"}
    assert not set(sets[REGRESSION]["study_id"]) & set(sets[UNUSUAL]["study_id"])
    for site in SITES:
        balance = sets[f"real_balance:{site}"]
        assert 0.04 <= balance["label"].mean() <= 0.06 and len(balance) <= 300
    errors = sets[TYPICAL_ERRORS]
    assert set(errors["study_id"]) == set(pool.loc[pool["overturned"], "study_id"])
    assert set(errors["reason"]) == {"missed", "false_alarm"}
    # a grown pool keeps the studies it had where it can (keyed order, not position)
    grown = draw_test_sets(pd.concat([pool, pool.assign(study_id=pool["study_id"] + "x")]), unusable, TestSetConfig())
    assert len(set(grown[REGRESSION]["study_id"]) & set(sets[REGRESSION]["study_id"])) > 200


def test_a_site_whose_notion_of_normal_differs_gets_its_own_threshold() -> None:
    sets = _sets(lambda f, rng: _scores(f["label"].to_numpy(), 2.6, rng))
    config = ValidationConfig(sensitivity_target=0.95, sensitivity_target_by_site={"c": 0.8})
    checks, thresholds = clinical_checks(sets, config)
    # a lower target at site c: a higher threshold there, the global one elsewhere
    assert thresholds.candidate_by_site["c"] > thresholds.candidate.threshold
    assert set(thresholds.candidate_by_site) == {"c"}
    op = next(c for c in checks if c.name == "operating_point")
    assert op.numbers["threshold_by_site"] == thresholds.candidate_by_site
    regression = sets[REGRESSION]
    at_c = regression[regression["site"] == "c"]
    caught = (at_c[CANDIDATE] >= thresholds.candidate_by_site["c"])[at_c["label"] == 1].mean()
    assert 0.75 <= caught < 0.95


def _evidence(sets: dict[str, pd.DataFrame], served: list[ServedUnit], config: ValidationConfig = CONFIG):  # type: ignore[no-untyped-def]
    checks, _ = clinical_checks(sets, config, served)
    return next(c for c in checks if c.name == "site_evidence")


def _with_scanners(sets: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    return {n: f.assign(scanner=f["manufacturer"] + " M1") for n, f in sets.items()}


SERVED = [ServedUnit(s, None, 100) for s in SITES] + [ServedUnit("c", f"{m} M1", 50) for m in ("Agfa", "Siemens")]


def test_every_served_site_and_scanner_is_judged_on_its_own_evidence() -> None:
    evidence = _evidence(_with_scanners(_sets(lambda f, rng: _scores(f["label"].to_numpy(), 2.6, rng))), SERVED)

    assert evidence.status == "pass", evidence.summary
    rows = {(r["site"], r["scanner"]): r for r in evidence.numbers["units"]}
    assert set(rows) == {(u.site, u.scanner) for u in SERVED}
    for row in rows.values():
        assert row["abnormal"] >= CONFIG.min_positives
        assert row["sensitivity_low"] <= row["sensitivity_candidate"] <= row["sensitivity_high"]
    assert rows[("c", None)]["abnormal"] == rows[("c", "Agfa M1")]["abnormal"] + rows[("c", "Siemens M1")]["abnormal"]


def test_a_served_site_the_test_sets_lack_fails_for_insufficient_evidence_naming_it() -> None:
    sets = _with_scanners(_sets(lambda f, rng: _scores(f["label"].to_numpy(), 2.6, rng)))
    served = [*SERVED, ServedUnit("riverside", None, 80)]
    evidence = _evidence(sets, served)
    assert evidence.failed
    assert (
        "insufficient evidence at riverside: 0 labeled abnormal studies in the test sets, 40 needed" in evidence.summary
    )

    few = {n: f[~((f["site"] == "c") & (f["label"] == 1))] for n, f in sets.items()}  # c keeps no abnormal study
    few[REGRESSION] = pd.concat(
        [
            few[REGRESSION],
            sets[REGRESSION][(sets[REGRESSION]["site"] == "c") & (sets[REGRESSION]["label"] == 1)].head(39),
        ]
    )
    assert "insufficient evidence at c: 39 labeled abnormal" in _evidence(few, SERVED).summary


def test_a_model_blind_at_one_scanner_of_one_site_fails_naming_that_scanner_whatever_the_pooled_figures_say() -> None:
    def blind_at_c_siemens(frame: pd.DataFrame, rng: np.random.Generator) -> np.ndarray:
        good = _scores(frame["label"].to_numpy(), 2.6, rng)
        return np.where((frame["site"] == "c") & (frame["manufacturer"] == "Siemens"), 0.0001, good)

    sets = _with_scanners(_sets(blind_at_c_siemens))
    evidence = _evidence(sets, SERVED)
    assert evidence.failed
    failing = {(r["site"], r["scanner"]) for r in evidence.numbers["units"] if r["problem"]}
    assert ("c", "Siemens M1") in failing and ("a", None) not in failing and ("c", "Agfa M1") not in failing
    assert "ranks studies at c (Siemens M1) worse than the champion: AUROC 0.5" in evidence.summary


def test_a_candidate_below_a_sites_own_target_fails_there_at_the_threshold_it_would_use() -> None:
    def weak_at_a(frame: pd.DataFrame, rng: np.random.Generator) -> np.ndarray:
        good = _scores(frame["label"].to_numpy(), 2.6, rng)
        return np.where(frame["site"] == "a", _scores(frame["label"].to_numpy(), 2.0, rng), good)

    strict = CONFIG.model_copy(update={"sensitivity_target_by_site": {"a": 0.999}})
    evidence = _evidence(_with_scanners(_sets(weak_at_a)), SERVED, strict)
    row = next(r for r in evidence.numbers["units"] if r["site"] == "a" and r["scanner"] is None)
    assert evidence.failed and row["target"] == 0.999 and "below its target 0.999" in row["problem"]
