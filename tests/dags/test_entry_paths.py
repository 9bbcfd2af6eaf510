"""One code path per stage: the DAG task and the CLI command of a stage run the same ``pipeline.entry`` function."""

from __future__ import annotations

import ast
import importlib
import inspect
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.dags

DAGS_DIR = Path(__file__).resolve().parents[2] / "dags"


def entry_functions(function: Callable[..., Any]) -> set[Callable[..., Any]]:
    """The ``pipeline.entry`` functions ``function``'s body names (called, or handed on), read from its source."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    modules: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "pipeline.entry":
            modules.update({a.asname or a.name: f"pipeline.entry.{a.name}" for a in node.names})
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules:
            attribute = getattr(importlib.import_module(modules[node.value.id]), node.attr)
            if inspect.isfunction(attribute):
                found.add(attribute)
    return found


@pytest.fixture(scope="module")
def dags(airflow_db) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS_DIR))
    assert bag.import_errors == {}
    return bag.dags


def dag_task(dags: dict[str, Any], dag_id: str, task_id: str) -> Callable[..., Any]:
    return dags[dag_id].get_task(task_id).python_callable


def cli_command(*path: str) -> Callable[..., Any]:
    from pipeline.cli import main

    command: Any = main
    for name in path:
        command = command.commands[name]
    return command.callback


STAGES = {
    # stage: (DAG, task, CLI command, the entry function both run)
    "store: schema": ("ingest_inference_logs", "migrate_store", ("db", "upgrade"), "store.migrate"),
    "store: batch files": (
        "ingest_inference_logs",
        "ingest_landed_batches",
        ("ingest-landing",),
        "store.ingest_landing",
    ),
    "monitoring": ("monitor_inference", "check_window", ("monitor",), "monitoring.check_window"),
    "labeling: selection": ("select_for_relabeling", "select", ("select",), "labeling.select"),
    "labeling: push": ("select_for_relabeling", "push", ("push",), "labeling.push"),
    "labeling: sync": ("sync_annotations", "sync", ("sync",), "labeling.sync"),
    "training": ("retrain_model", "train_candidate", ("train",), "training.retrain"),
    "release: validation": ("validate_candidate", "validate", ("validate",), "release.validate"),
    "release: approval": ("promote_model", "decide", ("promote",), "release.decide"),
    "release: rejection": ("promote_model", "decide", ("reject",), "release.decide"),
    "release: rollback": ("rollback_model", "roll_back", ("rollback",), "release.rollback"),
}


@pytest.mark.parametrize("stage", list(STAGES))
def test_the_dag_task_and_the_cli_command_of_a_stage_run_the_same_entry_function(dags, stage: str) -> None:
    dag_id, task_id, command, name = STAGES[stage]
    module, function = name.split(".")
    expected = getattr(importlib.import_module(f"pipeline.entry.{module}"), function)
    by_task = entry_functions(dag_task(dags, dag_id, task_id))
    by_command = entry_functions(cli_command(*command))
    assert expected in by_task, f"{dag_id}.{task_id} does not run {name}: it runs {by_task}"
    assert expected in by_command, f"`pipeline {' '.join(command)}` does not run {name}: it runs {by_command}"


def test_every_dag_task_that_calls_the_library_goes_through_an_entry(dags) -> None:
    """A task's body imports ``pipeline.entry`` only: no task wires a stage itself."""
    for dag_id, dag in dags.items():
        for task in dag.tasks:
            callable_ = getattr(task, "python_callable", None)
            if callable_ is None:
                continue
            tree = ast.parse(textwrap.dedent(inspect.getsource(callable_)))
            imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
            wired = {m for m in imported if m.startswith("pipeline") and not m.startswith("pipeline.entry")}
            assert not wired, f"{dag_id}.{task.task_id} imports {sorted(wired)}: call a pipeline.entry function"
