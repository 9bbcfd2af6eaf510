"""Two training processes on the CPU (torchrun, gloo, DistributedDataParallel) on real DICOM files.

Each process trains on its half of the training set; rank 0 alone checkpoints and reports the epochs; the
caller gets the same ``TrainResult`` as from one process, with weights a single-process model loads; a run
stopped by its callback resumes to the same model as one never stopped.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.model import NetConfig, NormalFilterNet
from pipeline.simulate.generate import render_study
from pipeline.simulate.plan import plan_day
from pipeline.simulate.scenario import load_scenario, with_volume
from pipeline.training import TrainConfig, TrainResult, train
from pipeline.training.train import CHECKPOINT_NAME, load_checkpoint

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
IMAGE_PX = 32
NET = NetConfig(init_features=8, growth_rate=4, block_config=(2, 2))
CONFIG = TrainConfig(image_size=IMAGE_PX, epochs=2, batch_size=8, patience=10, net=NET)
NPROC = 2


def _items(root: Path, day: int) -> list[dict]:
    world = with_volume(load_scenario(ROOT / "scenarios" / "stable.yaml"), per_site=12)
    items = []
    for planned in plan_day(world, day):
        rendered = render_study(planned, storage_root=root, key="k", image_size=IMAGE_PX)
        items.append({"image": str(rendered.dicom_path), "label": int(planned.abnormal), "study_id": rendered.study_id})
    return items


@pytest.fixture(scope="module", autouse=True)
def cpu_only() -> Iterator[None]:
    """Hide the GPUs, so that the two processes run on the CPU with gloo whatever machine runs the test."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CUDA_VISIBLE_DEVICES", "")
        patch.delenv("PIPELINE_TRAIN_NPROC", raising=False)
        if torch.cuda.device_count() > 0:  # CUDA started in this process before: it keeps its devices
            pytest.skip("CUDA was initialised before the GPUs could be hidden: run this module on its own")
        yield


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict], list[dict]]:
    """About 36 training and 36 validation studies (three sites, real DICOM, 32 px), both classes in each."""
    root = tmp_path_factory.mktemp("dicom")
    train_items, val_items = _items(root, 0), _items(root, 1)
    for items in (train_items, val_items):
        assert {i["label"] for i in items} == {0, 1}
    return train_items, val_items


@pytest.fixture(scope="module")
def straight(data, tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainResult, list, Path]:
    """A two-process run never stopped: its result, the (epoch, metrics) its callback got, its checkpoint folder."""
    train_items, val_items = data
    calls: list[tuple[int, dict[str, float]]] = []
    checkpoints = tmp_path_factory.mktemp("straight")
    result = train(
        train_items,
        val_items,
        CONFIG,
        progress=False,
        on_epoch=lambda epoch, metrics: calls.append((epoch, metrics)),
        checkpoint_dir=checkpoints,
        nproc=NPROC,
    )
    return result, calls, checkpoints


def test_each_process_trains_on_half_the_studies_and_rank_0_alone_reports(data, straight):
    train_items, val_items = data
    result, calls, checkpoints = straight
    half = math.ceil(len(train_items) / NPROC)  # the DistributedSampler's share (padded to equal shares)
    assert result.world_size == NPROC
    assert result.studies_per_rank == ((half,) * CONFIG.epochs,) * NPROC

    # one report per epoch reached the caller (rank 0's), with the metrics the result holds
    assert [epoch for epoch, _ in calls] == list(range(CONFIG.epochs))
    assert [metrics for _, metrics in calls] == result.history
    assert set(result.history[0]) == {"train_loss", "val_auroc", "epoch_s"}
    assert result.resumed_from_epoch is None and result.skipped == []
    assert result.best_val_auroc == max(h["val_auroc"] for h in result.history)
    assert result.history[result.best_epoch]["val_auroc"] == result.best_val_auroc
    assert result.val_probs.shape == (len(val_items),) and result.val_labels.shape == (len(val_items),)
    assert 0.0 < result.threshold < 1.0

    # one checkpoint, rank 0's, of the finished run
    assert sorted(p.name for p in checkpoints.iterdir()) == [CHECKPOINT_NAME]
    state = load_checkpoint(checkpoints / CHECKPOINT_NAME)
    assert state is not None and state["world_size"] == NPROC
    assert state["epoch"] == CONFIG.epochs - 1 and state["finished"] and state["history"] == result.history


def test_the_weights_are_a_single_process_models(straight):
    result, _, checkpoints = straight
    state = load_checkpoint(checkpoints / CHECKPOINT_NAME)
    assert state is not None
    for weights in (state["model"], state["best_state"]):
        assert not [k for k in weights if k.startswith("module.")]
        NormalFilterNet(NET).load_state_dict(weights)  # strict: every key, no DDP wrapper left
    assert isinstance(result.model, NormalFilterNet) and not result.model.training
    # the returned model is the best epoch's, its head calibrated
    for name, tensor in state["best_state"].items():
        if not name.startswith("head."):
            assert torch.equal(result.model.state_dict()[name], tensor), name


def test_a_run_stopped_by_its_callback_resumes_to_the_same_model(data, straight, tmp_path):
    train_items, val_items = data
    reference = straight[0]

    def fail(epoch: int, metrics: dict[str, float]) -> None:
        raise RuntimeError("the MLflow server went away")

    with pytest.raises(RuntimeError, match="went away"):
        train(train_items, val_items, CONFIG, progress=False, on_epoch=fail, checkpoint_dir=tmp_path, nproc=NPROC)
    state = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    assert state is not None and state["epoch"] == 0 and not state["finished"]  # the processes waited for it

    calls: list[int] = []
    resumed = train(
        train_items,
        val_items,
        CONFIG,
        progress=False,
        on_epoch=lambda epoch, metrics: calls.append(epoch),
        checkpoint_dir=tmp_path,
        nproc=NPROC,
    )
    assert resumed.resumed_from_epoch == 0 and calls == [1]
    assert resumed.studies_per_rank == ((math.ceil(len(train_items) / NPROC),),) * NPROC
    assert resumed.best_epoch == reference.best_epoch
    assert [h["val_auroc"] for h in resumed.history] == pytest.approx([h["val_auroc"] for h in reference.history])
    for name, tensor in reference.model.state_dict().items():
        assert torch.allclose(resumed.model.state_dict()[name], tensor, atol=1e-6), name
    np.testing.assert_allclose(resumed.val_probs, reference.val_probs, atol=1e-6)


def test_one_process_picks_up_a_finished_two_process_run(data, straight):
    train_items, val_items = data
    reference, _, checkpoints = straight
    # nothing left to train: one process loads rank 0's best weights and calibrates them as the caller did
    again = train(train_items, val_items, CONFIG, progress=False, checkpoint_dir=checkpoints, nproc=1)
    assert again.world_size == 1 and again.resumed_from_epoch == CONFIG.epochs - 1
    assert again.best_epoch == reference.best_epoch and again.history == reference.history
    for name, tensor in reference.model.state_dict().items():
        assert torch.allclose(again.model.state_dict()[name], tensor, atol=1e-6), name
    np.testing.assert_allclose(again.val_probs, reference.val_probs, atol=1e-6)
    assert again.threshold == pytest.approx(reference.threshold, abs=1e-6)
