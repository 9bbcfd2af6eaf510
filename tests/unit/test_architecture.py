"""The layers of ``src/pipeline`` (docs/architecture.md), kept true: every import in the package is walked.

A package imports only packages of its own layer or below, no two packages import each other (directly or round
a circle), and below the composition layer nothing imports the settings or reads the environment: the entries hand
the stages what they need.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "pipeline"

#: From the bottom. Packages of one layer may import each other (without a circle); a package outside every
#: layer fails, so a new one is placed here, and in docs/architecture.md, on purpose.
LAYERS: list[set[str]] = [
    {"logs", "dicom", "store", "drift", "alerts"},  # foundations
    {"model"},  # the network and its preprocessing
    {"registry"},  # MLflow: versions, aliases, runs, evaluation numbers
    {"inference"},  # the serving service
    {"simulate"},  # the hospitals and the production service
    {"training"},  # snapshots, the training loop, bootstrap, retraining
    {"validation", "selection", "labeling", "monitor"},  # the stages
    {"reports"},  # pages and figures from the stages' results
    {"config", "resources", "entry", "cli", "demo", "web", "callbacks", "executors"},  # composition
]
COMPOSITION = LAYERS[-1]
LAYER = {package: i for i, layer in enumerate(LAYERS) for package in layer}


def modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def imports(module: str, path: Path) -> Iterator[tuple[str, int]]:
    """Every ``pipeline`` module ``path`` imports (at its top, in a function or for type checking), with the line."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from ((a.name, node.lineno) for a in node.names if a.name.startswith("pipeline"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                yield ".".join([*base, node.module] if node.module else base), node.lineno
            elif node.module and node.module.startswith("pipeline"):
                yield node.module, node.lineno


def reads_environment(path: Path) -> list[int]:
    """Lines of ``path`` that read environment variables (``os.environ``, ``os.getenv``, ``from os import ...``)."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        by_attribute = (
            isinstance(node, ast.Attribute)
            and node.attr in ("environ", "getenv", "environb")
            and isinstance(node.value, ast.Name)
            and node.value.id == "os"
        )
        by_name = (
            isinstance(node, ast.ImportFrom)
            and node.module == "os"
            and bool({a.name for a in node.names} & {"environ", "getenv", "environb"})
        )
        if by_attribute or by_name:
            lines.append(node.lineno)
    return lines


def package_graph() -> dict[str, dict[str, str]]:
    """package -> imported package -> one place it is imported (``file:line``)."""
    graph: dict[str, dict[str, str]] = defaultdict(dict)
    for module, path in modules():
        source = package_of(module)
        for imported, line in imports(module, path):
            target = package_of(imported)
            if target and target != source:
                graph[source].setdefault(target, f"{path.relative_to(SRC.parent)}:{line}")
    return graph


def cycles(graph: dict[str, dict[str, str]]) -> list[list[str]]:
    """The strongly connected components of more than one package (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, {}):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(set(graph) | {t for targets in graph.values() for t in targets}):
        if node not in index:
            visit(node)
    return found


def test_every_package_has_a_layer() -> None:
    packages = {package_of(m) for m, _ in modules()} - {""}
    assert packages - set(LAYER) == set(), "place the new package in LAYERS and in docs/architecture.md"


def test_no_two_packages_import_each_other() -> None:
    graph = package_graph()
    circles = cycles(graph)
    detail = [
        f"{' <-> '.join(c)}: " + "; ".join(f"{a}->{b} at {graph[a][b]}" for a in c for b in c if b in graph.get(a, {}))
        for c in circles
    ]
    assert circles == [], "\n".join(detail)


def test_a_package_imports_only_its_layer_and_below() -> None:
    upward = [
        f"{source} ({LAYER[source]}) imports {target} ({LAYER[target]}) at {where}"
        for source, targets in package_graph().items()
        for target, where in targets.items()
        if source in LAYER and target in LAYER and LAYER[target] > LAYER[source]
    ]
    assert upward == []


@pytest.mark.parametrize("package", sorted(set(LAYER) - COMPOSITION))
def test_a_stage_neither_imports_the_settings_nor_reads_the_environment(package: str) -> None:
    found = []
    for module, path in modules():
        if package_of(module) != package:
            continue
        where = path.relative_to(SRC.parent)
        found += [f"{where}:{line} imports {m}" for m, line in imports(module, path) if package_of(m) in COMPOSITION]
        found += [f"{where}:{line} reads the environment" for line in reads_environment(path)]
    assert found == [], "take it as an argument from the entry that calls it"


def test_the_walk_sees_what_it_should() -> None:
    """The checks above would pass on a walk that sees nothing: the walk finds known edges and a known cycle."""
    graph = package_graph()
    assert "store" in graph["monitor"] and "registry" in graph["inference"] and "entry" in graph["cli"]
    assert cycles({"a": {"b": ""}, "b": {"c": ""}, "c": {"a": ""}, "d": {"a": ""}}) == [["a", "b", "c"]]
    assert reads_environment(SRC / "demo" / "loop.py")  # the demo, a composition root, may and does
