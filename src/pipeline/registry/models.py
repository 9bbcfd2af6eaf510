"""Registered model versions: log a trained model, register it, tag it, move aliases, load it back.

Aliases name roles (``champion``, ``candidate``, ``previous``); tags on the version carry facts
(threshold, image size, dataset snapshot, parent version, validation status). Nothing is inferred
from a version number.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np
import torch
from mlflow import MlflowClient
from mlflow.entities import LoggedModelStatus
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature

from pipeline.model import NormalFilterNet
from pipeline.registry.tags import (
    DATASET_SNAPSHOT,
    GIT_COMMIT,
    IMAGE_SIZE,
    PARAMS_DIGEST,
    PARENT_VERSION,
    ROLE,
    THRESHOLD,
    VALIDATION_STATUS,
)

if TYPE_CHECKING:
    from mlflow.data.dataset import Dataset

log = logging.getLogger(__name__)

CHAMPION = "champion"
CANDIDATE = "candidate"
PREVIOUS = "previous"
#: A validated candidate scoring live traffic beside the champion before approval (answers logged, never used).
SHADOW = "shadow"

#: The artifact name of the model inside its run (``log_model(name=...)``).
MODEL_ARTIFACT = "model"
#: The ``validation_status`` of a version until the validation suite writes its verdict.
PENDING = "pending"


class ModelNotFound(LookupError):
    """No model version answers to the given name and alias or version."""


class InvalidModel(ValueError):
    """A model that cannot be registered as a normal filter (wrong output shape, non-finite outputs)."""


class NoActiveRun(RuntimeError):
    """A registry call that logs into an MLflow run found none active and was given no run id."""


@dataclass(frozen=True)
class LoadedModel:
    """A model version ready to serve."""

    model: NormalFilterNet
    name: str
    version: str
    threshold: float
    image_size: int


def git_commit() -> str:
    """Return the commit of the working tree, or "unknown" outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=Path(__file__).parent
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip()


def ensure_experiment(name: str, artifact_location: str | None = None) -> str:
    """Return the id of experiment ``name``, creating it (with ``artifact_location`` if given) when missing."""
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    return str(mlflow.create_experiment(name, artifact_location=artifact_location))


def params_digest(params: Mapping[str, Any]) -> str:
    """Return a short stable digest of a parameter dict (for the version's tags)."""
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:16]


def log_and_register(
    model: torch.nn.Module,
    *,
    model_name: str,
    image_size: int,
    threshold: float,
    tags: dict[str, str] | None = None,
) -> str:
    """Log ``model`` into the active MLflow run with signature and input example, register it, return the version.

    The version gets tags ``threshold``, ``image_size`` and ``git_commit`` plus ``tags``, and, like every
    candidate, the logits on its input example as metadata (``example_logits``), so the validation's
    ``reproducible`` check can judge a loaded copy. Used by the bootstrap; a retraining registers through
    :func:`register_candidate`, which is idempotent per run.
    """
    example = input_example(image_size)
    model.eval()
    with torch.no_grad():
        output = model(torch.from_numpy(example)).numpy()
    info = mlflow.pytorch.log_model(
        model,
        name=MODEL_ARTIFACT,
        signature=infer_signature(example, output),
        input_example=example,
        metadata={"example_logits": [float(v) for v in output], "image_size": image_size},
        registered_model_name=model_name,
        await_registration_for=60,
        serialization_format="pickle",  # the eager module: MC dropout needs train() on its dropout layers
    )
    version = str(info.registered_model_version)
    client = MlflowClient()
    facts = {THRESHOLD: f"{threshold:.6f}", IMAGE_SIZE: str(image_size), GIT_COMMIT: git_commit(), **(tags or {})}
    for key, value in facts.items():
        client.set_model_version_tag(model_name, version, key, value)
    log.info("registered %s version %s (threshold %.4f)", model_name, version, threshold)
    return version


def set_alias(model_name: str, alias: str, version: str) -> None:
    """Point ``alias`` of ``model_name`` at ``version``."""
    MlflowClient().set_registered_model_alias(model_name, alias, version)


def log_version_files(model_name: str, version: str, files: Sequence[Path], artifact_path: str) -> str:
    """Log ``files`` into ``version``'s run under ``artifact_path``; return the URI of the last one.

    A version registered without a run keeps no files; the URI is then the bare artifact path.
    """
    run_id = MlflowClient().get_model_version(model_name, version).run_id
    if not run_id:
        return f"{artifact_path}/{files[-1].name}"
    for path in files:
        MlflowClient().log_artifact(run_id, str(path), artifact_path)
    return f"runs:/{run_id}/{artifact_path}/{files[-1].name}"


