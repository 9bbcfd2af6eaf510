"""Bootstrap a champion into the real MLflow server, then let the inference service score a simulated day."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
import sqlalchemy as sa
from mlflow import MlflowClient

from pipeline.inference import InferenceService
from pipeline.model import NetConfig
from pipeline.registry import CHAMPION, load_model
from pipeline.simulate.run import simulate
from pipeline.simulate.scenario import load_scenario, with_volume
from pipeline.store import make_engine, read_window, upgrade
from pipeline.training import TrainConfig
from pipeline.training.bootstrap import (
    BootstrapConfig,
    base_dataset_hash,
    base_manifest,
    bootstrap,
    read_base_manifest,
)

pytestmark = pytest.mark.integration

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
TINY = BootstrapConfig(
    train_days=1,
    val_days=1,
    test_days=1,
    render_size=32,
    train=TrainConfig(
        image_size=32, epochs=2, batch_size=32, net=NetConfig(init_features=8, growth_rate=4, block_config=(2, 2))
    ),
)


def small(name: str, volume: int):
    return with_volume(load_scenario(SCENARIOS / f"{name}.yaml"), per_site=volume)


def test_bootstrap_registers_a_champion_once_and_the_service_logs_with_it(mlflow_server, pg_url, tmp_path):
    mlflow.set_tracking_uri(mlflow_server)
    name = "cxr-bootstrap-test"
    epochs: list[tuple[int, float]] = []
    result = bootstrap(
        small("stable", 40),
        model_name=name,
        storage_root=tmp_path,
        key="k",
        config=TINY,
        progress=False,
        on_epoch=lambda epoch, metrics: epochs.append((epoch, metrics["val_auroc"])),
    )
    assert result.created and result.version == "1"
    assert [epoch for epoch, _ in epochs] == [0, 1] and max(auroc for _, auroc in epochs) == result.val_auroc
    assert 0.0 <= result.test_auroc_stable <= 1.0

    client = MlflowClient(mlflow_server)
    version = client.get_model_version_by_alias(name, CHAMPION)
    assert version.version == "1"
    assert {"threshold", "image_size", "dataset_hash", "git_commit", "params_digest"} <= set(version.tags)
    run = client.get_run(version.run_id)
    assert {"val_auroc", "train_loss", "test_auroc_stable"} <= set(run.data.metrics)
    assert run.data.params["image_size"] == "32"
    # the base dataset stays for retraining to replay: a manifest of readable files, tagged by its hash
    manifest = read_base_manifest(base_manifest(tmp_path))
    assert set(manifest["split"]) == {"train", "val", "test"} and len(manifest) == sum(result.studies.values())
    assert all(Path(image).is_file() for image in manifest["image"])
    assert version.tags["dataset_hash"] == base_dataset_hash(manifest)

    again = bootstrap(small("stable", 40), model_name=name, storage_root=tmp_path, key="k", config=TINY, progress=False)
    assert not again.created and again.version == "1"
    assert len(client.search_model_versions(f"name='{name}'")) == 1

    loaded = load_model(name, CHAMPION)
    assert loaded.version == "1" and loaded.image_size == 32
    engine = make_engine(pg_url)
    upgrade(engine)
    service = InferenceService(loaded, key="k", mc_samples=2)
    summary = simulate(
        small("error_burst", 30),
        engine=engine,
        storage_root=tmp_path / "prod",
        key="k",
        days=[25],
        service_for=lambda alias: service,
        progress=False,
    )
    logs = read_window(engine, "inference_logs")
    assert len(logs) == summary.studies == summary.inference_logs
    assert set(logs["model_version"]) == {"1"}
    assert (logs["status"] == "ok").sum() > 0.6 * len(logs)
    assert "cuda_oom" in set(logs["error_type"].dropna())
    with engine.connect() as conn:
        joined = conn.execute(sa.text("SELECT count(*) FROM inference_logs JOIN studies USING (study_id)")).scalar_one()
    assert joined == len(read_window(engine, "studies"))

    # outcomes come back more often for studies sent to a radiologist, and say whether they agreed
    feedback = read_window(engine, "feedback").merge(logs[["study_id", "decision"]], on="study_id")
    scored = feedback[feedback["model_version"] == "1"]
    assert len(scored) > 0 and scored["agrees_with_model"].notna().all()
    expected = (scored["decision"] == "abnormal") == scored["final_abnormal"].astype(bool)
    assert (scored["agrees_with_model"].astype(bool) == expected).all()
    flagged_share = feedback["decision"].eq("abnormal").mean()
    assert flagged_share > logs.loc[logs.status == "ok", "decision"].eq("abnormal").mean() - 0.05
