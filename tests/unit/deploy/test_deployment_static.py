"""Static checks of the production-shaped deployment: docker-compose.yml, docker/, .env.example.

No Docker engine runs in this project's CI, so nothing here builds an image or starts a container. The checks
read the files and hold them against each other and against the repository: paths that must exist in a clean
clone, variables that .env.example must define, host ports, healthchecks, start-up order, Compose's own keys,
Airflow's option names (from the pinned Airflow's config.yml), the DAG and plugin folders, the queues the DAGs use,
the GPU worker, Label Studio's local files, the roles and databases docker/postgres/init.sh creates, MLflow's
Host-header list, the versions the images install against the constraints, the Grafana dashboards' SQL against
the tables and columns the store's migrations create, and docs/deploy.md's coverage.

Every checker returns a list of problems. Each is run on the real files (no problem expected) and on a
deliberately broken copy (the problem must be found), so a checker that accepts everything fails too.
"""

from __future__ import annotations

import ast
import base64
import binascii
import copy
import fnmatch
import importlib.util
import json
import re
import shlex
import subprocess
import tomllib
from collections.abc import Callable, Collection, Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version
from sqlalchemy import MetaData

import pipeline.executors
from pipeline.config import Settings
from pipeline.store.schema import metadata as store_metadata

REPO_ROOT = Path(__file__).resolve().parents[3]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
ENV_EXAMPLE = REPO_ROOT / ".env.example"
POSTGRES_INIT = REPO_ROOT / "docker" / "postgres" / "init.sh"
GRAFANA = REPO_ROOT / "docker" / "grafana"
DATASOURCE_FILE = GRAFANA / "provisioning" / "datasources" / "store.yml"
DASHBOARD_PROVIDER_FILE = GRAFANA / "provisioning" / "dashboards" / "dashboards.yml"
DASHBOARDS = GRAFANA / "dashboards"
DASHBOARD_FILE = DASHBOARDS / "inference.json"
MONITORING_DASHBOARD_FILE = DASHBOARDS / "monitoring.json"
DOCKERFILES = {name: REPO_ROOT / "docker" / f"{name}.Dockerfile" for name in ("airflow", "gpu-worker", "mlflow")}
DEPLOY_DOC = REPO_ROOT / "docs" / "deploy.md"

Compose = dict[str, Any]
Problems = list[str]

# Variables Compose itself reads from .env; they may be defined without the compose file using them.
COMPOSE_OWN_VARIABLES = frozenset(
    {"COMPOSE_PROJECT_NAME", "COMPOSE_PROFILES", "COMPOSE_FILE", "DOCKER_DEFAULT_PLATFORM"}
)
# The settings the workers must receive (README "Configuration").
REQUIRED_PIPELINE_ENV = (
    "PIPELINE_DB_URL",
    "PIPELINE_STORAGE_ROOT",
    "PIPELINE_MLFLOW_TRACKING_URI",
    "PIPELINE_MODEL_NAME",
    "PIPELINE_LABEL_STUDIO_URL",
    "PIPELINE_LABEL_STUDIO_TOKEN",
    "PIPELINE_SENTRY_DSN",
    "PIPELINE_PSEUDONYM_KEY",
)
# Each dashboard's panels, and the columns each must query.
EXPECTED_PANELS = {
    "Studies per site per hour": {"inference_logs": {"site", "study_id", "received_at"}},
    "Error rate by error_type": {"inference_logs": {"error_type", "received_at"}},
    "Share of decision = normal per site": {"inference_logs": {"decision", "site", "status", "received_at"}},
    "Latency p95": {"inference_logs": {"latency_s", "received_at"}},
}
_WINDOW_COLUMNS = {"window_start", "site", "model_version", "metric", "value"}
EXPECTED_MONITORING_PANELS = {
    "Share filtered as normal per site": {"monitor_metrics": _WINDOW_COLUMNS},
    "Studies per monitoring window": {"monitor_metrics": _WINDOW_COLUMNS},
    "Failed studies per site": {"monitor_metrics": _WINDOW_COLUMNS},
    "Latency p95 of successful studies": {"monitor_metrics": _WINDOW_COLUMNS},
    "Features drifting per site": {"monitor_metrics": _WINDOW_COLUMNS},
    "Expected AUROC per site (estimated without labels)": {"monitor_metrics": _WINDOW_COLUMNS},
    "Open alerts": {"alerts": {"status", "severity", "site", "feature", "message", "last_seen"}},
    "Model registry events": {"model_events": {"at", "version", "action", "actor"}},
}
# The metric (monitor_metrics.metric) each panel of the monitoring dashboard is about.
EXPECTED_PANEL_METRICS = {
    "Share filtered as normal per site": "share_filtered_normal",
    "Studies per monitoring window": "volume",
    "Failed studies per site": "error_rate.any",
    "Latency p95 of successful studies": "latency_p95_s",
    "Features drifting per site": "drift.features_drifted",
    "Expected AUROC per site (estimated without labels)": "performance.expected_auroc",
}
# Sections docs/deploy.md must have (a heading starting so), and what each must mention (in its subsections too).
REQUIRED_DOC_SECTIONS = {
    "Services": ("healthcheck",),
    "Volumes": (),
    "Secrets and `.env`": (".env.example",),
    "Scale out": ("Celery", "KubernetesExecutor", "GPU node pool", "object storage"),
    "More Celery workers": ("--scale airflow-worker", "airflow celery worker --queues default"),
    "KubernetesExecutor with a GPU node pool": ("src/pipeline/executors.py", "gpu_executor_config", "pod_override"),
    "MLflow behind object storage": ("--artifacts-destination", "S3"),
    "Backups": ("pg_dump", "mc mirror", "pipeline-storage", ".env"),
    "Upgrading": ("pipeline db upgrade", "airflow db migrate", "mlflow db upgrade", "migrations/versions"),
}
EXPECTED_DASHBOARDS = {DASHBOARD_FILE.name: EXPECTED_PANELS, MONITORING_DASHBOARD_FILE.name: EXPECTED_MONITORING_PANELS}


# --- Reading the files ----------------------------------------------------------------------------------------------
def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def read_env_file(path: Path) -> tuple[dict[str, str], Problems]:
    """``KEY=VALUE`` lines of a dotenv file (comments and blank lines skipped), and its malformed or repeated keys."""
    values: dict[str, str] = {}
    problems: Problems = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)", line)
        if match is None:
            problems.append(f"{path.name}:{number}: not a KEY=VALUE line: {raw!r}")
            continue
        key, value = match.groups()
        if key in values:
            problems.append(f"{path.name}:{number}: {key} is defined twice")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values, problems


@cache
def _real_compose_text() -> str:
    return COMPOSE_FILE.read_text(encoding="utf-8")


def real_compose() -> Compose:
    """A fresh copy of docker-compose.yml (anchors and merge keys resolved), safe to mutate."""
    return yaml.safe_load(_real_compose_text())


def real_env() -> dict[str, str]:
    return read_env_file(ENV_EXAMPLE)[0]


# --- Compose interpolation --------------------------------------------------------------------------------------------
_DOLLAR = re.compile(r"\$(\$|\{([^}]*)\}|[A-Za-z_][A-Za-z0-9_]*)?")
_BRACED = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])(.*))?", re.DOTALL)


def _substitute(text: str, env: Mapping[str, str] | None, used: set[str], problems: Problems) -> str:
    def replace(match: re.Match[str]) -> str:
        token, braced = match.group(1), match.group(2)
        if token is None:
            problems.append(f"stray '$' in {text!r} (write $$ for a literal dollar)")
            return "$"
        if token == "$":
            return "$"
        if braced is None and not token.startswith("{"):
            used.add(token)
            return (env or {}).get(token, "")
        parsed = _BRACED.fullmatch(braced or "")
        if parsed is None:
            problems.append(f"invalid interpolation ${{{braced}}} in {text!r}")
            return ""
        name, operator, argument = parsed.groups()
        used.add(name)
        value = None if env is None else env.get(name)
        if operator in (":-", "-"):
            unset = value is None or (operator == ":-" and value == "")
            return argument if unset else str(value)
        if operator in (":+", "+"):
            is_set = value is not None and (operator == "+" or value != "")
            return argument if is_set else ""
        return value or ""  # plain, or ?/:? (an error message when unset, checked by check_variables)

    return _DOLLAR.sub(replace, text)


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """``text`` as Compose would pass it on, with ``env`` as the .env file."""
    return _substitute(text, env, set(), [])


def variables_in(text: str) -> tuple[set[str], Problems]:
    """Names of the variables ``text`` interpolates (``$$`` is an escaped dollar, not a variable)."""
    used: set[str] = set()
    problems: Problems = []
    _substitute(text, None, used, problems)
    return used, problems


