"""The training loop: MONAI data path, class-imbalance weighting, early stopping on validation AUROC."""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from monai.data import CacheDataset, DataLoader
from monai.utils import set_determinism
from sklearn.metrics import roc_auc_score
from tqdm import tqdm

from pipeline.training.model import NetConfig, NormalFilterNet, calibrate_head
from pipeline.training.transforms import preprocess

log = logging.getLogger(__name__)


class TrainingDataError(ValueError):
    """A training set that cannot train a model (empty, or a single class); raised before any training."""


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run; a tiny CPU config is the default."""

    epochs: int = 12
    batch_size: int = 32
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    image_size: int = 128
    patience: int = 4
    seed: int = 0
    num_workers: int = 0
    target_sensitivity: float = 0.98  # the bootstrap threshold keeps this sensitivity on validation
    net: NetConfig = field(default_factory=NetConfig)


@dataclass
class TrainResult:
    """The best model of a run and how it got there."""

    model: NormalFilterNet
    best_epoch: int
    best_val_auroc: float
    threshold: float
    history: list[dict[str, float]]
    val_probs: np.ndarray
    val_labels: np.ndarray


def _check_labels(name: str, items: Sequence[dict]) -> np.ndarray:
    labels = np.array([int(i["label"]) for i in items])
    if len(labels) == 0:
        raise TrainingDataError(f"the {name} set is empty")
    if len(set(labels.tolist())) < 2:
        raise TrainingDataError(f"the {name} set has a single class ({int(labels[0])}): AUROC is undefined")
    return labels


def threshold_for_sensitivity(probs: np.ndarray, labels: np.ndarray, sensitivity: float) -> float:
    """Return the largest threshold whose sensitivity (share of positives with prob >= threshold) is >= ``sensitivity``."""
    positives = np.sort(probs[labels == 1])
    if len(positives) == 0:
        return 0.5
    index = int(np.floor((1 - sensitivity) * len(positives)))
    return float(positives[min(index, len(positives) - 1)])


@torch.no_grad()
def predict_probs(model: NormalFilterNet, loader: DataLoader, device: torch.device) -> np.ndarray:
    """Return P(abnormal) for every item of ``loader``, in order."""
    model.eval()
    out = [torch.sigmoid(model(batch["image"].to(device))).cpu() for batch in loader]
    return torch.cat(out).numpy() if out else np.zeros(0)


def train(
    train_items: Sequence[dict],
    val_items: Sequence[dict],
    config: TrainConfig,
    *,
    init_model: NormalFilterNet | None = None,
    progress: bool = True,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train a normal filter on ``train_items`` and keep the epoch with the best validation AUROC.

    Args:
        train_items: ``{"image": DICOM path, "label": 0 or 1}`` per study.
        val_items: the same for validation (early stopping and the threshold).
        config: hyper-parameters.
        init_model: warm start from this model (copied), else from scratch.
        progress: show a bar per epoch.
        on_epoch: called with (epoch, metrics) after each epoch (e.g. to log to MLflow).

    Raises:
        TrainingDataError: a set is empty or has one class.
    """
    train_labels = _check_labels("training", train_items)
    val_labels = _check_labels("validation", val_items)
    set_determinism(seed=config.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = copy.deepcopy(init_model) if init_model is not None else NormalFilterNet(config.net)
    model.to(device)

    # CacheDataset keeps the decoded, resized studies and re-runs only the random augmentations per epoch.
    train_ds = CacheDataset(
        list(train_items), preprocess(config.image_size, train=True), progress=False, num_workers=config.num_workers
    )
    val_ds = CacheDataset(
        list(val_items), preprocess(config.image_size), progress=False, num_workers=config.num_workers
    )
    train_loader = DataLoader(train_ds, batch_size=config.batch_size, shuffle=True, num_workers=0)
    val_loader = DataLoader(val_ds, batch_size=config.batch_size * 2, shuffle=False, num_workers=0)

    pos_weight = torch.tensor((train_labels == 0).sum() / max(1, (train_labels == 1).sum()), device=device)
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=max(1, config.epochs))

    best_auroc, best_epoch, best_state = -1.0, -1, copy.deepcopy(model.state_dict())
    history: list[dict[str, float]] = []
    for epoch in range(config.epochs):
        started = time.perf_counter()
        model.train()
        total, seen = 0.0, 0
        bar = tqdm(
            train_loader, desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch", disable=not progress, leave=False
        )
        for batch in bar:
            images, labels = batch["image"].to(device), batch["label"].float().to(device)
            optimiser.zero_grad()
            loss = loss_fn(model(images), labels)
            loss.backward()
            optimiser.step()
            total += loss.item() * len(labels)
            seen += len(labels)
            bar.set_postfix(loss=f"{total / seen:.4f}")
        scheduler.step()
        probs = predict_probs(model, val_loader, device)
        auroc = float(roc_auc_score(val_labels, probs))
        metrics = {"train_loss": total / seen, "val_auroc": auroc, "epoch_s": time.perf_counter() - started}
        history.append(metrics)
        log.info(
            "epoch %d: train loss %.4f, val AUROC %.4f (%.1fs)",
            epoch + 1,
            metrics["train_loss"],
            auroc,
            metrics["epoch_s"],
        )
        if on_epoch is not None:
            on_epoch(epoch, metrics)
        if auroc > best_auroc:
            best_auroc, best_epoch, best_state = auroc, epoch, copy.deepcopy(model.state_dict())
        elif epoch - best_epoch >= config.patience:
            log.info("early stop: no AUROC gain for %d epochs", config.patience)
            break

    model.load_state_dict(best_state)
    model.to("cpu").eval()
    val_probs = predict_probs(model, val_loader, torch.device("cpu"))
    # Calibrated at the validation set's prevalence (class weights in the loss skew the probabilities).
    clipped = torch.from_numpy(np.clip(val_probs, 1e-6, 1 - 1e-6))
    calibrate_head(model, torch.logit(clipped), torch.from_numpy(val_labels))
    val_probs = predict_probs(model, val_loader, torch.device("cpu"))
    threshold = threshold_for_sensitivity(val_probs, val_labels, config.target_sensitivity)
    return TrainResult(model, best_epoch, best_auroc, threshold, history, val_probs, val_labels)
