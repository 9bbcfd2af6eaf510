"""A real ``mlflow server`` process backed by PostgreSQL, proxying artifacts to a local directory."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pipeline.demo.stack.ports import free_port
from pipeline.demo.stack.process import ManagedProcess, find_executable, start_process

#: Environment variable overriding the ``mlflow`` executable.
MLFLOW_BIN_ENV = "MLFLOW_BIN"
#: First start runs the schema migrations on an empty database.
STARTUP_TIMEOUT = 180.0


@dataclass(frozen=True)
class MlflowServer:
    """A running tracking server."""

    tracking_uri: str
    backend_store_uri: str
    artifacts_dir: Path
    process: ManagedProcess


def find_mlflow_bin() -> Path:
    """``$MLFLOW_BIN``, else ``mlflow`` next to the running interpreter, else ``<repo>/.venv/bin/mlflow``."""
    return find_executable("mlflow", MLFLOW_BIN_ENV, "mlflow")


def start_mlflow_server(backend_store_uri: str, workdir: Path) -> MlflowServer:
    """Start ``mlflow server`` on a free loopback port and wait for ``/health``.

    Artifacts are proxied (``--serve-artifacts``): new experiments get ``mlflow-artifacts:/`` roots, so clients upload
    and download through the server and only the server touches ``workdir/artifacts``.
    """
    port = free_port()
    artifacts_dir = workdir / "artifacts"
    artifacts_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        str(find_mlflow_bin()),
        "server",
        "--backend-store-uri",
        backend_store_uri,
        "--serve-artifacts",
        "--artifacts-destination",
        str(artifacts_dir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        # Host-header validation (MLflow >= 3.5): the defaults already admit localhost, be explicit anyway.
        "--allowed-hosts",
        f"127.0.0.1:{port},localhost:{port}",
    ]
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        # The GenAI job runner forks a huey consumer with several workers: slow to start, unused here.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    process = start_process("mlflow server", argv, log_path=workdir / "mlflow-server.log", env=env, cwd=workdir)
    tracking_uri = f"http://127.0.0.1:{port}"
    process.wait_for_http(f"{tracking_uri}/health", timeout=STARTUP_TIMEOUT)
    return MlflowServer(
        tracking_uri=tracking_uri,
        backend_store_uri=backend_store_uri,
        artifacts_dir=artifacts_dir,
        process=process,
    )