def strings_in(node: Any) -> Iterator[str]:
    """Every string value in a parsed YAML tree (keys are not interpolated by Compose)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, Mapping):
        for value in node.values():
            yield from strings_in(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings_in(value)


def interpolate_tree(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, Mapping):
        return {key: interpolate_tree(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate_tree(value, env) for value in node]
    return node


# --- Small readers of compose service definitions -------------------------------------------------------------------
def services(compose: Compose) -> dict[str, dict[str, Any]]:
    return compose.get("services") or {}


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.split("=", 1) if "=" in item else (item, "") for item in env)
        return {key: value for key, value in pairs}
    return {str(key): "" if value is None else str(value) for key, value in env.items()}


def command_tokens(service: Mapping[str, Any]) -> list[str]:
    command = service.get("command") or []
    return shlex.split(command) if isinstance(command, str) else [str(token) for token in command]


def is_one_shot(service: Mapping[str, Any]) -> bool:
    """A job that runs to completion (init, bucket creation) rather than a long-running service."""
    restart = service.get("restart")
    return restart is False or restart == "no" or str(restart).startswith("on-failure")  # `no` unquoted is False


def has_healthcheck(service: Mapping[str, Any]) -> bool:
    check = service.get("healthcheck")
    if not isinstance(check, Mapping) or check.get("disable") is True:
        return False
    test = check.get("test")
    if isinstance(test, str):
        return bool(test.strip()) and test.strip() != "NONE"
    return isinstance(test, list) and len(test) >= 2 and test[0] in ("CMD", "CMD-SHELL")


def celery_queues(tokens: list[str]) -> list[str] | None:
    """Queues of an ``airflow celery worker`` command; None when ``tokens`` is not such a command."""
    if "celery" not in tokens or "worker" not in tokens:
        return None
    for index, token in enumerate(tokens):
        if token in ("--queues", "-q") and index + 1 < len(tokens):
            return [queue.strip() for queue in tokens[index + 1].split(",") if queue.strip()]
        if token.startswith("--queues="):
            return [queue.strip() for queue in token.split("=", 1)[1].split(",") if queue.strip()]
    return ["default"]  # [operators] default_queue


def reserves_nvidia_gpu(service: Mapping[str, Any]) -> bool:
    devices = (((service.get("deploy") or {}).get("resources") or {}).get("reservations") or {}).get("devices") or []
    for device in devices:
        count = device.get("count")
        enough = count == "all" or (isinstance(count, int) and count >= 1) or bool(device.get("device_ids"))
        if device.get("driver") == "nvidia" and "gpu" in (device.get("capabilities") or []) and enough:
            return True
    return False


# --- Git: would a path exist in a clean clone? ----------------------------------------------------------------------
def _git_ignored(repo: Path, files: list[Path]) -> set[Path] | None:
    """The files git ignores; None when ``repo`` is not a git work tree (then only existence can be checked)."""
    try:
        result = subprocess.run(
            ["git", "-C", str(repo), "check-ignore", "--stdin"],
            input="\n".join(str(path.relative_to(repo)) for path in files),
            capture_output=True,
            text=True,
            check=False,
        )
    except (OSError, ValueError):
        return None
    if result.returncode not in (0, 1):
        return None
    return {repo / line for line in result.stdout.splitlines() if line}


def clean_clone_problem(repo: Path, relative: str) -> str | None:
    """Why ``relative`` would be missing from a fresh clone of ``repo`` (absent, empty folder, git-ignored), or None."""
    path = (repo / relative).resolve()
    if not path.is_relative_to(repo.resolve()):
        return f"{relative} lies outside the repository"
    if not path.exists():
        return f"{relative} does not exist"
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    if not files:
        return f"{relative} is an empty folder (git keeps no empty folder: a clean clone lacks it)"
    ignored = _git_ignored(repo.resolve(), files)
    if ignored is not None and len(ignored) == len(files):
        return f"{relative} is ignored by git (a clean clone lacks it)"
    return None


# --- Dockerfiles ----------------------------------------------------------------------------------------------------
def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if full:
            keyword, _, arguments = full.partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def _copy_arguments(arguments: str) -> tuple[list[str], list[str]]:
    """(flags, paths) of a COPY/ADD, in shell or JSON form."""
    tokens = [str(token) for token in json.loads(arguments)] if arguments.startswith("[") else shlex.split(arguments)
    flags = [token for token in tokens if token.startswith("--")]
    return flags, [token for token in tokens if not token.startswith("--")]


def check_dockerfile_copies(dockerfile: Path, context: Path) -> Problems:
    """Every COPY/ADD source (not from another stage or image) must be in the build context of a clean clone."""
    problems: Problems = []
    for keyword, arguments in dockerfile_instructions(dockerfile.read_text(encoding="utf-8")):
        if keyword not in ("COPY", "ADD"):
            continue
        flags, paths = _copy_arguments(arguments)
        if any(flag.startswith("--from") for flag in flags):
            continue
        if len(paths) < 2:
            problems.append(f"{dockerfile.name}: {keyword} {arguments!r} has no source")
            continue
        for source in paths[:-1]:
            if keyword == "ADD" and re.match(r"^(https?://|git@)", source):
                continue
            if "$" in source:
                problems.append(f"{dockerfile.name}: {keyword} source {source!r} uses a variable; cannot be checked")
                continue
            matches = sorted(context.glob(source.rstrip("/"))) if any(c in source for c in "*?[") else []
            candidates = [str(path.relative_to(context)) for path in matches] or [source.rstrip("/") or "."]
            for candidate in candidates:
                if (why := clean_clone_problem(context, candidate)) is not None:
                    problems.append(f"{dockerfile.name}: {keyword} source {source!r}: {why}")
    return problems


def dockerfile_base_images(dockerfile: Path) -> list[str]:
    """The FROM images, with ARG defaults (declared before the first FROM) substituted."""
    defaults: dict[str, str] = {}
    bases: list[str] = []
    for keyword, arguments in dockerfile_instructions(dockerfile.read_text(encoding="utf-8")):
        if keyword == "ARG" and not bases and "=" in arguments:
            name, value = arguments.split("=", 1)
            defaults[name.strip()] = value.strip().strip("'\"")
        elif keyword == "FROM":
            image = next(token for token in arguments.split() if not token.startswith("--"))
            bases.append(interpolate(image, defaults))
    return bases


def build_dockerfiles(compose: Compose, repo: Path) -> dict[str, tuple[Path, Path]]:
    """service -> (context, Dockerfile) of every service that builds an image."""
    found = {}
    for name, service in services(compose).items():
        build = service.get("build")
        if build is None:
            continue
        if isinstance(build, str):
            build = {"context": build}
        context = repo / str(build.get("context", "."))
        found[name] = (context, context / str(build.get("dockerfile", "Dockerfile")))
    return found


# --- Checkers of the compose file -----------------------------------------------------------------------------------
def check_variables(compose: Compose, env: Mapping[str, str]) -> Problems:
    """Every ${VAR} (with or without a default) is defined in .env.example, and every variable there is used."""
    used: set[str] = set()
    problems: Problems = []
    for text in strings_in(compose):
        names, text_problems = variables_in(text)
        used |= names
        problems += text_problems
    problems += [f"${{{name}}} is used but not defined in .env.example" for name in sorted(used - env.keys())]
    unused = env.keys() - used - COMPOSE_OWN_VARIABLES
    problems += [f"{name} is defined in .env.example but docker-compose.yml never uses it" for name in sorted(unused)]
    return problems


def check_builds(compose: Compose, repo: Path) -> Problems:
    """Build contexts and Dockerfiles exist, and so does every file the Dockerfiles COPY."""
    problems: Problems = []
    for name, service in services(compose).items():
        if "image" not in service and "build" not in service:
            problems.append(f"{name}: neither image nor build")
    for name, (context, dockerfile) in build_dockerfiles(compose, repo).items():
        if not context.is_dir():
            problems.append(f"{name}: build context {context} is not a folder")
        elif not dockerfile.is_file():
            problems.append(f"{name}: Dockerfile {dockerfile} does not exist")
        else:
            problems += [f"{name}: {problem}" for problem in check_dockerfile_copies(dockerfile, context)]
    return problems


def _volume_source(volume: Any) -> tuple[str, str]:
    """("bind" | "volume" | "tmpfs", source) of a short- or long-syntax volume."""
    if isinstance(volume, Mapping):
        return str(volume.get("type", "volume")), str(volume.get("source", ""))
    source = str(volume).split(":", 1)[0] if ":" in str(volume) else ""
    if not source:
        return "volume", ""  # anonymous volume
    return ("bind" if source.startswith((".", "/", "~")) else "volume"), source


def check_mounts(compose: Compose, repo: Path) -> Problems:
    """Bind mounts come from the repository and exist in a clean clone; named volumes are declared."""
    problems: Problems = []
    declared = set((compose.get("volumes") or {}).keys())
    for name, service in services(compose).items():
        for volume in service.get("volumes") or []:
            kind, source = _volume_source(volume)
            if kind == "bind":
                if not source.startswith("."):
                    problems.append(f"{name}: bind mount {source!r} is outside the repository (host-specific)")
                elif (why := clean_clone_problem(repo, source)) is not None:
                    problems.append(f"{name}: bind mount {source!r}: {why}")
            elif kind == "volume" and source and source not in declared:
                problems.append(f"{name}: named volume {source!r} is not declared under top-level volumes")
    return problems


def _published_ports(spec: Any) -> list[tuple[str, int, str]]:
    """(host ip, host port, protocol) triples a port spec publishes; [] for a container-only port."""
    if isinstance(spec, int):
        return []
    if isinstance(spec, Mapping):
        published = spec.get("published")
        if published in (None, ""):
            return []
        host_ip, protocol, ports = str(spec.get("host_ip", "")), str(spec.get("protocol", "tcp")), str(published)
    else:
        text, _, protocol = str(spec).partition("/")
        protocol = protocol or "tcp"
        host_ip = ""
        if text.startswith("["):  # [ipv6]:host:container
            host_ip, _, text = text[1:].partition("]:")
        parts = text.split(":")
        if len(parts) == 1:
            return []
        if len(parts) == 3:
            host_ip, ports = parts[0], parts[1]
        elif len(parts) == 2:
            ports = parts[0]
        else:
            raise ValueError(f"cannot parse port mapping {spec!r}")
        if not ports:
            return []  # ephemeral host port
    first, _, last = ports.partition("-")
    if not first.isdigit() or (last and not last.isdigit()):
        raise ValueError(f"host port of {spec!r} is not a number: {ports!r}")
    return [(host_ip, port, protocol) for port in range(int(first), int(last or first) + 1)]


def check_ports(compose: Compose, env: Mapping[str, str]) -> Problems:
    """No two services publish the same host port on overlapping addresses (after interpolation with .env.example)."""
    problems: Problems = []
    taken: dict[tuple[int, str], list[tuple[str, str]]] = {}
    wildcard = ("", "0.0.0.0", "::")
    for name, service in services(interpolate_tree(compose, env)).items():
        for spec in service.get("ports") or []:
            try:
                published = _published_ports(spec)
            except ValueError as exc:
                problems.append(f"{name}: {exc}")
                continue
            for host_ip, port, protocol in published:
                for other_ip, other in taken.get((port, protocol), []):
                    if host_ip == other_ip or host_ip in wildcard or other_ip in wildcard:
                        problems.append(f"host port {port}/{protocol} is published by both {other} and {name}")
                taken.setdefault((port, protocol), []).append((host_ip, name))
    return problems


def check_healthchecks(compose: Compose) -> Problems:
    """Every long-running service has a healthcheck."""
    return [
        f"{name}: long-running service without a healthcheck"
        for name, service in services(compose).items()
        if not is_one_shot(service) and not has_healthcheck(service)
    ]


def check_depends_on(compose: Compose) -> Problems:
    """depends_on in the long form with a condition that the target can satisfy."""
    problems: Problems = []
    all_services = services(compose)
    for name, service in all_services.items():
        depends_on = service.get("depends_on") or {}
        if isinstance(depends_on, list):
            problems.append(f"{name}: depends_on is a list; use the long form with a condition")
            continue
        for target, options in depends_on.items():
            condition = (options or {}).get("condition")
            if target not in all_services:
                problems.append(f"{name}: depends on unknown service {target!r}")
            elif target == name:
                problems.append(f"{name}: depends on itself")
            elif condition == "service_healthy" and not has_healthcheck(all_services[target]):
                problems.append(f"{name}: waits for {target} to be healthy, but {target} has no healthcheck")
            elif condition == "service_completed_successfully" and not is_one_shot(all_services[target]):
                problems.append(f"{name}: waits for {target} to complete, but {target} is a long-running service")
            elif condition not in ("service_healthy", "service_completed_successfully", "service_started"):
                problems.append(f"{name}: depends on {target} without a valid condition ({condition!r})")
    return problems


def check_workers(compose: Compose, repo: Path) -> Problems:
    """A Celery worker serves the default queue; the gpu queue's worker reserves an NVIDIA GPU, on a CUDA image."""
    problems: Problems = []
    queues = {name: celery_queues(command_tokens(service)) for name, service in services(compose).items()}
    workers = {name: served for name, served in queues.items() if served is not None}
    gpu_workers = [name for name, served in workers.items() if "gpu" in served]
    if not any("default" in served for served in workers.values()):
        problems.append("no Celery worker serves the default queue")
    if not gpu_workers:
        problems.append("no Celery worker serves the gpu queue (airflow celery worker --queues gpu)")
    dockerfiles = build_dockerfiles(compose, repo)
    for name in gpu_workers:
        service = services(compose)[name]
        if not reserves_nvidia_gpu(service):
            problems.append(f"{name}: serves the gpu queue but reserves no NVIDIA GPU (deploy.resources...devices)")
        if "default" in workers[name]:
            problems.append(f"{name}: the GPU worker also serves the default queue and would take CPU work")
        dockerfile = dockerfiles.get(name, (None, None))[1]
        if dockerfile is None or not dockerfile.is_file():
            problems.append(f"{name}: the GPU worker does not build its own image")
        elif not any(base.startswith("nvidia/cuda:") for base in dockerfile_base_images(dockerfile)):
            problems.append(f"{name}: {dockerfile.name} is not built on an nvidia/cuda base image")
    for name in workers.keys() - set(gpu_workers):
        if reserves_nvidia_gpu(services(compose)[name]):
            problems.append(f"{name}: reserves a GPU but does not serve the gpu queue")
    return problems


_SECRET_NAME = re.compile(r"(PASSWORD|SECRET|TOKEN|DSN|_KEY|ACCESS_KEY_ID|_AUTH)$")
_URL_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]*:([^@\s/]*)@")


def check_no_literal_secrets(compose: Compose) -> Problems:
    """Secrets come from .env: secret-named variables and passwords in URLs must be ${VAR} references."""
    problems: Problems = []
    for name, service in services(compose).items():
        for key, value in environment(service).items():
            if _SECRET_NAME.search(key) and "${" not in value and value.lower() not in ("true", "false"):
                problems.append(f"{name}: {key} is a literal, not a ${{VAR}} from .env")
    for text in strings_in(compose):
        for password in _URL_PASSWORD.findall(text):
            if not password.startswith("${"):
                problems.append(f"literal password in URL {text!r}")
    return problems


def check_pipeline_env(compose: Compose) -> Problems:
    """Every worker gets the pipeline's settings; where the pipeline runs, every PIPELINE_* variable is a setting."""
    problems: Problems = []
    known = {f"PIPELINE_{field.upper()}" for field in Settings.model_fields}
    for name, service in services(compose).items():
        env = environment(service)
        is_worker = celery_queues(command_tokens(service)) is not None
        if is_worker:
            problems += [f"{name}: worker lacks {key}" for key in REQUIRED_PIPELINE_ENV if key not in env]
        if is_worker or "PIPELINE_DB_URL" in env:  # the pipeline runs here (not e.g. postgres' PIPELINE_DB_PASSWORD)
            typos = [key for key in env if key.startswith("PIPELINE_") and key not in known]
            problems += [f"{name}: {key} is not a pipeline setting" for key in typos]
    return problems


def check_airflow_components(compose: Compose) -> Problems:
    """All Airflow components share one configuration; airflow-init migrates both schemas."""
    problems: Problems = []
    configs = {
        name: {key: value for key, value in environment(service).items() if key.startswith("AIRFLOW__")}
        for name, service in services(compose).items()
        if command_tokens(service)[:1] == ["airflow"]
    }
    for required in ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"):
        if required not in configs:
            problems.append(f"{required}: missing, or not running an airflow command")
    if configs:
        reference_name, reference = next(iter(configs.items()))
        for name, config in configs.items():
            if config != reference:
                differing = sorted(set(config.items()) ^ set(reference.items()))
                problems.append(f"{name}: Airflow configuration differs from {reference_name}: {differing}")
    init = " ".join(command_tokens(services(compose).get("airflow-init", {})))
    for step in ("airflow db migrate", "pipeline db upgrade"):
        if step not in init:
            problems.append(f"airflow-init does not run `{step}`")
    return problems


