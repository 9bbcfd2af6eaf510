"""The training loop on real DICOM files: kill-and-resume reaches the same model, unreadable files are skipped."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.model import NetConfig
from pipeline.simulate.generate import render_study
from pipeline.simulate.plan import plan_day
from pipeline.simulate.scenario import load_scenario, with_volume
from pipeline.training import CheckpointMismatch, TrainConfig, TrainingDataError, train
from pipeline.training.train import CHECKPOINT_NAME, load_checkpoint

ROOT = Path(__file__).resolve().parents[3]
IMAGE_PX = 32
NET = NetConfig(init_features=8, growth_rate=4, block_config=(2, 2))
CONFIG = TrainConfig(image_size=IMAGE_PX, epochs=3, batch_size=16, patience=10, net=NET)


def _items(root: Path, day: int) -> list[dict]:
    world = with_volume(load_scenario(ROOT / "scenarios" / "stable.yaml"), per_site=12)
    items = []
    for planned in plan_day(world, day):
        rendered = render_study(planned, storage_root=root, key="k", image_size=IMAGE_PX)
        items.append({"image": str(rendered.dicom_path), "label": int(planned.abnormal), "study_id": rendered.study_id})
    return items


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict], list[dict]]:
    """About 36 training and 36 validation studies (three sites, real DICOM, 32 px), both classes in each."""
    root = tmp_path_factory.mktemp("dicom")
    train_items, val_items = _items(root, 0), _items(root, 1)
    for items in (train_items, val_items):
        assert {i["label"] for i in items} == {0, 1}
    return train_items, val_items


# The child trains with the same data and config, and SIGKILLs itself once epoch KILL_AFTER is checkpointed.
CHILD = """
import json, os, signal, sys
from pathlib import Path
from pipeline.model import NetConfig
from pipeline.training import TrainConfig, train
spec = json.loads(sys.argv[1])
net = NetConfig(**{**spec["net"], "block_config": tuple(spec["net"]["block_config"])})
config = TrainConfig(**{**spec["config"], "net": net})

def die(epoch, metrics):
    if epoch == spec["kill_after"]:
        os.kill(os.getpid(), signal.SIGKILL)

train(spec["train"], spec["val"], config, progress=False, on_epoch=die, checkpoint_dir=Path(spec["checkpoint_dir"]))
"""


def _spec(config: TrainConfig) -> dict:
    fields = asdict(config)
    fields.pop("net")
    return {"config": {k: v for k, v in fields.items() if v is not None}, "net": asdict(config.net)}


def test_a_run_killed_after_an_epoch_resumes_to_the_same_model(data, tmp_path):
    train_items, val_items = data
    straight = train(train_items, val_items, CONFIG, progress=False, checkpoint_dir=tmp_path / "straight")
    assert straight.resumed_from_epoch is None and len(straight.history) == CONFIG.epochs

    checkpoints = tmp_path / "killed"
    spec = {
        **_spec(CONFIG),
        "train": train_items,
        "val": val_items,
        "kill_after": 1,
        "checkpoint_dir": str(checkpoints),
    }
    child = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)], capture_output=True, text=True, timeout=300)
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    state = load_checkpoint(checkpoints / CHECKPOINT_NAME)
    assert state is not None and state["epoch"] == 1 and not state["finished"]
    assert state["world_size"] == 1  # the same checkpoint as a multi-process run's, from one process

    resumed = train(train_items, val_items, CONFIG, progress=False, checkpoint_dir=checkpoints)
    assert resumed.resumed_from_epoch == 1
    assert resumed.best_epoch == straight.best_epoch
    assert resumed.best_val_auroc == pytest.approx(straight.best_val_auroc, abs=1e-9)
    assert [h["val_auroc"] for h in resumed.history] == pytest.approx([h["val_auroc"] for h in straight.history])
    for name, tensor in straight.model.state_dict().items():
        assert torch.allclose(resumed.model.state_dict()[name], tensor, atol=1e-6), name
    np.testing.assert_allclose(resumed.val_probs, straight.val_probs, atol=1e-6)

    # a finished run's checkpoint gives the same result again without training
    again = train(train_items, val_items, CONFIG, progress=False, checkpoint_dir=checkpoints)
    assert again.resumed_from_epoch == CONFIG.epochs - 1 and again.best_epoch == straight.best_epoch


def test_an_exception_in_a_callback_leaves_a_checkpoint_to_resume_from(data, tmp_path):
    train_items, val_items = data
    config = replace(CONFIG, epochs=2, checkpoint_dir=tmp_path / "ckpt")

    def fail(epoch: int, metrics: dict[str, float]) -> None:
        raise RuntimeError("the MLflow server went away")

    with pytest.raises(RuntimeError, match="went away"):
        train(train_items, val_items, config, progress=False, on_epoch=fail)
    resumed = train(train_items, val_items, config, progress=False)
    assert resumed.resumed_from_epoch == 0 and len(resumed.history) == 2


def test_a_checkpoint_of_another_run_is_refused(data, tmp_path):
    train_items, val_items = data
    config = replace(CONFIG, epochs=1)
    train(train_items, val_items, config, progress=False, checkpoint_dir=tmp_path)
    with pytest.raises(CheckpointMismatch, match="another run"):
        train(train_items[:-1], val_items, config, progress=False, checkpoint_dir=tmp_path)


def test_unreadable_dicom_is_skipped_and_counted(data, tmp_path):
    train_items, val_items = data
    garbage = tmp_path / "garbage.dcm"
    garbage.write_bytes(b"not a dicom file at all" * 10)
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(Path(train_items[0]["image"]).read_bytes()[:400])
    broken = [
        {"image": str(garbage), "label": 1, "study_id": "garbage"},
        {"image": str(truncated), "label": 0, "study_id": "truncated"},
        {"image": str(tmp_path / "missing.dcm"), "label": 0},
    ]
    config = replace(CONFIG, epochs=1, cache_dir=tmp_path / "cache")
    result = train(train_items + broken[:2], val_items + broken[2:], config, progress=False)
    assert sorted(result.skipped) == sorted(["garbage", "truncated", str(tmp_path / "missing.dcm")])
    assert len(result.val_probs) == len(val_items)
    # the persistent cache holds every decoded study: a second run reads no DICOM again
    assert len(list((tmp_path / "cache").rglob("*.pt"))) == len(train_items) + len(val_items) + 3


def test_a_set_left_with_one_class_after_skipping_is_refused(data, tmp_path):
    train_items, val_items = data
    garbage = tmp_path / "garbage.dcm"
    garbage.write_bytes(b"\x00" * 300)
    only_normal = [i for i in val_items if i["label"] == 0] + [{"image": str(garbage), "label": 1}]
    with pytest.raises(TrainingDataError, match="validation set has a single class"):
        train(train_items, only_normal, replace(CONFIG, epochs=1), progress=False)


def test_sample_weights_change_the_loss(data):
    train_items, val_items = data
    config = replace(CONFIG, epochs=1)
    plain = train(train_items, val_items, config, progress=False)
    light = [{**i, "weight": 0.25} for i in train_items]
    weighted = train(light, val_items, config, progress=False)
    assert weighted.history[0]["train_loss"] == pytest.approx(plain.history[0]["train_loss"] * 0.25, rel=0.02)
