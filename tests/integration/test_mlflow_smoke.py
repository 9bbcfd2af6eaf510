"""A real MLflow server: experiments, runs, metrics and proxied artifacts round-trip."""

from __future__ import annotations

import uuid
from pathlib import Path

import mlflow
import pytest
from mlflow.entities import RunStatus

pytestmark = pytest.mark.integration


def test_run_with_metric_and_artifact_round_trips(mlflow_server: str, tmp_path: Path) -> None:
    client = mlflow.MlflowClient(tracking_uri=mlflow_server)
    name = f"smoke-{uuid.uuid4().hex[:8]}"
    experiment_id = client.create_experiment(name)
    experiment = client.get_experiment_by_name(name)
    assert experiment is not None
    assert experiment.experiment_id == experiment_id
    # Proxied artifact storage: the client never needs the server's filesystem.
    assert experiment.artifact_location.startswith("mlflow-artifacts:")

    run = client.create_run(experiment_id, tags={"purpose": "smoke"})
    run_id = run.info.run_id
    for step, value in enumerate([0.5, 0.75, 0.875]):
        client.log_metric(run_id, "auroc", value, step=step)
    client.log_param(run_id, "threshold", "0.2")
    report = tmp_path / "report.txt"
    report.write_text("sensitivity=0.97\n", encoding="utf-8")
    client.log_artifact(run_id, str(report), artifact_path="reports")
    client.set_terminated(run_id, status=RunStatus.to_string(RunStatus.FINISHED))

    fetched = client.get_run(run_id)
    assert fetched.info.status == "FINISHED"
    assert fetched.data.metrics["auroc"] == pytest.approx(0.875)
    assert fetched.data.params == {"threshold": "0.2"}
    assert fetched.data.tags["purpose"] == "smoke"
    history = client.get_metric_history(run_id, "auroc")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [(0, 0.5), (1, 0.75), (2, 0.875)]

    assert [a.path for a in client.list_artifacts(run_id, "reports")] == ["reports/report.txt"]
    downloaded = client.download_artifacts(run_id, "reports/report.txt", str(tmp_path / "download"))
    assert Path(downloaded).read_text(encoding="utf-8") == "sensitivity=0.97\n"
    runs = client.search_runs([experiment_id], filter_string="metrics.auroc > 0.8")
    assert [r.info.run_id for r in runs] == [run_id]