def _init_sql_databases(init_sh: str) -> set[tuple[str, str]]:
    """(role, database) pairs that docker/postgres/init.sh creates with ``create_db ROLE PASSWORD DATABASE``."""
    return set(re.findall(r"^create_db\s+(\w+)\s+\S+\s+(\w+)\s*$", init_sh, flags=re.MULTILINE))


def _init_sql_readers(init_sh: str) -> set[tuple[str, str]]:
    """(role, database) pairs of the read-only roles init.sh creates with ``create_reader ROLE PASSWORD DB OWNER``."""
    return set(re.findall(r"^create_reader\s+(\w+)\s+\S+\s+(\w+)\s+\w+\s*$", init_sh, flags=re.MULTILINE))


def _init_sql_passwords(init_sh: str) -> dict[str, str]:
    """Role -> the environment variable init.sh sets its password from."""
    return dict(re.findall(r'^create_(?:db|reader)\s+(\w+)\s+"\$\{?(\w+)\}?"', init_sh, flags=re.MULTILINE))


_PG_URL = re.compile(r"postgresql(?:\+\w+)?://([^:@/]+):([^@]*)@postgres(?::\d+)?/(\w+)")


def check_databases(compose: Compose, init_sh: str, datasource: Mapping[str, Any]) -> Problems:
    """Every PostgreSQL role/database the services use is created by init.sh, which gets the passwords it reads;
    each client sends the password init.sh gave its role; whatever only reads the store uses a read-only role."""
    problems: Problems = []
    created, readers = _init_sql_databases(init_sh), _init_sql_readers(init_sh)
    postgres = services(compose).get("postgres", {})
    role_passwords = {role: environment(postgres).get(var) for role, var in _init_sql_passwords(init_sh).items()}
    logins: list[tuple[str, str, str, str]] = []  # (where, role, password as written, database)
    for name, service in services(compose).items():
        for text in strings_in(service):
            logins += [(name, role, password, db) for role, password, db in _PG_URL.findall(text)]
        env = environment(service)
        if "POSTGRE_NAME" in env:  # Label Studio's own variables
            logins.append((name, env.get("POSTGRE_USER", ""), env.get("POSTGRE_PASSWORD", ""), env["POSTGRE_NAME"]))
    grafana_env = environment(services(compose).get("grafana", {}))
    for source in datasource.get("datasources", []):
        password = str((source.get("secureJsonData") or {}).get("password", ""))
        expanded = grafana_env.get(password[2:-1], password) if password.startswith("${") else password
        login = (f"grafana data source {source.get('name')!r}", source.get("user", ""), expanded)
        logins.append((*login, (source.get("jsonData") or {}).get("database", "")))
    for where, role, password, db in sorted(set(logins)):
        if (role, db) not in created | readers:
            problems.append(f"{where}: database {db!r} of role {role!r} is used but init.sh does not create it")
        elif password != role_passwords.get(role):
            problems.append(
                f"{where}: role {role!r} logs in with {password!r}, init.sh sets {role_passwords.get(role)!r}"
            )
    read_only_clients = [
        (f"grafana data source {s.get('name')!r}", s.get("user")) for s in datasource.get("datasources", [])
    ]
    for name, service in services(compose).items():
        if command_tokens(service)[:2] == ["airflow", "api-server"]:  # the monitoring page only reads the store
            match = _PG_URL.search(environment(service).get("PIPELINE_DB_URL", ""))
            read_only_clients.append((name, match.group(1) if match else None))
    for where, role in read_only_clients:
        if role not in {reader for reader, _ in readers}:
            problems.append(f"{where}: only reads the store but logs in as {role!r}, not a read-only role of init.sh")
    if not any(str(v).endswith(":/docker-entrypoint-initdb.d/10-init.sh:ro") for v in postgres.get("volumes") or []):
        problems.append("postgres: docker/postgres/init.sh is not mounted into /docker-entrypoint-initdb.d")
    for variable in sorted(set(re.findall(r"\b([A-Z][A-Z0-9_]*_PASSWORD)\b", init_sh))):
        if variable not in environment(postgres):
            problems.append(f"postgres: init.sh reads {variable}, which the service's environment does not set")
    image_major = re.match(r"postgres:(\d+)", str(postgres.get("image", "")))
    for source in datasource.get("datasources", []):
        version = (source.get("jsonData") or {}).get("postgresVersion")
        if image_major and version is not None and int(version) // 100 != int(image_major.group(1)):
            problems.append(
                f"grafana data source: postgresVersion {version}, the postgres image is {image_major.group(1)}"
            )
    return problems


def _mlflow_allows(allowed: list[str], host: str) -> bool:
    """MLflow's Host-header rule (mlflow.server.security_utils.is_allowed_host_header): fnmatch when '*'."""
    return "*" in allowed or any(fnmatch.fnmatch(host, p) if "*" in p else host == p for p in allowed)


def check_mlflow(compose: Compose, env: Mapping[str, str]) -> Problems:
    """PostgreSQL backend, artifacts proxied to S3 (MinIO), and a Host list that admits the clients' URL."""
    problems: Problems = []
    resolved = services(interpolate_tree(compose, env))
    mlflow = resolved.get("mlflow")
    if mlflow is None:
        return ["no mlflow service"]
    tokens, mlflow_env = command_tokens(mlflow), environment(mlflow)

    def option(flag: str) -> str | None:
        return tokens[tokens.index(flag) + 1] if flag in tokens[:-1] else None

    backend = option("--backend-store-uri") or mlflow_env.get("MLFLOW_BACKEND_STORE_URI", "")
    if not backend.startswith("postgresql"):
        problems.append(f"mlflow: backend store is not PostgreSQL: {backend!r}")
    if not (option("--artifacts-destination") or "").startswith("s3://"):
        problems.append("mlflow: --artifacts-destination is not an s3:// location")
    if not mlflow_env.get("MLFLOW_S3_ENDPOINT_URL"):
        problems.append("mlflow: MLFLOW_S3_ENDPOINT_URL is not set (artifacts would go to AWS, not MinIO)")
    allowed = [host.strip() for host in (option("--allowed-hosts") or "").split(",") if host.strip()]
    if not allowed:
        problems.append("mlflow: no --allowed-hosts (MLflow >= 3.5 then rejects the compose service name)")
    for name, service in resolved.items():
        uri = environment(service).get("PIPELINE_MLFLOW_TRACKING_URI")
        if uri and allowed and not _mlflow_allows(allowed, urlsplit(uri).netloc):
            problems.append(f"{name}: MLflow rejects Host {urlsplit(uri).netloc!r} (not in --allowed-hosts)")
    return problems


def check_images_pinned(compose: Compose, env: Mapping[str, str]) -> Problems:
    problems: Problems = []
    for name, service in services(interpolate_tree(compose, env)).items():
        image = str(service.get("image", ""))
        tag = image.rsplit("/", 1)[-1].partition(":")[2]
        if image and (not tag or tag == "latest"):
            problems.append(f"{name}: image {image!r} is not pinned to a version")
    return problems


def check_env_example_values(env: Mapping[str, str]) -> Problems:
    """The placeholders work as they are (cp .env.example .env && docker compose up -d)."""
    problems: Problems = []
    if len(env.get("LABEL_STUDIO_API_TOKEN", "")) > 40:
        problems.append("LABEL_STUDIO_API_TOKEN: Label Studio keeps at most 40 characters")
    for key in ("MINIO_ROOT_PASSWORD", "MLFLOW_S3_SECRET_KEY", "PIPELINE_S3_SECRET_KEY"):
        if len(env.get(key, "")) < 8:
            problems.append(f"{key}: MinIO needs at least 8 characters")
    try:
        if len(base64.urlsafe_b64decode(env.get("AIRFLOW_FERNET_KEY", "").encode())) != 32:
            problems.append("AIRFLOW_FERNET_KEY: not 32 bytes of url-safe base64")
    except (binascii.Error, ValueError):
        problems.append("AIRFLOW_FERNET_KEY: not url-safe base64")
    return problems


# --- Grafana --------------------------------------------------------------------------------------------------------
_SQL_KEYWORDS = frozenset(
    """
    all and any as asc between by case cross current desc distinct else end exists false filter first following
    for from full group having ilike in inner interval is join last lateral left like limit not null nulls
    offset on or order outer over partition preceding range right row rows select some then true unbounded
    union using values when where window with within epoch year quarter month week day hour minute second
    """.split()  # noqa: SIM905
)


def _sql_tokens(sql: str) -> list[str]:
    """Tokens of ``sql`` with comments, string literals and Grafana macros/variables taken out."""
    sql = re.sub(r"--[^\n]*|/\*.*?\*/", " ", sql, flags=re.DOTALL)
    sql = re.sub(r"'(?:[^']|'')*'", "''", sql)
    sql = re.sub(r"\$__\w+", " ", sql)  # $__timeFilter(col) -> (col): the column is still checked
    sql = re.sub(r"\$\{[^}]*\}|\$\w+|\[\[\w+\]\]", "''", sql)  # dashboard variables stand for values
    return re.findall(r'"[^"]+"|[A-Za-z_][A-Za-z0-9_]*|::|\d+(?:\.\d+)?|\S', sql)


def sql_references(sql: str) -> tuple[set[str], set[tuple[str | None, str]], dict[str, str | None]]:
    """(tables, column references as (qualifier, name), aliases) that ``sql`` uses; conservative, not a parser.

    Names after FROM/JOIN are tables (unless a CTE); names after AS, after a table name or after a closing
    parenthesis are aliases (mapped to their table where they name one); names followed by '(' are functions;
    names after '::' are types; every other non-keyword identifier is a column reference.
    """
    tokens = [token[1:-1] if token.startswith('"') else token.lower() for token in _sql_tokens(sql)]

    def is_name(token: str) -> bool:
        return bool(re.fullmatch(r"[a-z_][a-z0-9_]*", token))

    ctes = {
        tokens[i]
        for i in range(1, len(tokens) - 2)
        if tokens[i - 1] in ("with", ",") and tokens[i + 1] == "as" and tokens[i + 2] == "("
    }
    tables: set[str] = set()
    columns: set[tuple[str | None, str]] = set()
    aliases: dict[str, str | None] = dict.fromkeys(ctes)
    parens: list[str] = []  # "func" or "group" per open parenthesis
    for i, token in enumerate(tokens):
        previous = tokens[i - 1] if i else ""
        following = tokens[i + 1] if i + 1 < len(tokens) else ""
        if token == "(":
            parens.append("func" if is_name(previous) and previous not in _SQL_KEYWORDS else "group")
            continue
        if token == ")":
            if parens:
                parens.pop()
            continue
        if not is_name(token) or (token in _SQL_KEYWORDS and previous != "as"):
            continue
        in_function = bool(parens) and parens[-1] == "func"
        if previous == "::" or following == "(" or token in ctes:
            continue  # a type, a function, a CTE name
        if previous == "as":  # FROM inference_logs AS l, count(*) AS n, (...) AS sub
            names_table = i >= 3 and tokens[i - 2] in tables and tokens[i - 3] in ("from", "join")
            aliases[token] = tokens[i - 2] if names_table else None
        elif previous == ")":
            aliases[token] = None  # (subquery) sub
        elif previous in ("from", "join") and not in_function:
            tables.add(token)
        elif is_name(previous) and previous in tables and tokens[i - 2] in ("from", "join"):
            aliases[token] = previous  # FROM inference_logs l
        elif following == ".":
            continue  # qualifier: the name after the dot is the column
        elif previous == ".":
            columns.add((tokens[i - 2], token))
        else:
            columns.add((None, token))
    return tables, columns, aliases


def check_sql(sql: str, schema: MetaData, where: str) -> Problems:
    """Tables after FROM/JOIN exist in ``schema``; every other identifier is one of their columns or an alias."""
    tables, columns, aliases = sql_references(sql)
    problems = [
        f"{where}: table {table!r} is not in the store's schema" for table in sorted(tables - schema.tables.keys())
    ]
    known_tables = tables & schema.tables.keys()
    if not known_tables:
        return [*problems, f"{where}: queries no table of the store"]
    available = {column.name for table in known_tables for column in schema.tables[table].columns}
    for qualifier, name in sorted(columns, key=lambda item: (item[0] or "", item[1])):
        table = qualifier if qualifier in schema.tables else aliases.get(qualifier or "")
        if table in schema.tables:
            if name not in schema.tables[table].columns:
                problems.append(f"{where}: {qualifier}.{name} is not a column of {table}")
        elif name not in available and name not in aliases:
            problems.append(f"{where}: {name!r} is neither a column of {sorted(known_tables)} nor an alias")
    return problems