def version_for(model_name: str, alias_or_version: str) -> str | None:
    """Return the version an alias (or version number) names, or None when the registry has no such thing.

    Raises:
        MlflowException: the registry failed otherwise (unreachable, a server error): not a missing version.
    """
    client = MlflowClient()
    try:
        if alias_or_version.isdigit():
            return str(client.get_model_version(model_name, alias_or_version).version)
        return str(client.get_model_version_by_alias(model_name, alias_or_version).version)
    except MlflowException as exc:
        if exc.error_code in _NOTHING_THERE:
            return None
        raise


# What MLflow answers for a model, version or alias that does not exist (an alias: INVALID_PARAMETER_VALUE)
_NOTHING_THERE = frozenset({"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"})


def load_model(model_name: str, alias_or_version: str = CHAMPION) -> LoadedModel:
    """Load a registered version by alias or number, with its serving facts (threshold, image size).

    Raises:
        ModelNotFound: no such model, alias or version.
    """
    version = version_for(model_name, alias_or_version)
    if version is None:
        raise ModelNotFound(f"no version of model {model_name!r} answers to {alias_or_version!r}")
    details = MlflowClient().get_model_version(model_name, version)
    model = mlflow.pytorch.load_model(f"models:/{model_name}/{version}", map_location="cpu")
    model.eval()
    return LoadedModel(
        model=model,
        name=model_name,
        version=version,
        threshold=float(details.tags.get(THRESHOLD, 0.5)),
        image_size=int(details.tags.get(IMAGE_SIZE, 128)),
    )


# --- candidates of a retraining ---------------------------------------------------------------------------------


def input_example(image_size: int, *, batch: int = 1, seed: int = 0) -> np.ndarray:
    """Return a seeded example batch shaped like the model's input, (batch, 1, image_size, image_size) float32.

    Standard normal pixels, as after the per-image normalisation of ``preprocess``; seeded so that the
    example stored with the model and the outputs stored beside it can be checked after loading.
    """
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch, 1, image_size, image_size)).astype(np.float32)


def check_model_outputs(model: torch.nn.Module, image_size: int) -> np.ndarray:
    """Return the logits (N,) of ``model`` (in eval mode) on a 2-image example; the check a registered model passes.

    Raises:
        InvalidModel: the output is not one finite logit per image.
    """
    example = input_example(image_size, batch=2)
    model.eval()
    try:
        with torch.no_grad():
            output = model(torch.from_numpy(example))
    except RuntimeError as error:
        raise InvalidModel(f"the model fails on a (2, 1, {image_size}, {image_size}) input: {error}") from error
    if not isinstance(output, torch.Tensor) or tuple(output.shape) != (2,):
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise InvalidModel(
            f"the model returns {shape} for a (2, 1, {image_size}, {image_size}) input: a normal filter returns "
            "one logit per image, shape (N,)"
        )
    values = output.float().numpy()
    if not np.isfinite(values).all():
        raise InvalidModel("the model returns non-finite logits on a normal input")
    return values


def flat_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Return ``params`` with nested mappings flattened to dotted keys and every value as a string."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flat_params(value, prefix=f"{name}."))
        else:
            flat[name] = str(value)
    return flat


def _version_of_run(client: MlflowClient, model_name: str, run_id: str) -> ModelVersion | None:
    """Return the version of ``model_name`` registered from run ``run_id`` (the oldest if several), or None."""
    try:
        found = client.search_model_versions(f"name = '{model_name}' AND run_id = '{run_id}'")
    except MlflowException:  # no registered model of that name yet
        return None
    return min(found, key=lambda v: int(v.version)) if found else None


def _logged_model_of_run(experiment_id: str, run_id: str) -> str | None:
    """Return the model uri of the ready ``model`` already logged by run ``run_id``, or None."""
    found = mlflow.search_logged_models(
        experiment_ids=[experiment_id],
        filter_string=f"source_run_id = '{run_id}' AND name = '{MODEL_ARTIFACT}'",
        output_format="list",
    )
    # filtered here: `status = 'READY'` in the filter fails on a PostgreSQL backend (MLflow 3.17 stores an integer)
    ready = [m for m in found if m.status == LoggedModelStatus.READY]
    return f"models:/{ready[0].model_id}" if ready else None


