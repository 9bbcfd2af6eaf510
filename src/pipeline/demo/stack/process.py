"""Start a service as a subprocess, wait until it answers over HTTP, and stop its whole process group."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.demo.stack import REPO_ROOT

#: Seconds between two readiness probes.
POLL_INTERVAL = 0.25

# Readiness probes go straight to loopback, whatever *_proxy variables say.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def find_executable(name: str, env_var: str, package: str) -> Path:
    """``$env_var``, else ``name`` next to the running interpreter, else ``<repo>/.venv/bin/name``, else on PATH."""
    if override := os.environ.get(env_var):
        return Path(override)
    for candidate in (Path(sys.executable).parent / name, REPO_ROOT / ".venv" / "bin" / name):
        if candidate.exists():
            return candidate
    if found := shutil.which(name):
        return Path(found)
    raise FileNotFoundError(f"{name} executable not found; install {package} in .venv or set {env_var}")


class ServiceStartError(RuntimeError):
    """A service did not come up; the message carries the tail of its log."""


def log_tail(path: Path, lines: int = 60) -> str:
    """Return the last ``lines`` lines of a log file (empty string if it does not exist)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def http_status(url: str, headers: Mapping[str, str] | None = None, timeout: float = 5.0) -> int | None:
    """GET ``url`` and return the HTTP status code, or None when nothing answered."""
    request = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError):
        return None


@dataclass
class ManagedProcess:
    """A subprocess in its own process group, logging to ``log_path``."""

    name: str
    argv: list[str]
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        """Process id (also the process group id)."""
        return self.popen.pid

    def is_running(self) -> bool:
        """True while the group leader has not exited."""
        return self.popen.poll() is None

    def log_tail(self, lines: int = 60) -> str:
        """Last lines of the process log."""
        return log_tail(self.log_path, lines)

    def describe_failure(self, reason: str) -> str:
        """A readable error message with the command line and the log tail."""
        return (
            f"{self.name} {reason}\ncommand: {' '.join(self.argv)}\n"
            f"--- last lines of {self.log_path} ---\n{self.log_tail()}"
        )

    def wait_for_http(
        self,
        url: str,
        *,
        timeout: float,
        headers: Mapping[str, str] | None = None,
        ready: Callable[[int], bool] = lambda status: status == 200,
        check_log: Callable[[str], str | None] | None = None,
    ) -> float:
        """Poll ``url`` until ``ready(status)``; return seconds waited.

        On timeout, early exit, or when ``check_log(log_text)`` returns an error message, the process is stopped
        and :class:`ServiceStartError` is raised with the tail of the log.
        """
        started = time.monotonic()
        last_status: int | None = None
        while True:
            if not self.is_running():
                self.stop()
                raise ServiceStartError(
                    self.describe_failure(f"exited with code {self.popen.returncode} before {url} answered")
                )
            last_status = http_status(url, headers)
            if last_status is not None and ready(last_status):
                return time.monotonic() - started
            if check_log is not None and (problem := check_log(self.log_tail(200))):
                self.stop()
                raise ServiceStartError(self.describe_failure(problem))
            if time.monotonic() - started > timeout:
                self.stop()
                raise ServiceStartError(
                    self.describe_failure(f"did not answer {url} within {timeout:.0f}s (last status: {last_status})")
                )
            time.sleep(POLL_INTERVAL)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the process group, then SIGKILL it if it is still alive after ``timeout`` seconds."""
        atexit.unregister(self.stop)
        if self.is_running():
            _signal_group(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _signal_group(self.pid, signal.SIGKILL)
                self.popen.wait(timeout=timeout)
        # Children (uvicorn workers, ...) may outlive the leader: sweep the group.
        _signal_group(self.pid, signal.SIGKILL)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def start_process(
    name: str,
    argv: Sequence[str],
    *,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> ManagedProcess:
    """Start ``argv`` in a new session (own process group), stdout+stderr to ``log_path``.

    The process is also stopped by an ``atexit`` hook, so an interrupted test session does not leak it.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log_file:
        popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
    proc = ManagedProcess(name=name, argv=list(argv), popen=popen, log_path=log_path)
    atexit.register(proc.stop)
    return proc
