"""Training on several processes: torchrun starts them, DistributedDataParallel (DDP) keeps their models equal.

:func:`pipeline.training.train` comes here when :func:`process_plan` asks for more than one process: one
per visible CUDA device (NCCL), or the ``nproc`` processes its caller asks for (the setting
``PIPELINE_TRAIN_NPROC``, read by the caller), on the CPU (gloo) when no CUDA device is visible. This module reads
no setting and no environment variable of its own. The caller's process (the Airflow task, the CLI) stays the
only one that talks to the world:

1. it checks the data and the checkpoint as a single process does (same exceptions, raised before any
   process starts) and decodes every study once into a disk cache the processes share;
2. it runs ``python -m torch.distributed.run --standalone`` on this module with a run folder holding the
   specification (items, config, warm start, threads per process);
3. every process runs :func:`pipeline.training.train.fit`, the epoch loop of a single process, on a
   DistributedDataParallel model: it trains on its :class:`~torch.utils.data.DistributedSampler` share of the
   training set (``batch_size`` studies per process and step) and predicts its slice of the validation set;
   rank 0 gathers the predictions, computes the validation AUROC and the early-stopping decision, writes the
   checkpoint (the plain model's weights, loadable by a single process), reports the epoch and waits
   until the caller has run ``on_epoch`` (an MLflow logger, say) before it broadcasts the decision, so
   every rank stops at the same epoch and a failing callback stops the run after that epoch's
   checkpoint, as in a single process;
4. rank 0 writes the best weights and a JSON summary; the caller calibrates the head and picks the
   threshold exactly as a single process does and returns the same :class:`TrainResult`.

A run stopped anywhere resumes from rank 0's last checkpoint, with any number of processes.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import torch

    from pipeline.model import NormalFilterNet
    from pipeline.training.train import TrainConfig, TrainResult

#: What torchrun runs in each process (``-m``); as ``__main__`` there, so the logger is named after it.
MODULE = "pipeline.training.distributed"
log = logging.getLogger(MODULE)

SPEC_NAME = "spec.json"
RESULT_NAME = "result.json"
BEST_NAME = "best.pt"
INIT_NAME = "init.pt"
POLL_S = 0.05
STOP_GRACE_S = 60.0


class TooFewDevices(ValueError):
    """More training processes were asked for than CUDA devices are visible (NCCL needs one device per process)."""


class DistributedTrainingFailed(RuntimeError):
    """A process of a multi-process training failed; the message names the first failure and its cause."""


@dataclass(frozen=True)
class ProcessPlan:
    """How a training runs: ``nproc`` processes on ``device`` talking through ``backend`` (unused for one)."""

    nproc: int
    device: Literal["cuda", "cpu"]
    backend: Literal["nccl", "gloo"]


def plan_processes(requested: int | None, cuda_devices: int) -> ProcessPlan:
    """Return the processes a training uses: ``requested`` if given, else one per CUDA device (at least one).

    Args:
        requested: processes asked for (``nproc``), None to follow the devices.
        cuda_devices: CUDA devices visible to this process (``torch.cuda.device_count()``).

    Raises:
        ValueError: ``requested`` is below 1.
        TooFewDevices: more than one process asked for, and CUDA devices visible but fewer than that.
    """
    if requested is not None and requested < 1:
        raise ValueError(f"a training needs at least one process, got {requested}")
    nproc = requested if requested is not None else max(1, cuda_devices)
    if cuda_devices == 0:
        return ProcessPlan(nproc, "cpu", "gloo")
    if nproc > cuda_devices:
        raise TooFewDevices(
            f"{nproc} training processes asked for (nproc or PIPELINE_TRAIN_NPROC) but {cuda_devices} CUDA "
            f"device(s) visible: ask for at most {cuda_devices}, or hide the GPUs (CUDA_VISIBLE_DEVICES=) to "
            "train on the CPU"
        )
    return ProcessPlan(nproc, "cuda", "nccl")


def process_plan(nproc: int | None = None, *, cuda_devices: int | None = None) -> ProcessPlan:
    """Return :func:`plan_processes` for ``nproc`` and the CUDA devices visible to this process.

    Args:
        nproc: processes asked for, the caller's setting (``Settings.train_nproc``); None: one per visible
            CUDA device, a single process without CUDA.
        cuda_devices: CUDA devices to plan for, default ``torch.cuda.device_count()``.
    """
    import torch

    return plan_processes(nproc, torch.cuda.device_count() if cuda_devices is None else cuda_devices)


# --- the caller's side -------------------------------------------------------------------------------------------


def train_distributed(
    train_items: Sequence[dict],
    val_items: Sequence[dict],
    config: TrainConfig,
    plan: ProcessPlan,
    *,
    init_model: NormalFilterNet | None = None,
    progress: bool = True,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    checkpoint_dir: Path | None = None,
) -> TrainResult:
    """Train as :func:`pipeline.training.train` does, in ``plan.nproc`` torchrun processes; return its result.

    Args:
        train_items: as :func:`pipeline.training.train`.
        val_items: as :func:`pipeline.training.train`.
        config: hyper-parameters; ``batch_size`` is per process. Without ``cache_dir`` the decoded studies
            go to a temporary folder the processes share, removed at the end.
        plan: processes, device and backend (:func:`process_plan`).
        init_model: warm start from this model, else from scratch.
        progress: rank 0 shows a bar per epoch.
        on_epoch: called here with (epoch, metrics) once rank 0 has checkpointed the epoch; the processes
            wait for it to return.
        checkpoint_dir: where rank 0 writes ``last.pt`` every epoch; one of the same run is resumed.

    Raises:
        TrainingDataError: as :func:`pipeline.training.train`, before any process starts.
        CheckpointMismatch: as :func:`pipeline.training.train`, before any process starts.
        DistributedTrainingFailed: a process failed (the first failure's type and message).
    """
    import numpy as np
    import torch
    from monai.data import DataLoader, Dataset
    from torch.utils.data import Subset

    from pipeline.model import NormalFilterNet, finish
    from pipeline.training.train import CHECKPOINT_NAME, TrainResult, calibrate_best, prepare_run

    checkpoint_path = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir is not None else None
    run_dir = Path(tempfile.mkdtemp(prefix="pipeline-ddp-"))
    try:
        # Decoded once, here, into a cache on disk: the processes read it and never decode (nor race to write).
        shared = dataclasses.replace(config, cache_dir=config.cache_dir or run_dir / "cache")
        run = prepare_run(train_items, val_items, shared, init_model=init_model, checkpoint_path=checkpoint_path)
        if init_model is not None:
            torch.save(init_model.state_dict(), run_dir / INIT_NAME)
        spec = {
            "config": dataclasses.asdict(shared),
            "init_net": dataclasses.asdict(init_model.config) if init_model is not None else None,
            "train": run.train,
            "val": run.val,
            "train_kept": run.train_kept,
            "val_kept": run.val_kept,
            "checkpoint": str(checkpoint_path) if checkpoint_path is not None else None,
            "run_key": run.run_key,
            "device": plan.device,
            "backend": plan.backend,
            "progress": progress,
            "parent_pid": os.getpid(),
            # torchrun gives each process one thread; on the CPU that would leave most cores idle
            "threads_per_process": max(1, _cpu_count() // plan.nproc),
        }
        (run_dir / SPEC_NAME).write_text(json.dumps(spec, default=str))
        log.info(
            "training on %d processes (%s, %s), %d studies per process and step",
            plan.nproc,
            plan.device,
            plan.backend,
            config.batch_size,
        )
        _run_processes(run_dir, plan.nproc, on_epoch)

        summary = json.loads((run_dir / RESULT_NAME).read_text())
        best_state = torch.load(run_dir / BEST_NAME, map_location="cpu", weights_only=True)
        model = copy.deepcopy(init_model) if init_model is not None else NormalFilterNet(config.net)
        val_loader = DataLoader(
            Dataset(Subset(run.val_cache, run.val_kept), finish()),  # type: ignore[arg-type]
            batch_size=config.batch_size * 2,
            shuffle=False,
            num_workers=0,
        )
        val_probs, threshold = calibrate_best(model, best_state, val_loader, run.val_labels, config.target_sensitivity)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    return TrainResult(
        model,
        int(summary["best_epoch"]),
        float(summary["best_val_auroc"]),
        threshold,
        [dict(h) for h in summary["history"]],
        np.asarray(val_probs),
        run.val_labels,
        skipped=run.skipped,
        resumed_from_epoch=summary["resumed_from_epoch"],
        world_size=int(summary["world_size"]),
        studies_per_rank=tuple(tuple(int(n) for n in rank) for rank in summary["studies_per_rank"]),
    )


def _run_processes(run_dir: Path, nproc: int, on_epoch: Callable[[int, dict[str, float]], None] | None) -> None:
    """Run torchrun on ``run_dir`` and answer rank 0's epoch reports until it exits; raise if a process failed."""
    (run_dir / "epochs").mkdir()
    (run_dir / "acks").mkdir()
    (run_dir / "errors").mkdir()
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        MODULE,
        str(run_dir),
    ]
    process = subprocess.Popen(command)  # the environment is inherited: the spec carries what the processes need
    try:
        answered = -1
        while True:
            exited = process.poll()
            for epoch, metrics in _reports(run_dir, after=answered):
                if on_epoch is not None:
                    on_epoch(epoch, metrics)
                (run_dir / "acks" / str(epoch)).touch()
                answered = epoch
            if exited is not None:
                break
            time.sleep(POLL_S)
    finally:
        if process.poll() is None:  # the callback raised, or this process is being stopped
            process.terminate()  # torchrun stops its workers on SIGTERM
            try:
                process.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    if exited != 0:
        raise DistributedTrainingFailed(_failure(run_dir, nproc, exited))


