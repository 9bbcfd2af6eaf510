"""The training loop: MONAI data path, class-imbalance weighting, early stopping on validation AUROC.

A run with a ``checkpoint_dir`` writes ``last.pt`` after every epoch (model, optimiser,
scheduler, best state so far, history, RNG states) and, started again with the same data and
config, resumes after the last finished epoch. Every epoch re-seeds its random streams from
(seed, epoch), so a resumed run reaches the same weights as one that was never interrupted.
A study whose DICOM cannot be read is skipped and named in ``TrainResult.skipped``.

:func:`fit` is the one epoch loop. :func:`train` runs it in this process, or, with more than one CUDA
device visible (or ``nproc`` above 1), hands the run to :mod:`pipeline.training.distributed`, whose
torchrun processes each run :func:`fit` on a DistributedDataParallel model: the same checkpoints and
the same :class:`TrainResult`.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import logging
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.distributed as dist
from monai.data import CacheDataset, DataLoader, Dataset, PersistentDataset
from monai.transforms import Compose
from monai.utils import set_determinism
from sklearn.metrics import roc_auc_score
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Subset
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from pipeline.model import UNREADABLE_KEY, NetConfig, NormalFilterNet, PrepareStudyd, calibrate_head, finish

log = logging.getLogger(__name__)


CHECKPOINT_NAME = "last.pt"
CHECKPOINT_FORMAT = 1


class TrainingDataError(ValueError):
    """A training set that cannot train a model (empty, or a single class); raised before any training."""


class CheckpointMismatch(ValueError):
    """The checkpoint directory holds a run on other data or with another config: it cannot be resumed."""


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
    checkpoint_dir: Path | None = None  # write ``last.pt`` every epoch and resume from it
    cache_dir: Path | None = None  # MONAI PersistentDataset cache of decoded studies (else in memory)
    amp: bool = True  # bfloat16 autocast, on CUDA only
    channels_last: bool = True  # channels-last memory format, on CUDA only


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
    skipped: list[str] = field(default_factory=list)  # ids (or paths) of studies whose DICOM could not be read
    resumed_from_epoch: int | None = None  # the last finished epoch a checkpoint held (0-based), if resumed
    world_size: int = 1  # training processes (DistributedDataParallel above 1)
    # per process, the training studies it drew in each epoch this call trained (multi-process runs only)
    studies_per_rank: tuple[tuple[int, ...], ...] = ()


def _check_labels(name: str, items: Sequence[dict]) -> np.ndarray:
    labels = np.array([int(i["label"]) for i in items], dtype=np.int64)
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
    out = [torch.sigmoid(model(batch["image"].to(device)).float()).cpu() for batch in loader]
    return torch.cat(out).numpy() if out else np.zeros(0)


def _items(items: Sequence[dict]) -> list[dict[str, Any]]:
    """Return the items as the data path wants them: image path, label, loss weight (default 1) and an id."""
    return [
        {
            "image": str(i["image"]),
            "label": int(i["label"]),
            "weight": float(i.get("weight", 1.0)),
            "id": str(i.get("study_id", i["image"])),
        }
        for i in items
    ]


def _prepared(
    items: list[dict[str, Any]], config: TrainConfig, name: str
) -> tuple[torch.utils.data.Dataset, list[int], list[str]]:
    """Decode and resize every study once (cached); return the cache, the readable indexes and the skipped ids."""
    dataset = prepared_dataset(items, config)
    kept, skipped = [], []
    for index in range(len(items)):
        reason = dataset[index].get(UNREADABLE_KEY)
        if reason is None:
            kept.append(index)
        else:
            skipped.append(items[index]["id"])
            log.warning("%s set: skipping study %s: %s", name, items[index]["id"], reason)
    return dataset, kept, skipped


def prepared_dataset(items: list[dict[str, Any]], config: TrainConfig) -> torch.utils.data.Dataset:
    """Return the dataset of decoded, resized studies: on disk under ``config.cache_dir``, else decoded into memory now.

    Args:
        items: the studies as :attr:`PreparedRun.train` holds them (image path, label, weight, id).
        config: ``image_size`` (pixels a side) and ``cache_dir``; ``num_workers`` decode an in-memory cache.
    """
    prepare = PrepareStudyd(config.image_size)
    if config.cache_dir is not None:
        # the cache key is the item, so the image size names the folder: another size is another cache
        folder = Path(config.cache_dir) / f"prepared_{config.image_size}px"
        return PersistentDataset(items, prepare, cache_dir=folder)
    return CacheDataset(items, prepare, progress=False, num_workers=config.num_workers)


def _seed_epoch(seed: int, epoch: int, augment: Compose, rank: int = 0) -> None:
    """Seed every random stream an epoch uses from (seed, epoch, rank) alone, so that a resumed epoch replays exactly.

    Rank 0 (the only one of a single process) gets the seed of (seed, epoch); the other ranks of a
    multi-process run get seeds of their own, so that their augmentations and dropout differ.
    """
    epoch_seed = (seed * 1_000_003 + epoch) % 2**32
    if rank:
        epoch_seed = (epoch_seed + rank * 0x9E3779B9) % 2**32
    random.seed(epoch_seed)
    np.random.seed(epoch_seed)
    torch.manual_seed(epoch_seed)  # also the CUDA generators: dropout, the loader's shuffling
    augment.set_random_state(seed=epoch_seed)


def _run_key(train_items: list[dict], val_items: list[dict], config: TrainConfig, init: NormalFilterNet | None) -> str:
    """Return a digest of what determines a run (data, hyper-parameters, warm start); a checkpoint must match it."""
    settings = {
        k: v
        for k, v in dataclasses.asdict(config).items()
        if k not in ("checkpoint_dir", "cache_dir", "num_workers", "amp", "channels_last")
    }
    digest = hashlib.sha256(json.dumps([train_items, val_items, settings], sort_keys=True, default=str).encode())
    if init is not None:
        for name, tensor in sorted(init.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:32]


def _rng_states(*, cuda: bool = True) -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), pos, has_gauss, cached],
        "python": random.getstate(),
    }
    if cuda and torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _restore_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically: a reader sees the previous checkpoint or this one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    torch.save(state, partial)
    with open(partial, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(partial, path)


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    """Return the checkpoint at ``path`` (tensors on the CPU), or None when there is none."""
    if not path.exists():
        return None
    return dict(torch.load(path, map_location="cpu", weights_only=True))


def _resumable_checkpoint(path: Path | None, run_key: str) -> dict[str, Any] | None:
    """Return the checkpoint at ``path`` to resume from (None when there is none); refuse one of another run."""
    checkpoint = load_checkpoint(path) if path is not None else None
    if checkpoint is not None and checkpoint.get("run_key") != run_key:
        raise CheckpointMismatch(
            f"{path} is a checkpoint of another run (other data, config or warm start): "
            "give this run its own checkpoint_dir, or delete the old checkpoint to start over"
        )
    return checkpoint


@dataclass(frozen=True)
class PreparedRun:
    """A run's checked data and checkpoint: what every way of training it starts from (see :func:`prepare_run`)."""

    train: list[dict[str, Any]]  # every training study: image path, label, loss weight, id
    val: list[dict[str, Any]]  # every validation study, the same way
    train_cache: torch.utils.data.Dataset  # the decoded studies of ``train``, in its order
    val_cache: torch.utils.data.Dataset
    train_kept: list[int]  # indexes of ``train`` whose DICOM could be read
    val_kept: list[int]
    train_labels: np.ndarray  # (len(train_kept),) 0 or 1
    val_labels: np.ndarray  # (len(val_kept),) 0 or 1
    skipped: list[str]  # ids of the studies left out, training set first
    run_key: str  # what a checkpoint of this run carries
    checkpoint: dict[str, Any] | None  # the checkpoint of this run to resume from, if any