def dashboard_queries(dashboard: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any], str]]:
    """(panel title, datasource, rawSql) of every query, rows' nested panels and template variables included."""
    panels = list(dashboard.get("panels", []))
    while panels:
        panel = panels.pop(0)
        panels.extend(panel.get("panels", []))
        for target in panel.get("targets", []):
            if "rawSql" in target:
                yield (
                    panel.get("title", "?"),
                    target.get("datasource") or panel.get("datasource") or {},
                    target["rawSql"],
                )
    for variable in (dashboard.get("templating") or {}).get("list", []):
        if variable.get("type") == "query":
            query = variable.get("query")
            sql = query.get("rawSql") or query.get("query") if isinstance(query, Mapping) else query
            yield f"variable ${variable.get('name')}", variable.get("datasource") or {}, str(sql or "")


_METRIC_FILTER = re.compile(r"\bmetric\s*(=|<>|!=|\bin\b|\blike\b)\s*(\([^)]*\)|'(?:[^']|'')*')", re.IGNORECASE)


def metric_filters(sql: str) -> list[tuple[str, str]]:
    """(operator, literal) pairs that ``sql`` compares the column ``metric`` with (``like`` for LIKE patterns)."""
    sql = re.sub(r"--[^\n]*|/\*.*?\*/", " ", sql, flags=re.DOTALL)
    return [
        ("like" if operator.lower() == "like" else "=", literal.replace("''", "'"))
        for operator, right in _METRIC_FILTER.findall(sql)
        for literal in re.findall(r"'((?:[^']|'')*)'", right)
    ]


def is_known_metric(literal: str, operator: str, names: Collection[str], patterns: Collection[str]) -> bool:
    """Whether a monitoring run writes a metric called ``literal`` (or, for LIKE, one that the pattern matches)."""
    if operator == "like":
        like = literal.replace("%", "*").replace("_", "?")
        return any(fnmatch.fnmatchcase(name, like) for name in names) or any(
            fnmatch.fnmatchcase(pattern.replace("*", "x"), like) for pattern in patterns
        )
    return literal in names or any(fnmatch.fnmatchcase(literal, pattern) for pattern in patterns)


def check_dashboard(
    dashboard: Mapping[str, Any],
    schema: MetaData,
    datasource_uid: str,
    expected: Mapping[str, Mapping[str, set[str]]],
    metrics: tuple[Collection[str], Collection[str]] = ((), ()),
    expected_metrics: Mapping[str, str] | None = None,
) -> Problems:
    """The SQL of every panel and template variable fits the store's schema and uses the provisioned data source;
    every metric name it filters monitor_metrics on is one a monitoring run writes; the expected panels exist and
    query what they are about.

    Args:
        metrics: (names, fnmatch patterns) of the metrics a monitoring run writes into monitor_metrics.
        expected_metrics: panel title -> the metric that panel must filter on.
    """
    problems: Problems = []
    seen: dict[str, tuple[set[str], set[str], list[tuple[str, str]]]] = {}
    for title, source, sql in dashboard_queries(dashboard):
        if source.get("uid") != datasource_uid:
            problems.append(
                f"panel {title!r}: data source uid {source.get('uid')!r}, provisioned is {datasource_uid!r}"
            )
        problems += check_sql(sql, schema, f"panel {title!r}")
        tables, columns, _ = sql_references(sql)
        filters = metric_filters(sql) if "monitor_metrics" in tables else []
        for operator, literal in filters:
            if not is_known_metric(literal, operator, *metrics):
                problems.append(f"panel {title!r}: no monitoring run writes a metric {literal!r} (monitor_metrics)")
        seen[title] = (tables, {name for _, name in columns}, filters)
    for title, metric in (expected_metrics or {}).items():
        if title in seen and ("=", metric) not in seen[title][2]:
            problems.append(f"panel {title!r} does not filter on metric = {metric!r}")
    for title, per_table in expected.items():
        if title not in seen:
            problems.append(f"panel {title!r} is missing")
            continue
        tables, names, _ = seen[title]
        for table, wanted in per_table.items():
            if table not in tables:
                problems.append(f"panel {title!r} does not query {table}")
            for column in sorted(wanted):
                if column not in schema.tables[table].columns:
                    problems.append(f"panel {title!r}: expected column {table}.{column} is not in the schema")
                elif column not in names:
                    problems.append(f"panel {title!r} does not use {table}.{column}")
    return problems


def check_grafana(compose: Compose, datasource: Mapping[str, Any], provider: Mapping[str, Any]) -> Problems:
    """Provisioning files are mounted where Grafana reads them, and get the variables they expand."""
    problems: Problems = []
    grafana = services(compose).get("grafana")
    if grafana is None:
        return ["no grafana service"]
    mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in grafana.get("volumes") or [] if ":" in str(v)}
    if mounts.get("/etc/grafana/provisioning") != "./docker/grafana/provisioning":
        problems.append("grafana: docker/grafana/provisioning is not mounted at /etc/grafana/provisioning")
    for source in provider.get("providers", []):
        path = (source.get("options") or {}).get("path")
        if mounts.get(path) != "./docker/grafana/dashboards":
            problems.append(
                f"grafana: dashboard provider path {path!r} is not where docker/grafana/dashboards is mounted"
            )
    needed = set().union(*(variables_in(text)[0] for text in strings_in(datasource)))
    problems += [
        f"grafana: store.yml expands ${{{v}}}, which the service does not set"
        for v in sorted(needed - environment(grafana).keys())
    ]
    return problems


# --- What the store and the monitoring run really hold --------------------------------------------------------------
def migrated_store_schema(directory: Path) -> MetaData:
    """The tables and columns the Alembic migrations create (run on a SQLite file in ``directory``, reflected)."""
    from pipeline.store import make_engine, upgrade
    from pipeline.store.migrate import VERSION_TABLE

    engine = make_engine(f"sqlite:///{directory / 'store.db'}")
    try:
        upgrade(engine)
        schema = MetaData()
        schema.reflect(engine)
    finally:
        engine.dispose()
    schema.remove(schema.tables[VERSION_TABLE])
    return schema


@cache
def monitoring_metric_names() -> tuple[frozenset[str], frozenset[str]]:
    """(names, fnmatch patterns) of the metrics a monitoring run writes into monitor_metrics.

    The technical metrics come from running ``window_metrics`` on a tiny window; the drift metrics from the keys
    ``pipeline.monitor.drift._metrics`` writes (read from its source: building a drift result takes a reference).
    """
    import pandas as pd

    import pipeline.monitor.technical as technical

    logs = pd.DataFrame(
        {
            "study_id": ["s1", "s2"],
            "site": ["site-a", "site-a"],
            "model_version": ["1", "1"],
            "status": ["ok", "error"],
            "error_type": [None, technical.ERROR_TYPES[0]],
            "latency_s": [0.4, 2.0],
            "decision": ["normal", None],
        }
    )
    names = set(technical.window_metrics(logs)["metric"])
    source = (Path(technical.__file__).parent / "drift.py").read_text(encoding="utf-8")
    body = source[source.index("def _metrics(") :]
    body = body[: body.index("\ndef ", 1)]
    patterns: set[str] = set()
    for literal in re.findall(r'"([a-z_]+(?:\.[a-z_{}.]+)+)"', body):
        if "{" in literal:
            patterns.add(re.sub(r"\{[^}]*\}", "*", literal))
        else:
            names.add(literal)
    return frozenset(names), frozenset(patterns)


# --- Airflow: configuration names, folders, queues ------------------------------------------------------------------
def _airflow_package() -> Path:
    spec = importlib.util.find_spec("airflow")  # finds the package without importing it (which is slow)
    assert spec is not None and spec.submodule_search_locations, "apache-airflow is not installed"
    return Path(next(iter(spec.submodule_search_locations)))


@cache
def airflow_config_options() -> frozenset[tuple[str, str]]:
    """(section, option) pairs the installed Airflow (the constraints' version) and its providers know."""
    package = _airflow_package()
    core = yaml.safe_load((package / "config_templates" / "config.yml").read_text(encoding="utf-8"))
    sections = [core]
    for info_file in sorted((package / "providers").rglob("get_provider_info.py")):
        spec = importlib.util.spec_from_file_location(f"_provider_info_{len(sections)}", info_file)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)  # a generated file holding one dict, no imports
        sections.append(module.get_provider_info().get("config") or {})
    return frozenset(
        (section, option) for config in sections for section, body in config.items() for option in body["options"]
    )


def airflow_services(compose: Compose) -> dict[str, dict[str, Any]]:
    """The services that run Airflow (they carry its executor setting): components, workers, airflow-init."""
    return {
        name: service
        for name, service in services(compose).items()
        if "AIRFLOW__CORE__EXECUTOR" in environment(service)
    }


def check_airflow_config(compose: Compose, options: Collection[tuple[str, str]]) -> Problems:
    """Every AIRFLOW__SECTION__OPTION is an option of the pinned Airflow; CeleryExecutor, Redis, PostgreSQL."""
    problems: Problems = []
    for name, service in services(compose).items():
        for key in environment(service):
            parts = key.split("__")
            if parts[0] != "AIRFLOW" or len(parts) < 3:
                continue
            section, option = parts[1].lower(), "__".join(parts[2:]).lower()
            option = re.sub(r"_(cmd|secret)$", "", option) if (section, option) not in options else option
            if (section, option) not in options:
                problems.append(f"{name}: {key} is not an option of the pinned Airflow ([{section}] {option})")
    for name, service in airflow_services(compose).items():
        env = environment(service)
        if "CeleryExecutor" not in env.get("AIRFLOW__CORE__EXECUTOR", "").split(","):
            problems.append(f"{name}: the executor is not CeleryExecutor")
        if not env.get("AIRFLOW__CELERY__BROKER_URL", "").startswith("redis://"):
            problems.append(f"{name}: the Celery broker is not Redis")
        if not env.get("AIRFLOW__CELERY__RESULT_BACKEND", "").startswith("db+postgresql"):
            problems.append(f"{name}: the Celery result backend is not PostgreSQL (db+postgresql://)")
        if not env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "").startswith("postgresql"):
            problems.append(f"{name}: the metadata database is not PostgreSQL")
        if "AIRFLOW__CORE__EXECUTION_API_SERVER_URL" not in env:
            problems.append(f"{name}: no AIRFLOW__CORE__EXECUTION_API_SERVER_URL (workers report to the API server)")
    return problems


def _copied_to(dockerfile: Path) -> dict[str, str]:
    """Destination -> source (normalised, no trailing slash) of the COPY instructions from the build context."""
    copied = {}
    for keyword, arguments in dockerfile_instructions(dockerfile.read_text(encoding="utf-8")):
        if keyword == "COPY":
            flags, paths = _copy_arguments(arguments)
            if not any(flag.startswith("--from") for flag in flags) and len(paths) == 2:
                copied[paths[1].rstrip("/")] = paths[0].rstrip("/")
    return copied


def check_airflow_folders(compose: Compose, repo: Path) -> Problems:
    """Every Airflow service has dags/ and plugins/ at its DAGS_FOLDER and PLUGINS_FOLDER: baked into its image
    (so the image runs without compose, Kubernetes included) and, where bind-mounted, mounted from that folder."""
    problems: Problems = []
    dockerfiles = build_dockerfiles(compose, repo)
    for name, service in airflow_services(compose).items():
        env = environment(service)
        mounts = {}
        for volume in service.get("volumes") or []:
            parts = str(volume).split(":")
            if len(parts) >= 2:
                mounts[parts[1].rstrip("/")] = parts[0]
        dockerfile = dockerfiles.get(name, (None, None))[1]
        copied = _copied_to(dockerfile) if dockerfile is not None and dockerfile.is_file() else {}
        for variable, folder in (("AIRFLOW__CORE__DAGS_FOLDER", "dags"), ("AIRFLOW__CORE__PLUGINS_FOLDER", "plugins")):
            target = env.get(variable, "").rstrip("/")
            if not target:
                problems.append(f"{name}: {variable} is not set")
                continue
            if copied.get(target) != folder:
                problems.append(f"{name}: its image does not COPY {folder}/ to {target} ({variable})")
            if target in mounts and mounts[target].rstrip("/") != f"./{folder}":
                problems.append(f"{name}: {target} is mounted from {mounts[target]!r}, not ./{folder}")
    return problems


def dag_queues(dags: Path) -> tuple[set[str], Problems]:
    """The Celery queues the DAG files send tasks to (``queue=``), constants resolved from pipeline.executors."""
    queues: set[str] = set()
    problems: Problems = []
    for path in sorted(dags.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.keyword) or node.arg != "queue":
                continue
            if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
                queues.add(node.value.value)
            elif isinstance(node.value, ast.Name) and isinstance(getattr(pipeline.executors, node.value.id, None), str):
                queues.add(getattr(pipeline.executors, node.value.id))
            else:
                problems.append(f"{path.name}:{node.lineno}: queue={ast.unparse(node.value)} cannot be resolved")
    return queues, problems


