"""A retraining's MLflow trail on a real server: run, per-epoch and system metrics, evaluation plots, candidate version.

One tiny model is trained for 2 epochs on a day of rendered studies (32 px) inside ``training_run``, evaluated
and registered as the candidate of a model whose champion (version 1) must stay where it is.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow import MlflowClient
from mlflow.data.pandas_dataset import from_pandas
from mlflow.models import Model

from pipeline.model import NetConfig, NormalFilterNet
from pipeline.registry import (
    CANDIDATE,
    CHAMPION,
    InvalidModel,
    ModelNotFound,
    NoActiveRun,
    load_model,
    log_and_register,
    log_evaluation,
    register_candidate,
    set_alias,
    training_run,
)
from pipeline.reports import log_evaluation_report
from pipeline.simulate.scenario import load_scenario, with_volume
from pipeline.training import TrainConfig, train
from pipeline.training.bootstrap import _items

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
NET = NetConfig(init_features=8, growth_rate=4, block_config=(2, 2))
CONFIG = TrainConfig(image_size=32, epochs=2, batch_size=16, net=NET)
PARAMS = {"epochs": 2, "batch_size": 16, "image_size": 32, "net": {"growth_rate": 4, "block_config": (2, 2)}}
SNAPSHOT = "snap0123456789ab"
PLOTS = {"roc.png", "precision_recall.png", "calibration.png", "confusion_matrix.png", "evaluation.html"}


class TwoLogits(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3)).repeat(1, 2)


@dataclass(frozen=True)
class Retrained:
    name: str
    experiment: str
    run_id: str
    run_key: str
    version: str
    model: NormalFilterNet
    threshold: float


@pytest.fixture(scope="module")
def retrained(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> Retrained:
    mlflow.set_tracking_uri(mlflow_server)
    suffix = uuid.uuid4().hex[:6]
    name, experiment = f"cxr-retrain-{suffix}", f"retrain-{suffix}"

    # the champion the candidate is fine-tuned from
    torch.manual_seed(0)
    champion = NormalFilterNet(NET)
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name="champion"):
        set_alias(name, CHAMPION, log_and_register(champion, model_name=name, image_size=32, threshold=0.3))

    world = with_volume(load_scenario(ROOT / "scenarios" / "stable.yaml"), per_site=16)
    root = tmp_path_factory.mktemp("retrain")
    train_items, val_items = _items(world, range(0, 1), root, "k", 32), _items(world, range(1, 2), root, "k", 32)
    manifest = pd.DataFrame([{"study_id": i["study_id"], "label": i["label"]} for i in train_items])
    dataset = from_pandas(manifest, source=str(root / "manifest.csv"), name="snapshot")

    run_key = f"{SNAPSHOT}-{suffix}"
    with pytest.MonkeyPatch.context() as patch:
        # MLflow samples every 10 s by default: a 2-epoch run would record no system metrics
        patch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.5")
        with training_run(
            experiment, params=PARAMS, snapshot_hash=SNAPSHOT, parent_version="1", trigger="asset", run_key=run_key
        ) as run:
            result = train(train_items, val_items, CONFIG, init_model=champion, progress=False, on_epoch=run.log_epoch)
            evaluation = log_evaluation(result.val_probs, result.val_labels, result.threshold)
            log_evaluation_report(evaluation, run.run_id)
            version = register_candidate(
                result.model,
                model_name=name,
                image_size=32,
                threshold=result.threshold,
                snapshot_hash=SNAPSHOT,
                parent_version="1",
                params=PARAMS,
                dataset=dataset,
            )
    return Retrained(name, experiment, run.run_id, run_key, version, result.model, result.threshold)


def test_the_run_has_params_lineage_tags_epoch_and_system_metrics(retrained: Retrained) -> None:
    client = MlflowClient()
    run = client.get_run(retrained.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["epochs"] == "2" and run.data.params["net.block_config"] == "(2, 2)"
    tags = run.data.tags
    assert tags["dataset_snapshot"] == SNAPSHOT and tags["parent_version"] == "1" and tags["trigger"] == "asset"
    assert {"git_commit", "params_digest"} <= set(tags)
    for key in ("train_loss", "val_auroc", "epoch_s"):
        # one value per epoch; log_model copies the run's step-0 metrics onto the logged model, which the run's
        # history may list a second time (model_id is not returned over REST), hence a set
        history = client.get_metric_history(retrained.run_id, key)
        assert {m.step for m in history} == {0, 1}
        assert len({(m.step, m.value) for m in history}) == 2
    assert any(key.startswith("system/") for key in run.data.metrics), sorted(run.data.metrics)
    assert [d.dataset.name for d in run.inputs.dataset_inputs] == ["snapshot"]


def test_the_evaluation_is_logged_as_metrics_and_plots(retrained: Retrained) -> None:
    client = MlflowClient()
    metrics = client.get_run(retrained.run_id).data.metrics
    for key in ("auroc", "average_precision", "ece", "sensitivity", "specificity"):
        assert 0.0 <= metrics[f"validation_{key}"] <= 1.0
    assert metrics["validation_threshold"] == pytest.approx(retrained.threshold)
    assert {Path(a.path).name for a in client.list_artifacts(retrained.run_id, "evaluation")} == PLOTS


def test_the_candidate_version_carries_its_lineage_and_the_champion_stays(retrained: Retrained) -> None:
    client = MlflowClient()
    version = client.get_model_version(retrained.name, retrained.version)
    assert retrained.version == "2" and version.run_id == retrained.run_id
    assert version.tags["dataset_snapshot"] == SNAPSHOT
    assert version.tags["parent_version"] == "1"
    assert version.tags["validation_status"] == "pending"
    assert version.tags["role"] == CANDIDATE
    assert version.tags["image_size"] == "32"
    assert float(version.tags["threshold"]) == pytest.approx(retrained.threshold, abs=1e-6)
    assert {"git_commit", "params_digest"} <= set(version.tags)
    assert client.get_model_version_by_alias(retrained.name, CANDIDATE).version == "2"
    assert client.get_model_version_by_alias(retrained.name, CHAMPION).version == "1"
    assert version.source.startswith("models:/m-")  # registered from the logged model, not a run path
    logged = mlflow.get_logged_model(version.source.removeprefix("models:/"))
    assert logged.source_run_id == retrained.run_id
    assert {"validation_auroc", "validation_ece"} <= {m.key for m in logged.metrics or []}


def test_the_registered_model_reproduces_its_logged_outputs(retrained: Retrained, tmp_path: Path) -> None:
    loaded = load_model(retrained.name, retrained.version)
    assert loaded.version == "2" and loaded.image_size == 32
    local = mlflow.artifacts.download_artifacts(f"models:/{retrained.name}/{retrained.version}", dst_path=str(tmp_path))
    stored = Model.load(local)
    example = np.asarray(stored.load_input_example(local), dtype=np.float32)
    assert example.shape == (1, 1, 32, 32)
    with torch.no_grad():
        logits = loaded.model(torch.from_numpy(example)).numpy()
    np.testing.assert_allclose(logits, stored.metadata["example_logits"], rtol=1e-5, atol=1e-6)


def test_registering_again_in_the_same_run_gives_the_same_version(retrained: Retrained) -> None:
    client = MlflowClient()
    client.set_model_version_tag(retrained.name, retrained.version, "validation_status", "passed")
    with training_run(
        retrained.experiment,
        params=PARAMS,
        snapshot_hash=SNAPSHOT,
        parent_version="1",
        trigger="asset",
        run_key=retrained.run_key,
        system_metrics=False,
    ) as run:
        assert run.resumed and run.run_id == retrained.run_id
        again = register_candidate(
            retrained.model,
            model_name=retrained.name,
            image_size=32,
            threshold=retrained.threshold,
            snapshot_hash=SNAPSHOT,
            parent_version="1",
            params=PARAMS,
        )
    assert again == retrained.version
    assert len(client.search_model_versions(f"name = '{retrained.name}'")) == 2
    assert client.get_model_version(retrained.name, again).tags["validation_status"] == "passed"  # verdict kept


def test_bad_registrations_fail_clearly_and_register_nothing(retrained: Retrained) -> None:
    kwargs = dict(model_name=retrained.name, image_size=32, threshold=0.5, snapshot_hash=SNAPSHOT, params=PARAMS)
    with pytest.raises(NoActiveRun):
        register_candidate(retrained.model, parent_version="1", **kwargs)
    mlflow.set_experiment(retrained.experiment)
    with mlflow.start_run(run_name="bad"):
        with pytest.raises(InvalidModel, match="one logit per image"):
            register_candidate(TwoLogits(), parent_version="1", **kwargs)
        with pytest.raises(ModelNotFound, match="parent version '99'"):
            register_candidate(retrained.model, parent_version="99", **kwargs)
    client = MlflowClient()
    assert len(client.search_model_versions(f"name = '{retrained.name}'")) == 2
    assert client.get_model_version_by_alias(retrained.name, CANDIDATE).version == retrained.version
