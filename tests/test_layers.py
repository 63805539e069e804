"""The package layout of docs/design.md holds: a package imports only from the packages above it,
modules inside a package import each other without cycles, and third-party libraries stay in
the packages that own them."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "psvae_opt"

# The packages in the order data flows (docs/design.md, "Packages"). A module may import
# psvae_opt modules of an earlier package, and modules of its own package (without cycles).
ORDER = (
    "errors", "config", "data", "model", "training", "search", "reports", "inference", "service", "commands", "cli"
)  # fmt: skip
RANKS = {name: rank for rank, name in enumerate(ORDER)}
# Pairs (importer, imported) that the order would allow but that stay apart: inference reads
# trained networks through training/trained.py (decode, load_checkpoint, load_run), not reports,
# and is handed the traversal writers it needs by the command.
APART = {("inference", "reports")}
# Third-party packages confined to places: package -> the packages or modules allowed to import it
# ("search/storage" names one module, "search" a whole package).
CONFINED = {
    "h5py": ("data",),
    "optuna": ("search", "reports", "inference", "service", "commands", "cli"),
    "sqlalchemy": ("search/storage", "search/trial_queue"),
    "plotly": ("reports", "commands"),
    "optuna_dashboard": ("reports/ratings", "reports/dashboard"),
    # the poses extra: imported inside the readers that need them only
    "sleap_io": ("data",),
    "pynwb": ("data", "inference/formats"),  # inference/formats: the NWB export of encoded sessions
    "ndx_pose": ("data",),
    "hdmf": ("data",),
    "hdf5plugin": ("data",),
    # test-only libraries, which write DeepLabCut's .h5 files in the tests
    "pandas": ("data",),
    "tables": ("data",),
    # the mlflow extra: the trial callback of study.mlflow_uri
    "mlflow": ("service/mlflow_log",),
    "optuna_integration": ("service/mlflow_log",),
}


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py"))


def _place(path: Path) -> tuple[str, str]:
    """(package, module) of a file: ("search", "study"), ("cli", "cli"), ("model", "__init__")."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return (parts[0], parts[1]) if len(parts) > 1 else (parts[0], parts[0])


def _absolute(path: Path, node: ast.ImportFrom) -> str:
    """The absolute module of a ``from X import ...`` (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    package = list(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imported_modules(path: Path, source: str | None = None) -> set[str]:
    """Every module a file imports, in any form: ``import a.b``, ``import a.b as c``,
    ``from a import b`` (b may be a module: both a and a.b count), relative imports,
    and imports inside functions. ``source`` replaces the file's text (tests of the checker)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text() if source is None else source)):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            module = _absolute(path, node)
            names.add(module)
            names |= {f"{module}.{a.name}" for a in node.names if a.name != "*"}
    return names


def _target(name: str) -> tuple[str, str | None] | None:
    """(package, module or None) of an imported psvae_opt name; None outside the package,
    for the package itself, or for a name that is not a module of it (``psvae_opt.__version__``)."""
    parts = name.split(".")
    if parts[0] != "psvae_opt" or len(parts) < 2:
        return None
    if (PACKAGE / parts[1]).is_dir():
        module = parts[2] if len(parts) > 2 and (PACKAGE / parts[1] / f"{parts[2]}.py").exists() else None
        return parts[1], module
    return (parts[1], parts[1]) if (PACKAGE / f"{parts[1]}.py").exists() else None


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_follow_the_package_order(path: Path):
    package, module = _place(path)
    if package == "__init__":
        return
    assert package in RANKS, f"{package} is not in the package order of tests/test_layers.py"
    for name in imported_modules(path):
        target = _target(name)
        if target is not None and target[0] != package:
            assert target[0] in RANKS, f"{path.name} imports {name}, a package missing from the order"
            assert RANKS[target[0]] < RANKS[package], f"{package}/{path.name} imports {name} ({target[0]})"
            assert (package, target[0]) not in APART, f"{package}/{path.name} imports {name}: kept apart"
        top = name.split(".")[0]
        if top in CONFINED:
            allowed = CONFINED[top]
            assert package in allowed or f"{package}/{module}" in allowed, f"{package}/{path.name} imports {top}"