def register_candidate(
    model: torch.nn.Module,
    *,
    model_name: str,
    image_size: int,
    threshold: float,
    snapshot_hash: str,
    parent_version: str | None,
    params: Mapping[str, Any],
    dataset: Dataset | None = None,
    tags: Mapping[str, str] | None = None,
) -> str:
    """Log ``model`` into the active run, register it as the ``candidate`` of ``model_name``, return its version.

    The model is logged with ``log_model(name="model")``: a signature, a seeded input example and, in its
    metadata, the logits on that example (``example_logits``), so a loaded copy can be checked. ``dataset``
    (an ``mlflow.data`` dataset) is logged as the run's ``training`` input. The version gets the tags
    ``dataset_snapshot``, ``git_commit``, ``parent_version`` (or ``"none"``), ``params_digest``,
    ``threshold``, ``image_size``, ``role=candidate`` and ``validation_status=pending``, plus ``tags``;
    the alias ``candidate`` points at it. The ``champion`` alias is never touched.

    Idempotent per run: the run id is the key. A version of ``model_name`` already registered from the
    active run is found (``search_model_versions("run_id = ...")``) and returned instead of a new one;
    a model already logged by the run but not registered (a crash in between) is registered rather than
    logged again. On such a re-run the facts are written again (same values), while a verdict already
    written to ``validation_status`` is kept and the ``candidate`` alias only moves back to a version
    whose validation is still pending.

    Args:
        model: the trained network (its ``forward`` maps (N, 1, H, W) to logits (N,)).
        model_name: registered model name.
        image_size: input side in pixels the model was trained at.
        threshold: deployed threshold on P(abnormal), in [0, 1].
        snapshot_hash: content hash of the frozen training dataset snapshot.
        parent_version: the version it was fine-tuned from (the champion), or None for a model from scratch.
        params: the training parameters (nested mappings are flattened to dotted keys).
        dataset: the snapshot as an ``mlflow.data`` dataset, logged as the run's training input.
        tags: more facts for the version.

    Raises:
        NoActiveRun: no MLflow run is active.
        InvalidModel: the model does not return one finite logit per image.
        ModelNotFound: ``parent_version`` is not a version of ``model_name``.
        ValueError: the threshold is outside [0, 1] or the image size is not positive.
    """
    run = mlflow.active_run()
    if run is None:
        raise NoActiveRun("register_candidate logs into the active MLflow run: open one with training_run(...)")
    if not (math.isfinite(threshold) and 0.0 <= threshold <= 1.0):
        raise ValueError(f"threshold {threshold!r} is not a probability in [0, 1]")
    if image_size <= 0:
        raise ValueError(f"image_size {image_size!r} must be a positive number of pixels")
    if parent_version is not None and version_for(model_name, parent_version) is None:
        raise ModelNotFound(f"parent version {parent_version!r} of model {model_name!r} does not exist")
    run_id = run.info.run_id
    client = MlflowClient()
    facts = {
        DATASET_SNAPSHOT: snapshot_hash,
        GIT_COMMIT: git_commit(),
        PARENT_VERSION: parent_version or "none",
        PARAMS_DIGEST: params_digest(params),
        THRESHOLD: f"{threshold:.6f}",
        IMAGE_SIZE: str(image_size),
        ROLE: CANDIDATE,
        **(tags or {}),
    }

    existing = _version_of_run(client, model_name, run_id)
    if existing is not None:
        version = str(existing.version)
        for key, value in facts.items():
            client.set_model_version_tag(model_name, version, key, value)
        status = existing.tags.get(VALIDATION_STATUS)
        if status is None:
            client.set_model_version_tag(model_name, version, VALIDATION_STATUS, PENDING)
        if status in (None, PENDING):
            client.set_registered_model_alias(model_name, CANDIDATE, version)
        log.info("run %s already registered %s version %s: kept it", run_id, model_name, version)
        return version

    check_model_outputs(model, image_size)
    if dataset is not None:
        mlflow.log_input(dataset, context="training", tags={DATASET_SNAPSHOT: snapshot_hash})
    model_uri = _logged_model_of_run(run.info.experiment_id, run_id)
    if model_uri is None:
        example = input_example(image_size)
        with torch.no_grad():
            logits = model(torch.from_numpy(example)).numpy()
        info = mlflow.pytorch.log_model(
            model,
            name=MODEL_ARTIFACT,
            signature=infer_signature(example, logits),
            input_example=example,
            metadata={"example_logits": [float(v) for v in logits], "image_size": image_size},
            params=flat_params(params),
            tags={DATASET_SNAPSHOT: snapshot_hash},
            serialization_format="pickle",  # the eager module: MC dropout needs train() on its dropout layers
        )
        model_uri = info.model_uri
    registered = mlflow.register_model(
        model_uri, model_name, await_registration_for=60, tags={**facts, VALIDATION_STATUS: PENDING}
    )
    version = str(registered.version)
    client.set_registered_model_alias(model_name, CANDIDATE, version)
    log.info(
        "registered %s version %s as candidate (parent %s, snapshot %s, threshold %.4f)",
        model_name,
        version,
        parent_version or "none",
        snapshot_hash,
        threshold,
    )
    return version