def check_dag_queues(compose: Compose, dags: Path) -> Problems:
    """Every queue a DAG uses (and the default queue) is served by a Celery worker of the compose file."""
    used, problems = dag_queues(dags)
    served = {queue for s in services(compose).values() for queue in celery_queues(command_tokens(s)) or []}
    return problems + [f"queue {queue!r} is used by a DAG but no worker serves it" for queue in sorted(used - served)]


# --- The monitoring page and Label Studio's files --------------------------------------------------------------------
def _mount_of(service: Mapping[str, Any], target: str) -> tuple[str, bool] | None:
    """(source, read-only) of what ``service`` mounts at ``target``, or None."""
    for volume in service.get("volumes") or []:
        parts = str(volume).split(":")
        if len(parts) >= 2 and parts[1].rstrip("/") == target.rstrip("/"):
            return parts[0], len(parts) > 2 and "ro" in parts[2].split(",")
    return None


def check_label_studio_files(compose: Compose, env: Mapping[str, str]) -> Problems:
    """Label Studio serves the renderings from the folder the workers write them to (same volume, same path, as
    PIPELINE_LABEL_STUDIO_DOCUMENT_ROOT says), and never mounts the storage root with the raw DICOM (PHI)."""
    problems: Problems = []
    compose = interpolate_tree(compose, env)
    label_studio = services(compose).get("label-studio")
    if label_studio is None:
        return ["no label-studio service"]
    root = environment(label_studio).get("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT", "")
    ls_mount = _mount_of(label_studio, root) if root else None
    if ls_mount is None:
        return [f"label-studio: nothing is mounted at its local-files document root {root!r}"]
    workers = {n: s for n, s in services(compose).items() if celery_queues(command_tokens(s)) is not None}
    for name, worker in workers.items():
        worker_env = environment(worker)
        if worker_env.get("PIPELINE_LABEL_STUDIO_DOCUMENT_ROOT", "").rstrip("/") != root.rstrip("/"):
            problems.append(
                f"{name}: PIPELINE_LABEL_STUDIO_DOCUMENT_ROOT is {worker_env.get('PIPELINE_LABEL_STUDIO_DOCUMENT_ROOT')!r}, "
                f"Label Studio serves {root!r} (the pipeline registers its own path as local storage)"
            )
        mount = _mount_of(worker, root)
        if mount is None or mount[0] != ls_mount[0]:
            problems.append(f"{name}: does not mount {ls_mount[0]!r} at {root}, where Label Studio reads renderings")
        elif mount[1]:
            problems.append(f"{name}: mounts {root} read-only, but writes the renderings there")
        storage = _mount_of(worker, worker_env.get("PIPELINE_STORAGE_ROOT", ""))
        ls_sources = {str(v).split(":")[0] for v in label_studio.get("volumes") or []}
        if storage is not None and storage[0] in ls_sources:
            problems.append(f"label-studio: mounts {storage[0]!r}, the storage root with the raw DICOM (PHI)")
    return sorted(set(problems))


def check_monitoring_page(compose: Compose) -> Problems:
    """The API server, which serves plugins/monitoring_page.py, gets the store's URL and MLflow's."""
    problems: Problems = []
    api_servers = [n for n, s in services(compose).items() if command_tokens(s)[:2] == ["airflow", "api-server"]]
    if not api_servers:
        return ["no service runs `airflow api-server`"]
    for name in api_servers:
        env = environment(services(compose)[name])
        for key in ("PIPELINE_DB_URL", "PIPELINE_MLFLOW_TRACKING_URI", "PIPELINE_MODEL_NAME"):
            if key not in env:
                problems.append(f"{name}: lacks {key}, which the monitoring page (plugins/) reads")
    return problems


# --- Compose's own vocabulary ------------------------------------------------------------------------------------------
_SERVICE_KEYS = frozenset(
    """
    annotations attach blkio_config build cap_add cap_drop cgroup cgroup_parent command configs container_name
    cpu_count cpu_percent cpu_period cpu_quota cpu_rt_period cpu_rt_runtime cpu_shares cpus cpuset credential_spec
    depends_on deploy develop device_cgroup_rules devices dns dns_opt dns_search domainname entrypoint env_file
    environment expose extends external_links extra_hosts gpus group_add healthcheck hostname image init ipc
    isolation labels links logging mac_address mem_limit mem_reservation mem_swappiness memswap_limit network_mode
    networks oom_kill_disable oom_score_adj pid pids_limit platform ports post_start pre_stop privileged profiles
    pull_policy read_only restart runtime scale secrets security_opt shm_size stdin_open stop_grace_period
    stop_signal storage_opt sysctls tmpfs tty ulimits user userns_mode uts volumes volumes_from working_dir
    """.split()  # noqa: SIM905
)
_HEALTHCHECK_KEYS = frozenset({"test", "interval", "timeout", "retries", "start_period", "start_interval", "disable"})
_TOP_LEVEL_KEYS = frozenset({"name", "services", "volumes", "networks", "configs", "secrets", "include", "models"})


def check_compose_keys(compose: Compose) -> Problems:
    """Keys are Compose's (a misspelt `healtcheck` is silently ignored by older engines, refused by newer ones)."""
    problems = [
        f"unknown top-level key {key!r}" for key in compose if key not in _TOP_LEVEL_KEYS and not key.startswith("x-")
    ]
    for name, service in services(compose).items():
        problems += [f"{name}: unknown key {key!r}" for key in service if key not in _SERVICE_KEYS]
        problems += [
            f"{name}: unknown healthcheck key {key!r}"
            for key in service.get("healthcheck") or {}
            if key not in _HEALTHCHECK_KEYS
        ]
        depends_on = service.get("depends_on")
        for target, options in depends_on.items() if isinstance(depends_on, dict) else []:
            problems += [
                f"{name}: unknown depends_on key {key!r} for {target}"
                for key in options or {}
                if key not in ("condition", "restart", "required")
            ]
        restart = service.get("restart")
        if restart is not None and not (
            restart is False or re.fullmatch(r"no|always|unless-stopped|on-failure(:\d+)?", str(restart))
        ):
            problems.append(f"{name}: restart policy {restart!r} is not one of Compose's")
    return problems


# --- Images: versions against the constraints ------------------------------------------------------------------------
def dockerfile_args(dockerfile: Path) -> dict[str, str]:
    """ARG defaults of every stage (a later default of the same name wins)."""
    defaults = {}
    for keyword, arguments in dockerfile_instructions(dockerfile.read_text(encoding="utf-8")):
        if keyword == "ARG" and "=" in arguments:
            name, value = arguments.split("=", 1)
            defaults[name.strip()] = value.strip().strip("'\"")
    return defaults


def constraint_pins(path: Path) -> dict[str, str]:
    """Project name (normalised) -> pinned version of a pip-compile output."""
    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)", line)
        if match:
            pins[re.sub(r"[-_.]+", "-", match.group(1)).lower()] = match.group(2)
    return pins


