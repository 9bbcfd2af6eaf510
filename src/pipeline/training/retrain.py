"""Fine-tune the champion (or train from scratch) on a frozen dataset snapshot and register a candidate.

One function, :func:`retrain`, is what the ``retrain_model`` DAG's training task and ``pipeline train``
call: build (or find) the snapshot, warm-start from the base version, train with a checkpoint every
epoch (a retried task resumes), log the run to MLflow with its evaluation plots, register the version
as a candidate with its lineage.

Production labels come mostly from where the model struggles (a new site, uncertain studies), so a
fine-tune on them alone forgets the sites it was good at. Each retraining therefore replays the base
dataset beside the snapshot (rehearsal): a label-stratified sample of ``replay_base`` studies of its
training split, drawn with the run's seed, and all of its validation split, so early stopping and the
threshold also look at the old sites. The sample, its size and the base dataset's hash are logged.

The parameters are one pydantic model, :class:`RetrainParams`: the Airflow trigger form, the CLI's
YAML file and the DAG all go through it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.engine import Engine

from pipeline.model import NetConfig
from pipeline.store.read import labels_not_in_a_snapshot
from pipeline.training.snapshot import SnapshotConfig, as_mlflow_dataset, build_snapshot
from pipeline.training.train import TrainConfig, train

if TYPE_CHECKING:
    from pipeline.registry.evaluation import Evaluation

log = logging.getLogger(__name__)


class NetParams(BaseModel):
    """The network of a training from scratch (a warm start keeps its parent's)."""

    model_config = ConfigDict(extra="forbid")

    name: Literal["densenet_small", "densenet121"] = "densenet121"
    init_features: int = Field(32, ge=4)
    growth_rate: int = Field(8, ge=2)
    block_config: tuple[int, ...] = (4, 4, 4)


class RetrainParams(BaseModel):
    """What a retraining is asked to do; unknown keys and bad values are refused, named by their path."""

    model_config = ConfigDict(extra="forbid")

    base_version: str = Field("champion", description="Warm start from this alias or version; 'scratch' for none.")
    epochs: int = Field(10, ge=1, le=500)
    learning_rate: float = Field(5e-4, gt=0, le=1)
    batch_size: int = Field(32, ge=1, le=1024)
    image_size: int = Field(128, ge=32, le=2048, description="Used from scratch; a warm start keeps its parent's.")
    window_days: int | None = Field(None, ge=1, description="Only studies acquired in the last N days.")
    sites: list[str] | None = Field(None, description="Only these sites (empty: all).")
    single_labels: Literal["keep", "drop"] = "keep"
    min_new_labels: int = Field(0, ge=0, description="Skip (cleanly) with fewer labels not yet in any snapshot.")
    replay_base: int = Field(
        1000, ge=0, description="Base-dataset training studies replayed beside the snapshot (0: none)."
    )
    net: NetParams = Field(default_factory=NetParams)
    seed: int = 0
    wait_for_evidence: bool = Field(
        True,
        description="Skip (cleanly) while a served site or scanner has too few labeled abnormal studies in the test "
        "sets for the gate to judge a candidate there; false trains anyway and says so in the run.",
    )


@dataclass(frozen=True)
class Replay:
    """The base-dataset studies a retraining replays, and in words what they are (or why there are none)."""

    train: list[dict[str, Any]]
    val: list[dict[str, Any]]
    dataset_hash: str | None = None
    why: str = ""

    def params(self) -> dict[str, Any]:
        """Return what MLflow records of it."""
        return {
            "used": bool(self.train),
            "why": self.why,
            "dataset_hash": self.dataset_hash or "",
            "train": len(self.train),
            "val": len(self.val),
        }


def base_replay(base_dataset: Path | None, size: int, seed: int) -> Replay:
    """Return a label-stratified sample of ``size`` base training studies (seeded) and the base validation split.

    Raises:
        pipeline.training.bootstrap.BaseDatasetError: the manifest lacks a column or a split.
    """
    from pipeline.training.bootstrap import base_dataset_hash, base_items, read_base_manifest

    if size == 0:
        return Replay([], [], why="replay_base is 0")
    if base_dataset is None:
        return Replay([], [], why="no base dataset given")
    if not base_dataset.exists():
        log.warning("no base dataset at %s: the retraining replays nothing", base_dataset)
        return Replay([], [], why=f"no base dataset at {base_dataset}")
    manifest = read_base_manifest(base_dataset)
    train_split = manifest[manifest["split"] == "train"]
    available = len(train_split)
    if available > size:
        from sklearn.model_selection import train_test_split

        # stratified by label, so the sample keeps the base prevalence
        stratify = train_split["label"] if train_split["label"].value_counts().min() >= 2 else None
        train_split = train_test_split(train_split, train_size=size, stratify=stratify, random_state=seed)[0]
    chosen = pd.concat([train_split, manifest[manifest["split"] == "val"]])
    train, val = base_items(chosen, "train"), base_items(chosen, "val")
    why = f"{len(train)} of {available} base training studies, all {len(val)} validation studies"
    return Replay(train, val, dataset_hash=base_dataset_hash(manifest), why=why)


@dataclass(frozen=True)
class RetrainResult:
    """A registered candidate (or why none was trained)."""

    version: str | None
    snapshot_hash: str | None
    counts: dict[str, int]
    best_val_auroc: float | None
    run_id: str | None
    skipped_studies: int = 0
    resumed_from_epoch: int | None = None
    reason: str = ""
    evaluation: Evaluation | None = field(default=None, repr=False, compare=False)  # the candidate's, on validation

    def as_json(self) -> dict[str, Any]:
        """Return a JSON-able summary."""
        return {
            "version": self.version,
            "snapshot_hash": self.snapshot_hash,
            "counts": self.counts,
            "best_val_auroc": self.best_val_auroc,
            "run_id": self.run_id,
            "skipped_studies": self.skipped_studies,
            "resumed_from_epoch": self.resumed_from_epoch,
            "reason": self.reason,
        }


def retrain(
    engine: Engine,
    params: RetrainParams,
    *,
    model_name: str,
    work_dir: Path,
    trigger: str = "manual",
    run_key: str | None = None,
    now: datetime | None = None,
    progress: bool = True,
    base_dataset: Path | None = None,
    evidence_short: str = "",
    nproc: int | None = None,
) -> RetrainResult:
    """Train a candidate on a snapshot of the store and register it in MLflow (the tracking URI set by the caller).

    Args:
        engine: the store (labels, feedback, studies; snapshots are kept there).
        params: what to train.
        model_name: the registered model.
        work_dir: checkpoints (per ``run_key``) and the decoded-study cache live here.
        trigger: what started it (``asset`` or ``manual``), kept on the run.
        run_key: the same key resumes the same run and checkpoints (an Airflow retry).
        now: the snapshot's cutoff (default: the current time).
        progress: a bar per epoch.
        base_dataset: the base dataset's manifest (``bootstrap.base_manifest``): ``params.replay_base`` of its
            training studies and its validation split train beside the snapshot. None or a missing file: none.
        evidence_short: where, in words, the test sets lack the labeled abnormal studies the gate needs
            (``pipeline.validation.testsets.evidence_shortfall``; empty: nowhere): the retraining waits
            (``params.wait_for_evidence``) or goes ahead and records where evidence was short.
        nproc: training processes (``PIPELINE_TRAIN_NPROC``; None: one per visible CUDA device).

    The evaluation on the validation split is logged as the run's metrics and returned; its report (plots and a
    page) is the caller's to write (``pipeline.reports.log_evaluation_report``).

    Raises:
        pipeline.training.TrainingDataError: the snapshot is empty or has one class in a split, before
            any training starts.
        pipeline.registry.ModelNotFound: the base version does not exist.
        pipeline.training.bootstrap.BaseDatasetError: the base manifest lacks a column or a split.
    """
    from pipeline.registry import load_model, log_evaluation, register_candidate, training_run
    from pipeline.training.bootstrap import EXPERIMENT

    waiting = labels_not_in_a_snapshot(engine)
    if waiting < params.min_new_labels:
        reason = f"{waiting} new labels, fewer than the {params.min_new_labels} asked for: nothing to train"
        log.info(reason)
        return RetrainResult(None, None, {"new_labels": waiting}, None, None, reason=reason)
    if evidence_short and params.wait_for_evidence:
        reason = (
            f"waiting for evidence: {evidence_short}; the test sets' reserved share fills as labels come in "
            "(wait_for_evidence false trains anyway)"
        )
        log.info(reason)
        return RetrainResult(None, None, {"new_labels": waiting}, None, None, reason=reason)
    cutoff = now or datetime.now(UTC)
    snapshot = build_snapshot(
        engine,
        SnapshotConfig(
            cutoff=cutoff,
            sites=tuple(params.sites) if params.sites else None,
            acquired_from=cutoff - timedelta(days=params.window_days) if params.window_days else None,
            single_labels=params.single_labels,
        ),
    )
    replay = base_replay(base_dataset, params.replay_base, params.seed)
    parent = None if params.base_version == "scratch" else load_model(model_name, params.base_version)
    net = parent.model.config if parent is not None else NetConfig(**params.net.model_dump())
    image_size = parent.image_size if parent is not None else params.image_size
    key = run_key or f"{snapshot.hash}-{params.base_version}-{params.seed}-replay{len(replay.train)}"
    config = TrainConfig(
        epochs=params.epochs,
        batch_size=params.batch_size,
        learning_rate=params.learning_rate,
        image_size=image_size,
        patience=max(2, params.epochs // 3),
        seed=params.seed,
        net=net,
        checkpoint_dir=work_dir / "checkpoints" / _safe(key),
        cache_dir=work_dir / "cache" / str(image_size),
    )
    from pipeline.training.distributed import process_plan  # not at import: see pipeline.training.train

    logged = params.model_dump() | {
        "image_size": image_size,
        "net": net.__dict__,
        "snapshot": snapshot.counts(),
        "train_processes": process_plan(nproc).nproc,
        "base_replay": replay.params(),
        "evidence": f"went ahead without enough evidence: {evidence_short}"
        if evidence_short
        else "enough at every served site",
    }
    with training_run(
        EXPERIMENT,
        params=logged,
        snapshot_hash=snapshot.hash,
        parent_version=parent.version if parent is not None else None,
        trigger=trigger,
        run_key=key,
    ) as run:
        result = train(
            snapshot.train_items() + replay.train,
            snapshot.val_items() + replay.val,
            config,
            init_model=parent.model if parent is not None else None,
            progress=progress,
            on_epoch=run.log_epoch,
            nproc=nproc,
        )
        evaluation = log_evaluation(result.val_probs, result.val_labels, result.threshold)
        version = register_candidate(
            result.model,
            model_name=model_name,
            image_size=image_size,
            threshold=result.threshold,
            snapshot_hash=snapshot.hash,
            parent_version=parent.version if parent is not None else None,
            params=logged,
            dataset=as_mlflow_dataset(snapshot),
        )
    log.info("candidate %s version %s from snapshot %s", model_name, version, snapshot.hash[:12])
    return RetrainResult(
        version=version,
        snapshot_hash=snapshot.hash,
        counts=snapshot.counts(),
        best_val_auroc=result.best_val_auroc,
        run_id=run.run_id,
        skipped_studies=len(result.skipped),
        resumed_from_epoch=result.resumed_from_epoch,
        evaluation=evaluation,
    )


def _safe(key: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in key)[:120]
