"""How many training processes a run uses: one per visible CUDA device, or as many as asked for."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from pipeline.config import Settings, get_settings
from pipeline.training.distributed import ProcessPlan, TooFewDevices, plan_processes, process_plan


@pytest.mark.parametrize(
    ("requested", "cuda_devices", "expected"),
    [
        (None, 0, ProcessPlan(1, "cpu", "gloo")),  # no GPU: one process, as always
        (None, 1, ProcessPlan(1, "cuda", "nccl")),  # one GPU: one process, as always
        (None, 4, ProcessPlan(4, "cuda", "nccl")),  # one process per visible GPU
        (2, 0, ProcessPlan(2, "cpu", "gloo")),  # forced on the CPU: gloo
        (2, 4, ProcessPlan(2, "cuda", "nccl")),  # fewer than the GPUs: the first two
        (1, 4, ProcessPlan(1, "cuda", "nccl")),  # forced down to a single process
    ],
)
def test_the_plan_follows_the_gpus_unless_a_count_is_asked_for(requested, cuda_devices, expected):
    assert plan_processes(requested, cuda_devices) == expected


def test_more_processes_than_gpus_is_refused_with_a_way_out():
    with pytest.raises(TooFewDevices, match=r"3 training processes .* 2 CUDA device\(s\) .*CUDA_VISIBLE_DEVICES"):
        plan_processes(3, 2)


def test_fewer_than_one_process_is_refused():
    with pytest.raises(ValueError, match="at least one process"):
        plan_processes(0, 0)


@pytest.fixture
def fresh_settings():
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_the_setting_forces_the_count_once_the_caller_passes_it(monkeypatch, fresh_settings):
    monkeypatch.delenv("PIPELINE_TRAIN_NPROC", raising=False)
    assert process_plan(get_settings().train_nproc, cuda_devices=0).nproc == 1
    get_settings.cache_clear()
    monkeypatch.setenv("PIPELINE_TRAIN_NPROC", "3")
    assert process_plan(get_settings().train_nproc, cuda_devices=0) == ProcessPlan(3, "cpu", "gloo")
    assert process_plan(2, cuda_devices=0).nproc == 2
    with pytest.raises(TooFewDevices):
        process_plan(get_settings().train_nproc, cuda_devices=2)
    # without the argument the plan reads no setting: one process per visible CUDA device, as None says
    assert process_plan(cuda_devices=0) == ProcessPlan(1, "cpu", "gloo")
    assert process_plan(cuda_devices=2) == ProcessPlan(2, "cuda", "nccl")


def test_the_distributed_module_reads_no_setting_nor_the_environment_nor_private_names():
    import ast
    import inspect

    import pipeline.training.distributed as distributed

    tree = ast.parse(inspect.getsource(distributed))
    imported = [
        (node.module, alias.name) for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) for alias in node.names
    ]
    modules = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    assert not [m for m, _ in imported if m and m.startswith("pipeline.config")]
    assert not [m for m in modules if m.startswith("pipeline.config")]
    assert not [(m, name) for m, name in imported if m and m.startswith("pipeline.") and name.startswith("_")]
    reads = [
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "putenv", "environb")
    ]
    assert reads == []


def test_the_setting_must_be_a_positive_count(monkeypatch):
    monkeypatch.setenv("PIPELINE_TRAIN_NPROC", "0")
    with pytest.raises(ValidationError, match="train_nproc"):
        Settings()
