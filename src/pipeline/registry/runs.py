"""Training runs in MLflow: one run per training, with its parameters, lineage tags, per-epoch and system metrics.

A run carries the facts needed to reproduce it (git commit, dataset snapshot hash, parameters and
their digest), where it came from (the parent version it was fine-tuned from, what triggered it) and
how it went (per-epoch metrics at ``step=epoch``, ``system/*`` metrics sampled by MLflow while it runs).
"""

from __future__ import annotations

import importlib.util
import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric

from pipeline.registry.models import ensure_experiment, flat_params, git_commit, params_digest
from pipeline.registry.tags import DATASET_SNAPSHOT, GIT_COMMIT, PARAMS_DIGEST, PARENT_VERSION, RUN_KEY, TRIGGER

log = logging.getLogger(__name__)

#: What may start a training run: the new-labels asset, an engineer's trigger, the first champion, a benchmark.
TRIGGERS = frozenset({"asset", "manual", "bootstrap", "benchmark"})


class RunMismatch(ValueError):
    """A resumed run was asked to log parameters that differ from the ones it already has."""


@dataclass(frozen=True)
class TrainingRun:
    """An open MLflow training run; ``log_epoch`` is the ``on_epoch`` callback of ``train``."""

    run_id: str
    experiment_id: str
    resumed: bool  # True when an unfinished or earlier run with the same key was reopened

    def log_epoch(self, epoch: int, metrics: Mapping[str, float]) -> None:
        """Log one epoch's ``metrics`` (e.g. ``train_loss``, ``val_auroc``, ``epoch_s``) at ``step=epoch``."""
        timestamp = int(time.time() * 1000)
        batch = [Metric(key, float(value), timestamp, int(epoch)) for key, value in metrics.items()]
        MlflowClient().log_batch(self.run_id, metrics=batch)


def find_run(experiment_id: str, run_key: str) -> str | None:
    """Return the id of the newest run of ``experiment_id`` tagged ``run_key``, or None."""
    runs = MlflowClient().search_runs(
        [experiment_id],
        filter_string=f"tags.{RUN_KEY} = '{run_key}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def _log_params(run_id: str, params: dict[str, str]) -> None:
    """Log ``params``, skipping those the run already has with the same value (a resumed run)."""
    client = MlflowClient()
    existing = client.get_run(run_id).data.params
    clashes = {k: (existing[k], v) for k, v in params.items() if k in existing and existing[k] != v}
    if clashes:
        detail = ", ".join(f"{k}: {old!r} logged, {new!r} now" for k, (old, new) in sorted(clashes.items()))
        raise RunMismatch(f"run {run_id} already has other values for its parameters ({detail})")
    new = {k: v for k, v in params.items() if k not in existing}
    if new:
        mlflow.log_params(new)


@contextmanager
def training_run(
    experiment: str,
    *,
    params: Mapping[str, Any],
    snapshot_hash: str,
    parent_version: str | None,
    trigger: str,
    run_name: str | None = None,
    run_key: str | None = None,
    tags: Mapping[str, str] | None = None,
    system_metrics: bool = True,
) -> Iterator[TrainingRun]:
    """Open an MLflow run for one training in ``experiment`` (created if missing); yield it as the active run.

    The run gets ``params`` (nested mappings flattened to dotted keys) and the tags ``git_commit``,
    ``dataset_snapshot``, ``parent_version`` (or ``"none"``), ``trigger``, ``params_digest`` and
    ``run_key``. With ``system_metrics`` MLflow samples CPU, memory, disk, network (and GPU where its
    monitor finds one) as ``system/*`` metrics every ``MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL``
    seconds (10 by default); a run shorter than one interval records none. The run ends FINISHED,
    or FAILED when the block raises.

    With ``run_key`` (e.g. the snapshot hash and the params digest, or the Airflow run id) a re-run
    reopens the newest run with that key instead of starting another, so a retried task logs into
    the same run and :func:`register_candidate` finds the version it already registered.

    Args:
        experiment: experiment name.
        params: training parameters.
        snapshot_hash: content hash of the frozen training dataset snapshot.
        parent_version: the model version the training starts from, or None.
        trigger: what started it, one of ``TRIGGERS``.
        run_name: display name of a new run.
        run_key: the caller's idempotency key of this training.
        tags: more run tags.
        system_metrics: sample system metrics (needs ``psutil``; skipped with a warning without it).

    Raises:
        ValueError: an unknown trigger.
        RunMismatch: the reopened run has other values for some of ``params``.
    """
    if trigger not in TRIGGERS:
        raise ValueError(f"unknown trigger {trigger!r}: use one of {sorted(TRIGGERS)}")
    if system_metrics and importlib.util.find_spec("psutil") is None:
        log.warning("psutil is not installed: the run records no system metrics")
        system_metrics = False
    experiment_id = ensure_experiment(experiment)
    existing = find_run(experiment_id, run_key) if run_key is not None else None
    run_tags = {
        GIT_COMMIT: git_commit(),
        DATASET_SNAPSHOT: snapshot_hash,
        PARENT_VERSION: parent_version or "none",
        TRIGGER: trigger,
        PARAMS_DIGEST: params_digest(params),
        **({RUN_KEY: run_key} if run_key is not None else {}),
        **(tags or {}),
    }
    with mlflow.start_run(
        run_id=existing,
        experiment_id=None if existing else experiment_id,
        run_name=None if existing else run_name,
        log_system_metrics=system_metrics,
    ) as run:
        mlflow.set_tags(run_tags)
        _log_params(run.info.run_id, flat_params(params))
        if existing:
            log.info("reopened training run %s (key %s)", existing, run_key)
        yield TrainingRun(run.info.run_id, experiment_id, resumed=existing is not None)
