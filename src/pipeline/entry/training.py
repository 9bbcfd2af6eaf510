"""The training entries: the first champion (``pipeline bootstrap``) and a retrained candidate (``retrain_model``,
``pipeline train``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.entry.release import gate_config

if TYPE_CHECKING:
    from pipeline.resources import Resources
    from pipeline.training.retrain import RetrainParams


def retrain_params(res: Resources, params: dict[str, Any], trigger: str) -> RetrainParams:
    """The parameters of a retraining: the form's (or a config file's), and where new labels started it (nobody
    filled the form), the deployment's ``PIPELINE_RETRAIN_DEFAULTS`` over them.

    Raises:
        pydantic.ValidationError: a bad value, named by its field (the settings' too).
    """
    from pipeline.training.retrain import RetrainParams

    return RetrainParams.model_validate(params | res.settings.retrain_defaults if trigger == "asset" else params)


def retrain(
    res: Resources,
    params: dict[str, Any],
    *,
    trigger: str = "manual",
    run_key: str | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Train a candidate from ``params`` (``RetrainParams`` fields) on a fresh snapshot, replaying the base dataset
    under the storage root beside it; register it in MLflow with its evaluation report.

    Returns the version (None when skipped: too few new labels, or waiting for the gate's evidence at a served
    site), the snapshot hash and counts. The same ``run_key`` resumes the same MLflow run and checkpoints (an
    Airflow retry).

    Raises:
        pydantic.ValidationError: a bad parameter, named.
        pipeline.training.TrainingDataError: the snapshot cannot train (empty, one class in a split).
        pipeline.registry.ModelNotFound: no such base version.
        pipeline.training.bootstrap.BaseDatasetError: the base manifest is broken.
        pipeline.training.distributed.TooFewDevices, DistributedTrainingFailed: the processes could not train.
    """
    from pipeline.reports import log_evaluation_report
    from pipeline.training.bootstrap import base_manifest
    from pipeline.training.retrain import retrain as run
    from pipeline.validation.testsets import evidence_shortfall

    chosen = retrain_params(res, params, trigger)
    res.registry.use()
    result = run(
        res.store,
        chosen,
        model_name=res.registry.model_name,
        work_dir=res.storage.training,
        trigger=trigger,
        run_key=run_key,
        progress=progress,
        base_dataset=base_manifest(res.storage.root),
        evidence_short=evidence_shortfall(res.store, gate_config(res, None).min_positives),
        nproc=res.settings.train_nproc,
    )
    if result.evaluation is not None and result.run_id is not None:
        log_evaluation_report(result.evaluation, result.run_id)
    return result.as_json()


def bootstrap(
    res: Resources,
    stable: Path,
    *,
    new_site: Path | None = None,
    train_days: int = 7,
    epochs: int = 10,
    image_size: int = 64,
    force: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train the first champion on the base dataset of the ``stable`` scenario's sites and register it (alias
    ``champion``); ``new_site``'s joining site is the unseen-scanner test. Nothing happens when a champion exists,
    unless ``force``.

    Raises:
        ValueError: a scenario file is invalid, named.
    """
    import dataclasses

    from pipeline.simulate.scenario import load_scenario
    from pipeline.training import TrainConfig
    from pipeline.training.bootstrap import BootstrapConfig
    from pipeline.training.bootstrap import bootstrap as run

    res.registry.use()
    result = run(
        load_scenario(stable),
        model_name=res.registry.model_name,
        storage_root=res.storage.root,
        key=res.pseudonym_key,
        config=BootstrapConfig(train_days=train_days, train=TrainConfig(image_size=image_size, epochs=epochs)),
        new_site=load_scenario(new_site) if new_site is not None else None,
        force=force,
        progress=progress,
        nproc=res.settings.train_nproc,
    )
    return dataclasses.asdict(result)