def prepare_run(
    train_items: Sequence[dict],
    val_items: Sequence[dict],
    config: TrainConfig,
    *,
    init_model: NormalFilterNet | None = None,
    checkpoint_path: Path | None = None,
) -> PreparedRun:
    """Return the run's data, decoded once, and its checkpoint, having checked both.

    Each study is decoded once, into memory (``CacheDataset``) or a disk cache under ``config.cache_dir``
    that outlives the run (``PersistentDataset``); only the augmentations run again per epoch.

    Args:
        train_items: as :func:`train`.
        val_items: as :func:`train`.
        config: hyper-parameters; ``image_size`` and ``cache_dir`` decide the cache.
        init_model: the warm start, part of the run's identity.
        checkpoint_path: ``last.pt`` of the run, if it keeps one.

    Raises:
        TrainingDataError: a set is empty or has one class, before or after leaving unreadable studies out.
        CheckpointMismatch: ``checkpoint_path`` holds a checkpoint of another run.
    """
    _check_labels("training", train_items)
    _check_labels("validation", val_items)
    items, val = _items(train_items), _items(val_items)
    run_key = _run_key(items, val, config, init_model)
    checkpoint = _resumable_checkpoint(checkpoint_path, run_key)
    train_cache, train_kept, skipped = _prepared(items, config, "training")
    val_cache, val_kept, val_skipped = _prepared(val, config, "validation")
    return PreparedRun(
        train=items,
        val=val,
        train_cache=train_cache,
        val_cache=val_cache,
        train_kept=train_kept,
        val_kept=val_kept,
        train_labels=_check_labels("training", [items[i] for i in train_kept]),
        val_labels=_check_labels("validation", [val[i] for i in val_kept]),
        skipped=skipped + val_skipped,
        run_key=run_key,
        checkpoint=checkpoint,
    )


