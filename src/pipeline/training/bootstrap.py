"""The first champion: train on a base dataset from the simulator's stable sites and register it.

The base dataset is what a vendor trained on before going live: studies of the stable sites,
split by day (train, validation, test), written as DICOM under ``<storage>/base/`` with a
manifest (``manifest.csv``: image path relative to it, label, study, site, day, split). Every
retraining replays a sample of it beside the production labels (see :mod:`pipeline.training.retrain`),
so fine-tuning on a new site does not forget the old ones. The model is trained with the same loop as
every retraining, registered in MLflow and given the ``champion`` alias. Its AUROC on held-out
stable-site studies and on a scanner it has never seen (the new-hospital scenario's site) are logged:
the gap is the problem the loop solves.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import pandas as pd
import torch
from mlflow.data.pandas_dataset import from_pandas
from monai.data import DataLoader, Dataset
from sklearn.metrics import roc_auc_score

from pipeline.model import NetConfig, preprocess
from pipeline.registry import (
    CHAMPION,
    DATASET_HASH,
    ORIGIN,
    PARAMS_DIGEST,
    PARENT_VERSION,
    ensure_experiment,
    log_and_register,
    params_digest,
    set_alias,
    version_for,
)
from pipeline.simulate.generate import render_study
from pipeline.simulate.plan import plan_day
from pipeline.simulate.scenario import Scenario, SiteJoins
from pipeline.training.train import TrainConfig, predict_probs, train

log = logging.getLogger(__name__)

EXPERIMENT = "normal-filter"
#: The base dataset's manifest, relative to the storage root.
BASE_MANIFEST = Path("base") / "manifest.csv"
_MANIFEST_COLUMNS = ("image", "label", "study_id", "site", "day", "split")


class BaseDatasetError(ValueError):
    """The base dataset's manifest is missing a column or names a split it does not have."""


def base_manifest(storage_root: Path | str) -> Path:
    """Return where the base dataset's manifest lies under ``storage_root``."""
    return Path(storage_root) / BASE_MANIFEST


def base_dataset_hash(manifest: pd.DataFrame) -> str:
    """Return 16 hex characters of SHA-256 over the manifest's studies, labels and splits (the bootstrap's tag)."""
    canonical = manifest[["study_id", "label", "split"]].to_csv(index=False).encode()
    return hashlib.sha256(canonical).hexdigest()[:16]


def read_base_manifest(path: Path) -> pd.DataFrame:
    """Return the base dataset's manifest with absolute image paths.

    Raises:
        FileNotFoundError: there is no manifest at ``path`` (no bootstrap has run on this storage).
        BaseDatasetError: a column is missing.
    """
    frame = pd.read_csv(path)
    missing = [c for c in _MANIFEST_COLUMNS if c not in frame.columns]
    if missing:
        raise BaseDatasetError(f"{path}: the base manifest lacks the column(s) {', '.join(missing)}")
    frame["image"] = [str(path.parent / image) for image in frame["image"]]
    return frame


def base_items(manifest: pd.DataFrame, split: str) -> list[dict]:
    """Return one split of the base manifest as ``train()`` takes its items (weight 1).

    Raises:
        BaseDatasetError: the split holds no study.
    """
    part = manifest[manifest["split"] == split]
    if part.empty:
        raise BaseDatasetError(f"the base manifest has no {split!r} study")
    return [
        {"image": image, "label": int(label), "weight": 1.0, "study_id": str(study_id)}
        for image, label, study_id in zip(part["image"], part["label"], part["study_id"], strict=True)
    ]


def write_base_dataset(splits: dict[str, list[dict]], storage_root: Path) -> tuple[pd.DataFrame, Path]:
    """Write the manifest of the base dataset's splits (image paths relative to it); return it and its path."""
    path = base_manifest(storage_root)
    rows = [{**item, "split": split} for split, items in splits.items() for item in items]
    manifest = pd.DataFrame(rows, columns=list(_MANIFEST_COLUMNS))
    manifest["image"] = [str(Path(image).relative_to(path.parent)) for image in manifest["image"]]
    path.parent.mkdir(parents=True, exist_ok=True)
    manifest.to_csv(path, index=False)
    return manifest, path


@dataclass(frozen=True)
class BootstrapConfig:
    """How the first champion is made; the defaults reach AUROC >= 0.90 on CPU in a few minutes."""

    train_days: int = 7
    val_days: int = 1
    test_days: int = 1
    seed_offset: int = 1000  # the base dataset is not the production stream: another seed
    render_size: int = 128
    # The normal filter's operating point: sensitivity 0.995 on validation keeps the stable sites >= 0.99 week by week.
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(image_size=64, epochs=10, net=NetConfig(), target_sensitivity=0.995)
    )


@dataclass(frozen=True)
class BootstrapResult:
    """The registered champion and how good it is."""

    model_name: str
    version: str
    created: bool  # False when a champion already existed and nothing was trained
    val_auroc: float | None = None
    test_auroc_stable: float | None = None
    test_auroc_new_site: float | None = None
    threshold: float | None = None
    studies: dict[str, int] = field(default_factory=dict)