def _torch_range(repo: Path = REPO_ROOT) -> str:
    """The project's torch specifier (pyproject.toml), e.g. ``>=2.4,<2.14``."""
    dependencies = tomllib.loads((repo / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    requirement = next(Requirement(d) for d in dependencies if Requirement(d).name == "torch")
    return str(requirement.specifier)


def _pip_install_lines(dockerfile: Path, package: str) -> list[str]:
    return [
        arguments
        for keyword, arguments in dockerfile_instructions(dockerfile.read_text(encoding="utf-8"))
        if keyword == "RUN" and "pip install" in arguments and f'"{package}==' in arguments
    ]


def _cuda_major_of_index(url: str) -> str | None:
    match = re.search(r"/whl/cu(\d+)/?$", url)
    return match.group(1)[:-1] if match else None  # cu130 -> 13, cu128 -> 12


def check_torch_builds(cpu: Path, gpu: Path, constraints: Mapping[str, str], torch_range: str) -> Problems:
    """Both Airflow images install the constraints' torch, inside the project's range: the CPU image the CPU wheel,
    the GPU image the CUDA build whose CUDA major matches its nvidia/cuda base and the constraints' nvidia wheels."""
    problems: Problems = []
    pinned = constraints.get("torch")
    for dockerfile in (cpu, gpu):
        args = dockerfile_args(dockerfile)
        version = args.get("TORCH_VERSION")
        if version != pinned:
            problems.append(f"{dockerfile.name}: TORCH_VERSION {version!r}, the constraints pin torch=={pinned}")
        if version and Version(version) not in SpecifierSet(torch_range):
            problems.append(f"{dockerfile.name}: torch {version} is outside the project's range {torch_range!r}")
        lines = _pip_install_lines(dockerfile, "torch")
        if not any('--index-url "${TORCH_INDEX_URL}"' in line and "torch==${TORCH_VERSION}" in line for line in lines):
            problems.append(
                f"{dockerfile.name}: no `pip install --index-url ${{TORCH_INDEX_URL}} torch==${{TORCH_VERSION}}`"
            )
    if not dockerfile_args(cpu).get("TORCH_INDEX_URL", "").rstrip("/").endswith("/whl/cpu"):
        problems.append(f"{cpu.name}: torch does not come from PyTorch's CPU index (/whl/cpu)")
    index = dockerfile_args(gpu).get("TORCH_INDEX_URL", "")
    index_major = _cuda_major_of_index(index)
    cuda_bases = [m.group(1) for b in dockerfile_base_images(gpu) if (m := re.match(r"nvidia/cuda:(\d+)\.", b))]
    base_major = cuda_bases[-1] if cuda_bases else None
    if index_major is None:
        problems.append(f"{gpu.name}: torch does not come from a PyTorch CUDA index (/whl/cuNNN): {index!r}")
    elif index_major != base_major:
        problems.append(f"{gpu.name}: torch index is CUDA {index_major}, the base image CUDA {base_major}")
    wheel_majors = {m.group(1) for name in constraints if (m := re.match(r"nvidia-.*-cu(\d+)$", name))}
    if index_major and wheel_majors and wheel_majors != {index_major}:
        problems.append(
            f"constraints: nvidia wheels for CUDA {sorted(wheel_majors)}, the GPU image is CUDA {index_major}"
        )
    return problems


def _image_tag(image: str) -> str:
    return image.rsplit("/", 1)[-1].partition(":")[2]


def check_image_versions(compose: Compose, env: Mapping[str, str], repo: Path) -> Problems:
    """Image tags and the versions baked into images agree with the project, its constraints and its test servers."""
    problems: Problems = []
    pyproject = tomllib.loads((repo / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    constraints = constraint_pins(repo / "requirements" / "constraints.txt")
    resolved = services(interpolate_tree(compose, env))
    for name in ("airflow-apiserver", "airflow-worker-gpu"):
        tag = _image_tag(str(resolved.get(name, {}).get("image", "")))
        if tag != pyproject["version"]:
            problems.append(f"{name}: image tag {tag!r} is not the package's version {pyproject['version']}")
    mlflow_args = dockerfile_args(repo / "docker" / "mlflow.Dockerfile")
    for arg, project in (("MLFLOW_VERSION", "mlflow"), ("PSYCOPG2_VERSION", "psycopg2-binary")):
        if mlflow_args.get(arg) != constraints.get(project):
            problems.append(
                f"mlflow.Dockerfile: {arg} {mlflow_args.get(arg)!r}, the constraints pin {project}=={constraints.get(project)}"
            )
    if _image_tag(str(resolved.get("mlflow", {}).get("image", ""))) != mlflow_args.get("MLFLOW_VERSION"):
        problems.append("mlflow: image tag is not the MLflow version mlflow.Dockerfile installs")
    label_studio = constraint_pins(repo / "requirements" / "labelstudio.txt").get("label-studio")
    if _image_tag(str(resolved.get("label-studio", {}).get("image", ""))) != label_studio:
        problems.append(f"label-studio: image tag is not label-studio=={label_studio}, the version the tests run")
    pythons = {
        "airflow.Dockerfile": re.search(
            r"python:(\d+\.\d+)", dockerfile_args(repo / "docker" / "airflow.Dockerfile").get("PYTHON_IMAGE", "")
        ),
        "gpu-worker.Dockerfile": re.fullmatch(
            r"(\d+\.\d+)", dockerfile_args(repo / "docker" / "gpu-worker.Dockerfile").get("PYTHON_VERSION", "")
        ),
    }
    versions = {name: match.group(1) if match else None for name, match in pythons.items()}
    for name, version in versions.items():
        if version is None or Version(version) not in SpecifierSet(pyproject["requires-python"]):
            problems.append(f"{name}: Python {version} is outside requires-python {pyproject['requires-python']!r}")
    if len(set(versions.values())) != 1:
        problems.append(f"the CPU and GPU images run different Pythons: {versions}")
    return problems


# --- docs/deploy.md ---------------------------------------------------------------------------------------------------
def markdown_sections(text: str) -> list[tuple[int, str, str]]:
    """(level, title, body) of every heading outside code fences; a body includes its subsections."""
    headings: list[tuple[int, int, str]] = []  # (line index, level, title)
    lines = text.splitlines()
    fenced = False
    for index, line in enumerate(lines):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and (match := re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)):
            headings.append((index, len(match.group(1)), match.group(2)))
    sections = []
    for position, (index, level, title) in enumerate(headings):
        end = next((i for i, lvl, _ in headings[position + 1 :] if lvl <= level), len(lines))
        sections.append((level, title, "\n".join(lines[index + 1 : end])))
    return sections


def check_deploy_doc(text: str, compose: Compose, required: Mapping[str, Collection[str]]) -> Problems:
    """A heading per service, every named volume and dashboard named, and the required sections with their topics."""
    sections = markdown_sections(text)
    titles = [title for _, title, _ in sections]
    problems = [
        f"docs/deploy.md: no section (heading) for the service `{name}`"
        for name in services(compose)
        if not any(f"`{name}`" in title for title in titles)
    ]
    problems += [
        f"docs/deploy.md: the volume `{volume}` is not described"
        for volume in compose.get("volumes") or {}
        if f"`{volume}`" not in text
    ]
    problems += [
        f"docs/deploy.md: the dashboard {path.name} is not described"
        for path in sorted(DASHBOARDS.glob("*.json"))
        if path.name not in text
    ]
    for heading, topics in required.items():
        bodies = [body for _, title, body in sections if title.lower().startswith(heading.lower())]
        if not bodies:
            problems.append(f"docs/deploy.md: no section {heading!r}")
            continue
        problems += [
            f"docs/deploy.md: section {heading!r} does not mention {topic!r}"
            for topic in topics
            if topic.lower() not in bodies[0].lower()
        ]
    return problems


# === Tests on the real files =========================================================================================
@pytest.fixture(scope="module")
def compose() -> Compose:
    return real_compose()


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    return real_env()


@pytest.fixture(scope="module")
def datasource() -> dict[str, Any]:
    return load_yaml(DATASOURCE_FILE)


@pytest.fixture(scope="module")
def migrated_schema(tmp_path_factory: pytest.TempPathFactory) -> MetaData:
    return migrated_store_schema(tmp_path_factory.mktemp("store"))


def test_compose_file_parses_with_the_expected_services(compose: Compose) -> None:
    expected = {
        "postgres", "redis", "minio", "minio-init", "airflow-init", "airflow-apiserver", "airflow-scheduler",
        "airflow-dag-processor", "airflow-triggerer", "airflow-worker", "airflow-worker-gpu", "mlflow",
        "label-studio", "grafana",
    }  # fmt: skip
    assert isinstance(compose, dict)
    assert expected <= services(compose).keys()


def test_env_example_is_well_formed_and_usable_as_is(env: dict[str, str]) -> None:
    assert read_env_file(ENV_EXAMPLE)[1] == []
    assert check_env_example_values(env) == []


# Every checker of the compose file, by name: run on the real file below, and on broken copies further down.
COMPOSE_CHECKS: dict[str, Callable[[Compose, Mapping[str, str]], Problems]] = {
    "variables": check_variables,
    "builds": lambda c, e: check_builds(c, REPO_ROOT),
    "mounts": lambda c, e: check_mounts(c, REPO_ROOT),
    "ports": check_ports,
    "healthchecks": lambda c, e: check_healthchecks(c),
    "depends_on": lambda c, e: check_depends_on(c),
    "workers": lambda c, e: check_workers(c, REPO_ROOT),
    "secrets": lambda c, e: check_no_literal_secrets(c),
    "pipeline_env": lambda c, e: check_pipeline_env(c),
    "airflow": lambda c, e: check_airflow_components(c),
    "airflow_config": lambda c, e: check_airflow_config(c, airflow_config_options()),
    "airflow_folders": lambda c, e: check_airflow_folders(c, REPO_ROOT),
    "dag_queues": lambda c, e: check_dag_queues(c, REPO_ROOT / "dags"),
    "label_studio_files": check_label_studio_files,
    "monitoring_page": lambda c, e: check_monitoring_page(c),
    "keys": lambda c, e: check_compose_keys(c),
    "mlflow": check_mlflow,
    "images": check_images_pinned,
    "image_versions": lambda c, e: check_image_versions(c, e, REPO_ROOT),
}


@pytest.mark.parametrize("check", sorted(COMPOSE_CHECKS))
def test_compose_passes(check: str, compose: Compose, env: dict[str, str]) -> None:
    assert COMPOSE_CHECKS[check](compose, env) == []


def test_databases_are_created_by_the_init_script(compose: Compose, datasource: dict[str, Any]) -> None:
    init_sh = POSTGRES_INIT.read_text(encoding="utf-8")
    assert {("airflow", "airflow"), ("mlflow", "mlflow"), ("pipeline", "pipeline")} <= _init_sql_databases(init_sh)
    assert check_databases(compose, init_sh, datasource) == []


def test_grafana_provisioning_is_wired(compose: Compose, datasource: dict[str, Any]) -> None:
    assert check_grafana(compose, datasource, load_yaml(DASHBOARD_PROVIDER_FILE)) == []


def test_the_migrations_create_the_tables_and_columns_of_the_schema_module(migrated_schema: MetaData) -> None:
    """The dashboards are checked against the migrations; schema.py must agree (names here, types in integration)."""
    migrated = {name: {column.name for column in table.columns} for name, table in migrated_schema.tables.items()}
    declared = {name: {column.name for column in table.columns} for name, table in store_metadata.tables.items()}
    assert migrated == declared


@pytest.mark.parametrize("dashboard_file", sorted(path.name for path in DASHBOARDS.glob("*.json")))
def test_dashboard_queries_only_tables_and_columns_the_migrations_create(
    dashboard_file: str, datasource: dict[str, Any], migrated_schema: MetaData
) -> None:
    dashboard = json.loads((DASHBOARDS / dashboard_file).read_text(encoding="utf-8"))
    uid = datasource["datasources"][0]["uid"]
    expected = EXPECTED_DASHBOARDS.get(dashboard_file, {})
    assert len(list(dashboard_queries(dashboard))) >= len(expected)
    problems = check_dashboard(
        dashboard, migrated_schema, uid, expected, monitoring_metric_names(), EXPECTED_PANEL_METRICS
    )
    assert problems == []


def test_there_is_a_dashboard_over_the_metrics_table() -> None:
    assert EXPECTED_DASHBOARDS.keys() <= {path.name for path in DASHBOARDS.glob("*.json")}
    dashboard = json.loads(MONITORING_DASHBOARD_FILE.read_text(encoding="utf-8"))
    metric_panels = [
        title for title, _, sql in dashboard_queries(dashboard) if "monitor_metrics" in sql_references(sql)[0]
    ]
    assert len(metric_panels) >= len(EXPECTED_PANEL_METRICS)


def test_the_monitoring_run_writes_the_metrics_the_dashboard_needs() -> None:
    names, patterns = monitoring_metric_names()
    assert set(EXPECTED_PANEL_METRICS.values()) <= names
    assert "drift.*.distance" in patterns


def test_every_dockerfile_copy_source_exists() -> None:
    dockerfiles = sorted((REPO_ROOT / "docker").glob("*.Dockerfile"))
    assert {path.name for path in dockerfiles} >= {"airflow.Dockerfile", "gpu-worker.Dockerfile", "mlflow.Dockerfile"}
    for dockerfile in dockerfiles:
        # Our Dockerfiles that copy repository files are built with the repository root as the context.
        assert check_dockerfile_copies(dockerfile, REPO_ROOT) == [], dockerfile.name


def test_gpu_image_is_cuda_based_and_serves_only_the_gpu_queue() -> None:
    dockerfile = DOCKERFILES["gpu-worker"]
    instructions = dockerfile_instructions(dockerfile.read_text(encoding="utf-8"))
    cmd = json.loads(next(arguments for keyword, arguments in instructions if keyword == "CMD"))
    assert celery_queues(cmd) == ["gpu"]
    assert any(base.startswith("nvidia/cuda:") for base in dockerfile_base_images(dockerfile))


def test_torch_is_the_cpu_wheel_on_cpu_and_the_cuda_build_on_gpu() -> None:
    constraints = constraint_pins(REPO_ROOT / "requirements" / "constraints.txt")
    assert check_torch_builds(DOCKERFILES["airflow"], DOCKERFILES["gpu-worker"], constraints, _torch_range()) == []


def test_airflow_images_bake_dags_and_plugins() -> None:
    for name in ("airflow", "gpu-worker"):
        copied = _copied_to(DOCKERFILES[name])
        assert copied.get("/opt/airflow/dags") == "dags", name
        assert copied.get("/opt/airflow/plugins") == "plugins", name


def test_deploy_doc_covers_every_service_scaling_backups_and_upgrades(compose: Compose) -> None:
    assert check_deploy_doc(DEPLOY_DOC.read_text(encoding="utf-8"), compose, REQUIRED_DOC_SECTIONS) == []


def test_deploy_doc_checker_catches_gaps(compose: Compose) -> None:
    text = DEPLOY_DOC.read_text(encoding="utf-8")
    without_redis = text.replace("### `redis`", "### The broker")
    assert check_deploy_doc(without_redis, compose, REQUIRED_DOC_SECTIONS) == [
        "docs/deploy.md: no section (heading) for the service `redis`"
    ]
    without_backups = text.replace("## Backups", "## Keeping copies")
    assert "docs/deploy.md: no section 'Backups'" in check_deploy_doc(without_backups, compose, REQUIRED_DOC_SECTIONS)
    without_store_migration = text.replace("pipeline db upgrade", "pipeline db migrate")
    assert "docs/deploy.md: section 'Upgrading' does not mention 'pipeline db upgrade'" in check_deploy_doc(
        without_store_migration, compose, REQUIRED_DOC_SECTIONS
    )
    in_a_code_block = "```\n## Backups\n```\n" + without_backups
    assert "docs/deploy.md: no section 'Backups'" in check_deploy_doc(in_a_code_block, compose, REQUIRED_DOC_SECTIONS)
    assert markdown_sections("# A\ntext\n## B\nmore\n# C\n") == [
        (1, "A", "text\n## B\nmore"),
        (2, "B", "more"),
        (1, "C", ""),
    ]


def test_the_dags_use_the_gpu_queue() -> None:
    """The GPU worker is there for retrain_model's training task (else check_dag_queues would prove little)."""
    queues, problems = dag_queues(REPO_ROOT / "dags")
    assert problems == []
    assert pipeline.executors.GPU_QUEUE in queues


# === The checkers find what they are meant to find ==================================================================
def _service(compose: Compose, name: str) -> dict[str, Any]:
    return compose["services"][name]


def _break_mlflow_healthcheck(c: Compose) -> None:
    del _service(c, "mlflow")["healthcheck"]


def _publish_grafana_on_mlflow_port(c: Compose) -> None:
    _service(c, "grafana")["ports"] = ["0.0.0.0:${MLFLOW_HOST_PORT}:3000"]


def _undefined_variable(c: Compose) -> None:
    _service(c, "grafana")["environment"]["GF_EXTRA"] = "${NOT_IN_ENV_EXAMPLE:-fallback}"


def _gpu_worker_on_default_queue(c: Compose) -> None:
    _service(c, "airflow-worker-gpu")["command"] = ["airflow", "celery", "worker", "--queues", "default"]


def _gpu_worker_without_device(c: Compose) -> None:
    del _service(c, "airflow-worker-gpu")["deploy"]


def _amd_device(c: Compose) -> None:
    _service(c, "airflow-worker-gpu")["deploy"]["resources"]["reservations"]["devices"][0]["driver"] = "amd"


def _missing_dockerfile(c: Compose) -> None:
    _service(c, "mlflow")["build"]["dockerfile"] = "no-such.Dockerfile"


def _missing_context(c: Compose) -> None:
    _service(c, "airflow-worker")["build"] = {"context": "no-such-dir", "dockerfile": "Dockerfile"}


def _missing_bind_mount(c: Compose) -> None:
    _service(c, "grafana")["volumes"].append("./docker/grafana/no-such-folder:/etc/extra:ro")


def _undeclared_volume(c: Compose) -> None:
    _service(c, "redis")["volumes"] = ["redis-undeclared:/data"]


def _list_depends_on(c: Compose) -> None:
    _service(c, "mlflow")["depends_on"] = ["postgres"]


def _healthy_wait_on_one_shot(c: Compose) -> None:
    _service(c, "mlflow")["depends_on"]["minio-init"]["condition"] = "service_healthy"


def _literal_password(c: Compose) -> None:
    _service(c, "mlflow")["environment"]["MLFLOW_BACKEND_STORE_URI"] = (
        "postgresql://mlflow:hunter2@postgres:5432/mlflow"
    )


def _literal_token(c: Compose) -> None:
    _service(c, "label-studio")["environment"]["LABEL_STUDIO_USER_TOKEN"] = "abc123"


def _typo_in_pipeline_setting(c: Compose) -> None:
    _service(c, "airflow-worker")["environment"]["PIPELINE_MLFLOW_TRACKING_URL"] = "http://mlflow:5000"


def _worker_without_db_url(c: Compose) -> None:
    del _service(c, "airflow-worker-gpu")["environment"]["PIPELINE_DB_URL"]


def _scheduler_without_jwt_secret(c: Compose) -> None:
    scheduler = _service(c, "airflow-scheduler")
    # The YAML anchor makes the components share one environment mapping: change a copy, not all of them.
    scheduler["environment"] = dict(scheduler["environment"])
    del scheduler["environment"]["AIRFLOW__API_AUTH__JWT_SECRET"]


def _init_without_store_migration(c: Compose) -> None:
    _service(c, "airflow-init")["command"] = ["set -e\nairflow db migrate\n"]


def _mlflow_artifacts_on_local_disk(c: Compose) -> None:
    command = _service(c, "mlflow")["command"]
    command[command.index("--artifacts-destination") + 1] = "/mlartifacts"


def _mlflow_rejects_service_name(c: Compose) -> None:
    command = _service(c, "mlflow")["command"]
    command[command.index("--allowed-hosts") + 1] = "localhost,localhost:*"


def _unpinned_image(c: Compose) -> None:
    _service(c, "redis")["image"] = "redis:latest"


def _own_environment(c: Compose, name: str) -> dict[str, Any]:
    """The service's environment as its own mapping (the YAML anchors make services share one)."""
    service = _service(c, name)
    service["environment"] = dict(service["environment"])
    return service["environment"]


def _misspelt_airflow_option(c: Compose) -> None:
    _own_environment(c, "airflow-scheduler")["AIRFLOW__SCHEDULER__ENABLE_HEALTHCHECK"] = "true"


def _local_executor(c: Compose) -> None:
    _own_environment(c, "airflow-worker")["AIRFLOW__CORE__EXECUTOR"] = "LocalExecutor"


def _rabbitmq_broker(c: Compose) -> None:
    _own_environment(c, "airflow-triggerer")["AIRFLOW__CELERY__BROKER_URL"] = "amqp://guest:${REDIS_PASSWORD}@mq//"


def _plugins_folder_not_baked(c: Compose) -> None:
    _own_environment(c, "airflow-apiserver")["AIRFLOW__CORE__PLUGINS_FOLDER"] = "/opt/airflow/more-plugins"


def _dags_mounted_as_plugins(c: Compose) -> None:
    worker = _service(c, "airflow-worker")
    worker["volumes"] = [v.replace("./plugins:", "./dags:") for v in worker["volumes"]]


def _gpu_queue_renamed(c: Compose) -> None:
    _service(c, "airflow-worker-gpu")["command"] = ["airflow", "celery", "worker", "--queues", "cuda"]


def _label_studio_sees_raw_dicom(c: Compose) -> None:
    _service(c, "label-studio")["volumes"].append("pipeline-storage:/data/storage:ro")


def _renderings_elsewhere(c: Compose) -> None:
    _own_environment(c, "airflow-worker")["PIPELINE_LABEL_STUDIO_DOCUMENT_ROOT"] = "/opt/pipeline/storage/renderings"


def _renderings_read_only(c: Compose) -> None:
    worker = _service(c, "airflow-worker-gpu")
    worker["volumes"] = [f"{v}:ro" if v.startswith("label-studio-files:") else v for v in worker["volumes"]]


def _page_without_store(c: Compose) -> None:
    del _own_environment(c, "airflow-apiserver")["PIPELINE_DB_URL"]


def _misspelt_healthcheck(c: Compose) -> None:
    _service(c, "redis")["healtcheck"] = _service(c, "redis").pop("healthcheck")


def _odd_restart_policy(c: Compose) -> None:
    _service(c, "grafana")["restart"] = "sometimes"


def _mlflow_image_tag_differs(c: Compose) -> None:
    _service(c, "mlflow")["image"] = "medimg-mlops/mlflow:3.1.0"


def _label_studio_not_the_tested_version(c: Compose) -> None:
    _service(c, "label-studio")["image"] = "heartexlabs/label-studio:1.20.0"


BROKEN_COMPOSE_CASES = [
    (_break_mlflow_healthcheck, "healthchecks", "mlflow: long-running service without a healthcheck"),
    (_break_mlflow_healthcheck, "depends_on", "waits for mlflow to be healthy, but mlflow has no healthcheck"),
    (_publish_grafana_on_mlflow_port, "ports", "host port 5000/tcp is published by both mlflow and grafana"),
    (_undefined_variable, "variables", "${NOT_IN_ENV_EXAMPLE} is used but not defined in .env.example"),
    (_gpu_worker_on_default_queue, "workers", "no Celery worker serves the gpu queue"),
    (_gpu_worker_without_device, "workers", "airflow-worker-gpu: serves the gpu queue but reserves no NVIDIA GPU"),
    (_amd_device, "workers", "reserves no NVIDIA GPU"),
    (_missing_dockerfile, "builds", "no-such.Dockerfile does not exist"),
    (_missing_context, "builds", "no-such-dir is not a folder"),
    (_missing_bind_mount, "mounts", "./docker/grafana/no-such-folder does not exist"),
    (_undeclared_volume, "mounts", "named volume 'redis-undeclared' is not declared"),
    (_list_depends_on, "depends_on", "mlflow: depends_on is a list"),
    (_healthy_wait_on_one_shot, "depends_on", "waits for minio-init to be healthy, but minio-init has no healthcheck"),
    (_literal_password, "secrets", "literal password in URL"),
    (_literal_token, "secrets", "label-studio: LABEL_STUDIO_USER_TOKEN is a literal"),
    (_typo_in_pipeline_setting, "pipeline_env", "PIPELINE_MLFLOW_TRACKING_URL is not a pipeline setting"),
    (_worker_without_db_url, "pipeline_env", "airflow-worker-gpu: worker lacks PIPELINE_DB_URL"),
    (_scheduler_without_jwt_secret, "airflow", "airflow-scheduler: Airflow configuration differs"),
    (_init_without_store_migration, "airflow", "airflow-init does not run `pipeline db upgrade`"),
    (_mlflow_artifacts_on_local_disk, "mlflow", "--artifacts-destination is not an s3:// location"),
    (_mlflow_rejects_service_name, "mlflow", "MLflow rejects Host 'mlflow:5000'"),
    (_unpinned_image, "images", "redis: image 'redis:latest' is not pinned"),
    (_misspelt_airflow_option, "airflow_config", "AIRFLOW__SCHEDULER__ENABLE_HEALTHCHECK is not an option"),
    (_local_executor, "airflow_config", "airflow-worker: the executor is not CeleryExecutor"),
    (_rabbitmq_broker, "airflow_config", "airflow-triggerer: the Celery broker is not Redis"),
    (_plugins_folder_not_baked, "airflow_folders", "does not COPY plugins/ to /opt/airflow/more-plugins"),
    (_dags_mounted_as_plugins, "airflow_folders", "/opt/airflow/plugins is mounted from './dags', not ./plugins"),
    (_gpu_queue_renamed, "dag_queues", "queue 'gpu' is used by a DAG but no worker serves it"),
    (_label_studio_sees_raw_dicom, "label_studio_files", "the storage root with the raw DICOM (PHI)"),
    (_renderings_elsewhere, "label_studio_files", "airflow-worker: PIPELINE_LABEL_STUDIO_DOCUMENT_ROOT is"),
    (_renderings_read_only, "label_studio_files", "mounts /opt/pipeline/label-studio-files read-only"),
    (_page_without_store, "monitoring_page", "airflow-apiserver: lacks PIPELINE_DB_URL"),
    (_misspelt_healthcheck, "keys", "redis: unknown key 'healtcheck'"),
    (_odd_restart_policy, "keys", "grafana: restart policy 'sometimes'"),
    (_mlflow_image_tag_differs, "image_versions", "mlflow: image tag is not the MLflow version"),
    (_label_studio_not_the_tested_version, "image_versions", "label-studio: image tag is not label-studio=="),
]


@pytest.mark.parametrize(
    ("breakage", "check", "needle"),
    BROKEN_COMPOSE_CASES,
    ids=[f"{case[0].__name__.strip('_')}-{case[1]}" for case in BROKEN_COMPOSE_CASES],
)
def test_checkers_catch_a_broken_compose(
    breakage: Callable[[Compose], None], check: str, needle: str, compose: Compose, env: dict[str, str]
) -> None:
    assert COMPOSE_CHECKS[check](compose, env) == []  # the real file passes this checker...
    broken = copy.deepcopy(compose)
    breakage(broken)
    problems = COMPOSE_CHECKS[check](broken, env)
    assert any(needle in problem for problem in problems), problems  # ...and the broken copy fails it


def _variant(source: Path, target: Path, *replacements: tuple[str, str]) -> Path:
    text = source.read_text(encoding="utf-8")
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new)
    target.write_text(text, encoding="utf-8")
    return target


def test_torch_checker_catches_wrong_builds(tmp_path: Path) -> None:
    constraints = constraint_pins(REPO_ROOT / "requirements" / "constraints.txt")
    cpu, gpu, torch_range = DOCKERFILES["airflow"], DOCKERFILES["gpu-worker"], _torch_range()
    pypi_cpu = _variant(cpu, tmp_path / "cpu.Dockerfile", ("download.pytorch.org/whl/cpu", "pypi.org/simple"))
    assert any("CPU index" in p for p in check_torch_builds(pypi_cpu, gpu, constraints, torch_range))
    old_torch = _variant(cpu, tmp_path / "old.Dockerfile", ("TORCH_VERSION=2.13.0", "TORCH_VERSION=2.3.1"))
    problems = check_torch_builds(old_torch, gpu, constraints, torch_range)
    assert any("the constraints pin torch==2.13.0" in p for p in problems)
    assert any("outside the project's range" in p for p in problems)
    cuda12_index = _variant(gpu, tmp_path / "cu128.Dockerfile", ("whl/cu130", "whl/cu128"))
    assert any(
        "torch index is CUDA 12, the base image CUDA 13" in p
        for p in check_torch_builds(cpu, cuda12_index, constraints, torch_range)
    )
    cuda12_all = _variant(
        gpu, tmp_path / "cuda12.Dockerfile", ("whl/cu130", "whl/cu128"), ("cuda:13.0.1", "cuda:12.8.1")
    )
    assert any(
        "nvidia wheels for CUDA ['13']" in p for p in check_torch_builds(cpu, cuda12_all, constraints, torch_range)
    )
    unpinned = _variant(gpu, tmp_path / "unpinned.Dockerfile", ('"torch==${TORCH_VERSION}"', "torch"))
    assert any("no `pip install" in p for p in check_torch_builds(cpu, unpinned, constraints, torch_range))


def test_unused_and_missing_env_variables_are_reported(compose: Compose, env: dict[str, str]) -> None:
    fewer = {key: value for key, value in env.items() if key != "REDIS_PASSWORD"}
    assert "${REDIS_PASSWORD} is used but not defined in .env.example" in check_variables(compose, fewer)
    more = {**env, "LEFTOVER": "1"}
    assert "LEFTOVER is defined in .env.example but docker-compose.yml never uses it" in check_variables(compose, more)


def test_env_file_reader_reports_duplicates_and_garbage(tmp_path: Path) -> None:
    path = tmp_path / ".env.example"
    path.write_text("# comment\nA=1\nB='two words'\nA=3\nnot a line\n", encoding="utf-8")
    values, problems = read_env_file(path)
    assert values == {"A": "3", "B": "two words"}
    assert [p.split(": ", 1)[1] for p in problems] == ["A is defined twice", "not a KEY=VALUE line: 'not a line'"]
    assert check_env_example_values({"LABEL_STUDIO_API_TOKEN": "x" * 41, "AIRFLOW_FERNET_KEY": "short"}) != []


def test_database_checker_catches_an_unknown_database(compose: Compose, datasource: dict[str, Any]) -> None:
    init_sh = POSTGRES_INIT.read_text(encoding="utf-8")
    broken = copy.deepcopy(compose)
    _service(broken, "mlflow")["environment"]["MLFLOW_BACKEND_STORE_URI"] = (
        "postgresql+psycopg2://mlflow:${MLFLOW_DB_PASSWORD}@postgres:5432/mlflow_typo"
    )
    assert any("'mlflow_typo'" in p for p in check_databases(broken, init_sh, datasource))
    without_reader = init_sh.replace(
        'create_reader pipeline_reader "$PIPELINE_READER_DB_PASSWORD" pipeline pipeline', ""
    )
    problems = check_databases(compose, without_reader, datasource)
    assert any(
        p.startswith("grafana data source 'Pipeline store': database 'pipeline' of role 'pipeline_reader'")
        for p in problems
    )
    assert any(
        p.startswith("airflow-apiserver: only reads the store but logs in as 'pipeline_reader'") for p in problems
    )
    without_password = copy.deepcopy(compose)
    del _service(without_password, "postgres")["environment"]["PIPELINE_READER_DB_PASSWORD"]
    assert any("reads PIPELINE_READER_DB_PASSWORD" in p for p in check_databases(without_password, init_sh, datasource))


def test_database_checker_catches_a_wrong_password_and_a_writer_where_a_reader_belongs(
    compose: Compose, datasource: dict[str, Any]
) -> None:
    init_sh = POSTGRES_INIT.read_text(encoding="utf-8")
    swapped = copy.deepcopy(compose)
    _service(swapped, "label-studio")["environment"]["POSTGRE_PASSWORD"] = "${PIPELINE_DB_PASSWORD}"
    assert any(
        p.startswith("label-studio: role 'labelstudio' logs in with '${PIPELINE_DB_PASSWORD}'")
        for p in check_databases(swapped, init_sh, datasource)
    )
    writer = copy.deepcopy(compose)
    apiserver = _service(writer, "airflow-apiserver")
    apiserver["environment"] = dict(apiserver["environment"])
    apiserver["environment"]["PIPELINE_DB_URL"] = "postgresql://pipeline:${PIPELINE_DB_PASSWORD}@postgres:5432/pipeline"
    assert "airflow-apiserver: only reads the store but logs in as 'pipeline', not a read-only role of init.sh" in (
        check_databases(writer, init_sh, datasource)
    )
    grafana_as_owner = copy.deepcopy(datasource)
    grafana_as_owner["datasources"][0]["user"] = "pipeline"
    assert any("logs in as 'pipeline'" in p for p in check_databases(compose, init_sh, grafana_as_owner))
    grafana_as_owner["datasources"][0]["jsonData"]["postgresVersion"] = 1500
    assert any("postgresVersion 1500" in p for p in check_databases(compose, init_sh, grafana_as_owner))


def test_grafana_checker_catches_a_wrong_provider_path(compose: Compose, datasource: dict[str, Any]) -> None:
    provider = load_yaml(DASHBOARD_PROVIDER_FILE)
    provider["providers"][0]["options"]["path"] = "/var/lib/grafana/elsewhere"
    assert any("dashboard provider path" in p for p in check_grafana(compose, datasource, provider))
    no_password = copy.deepcopy(compose)
    del _service(no_password, "grafana")["environment"]["PIPELINE_READER_DB_PASSWORD"]
    assert any("${PIPELINE_READER_DB_PASSWORD}" in p for p in check_grafana(no_password, datasource, provider))


def test_dockerfile_checker(tmp_path: Path) -> None:
    (tmp_path / "present.txt").write_text("x", encoding="utf-8")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "module.py").write_text("", encoding="utf-8")
    (tmp_path / "empty").mkdir()
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(
        "ARG BASE=nvidia/cuda:13.0.1-runtime-ubuntu24.04\n"
        "FROM ghcr.io/astral-sh/uv:0.13.9 AS uv\n"
        "FROM ${BASE}\n"
        "COPY --from=uv /uv /usr/local/bin/uv\n"
        "COPY present.txt \\\n"
        "     missing.txt /opt/\n"
        "# COPY commented-out.txt /opt/\n"
        'COPY ["src/", "/opt/src/"]\n'
        "COPY --chown=1000:0 empty/ /opt/empty/\n"
        "ADD https://example.org/file.tgz /opt/\n",
        encoding="utf-8",
    )
    problems = check_dockerfile_copies(dockerfile, tmp_path)
    assert len(problems) == 2, problems
    assert "'missing.txt': missing.txt does not exist" in problems[0]
    assert "'empty/': empty is an empty folder" in problems[1]
    assert dockerfile_base_images(dockerfile) == [
        "ghcr.io/astral-sh/uv:0.13.9",
        "nvidia/cuda:13.0.1-runtime-ubuntu24.04",
    ]


def test_paths_a_clean_clone_lacks_are_reported(tmp_path: Path) -> None:
    """A git-ignored folder or an empty one exists here but not in CI's fresh clone: binding or copying it fails."""
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".gitignore").write_text("/data/\n", encoding="utf-8")
    for folder in ("data", "plugins", "dags"):
        (tmp_path / folder).mkdir()
    (tmp_path / "data" / "pipeline.db").write_text("", encoding="utf-8")
    (tmp_path / "dags" / "dag.py").write_text("", encoding="utf-8")
    compose = {"services": {"a": {"volumes": ["./dags:/d:ro", "./data:/data", "./plugins:/p", "/etc/hosts:/h:ro"]}}}
    assert check_mounts(compose, tmp_path) == [
        "a: bind mount './data': ./data is ignored by git (a clean clone lacks it)",
        "a: bind mount './plugins': ./plugins is an empty folder (git keeps no empty folder: a clean clone lacks it)",
        "a: bind mount '/etc/hosts' is outside the repository (host-specific)",
    ]
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(
        "FROM python:3.11-slim\nCOPY dags/ data/ /opt/\nCOPY plugins /opt/plugins\n", encoding="utf-8"
    )
    assert [problem.split(": ", 2)[2] for problem in check_dockerfile_copies(dockerfile, tmp_path)] == [
        "data is ignored by git (a clean clone lacks it)",
        "plugins is an empty folder (git keeps no empty folder: a clean clone lacks it)",
    ]


