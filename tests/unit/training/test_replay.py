"""The base-dataset sample a retraining replays: its size, its prevalence, its seed, and bad manifests."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pipeline.training.bootstrap import BaseDatasetError, base_dataset_hash, base_manifest, read_base_manifest
from pipeline.training.retrain import base_replay


def write_manifest(root: Path, *, train: tuple[int, int] = (160, 40), val: tuple[int, int] = (16, 4)) -> Path:
    """A manifest of (normal, abnormal) studies per split; the images need not exist to be sampled."""
    rows = []
    for split, (normal, abnormal) in (("train", train), ("val", val)):
        for i in range(normal + abnormal):
            study = f"{split}-{i}"
            rows.append(
                {"image": f"{study}.dcm", "label": int(i >= normal), "study_id": study, "site": "a", "day": 0}
                | {"split": split}
            )
    path = base_manifest(root)
    path.parent.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_the_sample_has_the_size_asked_the_base_prevalence_and_all_of_validation(tmp_path):
    replay = base_replay(write_manifest(tmp_path), 50, seed=3)
    assert len(replay.train) == 50
    assert sum(i["label"] for i in replay.train) == 10  # 20% abnormal, as in the base training split
    assert len(replay.val) == 20 and {i["study_id"] for i in replay.val} == {f"val-{i}" for i in range(20)}
    assert all(i["weight"] == 1.0 for i in replay.train + replay.val)
    assert replay.train[0]["image"] == str(tmp_path / "base" / f"{replay.train[0]['study_id']}.dcm")
    assert replay.params() | {"why": ""} == {
        "used": True,
        "why": "",
        "dataset_hash": base_dataset_hash(pd.read_csv(base_manifest(tmp_path))),
        "train": 50,
        "val": 20,
    }


def test_the_same_seed_draws_the_same_sample_and_another_seed_another(tmp_path):
    path = write_manifest(tmp_path)
    ids = [{i["study_id"] for i in base_replay(path, 50, seed=seed).train} for seed in (0, 0, 1)]
    assert ids[0] == ids[1] and ids[0] != ids[2]


def test_a_base_smaller_than_asked_is_taken_whole(tmp_path):
    replay = base_replay(write_manifest(tmp_path), 1000, seed=0)
    assert len(replay.train) == 200 and replay.why.startswith("200 of 200 base training studies")


def test_nothing_is_replayed_without_a_base_dataset_or_when_asked_for_none(tmp_path):
    missing = base_replay(tmp_path / "base" / "manifest.csv", 50, seed=0)
    assert (missing.train, missing.val, missing.params()["used"]) == ([], [], False)
    assert "no base dataset at" in missing.why
    assert base_replay(write_manifest(tmp_path), 0, seed=0).params()["why"] == "replay_base is 0"
    assert base_replay(None, 50, seed=0).why == "no base dataset given"


def test_a_manifest_missing_a_column_or_a_split_is_refused_by_name(tmp_path):
    path = write_manifest(tmp_path, val=(0, 0))
    with pytest.raises(BaseDatasetError, match="no 'val' study"):
        base_replay(path, 50, seed=0)
    pd.read_csv(path).drop(columns=["split"]).to_csv(path, index=False)
    with pytest.raises(BaseDatasetError, match=r"manifest\.csv: the base manifest lacks the column\(s\) split"):
        read_base_manifest(path)
