"""The model registry (MLflow): log a trained model, register a version, move aliases, load by alias.

Aliases name roles (``champion``, ``candidate``, ``previous``); tags on the version carry facts
(threshold, image size, dataset hash, parent version). Nothing is inferred from a version number.
"""

from __future__ import annotations

import json
import logging
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature

from pipeline.training.model import NormalFilterNet

log = logging.getLogger(__name__)

CHAMPION = "champion"
CANDIDATE = "candidate"
PREVIOUS = "previous"


class ModelNotFound(LookupError):
    """No model version answers to the given name and alias or version."""


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


def log_and_register(
    model: torch.nn.Module,
    *,
    model_name: str,
    image_size: int,
    threshold: float,
    tags: dict[str, str] | None = None,
) -> str:
    """Log ``model`` into the active MLflow run with signature and input example, register it, return the version.

    The version gets tags ``threshold``, ``image_size`` and ``git_commit`` plus ``tags``.
    """
    example = np.zeros((1, 1, image_size, image_size), dtype=np.float32)
    model.eval()
    with torch.no_grad():
        output = model(torch.from_numpy(example)).numpy()
    info = mlflow.pytorch.log_model(
        model,
        name="model",
        signature=infer_signature(example, output),
        input_example=example,
        registered_model_name=model_name,
        await_registration_for=60,
        serialization_format="pickle",  # the eager module: MC dropout needs train() on its dropout layers
    )
    version = str(info.registered_model_version)
    client = MlflowClient()
    facts = {"threshold": f"{threshold:.6f}", "image_size": str(image_size), "git_commit": git_commit(), **(tags or {})}
    for key, value in facts.items():
        client.set_model_version_tag(model_name, version, key, value)
    log.info("registered %s version %s (threshold %.4f)", model_name, version, threshold)
    return version


def set_alias(model_name: str, alias: str, version: str) -> None:
    """Point ``alias`` of ``model_name`` at ``version``."""
    MlflowClient().set_registered_model_alias(model_name, alias, version)


def version_for(model_name: str, alias_or_version: str) -> str | None:
    """Return the version an alias (or version number) names, or None when nothing answers."""
    client = MlflowClient()
    try:
        if alias_or_version.isdigit():
            return str(client.get_model_version(model_name, alias_or_version).version)
        return str(client.get_model_version_by_alias(model_name, alias_or_version).version)
    except MlflowException:
        return None


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
        threshold=float(details.tags.get("threshold", 0.5)),
        image_size=int(details.tags.get("image_size", 128)),
    )


def params_digest(params: dict[str, Any]) -> str:
    """Return a short stable digest of a parameter dict (for the version's tags)."""
    import hashlib

    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:16]