def test_dashboard_checker_catches_unknown_tables_and_columns(datasource: dict[str, Any]) -> None:
    uid = datasource["datasources"][0]["uid"]
    dashboard = json.loads(DASHBOARD_FILE.read_text(encoding="utf-8"))
    broken = copy.deepcopy(dashboard)
    broken["panels"][0]["targets"][0]["rawSql"] = (
        "SELECT date_trunc('hour', received_at) AS time, count(*) FROM inference_log WHERE $__timeFilter(received_at)"
    )
    broken["panels"][3]["targets"][0]["rawSql"] = (
        "SELECT percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) AS p95 FROM inference_logs"
    )
    broken["panels"][1]["targets"][0]["datasource"] = {"uid": "some-other-db"}
    problems = check_dashboard(broken, store_metadata, uid, EXPECTED_PANELS)
    assert "panel 'Studies per site per hour': table 'inference_log' is not in the store's schema" in problems
    assert any("'latency_ms' is neither a column" in p for p in problems)
    assert any("panel 'Latency p95' does not use inference_logs.latency_s" in p for p in problems)
    assert any("data source uid 'some-other-db'" in p for p in problems)
    del broken["panels"][2]
    assert "panel 'Share of decision = normal per site' is missing" in check_dashboard(
        broken, store_metadata, uid, EXPECTED_PANELS
    )