def _internal_graph(package: str) -> dict[str, set[str]]:
    """Module -> the modules of the same package it imports (its __init__ left out)."""
    folder = PACKAGE / package
    graph = {}
    for path in sorted(folder.glob("*.py")):
        if path.stem == "__init__":
            continue
        targets = {_target(n) for n in imported_modules(path)}
        graph[path.stem] = {m for t in targets if t and t[0] == package and t[1] for m in [t[1]] if m != path.stem}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of the graph, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


@pytest.mark.parametrize("package", [p.name for p in sorted(PACKAGE.iterdir()) if (p / "__init__.py").exists()])
def test_no_import_cycle_inside_a_package(package: str):
    assert _cycle(_internal_graph(package)) is None


def test_the_cycle_finder_finds_cycles():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


@pytest.mark.parametrize("package", [p.name for p in sorted(PACKAGE.iterdir()) if (p / "__init__.py").exists()])
def test_every_package_says_what_it_owns_and_may_import(package: str):
    doc = ast.get_docstring(ast.parse((PACKAGE / package / "__init__.py").read_text())) or ""
    assert "Owns:" in doc and "May import:" in doc, f"psvae_opt/{package}/__init__.py"
    for module in (PACKAGE / package).glob("*.py"):
        if module.stem != "__init__":
            assert f"``{module.stem}``" in doc, f"psvae_opt/{package}/__init__.py does not name {module.stem}"


def test_the_top_level_holds_only_the_packages_of_the_order():
    tops = {p.stem for p in PACKAGE.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()} - {"__init__"}
    assert tops <= set(ORDER), sorted(tops - set(ORDER))


def test_every_import_form_is_seen():
    """The checker itself: each import form of another package is caught."""
    config = PACKAGE / "errors.py"  # checked as if errors.py held each source
    forms = (
        "from psvae_opt.search import study",
        "import psvae_opt.search.study",
        "import psvae_opt.search.study as s",
        "from psvae_opt.search.study import counts",
        "from .search import study",
        "from .search.study import counts",
        "def f():\n    from psvae_opt.search import study",
    )
    for source in forms:
        assert ("search", "study") in {_target(n) for n in imported_modules(config, source)}, source
    assert {_target(n) for n in imported_modules(config, "import os\nfrom pathlib import Path")} == {None}


def test_errors_and_config_use_the_standard_library_only():
    files = [PACKAGE / "errors.py", *sorted((PACKAGE / "config").glob("*.py")), PACKAGE / "config.py"]
    for path in (f for f in files if f.exists()):
        for name in imported_modules(path):
            top = name.split(".")[0]
            assert top in sys.stdlib_module_names or top in ("psvae_opt", "__future__"), f"{path.name} imports {name}"


def test_metrics_and_intervals_are_pure():
    assert {n.split(".")[0] for n in imported_modules(PACKAGE / "model" / "metrics.py")} <= {"numpy", "__future__"}
    assert {n.split(".")[0] for n in imported_modules(PACKAGE / "search" / "intervals.py")} <= set(
        sys.stdlib_module_names
    ) | {"__future__"}


def test_the_launcher_side_imports_nothing_of_the_worker_side():
    """stage_run, stage_status, the launchers and slurm start and follow workers; what a worker does
    inside is its own."""
    worker_side = {("service", "worker"), ("service", "gpu_slots"), ("service", "trial_loop")}
    launcher_side = ("stage_run", "stage_status", "request", "launcher", "follow", "local_launcher", "slurm_launcher")
    for module in (*launcher_side, "slurm"):
        targets = {_target(n) for n in imported_modules(PACKAGE / "service" / f"{module}.py")}
        assert not targets & worker_side, f"service/{module}.py imports {sorted(t[1] for t in targets & worker_side)}"


MAX_LINES = 400  # a module longer than this holds more than one concern (docs/design.md, "Packages")


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_is_over_400_lines(path: Path):
    assert len(path.read_text().splitlines()) <= MAX_LINES, f"{path.name}: split it by concern"


HEAVY = ("torch", "optuna", "plotly", "sqlalchemy", "numpy", "h5py", "av")


def test_the_command_line_starts_without_heavy_libraries():
    """`psvae-opt --help` imports the CLI and builds every parser: none of the heavy libraries
    loads until a command runs (benchmarks/cli_startup.py times it)."""
    code = (
        "import sys, psvae_opt.cli\n"
        "psvae_opt.cli.build_parser()\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=PACKAGE.parent, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""
