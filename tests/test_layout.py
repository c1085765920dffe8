"""The package's layering, checked on the source: no import cycles between leanscore's modules
(function-level imports included), compression never imports the jobs layer or the scoring
side (udfs), udfs never imports jobs and takes from compression only what an artifact and its
inputs are (``UDFS_USES``), nothing of the product imports the bench, and no two compression
modules share a name."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {
    "compression": "leanscore.compression",
    "udfs": "leanscore.udfs",
    "jobs": "leanscore.jobs",
    "bench": "leanscore.bench",
}
# The CLI's bench, demo and report commands import the bench when they run: the one way in.
BENCH_ENTRY = {"leanscore.jobs.cli"}
# What the scoring side takes from compression: the artifact, the error base class, the MLflow
# registry it loads artifacts from, and the families' torch-free input modules (how a column
# becomes the model's tensor, shared so that a model is trained on what it is scored on).
UDFS_USES = {
    "leanscore.compression.artifact",
    "leanscore.compression.errors",
    "leanscore.compression.mlflow_registry",
    "leanscore.compression.tabular_inputs",
    "leanscore.compression.image_inputs",
    "leanscore.compression.text_inputs",
}


def modules() -> dict[str, Path]:
    """Every module of the package folders, subpackages (``udfs/engines``, ``udfs/families``)
    included."""
    found = {}
    for folder, namespace in PACKAGES.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            parts = parts[:-1] if parts[-1] == "__init__" else parts
            found[".".join((namespace, *parts))] = path
    return found


def import_graph(sources: dict[str, str]) -> dict[str, set[str]]:
    """Module -> the leanscore modules it imports anywhere in its body. ``from pkg import sub``
    counts as importing the submodule ``pkg.sub`` where that is a module."""
    graph = {name: set() for name in sources}
    for name, text in sources.items():
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ImportFrom) and node.module:
                subs = [f"{node.module}.{alias.name}" for alias in node.names]
                targets = [t for t in subs if t in sources] or [node.module]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            graph[name].update(t for t in targets if t in sources and t != name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph({name: path.read_text() for name, path in modules().items()})


def test_no_import_cycles(graph):
    assert cycles(graph) == []


def test_the_cycle_check_finds_a_cycle_through_a_function_level_import():
    sources = {
        "leanscore.jobs.a": "from leanscore.jobs.b import thing\n",
        "leanscore.jobs.b": "def f():\n    from leanscore.jobs import a\n",
        "leanscore.jobs.c": "import leanscore.jobs.a\n",
    }
    assert cycles(import_graph(sources)) == [["leanscore.jobs.a", "leanscore.jobs.b"]]


@pytest.mark.parametrize("layer", ["leanscore.compression", "leanscore.udfs"])
def test_lower_layers_never_import_jobs(graph, layer):
    upward = {
        (name, target)
        for name, targets in graph.items()
        if name.startswith(layer)
        for target in targets
        if target.startswith("leanscore.jobs")
    }
    assert upward == set()


def test_compression_never_imports_the_scoring_side(graph):
    """A model is compressed without Spark's executor code: what both need (how a column
    becomes a tensor) lives in compression's input modules, which udfs imports."""
    assert imports_between(graph, "leanscore.compression", "leanscore.udfs") == set()


def imports_between(graph, layer: str, target_layer: str) -> set[tuple[str, str]]:
    return {
        (name, target)
        for name, targets in graph.items()
        if name.startswith(layer)
        for target in targets
        if target.startswith(target_layer)
    }


def udfs_imports_outside_its_allowance(graph) -> set[tuple[str, str]]:
    return {
        pair
        for pair in imports_between(graph, "leanscore.udfs", "leanscore.compression")
        if pair[1] not in UDFS_USES
    }


def test_udfs_takes_from_compression_only_the_artifact_and_the_input_modules(graph):
    assert udfs_imports_outside_its_allowance(graph) == set()


def test_the_layer_checks_find_an_import_each_way():
    sources = {
        "leanscore.udfs.kernel": "from leanscore.compression.models import MLP\n",
        "leanscore.udfs.batch": "from leanscore.compression.tabular_inputs import Batch\n",
        "leanscore.compression.models": "from leanscore.udfs.kernel import Scorer\n",
        "leanscore.compression.tabular_inputs": "",
    }
    graph = import_graph(sources)
    assert imports_between(graph, "leanscore.compression", "leanscore.udfs") == {
        ("leanscore.compression.models", "leanscore.udfs.kernel")
    }
    assert udfs_imports_outside_its_allowance(graph) == {
        ("leanscore.udfs.kernel", "leanscore.compression.models")
    }