def build_model(
    config: TrainConfig, device: torch.device, init_model: NormalFilterNet | None = None
) -> NormalFilterNet:
    """Return a copy of ``init_model`` (else a new ``config.net``) on ``device``, channels-last on CUDA if configured.

    Seeds every generator from ``config.seed`` first (MONAI's ``set_determinism``), so that a new model has
    the same weights in every process of a run and in every run with that seed.
    """
    set_determinism(seed=config.seed)
    model = copy.deepcopy(init_model) if init_model is not None else NormalFilterNet(config.net)
    model.to(device)
    if device.type == "cuda" and config.channels_last:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return model


def calibrate_best(
    model: NormalFilterNet,
    best_state: dict[str, Any],
    val_loader: DataLoader,
    val_labels: np.ndarray,
    target_sensitivity: float,
) -> tuple[np.ndarray, float]:
    """Load ``best_state`` into ``model`` (left on the CPU, calibrated, in eval mode); return (val probs, threshold).

    Args:
        model: the network to finish, changed in place.
        best_state: the best epoch's weights (:attr:`FitResult.best_state`).
        val_loader: every readable validation study, in order.
        val_labels: (studies,) their labels, 0 or 1.
        target_sensitivity: the threshold keeps at least this share of the positives above it.
    """
    model.load_state_dict(best_state)
    model.to("cpu", memory_format=torch.contiguous_format).eval()  # type: ignore[call-overload]
    val_probs = predict_probs(model, val_loader, torch.device("cpu"))
    # Calibrated at the validation set's prevalence (class weights in the loss skew the probabilities).
    clipped = torch.from_numpy(np.clip(val_probs, 1e-6, 1 - 1e-6))
    calibrate_head(model, torch.logit(clipped), torch.from_numpy(val_labels))
    val_probs = predict_probs(model, val_loader, torch.device("cpu"))
    return val_probs, threshold_for_sensitivity(val_probs, val_labels, target_sensitivity)


