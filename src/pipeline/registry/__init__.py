"""The model registry and experiment tracking (MLflow): training runs, evaluations, registered versions, aliases.

Aliases name roles (``champion``, ``candidate``, ``previous``); tags on the version carry facts
(threshold, image size, dataset snapshot, parent version, validation status). Nothing is inferred
from a version number.

A retraining, in order::

    with training_run(EXPERIMENT, params=..., snapshot_hash=..., parent_version=..., trigger="asset") as run:
        result = train(..., on_epoch=run.log_epoch)
        log_evaluation(result.val_probs, result.val_labels, result.threshold)
        version = register_candidate(result.model, model_name=..., ...)
"""

from pipeline.registry.evaluation import (
    EVALUATION_ARTIFACTS,
    Evaluation,
    EvaluationError,
    evaluate_probs,
    log_evaluation,
)
from pipeline.registry.models import (
    CANDIDATE,
    CHAMPION,
    MODEL_ARTIFACT,
    PENDING,
    PREVIOUS,
    SHADOW,
    VALIDATION_STATUS,
    InvalidModel,
    LoadedModel,
    ModelNotFound,
    NoActiveRun,
    check_model_outputs,
    ensure_experiment,
    flat_params,
    git_commit,
    input_example,
    load_model,
    log_and_register,
    log_version_files,
    params_digest,
    register_candidate,
    set_alias,
    version_for,
)
from pipeline.registry.runs import RUN_KEY, TRIGGERS, RunMismatch, TrainingRun, find_run, training_run

__all__ = [
    "CANDIDATE",
    "CHAMPION",
    "EVALUATION_ARTIFACTS",
    "MODEL_ARTIFACT",
    "PENDING",
    "PREVIOUS",
    "RUN_KEY",
    "SHADOW",
    "TRIGGERS",
    "VALIDATION_STATUS",
    "Evaluation",
    "EvaluationError",
    "InvalidModel",
    "LoadedModel",
    "ModelNotFound",
    "NoActiveRun",
    "RunMismatch",
    "TrainingRun",
    "check_model_outputs",
    "ensure_experiment",
    "evaluate_probs",
    "find_run",
    "flat_params",
    "git_commit",
    "input_example",
    "load_model",
    "log_and_register",
    "log_evaluation",
    "log_version_files",
    "params_digest",
    "register_candidate",
    "set_alias",
    "training_run",
    "version_for",
]