def product_imports_of_the_bench(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    """(module, bench module) for every module outside the bench, bar the CLI's commands, that
    imports the bench."""
    return {
        (name, target)
        for name, targets in graph.items()
        if not name.startswith("leanscore.bench") and name not in BENCH_ENTRY
        for target in targets
        if target.startswith("leanscore.bench")
    }


def test_nothing_of_the_product_imports_the_bench_or_the_demo(graph):
    """What a scheduled job or a compression loads is the product: benchmarks and demo
    fixtures (and their torch training, matplotlib) stay out of it."""
    assert product_imports_of_the_bench(graph) == set()
    assert any(name.startswith("leanscore.bench.demo") for name in graph)


def test_the_bench_check_finds_a_product_module_importing_the_bench():
    sources = {
        "leanscore.bench.run": "",
        "leanscore.jobs.score": "def f():\n    from leanscore.bench.run import run_bench\n",
        "leanscore.jobs.cli": "from leanscore.bench import run\n",
    }
    found = product_imports_of_the_bench(import_graph(sources))
    assert found == {("leanscore.jobs.score", "leanscore.bench.run")}


def shared_names(names, package: str = "leanscore.compression") -> dict[str, list[str]]:
    """Module names (the last part) that more than one module under ``package`` carries."""
    by_name: dict[str, list[str]] = {}
    for name in sorted(names):
        if name.startswith(package + "."):
            by_name.setdefault(name.rsplit(".", 1)[1], []).append(name)
    return {short: full for short, full in by_name.items() if len(full) > 1}


def test_no_two_compression_modules_share_a_name(graph):
    """A technique's algorithm is named by its noun and its recipe step by its verb: a reader
    never wonders which ``prune`` an import means."""
    packages = {n for n, p in modules().items() if p.name == "__init__.py"}
    assert shared_names(set(graph) - packages) == {}


def test_the_name_check_finds_an_algorithm_and_a_step_of_one_name():
    names = ["leanscore.compression.prune", "leanscore.compression.steps.prune"]
    assert shared_names(names + ["leanscore.udfs.prune"]) == {"prune": names}


def test_every_error_class_of_ours_derives_from_the_one_base_class():
    """The CLI turns a ``LeanscoreError`` into one line and exit 1; an error class outside the
    hierarchy would surface as a traceback (or, inside Spark, as Spark's text)."""
    import importlib
    import inspect
    import pkgutil

    from leanscore.compression.errors import LeanscoreError

    ours = []
    names = []
    for package in PACKAGES.values():
        path = importlib.import_module(package).__path__
        names += [info.name for info in pkgutil.walk_packages(path, f"{package}.")]
    for module_name in names:
        module = importlib.import_module(module_name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if obj.__module__ == module_name and issubclass(obj, Exception):
                ours.append(obj)
    assert len(ours) >= 10
    outside = [f"{c.__module__}.{c.__name__}" for c in ours if not issubclass(c, LeanscoreError)]
    assert outside == []


def test_cli_finds_our_error_in_spark_text_by_its_class():
    from leanscore.jobs.cli import _spark_error

    worker = (
        "An exception was thrown from the Python worker. Please see the stack trace below.\n"
        "Traceback (most recent call last):\n"
        '  File "kernel.py", line 9, in score\n'
        "ValueError: an inner library complaint\n"
        "\nDuring handling of the above exception, another exception occurred:\n\n"
        "leanscore.udfs.kernel.BadRowError: row with key 'id=3': column 'x' is null; fix it\n"
    )
    assert _spark_error(RuntimeError(worker)) == "row with key 'id=3': column 'x' is null; fix it"
    not_ours = worker.replace("leanscore.udfs.kernel.BadRowError", "leanscore.udfs.kernel.Scorer")
    not_ours = not_ours.replace("Scorer: row", "SomethingError: row")
    assert _spark_error(RuntimeError(not_ours)) == "an inner library complaint"
    assert _spark_error(RuntimeError("[SPARK_FAILURE] the JVM died\nat x")) == (
        "[SPARK_FAILURE] the JVM died"
    )


def test_the_step_registry_loads_neither_torch_nor_onnx():
    """Recipes are validated against the registry wherever a config is read; each step imports
    its heavy libraries where it does its work."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import leanscore.compression.steps\n"
        "heavy = {'torch', 'onnx'} & set(sys.modules)\n"
        "assert not heavy, sorted(heavy)\n"
        "import leanscore.compression.trees\n"
        "assert 'onnx' in sys.modules\n"  # the check can fail
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