@dataclass
class _TrainingState:
    """Where a training stands: the best epoch so far and its weights, the history, the next epoch."""

    best_auroc: float
    best_epoch: int
    best_state: dict[str, Any]
    history: list[dict[str, float]]
    first_epoch: int
    finished: bool
    resumed_from: int | None

    @classmethod
    def start(
        cls,
        model: torch.nn.Module,
        checkpoint: dict[str, Any] | None,
        optimiser: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
    ) -> _TrainingState:
        """Return a fresh state, or the checkpoint's (loading its optimiser and scheduler state too)."""
        if checkpoint is None:
            return cls(-1.0, -1, copy.deepcopy(model.state_dict()), [], 0, False, None)
        optimiser.load_state_dict(checkpoint["optimiser"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        resumed_from = int(checkpoint["epoch"])
        return cls(
            checkpoint["best_auroc"],
            checkpoint["best_epoch"],
            checkpoint["best_state"],
            list(checkpoint["history"]),
            resumed_from + 1,
            bool(checkpoint["finished"]),
            resumed_from,
        )

    def record(self, epoch: int, metrics: dict[str, float], model: torch.nn.Module, config: TrainConfig) -> None:
        """Add an epoch's metrics: keep its weights if its validation AUROC is the best, stop early when stale."""
        self.history.append(metrics)
        auroc = metrics["val_auroc"]
        log.info(
            "epoch %d: train loss %.4f, val AUROC %.4f (%.1fs)",
            epoch + 1,
            metrics["train_loss"],
            auroc,
            metrics["epoch_s"],
        )
        if auroc > self.best_auroc:
            self.best_auroc, self.best_epoch, self.best_state = auroc, epoch, copy.deepcopy(model.state_dict())
        elif epoch - self.best_epoch >= config.patience:
            log.info("early stop: no AUROC gain for %d epochs", config.patience)
            self.finished = True
        self.finished = self.finished or epoch == config.epochs - 1

    def checkpoint(
        self,
        run_key: str,
        epoch: int,
        model: torch.nn.Module,
        optimiser: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        rng: dict[str, Any],
        world_size: int,
    ) -> dict[str, Any]:
        """Return what ``last.pt`` holds after ``epoch``: enough to resume exactly there."""
        return {
            "format": CHECKPOINT_FORMAT,
            "run_key": run_key,
            "epoch": epoch,
            "finished": self.finished,
            "model": model.state_dict(),
            "optimiser": optimiser.state_dict(),
            "scheduler": scheduler.state_dict(),
            "best_auroc": self.best_auroc,
            "best_epoch": self.best_epoch,
            "best_state": self.best_state,
            "history": self.history,
            "rng": rng,
            "world_size": world_size,
        }


def _optimisation(
    model: torch.nn.Module, config: TrainConfig, train_labels: np.ndarray, device: torch.device
) -> tuple[torch.nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """Return the class-weighted loss (per study), the optimiser and the learning-rate schedule of a training."""
    pos_weight = torch.tensor((train_labels == 0).sum() / max(1, (train_labels == 1).sum()), device=device)
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight, reduction="none")
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=max(1, config.epochs))
    return loss_fn, optimiser, scheduler


@dataclass(frozen=True)
class FitResult:
    """What :func:`fit` reached; the best epoch, its weights and the history are rank 0's (the run's)."""

    best_epoch: int  # 0-based
    best_val_auroc: float
    best_state: dict[str, Any]  # the best epoch's weights (the plain network's keys)
    history: list[dict[str, float]]  # per epoch of the run, resumed ones included: train_loss, val_auroc, epoch_s
    resumed_from_epoch: int | None  # the last finished epoch the checkpoint held, if one was resumed
    studies_per_epoch: tuple[int, ...]  # training studies this process drew in each epoch this call trained


def fit(
    model: NormalFilterNet | DistributedDataParallel,
    train_loader: DataLoader,
    val_loader: DataLoader,
    config: TrainConfig,
    *,
    augment: Compose,
    train_labels: np.ndarray,
    val_labels: np.ndarray,
    device: torch.device,
    run_key: str,
    checkpoint: dict[str, Any] | None = None,
    checkpoint_path: Path | None = None,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = True,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> FitResult:
    """Train ``model`` epoch by epoch, from ``checkpoint`` if given, until early stopping or ``config.epochs``.

    The one epoch loop of both ways to train. Every epoch re-seeds its random streams from (seed, epoch,
    rank), trains (bfloat16 autocast on CUDA if ``config.amp``), then computes the validation AUROC; rank 0
    keeps the best epoch's weights, decides on early stopping, writes the checkpoint and calls ``on_epoch``.
    With ``world_size`` above 1 (an initialised default process group and a DistributedDataParallel
    ``model``) the processes sum the training loss, take rank 0's batch-norm statistics, send rank 0 their
    validation predictions and stop at rank 0's decision.

    Args:
        model: a network on ``device``, or DistributedDataParallel around one; trained in place, from the
            checkpoint's weights if there is one.
        train_loader: this process's training batches (``image``, ``label``, ``weight``); a
            ``DistributedSampler`` in it is told the epoch.
        val_loader: this process's contiguous share of the readable validation studies, in order (all of
            them in a single process): rank 0 puts the shares back in rank order.
        config: hyper-parameters (epochs, patience, seed, learning rate, AMP, channels-last).
        augment: the random transforms of ``train_loader``, re-seeded every epoch.
        train_labels: (studies,) every readable training study's label (the loss's class weight).
        val_labels: (studies,) every readable validation study's label, in order (read on rank 0).
        device: where ``model`` is.
        run_key: the run's identity, written into the checkpoint (:attr:`PreparedRun.run_key`).
        checkpoint: a checkpoint of this run to resume after its last epoch.
        checkpoint_path: where rank 0 writes ``last.pt`` after every epoch; None writes none.
        rank: this process's rank (0 in a single process).
        world_size: processes training together.
        progress: rank 0 shows a bar per epoch.
        on_epoch: called on rank 0 with (epoch, metrics) once the epoch is checkpointed; the other ranks
            wait for it to return.
    """
    plain = cast(NormalFilterNet, model.module) if isinstance(model, DistributedDataParallel) else model
    on_cuda, lead = device.type == "cuda", rank == 0
    if checkpoint is not None:
        plain.load_state_dict(checkpoint["model"])
    loss_fn, optimiser, scheduler = _optimisation(plain, config, train_labels, device)
    state = _TrainingState.start(plain, checkpoint, optimiser, scheduler)
    if checkpoint is not None:
        if world_size == 1:  # replicas touch no other device's generator: every epoch re-seeds them anyway
            _restore_rng_states(checkpoint["rng"])
        if lead:
            log.info(
                "resuming from %s after epoch %d%s", checkpoint_path, state.first_epoch, " (finished)" * state.finished
            )
            before = int(checkpoint.get("world_size", 1))
            if before != world_size and not state.finished:
                log.warning(
                    "the checkpoint was written by %d process(es), this run has %d: the remaining epochs see other "
                    "batches than an uninterrupted run would",
                    before,
                    world_size,
                )

    sampler = train_loader.sampler
    drawn: list[int] = []
    show_progress = progress and lead
    for epoch in range(state.first_epoch, config.epochs):
        if state.finished:
            break
        started = time.perf_counter()
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(epoch)
        _seed_epoch(config.seed, epoch, augment, rank=rank)
        model.train()
        total, seen = 0.0, 0
        bar = tqdm(
            train_loader,
            desc=f"epoch {epoch + 1}/{config.epochs}",
            unit="batch",
            disable=not show_progress,
            leave=False,
        )
        for batch in bar:
            images, labels = batch["image"].to(device), batch["label"].float().to(device)
            weights = batch["weight"].float().to(device)
            if on_cuda and config.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            optimiser.zero_grad()
            with _autocast(on_cuda and config.amp):
                logits = model(images)
            loss = (loss_fn(logits.float(), labels) * weights).mean()
            loss.backward()  # DistributedDataParallel averages the gradients over the processes here
            optimiser.step()
            total += loss.item() * len(labels)
            seen += len(labels)
            if show_progress:
                bar.set_postfix(loss=f"{total / seen:.4f}")
        scheduler.step()
        drawn.append(seen)
        train_loss = total / seen
        if world_size > 1:
            sums = torch.tensor([total, seen], dtype=torch.float64, device=device)
            dist.all_reduce(sums)
            train_loss = float(sums[0] / sums[1])
            # Each process updated its batch-norm statistics on its own last batch: take rank 0's everywhere,
            # so that the validated, the checkpointed and every process's model are one model.
            for buffer in plain.buffers():
                dist.broadcast(buffer, src=0)
        probs = predict_probs(plain, val_loader, device)  # the plain module: no collective per batch
        if world_size > 1:
            slices: list[Any] | None = [None] * world_size if lead else None
            dist.gather_object(probs, slices, dst=0)
            probs = np.concatenate(slices) if slices is not None else probs
        decision: list[Any] = [None, None]
        if lead:
            metrics = {
                "train_loss": train_loss,
                "val_auroc": float(roc_auc_score(val_labels, probs)),
                "epoch_s": time.perf_counter() - started,
            }
            state.record(epoch, metrics, plain, config)
            if checkpoint_path is not None:
                rng = _rng_states(cuda=world_size == 1)
                saved = state.checkpoint(run_key, epoch, plain, optimiser, scheduler, rng, world_size)
                save_checkpoint(checkpoint_path, saved)
            if on_epoch is not None:
                on_epoch(epoch, metrics)
            decision = [metrics, state.finished]
        if world_size > 1:
            dist.broadcast_object_list(decision, src=0)  # one decision: every process stops at the same epoch
            if not lead:
                state.history.append(decision[0])
                state.finished = bool(decision[1])

    return FitResult(
        best_epoch=state.best_epoch,
        best_val_auroc=state.best_auroc,
        best_state=state.best_state,
        history=state.history,
        resumed_from_epoch=state.resumed_from,
        studies_per_epoch=tuple(drawn),
    )


def train(
    train_items: Sequence[dict],
    val_items: Sequence[dict],
    config: TrainConfig,
    *,
    init_model: NormalFilterNet | None = None,
    progress: bool = True,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    checkpoint_dir: Path | None = None,
    nproc: int | None = None,
) -> TrainResult:
    """Train a normal filter on ``train_items`` and keep the epoch with the best validation AUROC.

    Args:
        train_items: ``{"image": DICOM path, "label": 0 or 1}`` per study, optionally ``"weight"`` (the
            study's weight in the loss, default 1) and ``"study_id"`` (named when the study is skipped).
        val_items: the same for validation (early stopping and the threshold); weights are ignored.
        config: hyper-parameters.
        init_model: warm start from this model (copied), else from scratch.
        progress: show a bar per epoch.
        on_epoch: called with (epoch, metrics) after each epoch, once it is checkpointed (e.g. to log to MLflow).
        checkpoint_dir: where ``last.pt`` goes every epoch (default ``config.checkpoint_dir``); a checkpoint
            already there of the same run is resumed after its last finished epoch.
        nproc: training processes (the caller's setting, e.g. ``Settings.train_nproc``); None: one per
            visible CUDA device, a single process without CUDA. Above 1 the run goes through torchrun and
            DistributedDataParallel (:func:`pipeline.training.distributed.train_distributed`), where
            ``batch_size`` is per process.

    Raises:
        TrainingDataError: a set is empty or has one class (before any training; also once unreadable
            studies are left out).
        CheckpointMismatch: ``checkpoint_dir`` holds a checkpoint of another run.
        pipeline.training.distributed.TooFewDevices: more processes asked for than CUDA devices visible.
        pipeline.training.distributed.DistributedTrainingFailed: a process of a multi-process run failed.
    """
    _check_labels("training", train_items)
    _check_labels("validation", val_items)
    checkpoint_dir = checkpoint_dir if checkpoint_dir is not None else config.checkpoint_dir
    # imported here: `python -m pipeline.training.distributed` (each torchrun process) must find it not yet imported
    from pipeline.training.distributed import process_plan, train_distributed

    plan = process_plan(nproc)
    if plan.nproc > 1:
        return train_distributed(
            train_items,
            val_items,
            config,
            plan,
            init_model=init_model,
            progress=progress,
            on_epoch=on_epoch,
            checkpoint_dir=checkpoint_dir,
        )
    checkpoint_path = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir is not None else None
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = build_model(config, device, init_model)
    run = prepare_run(train_items, val_items, config, init_model=init_model, checkpoint_path=checkpoint_path)
    augment = finish(train=True)
    train_ds = Dataset(Subset(run.train_cache, run.train_kept), augment)  # type: ignore[arg-type]
    val_ds = Dataset(Subset(run.val_cache, run.val_kept), finish())  # type: ignore[arg-type]
    train_loader = DataLoader(train_ds, batch_size=config.batch_size, shuffle=True, num_workers=0)
    val_loader = DataLoader(val_ds, batch_size=config.batch_size * 2, shuffle=False, num_workers=0)
    fitted = fit(
        model,
        train_loader,
        val_loader,
        config,
        augment=augment,
        train_labels=run.train_labels,
        val_labels=run.val_labels,
        device=device,
        run_key=run.run_key,
        checkpoint=run.checkpoint,
        checkpoint_path=checkpoint_path,
        progress=progress,
        on_epoch=on_epoch,
    )
    val_probs, threshold = calibrate_best(
        model, fitted.best_state, val_loader, run.val_labels, config.target_sensitivity
    )
    return TrainResult(
        model,
        fitted.best_epoch,
        fitted.best_val_auroc,
        threshold,
        fitted.history,
        val_probs,
        run.val_labels,
        skipped=run.skipped,
        resumed_from_epoch=fitted.resumed_from_epoch,
    )


def _autocast(enabled: bool) -> contextlib.AbstractContextManager[Any]:
    """Return bfloat16 autocast on CUDA when ``enabled`` (no loss scaling needed), else a no-op."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if enabled else contextlib.nullcontext()