def _items(
    scenario: Scenario, days: range, root: Path, key: str, size: int, sites: set[str] | None = None
) -> list[dict]:
    items = []
    for day in days:
        for planned in plan_day(scenario, day):
            if sites is not None and planned.site.id not in sites:
                continue
            rendered = render_study(planned, storage_root=root, key=key, image_size=size)
            items.append(
                {
                    "image": str(rendered.dicom_path),
                    "label": int(planned.abnormal),
                    "study_id": rendered.study_id,
                    "site": planned.site.id,
                    "day": day,
                }
            )
    return items


def _auroc(model: torch.nn.Module, items: list[dict], image_size: int) -> float:
    loader = DataLoader(Dataset(items, preprocess(image_size)), batch_size=64)
    probs = predict_probs(model, loader, torch.device("cpu"))  # type: ignore[arg-type]
    return float(roc_auc_score([i["label"] for i in items], probs))


def bootstrap(
    stable: Scenario,
    *,
    model_name: str,
    storage_root: Path,
    key: str,
    config: BootstrapConfig | None = None,
    new_site: Scenario | None = None,
    force: bool = False,
    progress: bool = True,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    nproc: int | None = None,
) -> BootstrapResult:
    """Train, register and crown the first champion unless one exists (or ``force``).

    Args:
        stable: the scenario whose sites make the base dataset.
        model_name: registered model name.
        storage_root: where the base dataset's DICOM files go (``<root>/base``).
        key: pseudonymisation key.
        config: sizes and hyper-parameters.
        new_site: a scenario with a ``site_joins`` event: its new site is the unseen-scanner test.
        force: train a new champion even if one exists.
        progress: show progress bars.
        on_epoch: called with (epoch, metrics) after each epoch (``train``'s callback), e.g. to print progress.
        nproc: training processes (``PIPELINE_TRAIN_NPROC``; None: one per visible CUDA device).
    """
    config = config or BootstrapConfig()
    existing = version_for(model_name, CHAMPION)
    if existing is not None and not force:
        log.info("%s already has a champion (version %s): nothing to bootstrap", model_name, existing)
        return BootstrapResult(model_name, existing, created=False)

    base = stable.model_copy(update={"seed": stable.seed + config.seed_offset})
    root = base_manifest(storage_root).parent
    t, v, s = config.train_days, config.val_days, config.test_days
    size = config.render_size
    log.info("rendering the base dataset (%d days of %d sites) ...", t + v + s, len(base.sites))
    train_items = _items(base, range(0, t), root, key, size)
    val_items = _items(base, range(t, t + v), root, key, size)
    test_items = _items(base, range(t + v, t + v + s), root, key, size)
    new_items: list[dict] = []
    if new_site is not None:
        joins = [e for e in new_site.events if isinstance(e, SiteJoins)]
        if joins:
            shifted = new_site.model_copy(update={"seed": new_site.seed + config.seed_offset})
            first = joins[0].day
            new_items = _items(shifted, range(first, first + s), root, key, size, sites={joins[0].site.id})

    manifest, manifest_path = write_base_dataset(
        {"train": train_items, "val": val_items, "test": test_items}, storage_root
    )
    dataset_hash = base_dataset_hash(manifest)

    params = {
        "train_studies": len(train_items),
        "val_studies": len(val_items),
        "image_size": config.train.image_size,
        "epochs": config.train.epochs,
        "batch_size": config.train.batch_size,
        "learning_rate": config.train.learning_rate,
        "network": config.train.net.name,
        "seed": config.train.seed,
    }
    ensure_experiment(EXPERIMENT)
    mlflow.set_experiment(EXPERIMENT)
    with mlflow.start_run(run_name="bootstrap"):
        mlflow.log_params(params)
        mlflow.log_input(from_pandas(manifest, source=str(manifest_path), name="base-dataset"), context="training")

        def log_epoch(epoch: int, metrics: dict[str, float]) -> None:
            mlflow.log_metrics(metrics, step=epoch)
            if on_epoch is not None:
                on_epoch(epoch, metrics)

        result = train(train_items, val_items, config.train, progress=progress, on_epoch=log_epoch, nproc=nproc)
        test_auroc = _auroc(result.model, test_items, config.train.image_size)
        new_auroc = _auroc(result.model, new_items, config.train.image_size) if new_items else None
        mlflow.log_metrics({"test_auroc_stable": test_auroc, "best_val_auroc": result.best_val_auroc})
        if new_auroc is not None:
            mlflow.log_metric("test_auroc_new_site", new_auroc)
        version = log_and_register(
            result.model,
            model_name=model_name,
            image_size=config.train.image_size,
            threshold=result.threshold,
            tags={
                DATASET_HASH: dataset_hash,
                PARENT_VERSION: "",
                PARAMS_DIGEST: params_digest(params),
                ORIGIN: "bootstrap",
            },
        )
    set_alias(model_name, CHAMPION, version)
    log.info(
        "bootstrap: version %s is champion; AUROC val %.3f, test %.3f, new site %s",
        version,
        result.best_val_auroc,
        test_auroc,
        "n/a" if new_auroc is None else f"{new_auroc:.3f}",
    )
    return BootstrapResult(
        model_name,
        version,
        created=True,
        val_auroc=result.best_val_auroc,
        test_auroc_stable=test_auroc,
        test_auroc_new_site=new_auroc,
        threshold=result.threshold,
        studies={"train": len(train_items), "val": len(val_items), "test": len(test_items), "new_site": len(new_items)},
    )
