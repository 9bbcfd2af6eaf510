"""
### Retrain the normal filter and register a candidate

Runs when `sync_annotations` publishes `pipeline://labels/new` (and skips cleanly while fewer than
`min_new_labels` labels are not yet in any snapshot, or while a served site or scanner has too few labeled
abnormal studies in the validation test sets for the gate to judge a candidate there), or when an ML engineer triggers it from the
Airflow UI with the form below. It freezes a dataset snapshot of the store (radiologists' outcomes and
the new labels, adjudicated labels first, split by patient; content-hashed), fine-tunes the champion
(or trains from scratch) with MONAI, logs the run to MLflow (parameters, per-epoch and system metrics,
ROC / PR / calibration / confusion plots, the dataset) and registers a version tagged with the snapshot
hash, git commit, parent version and a digest of the parameters, marked `candidate` until validation
decides. It publishes `pipeline://models/candidate`.

The training task goes to the `gpu` queue (CeleryExecutor: a worker started with `-q gpu`) and carries a
pod_override asking for one `nvidia.com/gpu` (KubernetesExecutor: the GPU node pool); every other task
runs on the default queue. A retried training task resumes from its last checkpoint and the same
MLflow run.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from _assets import CANDIDATE, NEW_LABELS
from airflow.sdk import Param, dag, task

from pipeline.callbacks import default_args
from pipeline.executors import GPU_QUEUE, gpu_executor_config


@dag(
    schedule=[NEW_LABELS],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["training"],
    default_args=default_args(retry_delay=timedelta(minutes=2), retries=2),
    doc_md=__doc__,
    params={
        "base_version": Param(
            "champion", type="string", description="Warm start from this alias or version; 'scratch' for none."
        ),
        "epochs": Param(
            10,
            type="integer",
            minimum=1,
            maximum=500,
            description="Epochs at most (early stopping on validation AUROC).",
        ),
        "learning_rate": Param(5e-4, type="number", exclusiveMinimum=0, maximum=1, description="Adam learning rate."),
        "batch_size": Param(32, type="integer", minimum=1, maximum=1024, description="Studies per batch."),
        "image_size": Param(
            128,
            type="integer",
            minimum=32,
            maximum=2048,
            description="Pixels per side from scratch; a warm start keeps its parent's.",
        ),
        "window_days": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            description="Only studies acquired in the last N days (empty: all).",
        ),
        "sites": Param([], type="array", items={"type": "string"}, description="Only these sites (empty: all)."),
        "net": Param(
            {"name": "densenet121"},
            type="object",
            description="From scratch: the network (name densenet121 or densenet_small, init_features, growth_rate, block_config).",
        ),
        "replay_base": Param(
            1000,
            type="integer",
            minimum=0,
            description="Base-dataset training studies replayed beside the new labels, so the old sites are not "
            "forgotten (0: none).",
        ),
        "min_new_labels": Param(
            50, type="integer", minimum=0, description="Skip while fewer labels than this are in no snapshot yet."
        ),
        "wait_for_evidence": Param(
            True,
            type="boolean",
            description="Skip while a served site or scanner lacks the test-set evidence the gate needs to judge a "
            "candidate there; off trains anyway (the run records where evidence was short).",
        ),
    },
)
def retrain_model() -> None:
    @task
    def migrate_store() -> str | None:
        from pipeline.entry import production, store

        return store.migrate(production())

    @task(queue=GPU_QUEUE, executor_config=gpu_executor_config(), execution_timeout=timedelta(hours=12))
    def train_candidate(params=None, dag_run=None, triggering_asset_events=None) -> dict:  # type: ignore[no-untyped-def]
        from pipeline.entry import production, training

        chosen = {k: v for k, v in params.items() if k != "sites"} | {"sites": params.get("sites") or None}
        trigger = "asset" if triggering_asset_events else "manual"
        return training.retrain(production(), chosen, trigger=trigger, run_key=f"airflow-{dag_run.run_id}")

    @task.short_circuit
    def registered(result: dict) -> bool:  # type: ignore[type-arg]
        return result["version"] is not None

    @task(outlets=[CANDIDATE])
    def announce_candidate(result: dict, outlet_events=None) -> str:  # type: ignore[no-untyped-def,type-arg]
        outlet_events[CANDIDATE].extra = {"version": result["version"], "snapshot": result["snapshot_hash"]}
        return str(result["version"])

    result = train_candidate()
    migrate_store() >> result
    registered(result) >> announce_candidate(result)


retrain_model()
