"""What ``tests/conftest.py`` sets up for every test process: torch at the worker's share of the cores."""

from __future__ import annotations

import os
import subprocess
import sys

import torch


def test_a_worker_runs_torch_at_its_share_of_the_cores_and_so_do_the_processes_it_starts():
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    # under `make test` one thread each on two cores; in one process, torch's default (a thread per core)
    expected = max(1, (os.cpu_count() or 1) // int(workers)) if workers else torch.get_num_threads()
    started = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert (torch.get_num_threads(), int(started.stdout)) == (expected, expected)