def _reports(run_dir: Path, *, after: int) -> list[tuple[int, dict[str, float]]]:
    """Return rank 0's epoch reports later than epoch ``after``, in order."""
    found = sorted(int(p.stem) for p in (run_dir / "epochs").glob("*.json"))
    return [(e, json.loads((run_dir / "epochs" / f"{e}.json").read_text())) for e in found if e > after]


def _failure(run_dir: Path, nproc: int, exit_code: int) -> str:
    """Return what failed first, from the error files the processes left (else torchrun's exit code)."""
    errors = [json.loads(p.read_text()) for p in (run_dir / "errors").glob("*.json")]
    if not errors:
        return f"torchrun exited with code {exit_code} and no training process reported an error (see its log)"
    first = min(errors, key=lambda e: e["time"])
    log.error("training process %d of %d failed:\n%s", first["rank"], nproc, first["traceback"])
    return f"training process {first['rank']} of {nproc} failed first: {first['type']}: {first['message']}"


def _cpu_count() -> int:
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else os.cpu_count() or 1


def _write_json(path: Path, value: Any) -> None:
    """Write ``value`` as JSON to ``path`` atomically: the caller polls the folder and must never read half a file."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(value))
    os.replace(partial, path)


# --- the processes' side -----------------------------------------------------------------------------------------


def _config(fields: dict[str, Any]) -> TrainConfig:
    """Return the :class:`TrainConfig` of its JSON form (``dataclasses.asdict``, paths as text)."""
    from pipeline.model import NetConfig
    from pipeline.training.train import TrainConfig

    net = NetConfig(**{**fields["net"], "block_config": tuple(fields["net"]["block_config"])})
    paths = {k: Path(fields[k]) if fields[k] is not None else None for k in ("checkpoint_dir", "cache_dir")}
    return TrainConfig(**{**fields, "net": net, **paths})


def _exit_with(parent_pid: int) -> None:
    """Exit this process when ``parent_pid`` is gone (a killed Airflow task must not leave training behind)."""

    def watch() -> None:
        while True:
            try:
                os.kill(parent_pid, 0)
            except ProcessLookupError:
                log.error("the training's parent process %d is gone: stopping", parent_pid)
                os._exit(1)
            time.sleep(1.0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _await_ack(run_dir: Path, epoch: int) -> None:
    ack = run_dir / "acks" / str(epoch)
    while not ack.exists():
        time.sleep(POLL_S)


def _train_replica(run_dir: Path, spec: dict[str, Any], rank: int, world: int, device: torch.device) -> None:
    """Run one process's share of the training (:func:`pipeline.training.train.fit`); rank 0 writes the result."""
    import numpy as np
    import torch
    import torch.distributed as dist
    from monai.data import DataLoader, Dataset
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data import Subset
    from torch.utils.data.distributed import DistributedSampler

    from pipeline.model import NetConfig, NormalFilterNet, finish
    from pipeline.training.train import build_model, fit, load_checkpoint, prepared_dataset

    config = _config(spec["config"])
    checkpoint_path = Path(spec["checkpoint"]) if spec["checkpoint"] is not None else None
    init = None
    if spec["init_net"] is not None:
        net = spec["init_net"]
        init = NormalFilterNet(NetConfig(**{**net, "block_config": tuple(net["block_config"])}))
        init.load_state_dict(torch.load(run_dir / INIT_NAME, map_location="cpu", weights_only=True))
    model = build_model(config, device, init)  # seeded: rank 0 starts from a single process's weights
    ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    items, val = spec["train"], spec["val"]
    train_kept, val_kept = spec["train_kept"], spec["val_kept"]
    augment = finish(train=True)
    train_ds = Dataset(Subset(prepared_dataset(items, config), train_kept), augment)  # type: ignore[arg-type]
    sampler: DistributedSampler[Any] = DistributedSampler(
        train_ds, num_replicas=world, rank=rank, shuffle=True, seed=config.seed
    )
    train_loader = DataLoader(train_ds, batch_size=config.batch_size, sampler=sampler, num_workers=0)
    # each process predicts a contiguous slice of the validation set; rank 0 puts the slices back in order
    my_val = [val_kept[i] for i in np.array_split(np.arange(len(val_kept)), world)[rank]]
    val_ds = Dataset(Subset(prepared_dataset(val, config), my_val), finish())  # type: ignore[arg-type]
    val_loader = DataLoader(val_ds, batch_size=config.batch_size * 2, shuffle=False, num_workers=0)

    def report(epoch: int, metrics: dict[str, float]) -> None:
        _write_json(run_dir / "epochs" / f"{epoch}.json", metrics)
        _await_ack(run_dir, epoch)  # the caller's on_epoch has returned

    fitted = fit(
        ddp,
        train_loader,
        val_loader,
        config,
        augment=augment,
        train_labels=np.array([items[i]["label"] for i in train_kept], dtype=np.int64),
        val_labels=np.array([val[i]["label"] for i in val_kept], dtype=np.int64),
        device=device,
        run_key=spec["run_key"],
        checkpoint=load_checkpoint(checkpoint_path) if checkpoint_path is not None else None,
        checkpoint_path=checkpoint_path,
        rank=rank,
        world_size=world,
        progress=bool(spec["progress"]),
        on_epoch=report,
    )

    per_rank: list[Any] | None = [None] * world if rank == 0 else None
    dist.gather_object(list(fitted.studies_per_epoch), per_rank, dst=0)
    if rank == 0:
        torch.save({k: v.cpu() for k, v in fitted.best_state.items()}, run_dir / BEST_NAME)
        _write_json(
            run_dir / RESULT_NAME,
            {
                "best_epoch": fitted.best_epoch,
                "best_val_auroc": fitted.best_val_auroc,
                "history": fitted.history,
                "resumed_from_epoch": fitted.resumed_from_epoch,
                "world_size": world,
                "studies_per_rank": per_rank,
            },
        )


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of one torchrun process: ``python -m pipeline.training.distributed RUN_DIR``."""
    import torch
    import torch.distributed as dist

    from pipeline.logs import configure_logging

    run_dir = Path((argv if argv is not None else sys.argv[1:])[0])
    spec = json.loads((run_dir / SPEC_NAME).read_text())
    _exit_with(int(spec["parent_pid"]))
    torch.set_num_threads(int(spec["threads_per_process"]))
    # torchrun tells each process its place; torch reads it: the node-local rank names the device, and on one
    # node (--standalone) it is the rank too, until the process group says so
    rank = dist.get_node_local_rank()
    try:
        if spec["device"] == "cuda":
            device = torch.device("cuda", rank)
            torch.cuda.set_device(device)
        else:
            device = torch.device("cpu")
        dist.init_process_group(spec["backend"], device_id=device if device.type == "cuda" else None)
        try:
            rank = dist.get_rank()
            configure_logging(None if rank == 0 else "WARNING")  # one process tells the story
            _train_replica(run_dir, spec, rank, dist.get_world_size(), device)
        finally:
            dist.destroy_process_group()
    except Exception as exc:
        _write_json(
            run_dir / "errors" / f"{rank}.json",
            {
                "rank": rank,
                "time": time.time(),
                "type": type(exc).__name__,
                "message": str(exc),
                "traceback": traceback.format_exc(),
            },
        )
        raise


if __name__ == "__main__":
    main()
