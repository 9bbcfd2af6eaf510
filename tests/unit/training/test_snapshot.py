"""Snapshot rules on small frames: which label wins, splits by patient, the content hash, refusals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.training import SnapshotConfig, TrainingDataError, check_trainable
from pipeline.training.snapshot import (
    assign_splits,
    choose_labels,
    content_hash,
    reserved_for_testing,
    resolve_labels,
)


def votes(*rows: tuple[str, str, str, bool | None, bool]) -> pd.DataFrame:
    """Annotations as (study, project, annotator, abnormal, unusable), ids in the order given."""
    frame = pd.DataFrame(rows, columns=["study_id", "project", "annotator", "abnormal", "unusable"])
    frame["annotation_id"] = range(1, len(frame) + 1)
    return frame


def test_an_adjudicated_label_wins_over_the_annotators_and_the_radiologist():
    annotated = resolve_labels(
        votes(
            ("s1", "relabeling", "ann-a", False, False),
            ("s1", "relabeling", "ann-b", True, False),
            ("s1", "adjudication", "chief", True, False),
            ("s2", "relabeling", "ann-a", False, False),
            ("s2", "relabeling", "ann-b", False, False),
            ("s2", "adjudication", "chief", True, False),
        ),
        SnapshotConfig(),
    )
    assert annotated.loc["s1", ["label", "source"]].tolist() == [1, "adjudication"]
    assert annotated.loc["s2", ["label", "source"]].tolist() == [1, "adjudication"]
    chosen, _ = choose_labels(pd.Series({"s1": False, "s2": False}), annotated)
    assert chosen.loc["s1", ["label", "source", "weight"]].tolist() == [1, "adjudication", 1.0]


def test_majority_of_annotators_ties_and_unusable_images():
    annotated = resolve_labels(
        votes(
            ("maj", "relabeling", "a", True, False),
            ("maj", "relabeling", "b", True, False),
            ("maj", "relabeling", "c", False, False),
            ("tie", "relabeling", "a", True, False),
            ("tie", "relabeling", "b", False, False),
            ("bad", "relabeling", "a", None, True),
            ("bad", "relabeling", "b", True, False),
            ("again", "relabeling", "a", True, False),
            ("again", "relabeling", "a", False, False),  # the same annotator changed their mind: one vote
        ),
        SnapshotConfig(),
    )
    assert annotated.loc["maj", ["label", "source"]].tolist() == [1, "consensus"]
    assert annotated.loc["tie", "excluded"] == "tied"
    assert annotated.loc["bad", "excluded"] == "unusable"
    assert annotated.loc["again", ["label", "source"]].tolist() == [0, "single"]

    chosen, excluded = choose_labels(pd.Series({"tie": False, "bad": True}), annotated)
    assert chosen.loc["tie", "source"] == "feedback"  # a tie falls back on the radiologist's outcome
    assert "bad" not in chosen.index  # an unusable image goes even when an outcome exists
    assert excluded == {"unusable": 1}


@pytest.mark.parametrize(("mode", "kept"), [("keep", True), ("drop", False)])
def test_a_single_noisy_label_is_weighted_or_dropped(mode, kept):
    config = SnapshotConfig(single_labels=mode, single_label_weight=0.3)
    annotated = resolve_labels(
        votes(("one", "relabeling", "a", True, False), ("fb", "relabeling", "a", True, False)), config
    )
    chosen, excluded = choose_labels(pd.Series({"fb": False}), annotated)
    assert chosen.loc["fb", ["label", "source"]].tolist() == [0, "feedback"]  # the outcome beats one annotator
    if kept:
        assert chosen.loc["one", ["label", "source", "weight"]].tolist() == [1, "single", 0.3]
        assert excluded == {}
    else:
        assert "one" not in chosen.index
        assert excluded == {"single_dropped": 1}


def patients_frame(n_patients: int = 120, seed: int = 0) -> pd.DataFrame:
    """Studies of ``n_patients`` patients (1-3 studies each) at three sites, about a quarter abnormal."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        site = ["a", "b", "c"][p % 3]
        for s in range(int(rng.integers(1, 4))):
            rows.append(
                {"study_id": f"{p:04d}-{s}", "patient_key": f"p{p}", "site": site, "label": int(rng.random() < 0.25)}
            )
    return pd.DataFrame(rows)