def test_dashboard_checker_catches_unknown_metrics_and_broken_variables(
    datasource: dict[str, Any], migrated_schema: MetaData
) -> None:
    uid = datasource["datasources"][0]["uid"]
    dashboard = json.loads(MONITORING_DASHBOARD_FILE.read_text(encoding="utf-8"))
    broken = copy.deepcopy(dashboard)
    target = broken["panels"][0]["targets"][0]
    target["rawSql"] = target["rawSql"].replace("'share_filtered_normal'", "'share_normal'")
    broken["templating"]["list"][0]["query"] = "SELECT DISTINCT site FROM monitor_metric"
    args = (migrated_schema, uid, EXPECTED_MONITORING_PANELS, monitoring_metric_names(), EXPECTED_PANEL_METRICS)
    problems = check_dashboard(broken, *args)
    assert (
        "panel 'Share filtered as normal per site': no monitoring run writes a metric 'share_normal' (monitor_metrics)"
        in problems
    )
    assert "panel 'Share filtered as normal per site' does not filter on metric = 'share_filtered_normal'" in problems
    assert "panel 'variable $site': table 'monitor_metric' is not in the store's schema" in problems
    assert check_dashboard(dashboard, *args) == []


@pytest.mark.parametrize(
    ("sql", "found"),
    [
        ("SELECT value FROM monitor_metrics WHERE metric = 'volume'", [("=", "volume")]),
        (
            "SELECT value FROM monitor_metrics m WHERE m.metric IN ('volume', 'error_rate.any')",
            [("=", "volume"), ("=", "error_rate.any")],
        ),
        (
            "SELECT value FROM monitor_metrics WHERE metric LIKE 'drift.%.distance' -- metric = 'x'",
            [("like", "drift.%.distance")],
        ),
        ("SELECT metric AS metric FROM monitor_metrics", []),
    ],
)
def test_metric_filters(sql: str, found: list[tuple[str, str]]) -> None:
    assert metric_filters(sql) == found
    names, patterns = {"volume", "error_rate.any"}, {"drift.*.distance"}
    assert all(is_known_metric(literal, operator, names, patterns) for operator, literal in found)
    assert not is_known_metric("drift.%.pvalue", "like", names, patterns)
    assert is_known_metric("drift.kvp.distance", "=", names, patterns)


@pytest.mark.parametrize(
    ("sql", "problem"),
    [
        ("SELECT site, count(*) AS n FROM inference_logs GROUP BY site", None),
        ("SELECT l.site, s.manufacturer FROM inference_logs l JOIN studies AS s ON s.study_id = l.study_id", None),
        ("SELECT extract(epoch FROM received_at) AS t, latency_s::numeric FROM inference_logs", None),
        (
            "WITH w AS (SELECT site, latency_s FROM inference_logs) SELECT site, max(latency_s) FROM w GROUP BY site",
            None,
        ),
        ("SELECT x.n FROM (SELECT count(*) AS n FROM feedback WHERE final_abnormal) AS x", None),
        ("SELECT site FROM inference_logs WHERE site IN ($site) AND status = 'ok' -- note: 'bogus'", None),
        ("SELECT l.kvp FROM inference_logs l", "l.kvp is not a column of inference_logs"),
        # kvp is a column of the query's tables (studies), but not of the one l stands for
        (
            "SELECT l.kvp FROM inference_logs AS l JOIN studies s USING (study_id)",
            "l.kvp is not a column of inference",
        ),  # kvp belongs to studies, not inference_logs
        ("SELECT site FROM metrics", "table 'metrics'"),
        ("SELECT probability FROM inference_logs", "'probability' is neither"),
        ("SELECT 1", "queries no table"),
    ],
)
def test_sql_checker(sql: str, problem: str | None) -> None:
    problems = check_sql(sql, store_metadata, "q")
    if problem is None:
        assert problems == []
    else:
        assert any(problem in p for p in problems), problems


def test_interpolation_follows_compose() -> None:
    env = {"A": "a", "EMPTY": ""}
    assert interpolate("${A}-$A-$${A}-$$", env) == "a-a-${A}-$"
    assert interpolate("${EMPTY:-x}|${EMPTY-x}|${UNSET-x}|${A:+y}|${EMPTY:+y}|${A:?need A}", env) == "x||x|y||a"
    assert variables_in("${A:-$$B} celery@$${HOSTNAME} $C")[0] == {"A", "C"}
    assert variables_in("cost: 5$")[1] != []


@pytest.mark.parametrize(
    ("spec", "published"),
    [
        ("127.0.0.1:8080:8080", [("127.0.0.1", 8080, "tcp")]),
        ("9000:9000/udp", [("", 9000, "udp")]),
        ("8000-8001:80", [("", 8000, "tcp"), ("", 8001, "tcp")]),
        ("5432", []),
        (5432, []),
        ("127.0.0.1::80", []),
        ({"target": 80, "published": "8081", "host_ip": "127.0.0.1"}, [("127.0.0.1", 8081, "tcp")]),
    ],
)
def test_port_parsing(spec: Any, published: list[tuple[str, int, str]]) -> None:
    assert _published_ports(spec) == published


def test_ports_on_different_addresses_do_not_clash() -> None:
    two = {"services": {"a": {"ports": ["127.0.0.1:80:80"]}, "b": {"ports": ["10.0.0.2:80:80"]}}}
    assert check_ports(two, {}) == []
    two["services"]["b"]["ports"] = ["80:80"]  # all addresses: overlaps 127.0.0.1
    assert check_ports(two, {}) == ["host port 80/tcp is published by both a and b"]