def test_splits_keep_a_patient_together_and_are_stratified_and_deterministic():
    frame = patients_frame()
    splits = assign_splits(frame, val_fraction=0.15, test_fraction=0.15)
    assert (frame.assign(split=splits).groupby("patient_key")["split"].nunique() == 1).all()
    # the same rows in another order get the same splits
    shuffled = frame.sample(frac=1.0, random_state=3)
    assert assign_splits(shuffled, val_fraction=0.15, test_fraction=0.15).sort_index().equals(splits.sort_index())
    # each split has both labels, and every site is in every split
    with_split = frame.assign(split=splits)
    patients = with_split.groupby("patient_key").agg(
        split=("split", "first"), site=("site", "first"), label=("label", "max")
    )
    for split, share in (("train", 0.7), ("val", 0.15), ("test", 0.15)):
        part = patients[patients["split"] == split]
        assert set(part["label"]) == {0, 1}
        assert set(part["site"]) == {"a", "b", "c"}
        assert abs(len(part) / len(patients) - share) < 0.05
    # another salt gives another split
    assert not assign_splits(frame, val_fraction=0.15, test_fraction=0.15, salt="other").equals(splits)


def test_tiny_classes_still_reach_every_split():
    frame = pd.DataFrame(
        {"study_id": [f"s{i}" for i in range(12)], "patient_key": [f"p{i}" for i in range(12)], "site": "a"}
    ).assign(label=[1, 1, 1] + [0] * 9)
    splits = assign_splits(frame, val_fraction=0.15, test_fraction=0.15)
    assert sorted(splits[frame["label"] == 1]) == ["test", "train", "val"]


def items_frame() -> pd.DataFrame:
    frame = patients_frame(30)
    frame["split"] = assign_splits(frame, val_fraction=0.2, test_fraction=0.2)
    return frame.assign(dicom_uri=frame["study_id"] + ".dcm", source="feedback", weight=1.0)


def test_the_hash_is_the_content_not_the_row_order_or_float_noise():
    items = items_frame()
    reference = content_hash(items)
    assert len(reference) == 32
    assert content_hash(items.sample(frac=1.0, random_state=1)) == reference
    assert content_hash(items.assign(weight=items["weight"] + 1e-12)) == reference
    flipped = items.copy()
    flipped.loc[0, "label"] = 1 - flipped.loc[0, "label"]
    assert content_hash(flipped) != reference


def test_an_empty_snapshot_is_refused_naming_each_split():
    empty = items_frame().iloc[0:0]
    with pytest.raises(TrainingDataError, match="the training split is empty; the validation split is empty"):
        check_trainable(empty, ("train", "val"))


def test_a_single_class_split_is_refused_naming_it():
    items = items_frame()
    normal_val = items[~((items["split"] == "val") & (items["label"] == 1))]
    with pytest.raises(TrainingDataError, match="the validation split has no abnormal studies") as caught:
        check_trainable(normal_val)
    assert "training split" not in str(caught.value) and "test split" not in str(caught.value)
    check_trainable(items)  # both classes everywhere: no error


@pytest.mark.parametrize("seed", range(5))
def test_a_patients_reservation_depends_on_its_key_alone(seed: int) -> None:
    rng = np.random.default_rng(seed)
    alphabet = list("abcdefghijklmnopqrstuvwxyz0123456789-_ äöüé\x1f")
    keys = list({"".join(rng.choice(alphabet, size=rng.integers(1, 40))) for _ in range(60)})
    together = reserved_for_testing(keys)
    alone = [bool(reserved_for_testing([k])[0]) for k in keys]
    assert together.tolist() == alone
    assert reserved_for_testing(list(reversed(keys))).tolist() == list(reversed(alone))
    assert not reserved_for_testing(keys, share=0.0).any()


def test_a_quarter_of_patients_is_reserved_and_another_salt_reserves_others() -> None:
    keys = [f"patient-{i}" for i in range(20000)]
    reserved = reserved_for_testing(keys)
    assert abs(reserved.mean() - 0.25) < 0.015
    other = reserved_for_testing(keys, salt="another")
    assert abs((reserved & other).mean() - 0.25 * 0.25) < 0.01  # independent draws
