"""The layer diagram of docs/design.md holds: a module imports only from the layers above it."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "psvae_opt"

# Lower rank = higher in the diagram (docs/design.md, "Layers"). A module may import psvae_opt
# modules of lower rank, and modules of its own package folder (psvae_opt.data.*).
RANKS = {
    "errors": 0,
    "config": 1,
    "slurm": 1.5,
    "data": 2,
    "metrics": 2,
    "intervals": 2,
    "model": 3,
    "losses": 4,
    "runs": 4.5,
    "devices": 4.5,
    "event_log": 4.5,
    "trainer": 5,
    "space": 6,
    "objectives": 7,
    "storage": 8,
    "trial_queue": 8.5,
    "study": 9,
    "ratings": 9.5,
    "plots": 9.5,
    "run_plots": 5.5,
    "traversals": 9.5,
    "dashboard": 9.5,
    "export": 9.7,
    "diagnostics": 9.7,
    "workers": 10,
    "launchers": 10.5,
    "worker_process": 10.8,
    "stages": 11,
    "commands": 12,
    "cli": 13,
}
SEARCH = ("space", "objectives", "storage", "trial_queue", "study", "ratings", "plots", "traversals", "dashboard")
SERVICE = ("export", "diagnostics", "workers", "launchers", "worker_process", "stages", "commands", "cli")
# Third-party packages confined to layers: package -> the layers allowed to import it.
CONFINED = {
    "h5py": ("data",),
    "optuna": (*SEARCH, *SERVICE),
    "sqlalchemy": ("storage", "trial_queue"),
    "plotly": ("export", "plots", "run_plots", "traversals", "dashboard", "diagnostics", "commands"),
    "optuna_dashboard": ("ratings", "dashboard"),
    # the poses extra: imported inside the readers that need them only
    "sleap_io": ("data",),
    "pynwb": ("data",),
    "ndx_pose": ("data",),
    "hdmf": ("data",),
    "hdf5plugin": ("data",),
    # test-only libraries, which write DeepLabCut's .h5 files in the tests
    "pandas": ("data",),
    "tables": ("data",),
    # the mlflow extra: the trial callback of study.mlflow_uri
    "mlflow": ("worker_process",),
    "optuna_integration": ("worker_process",),
}


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py"))


def _layer(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    return rel.parts[0] if rel.parts[0] != "__init__" else "__init__"


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


def _targets(name: str) -> str | None:
    """The psvae_opt layer an imported name belongs to (None outside the package or for the package itself)."""
    parts = name.split(".")
    if parts[0] != "psvae_opt" or len(parts) < 2:
        return None
    known = parts[1] in RANKS or (PACKAGE / parts[1]).exists() or (PACKAGE / f"{parts[1]}.py").exists()
    return parts[1] if known else None


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_follow_the_layers(path: Path):
    layer = _layer(path)
    if layer == "__init__":
        return
    assert layer in RANKS, f"{layer} is not in the layer table of tests/test_layers.py"
    for name in imported_modules(path):
        target = _targets(name)
        if target is not None and target != layer and target != "__init__":
            assert target in RANKS, f"{path.name} imports {name}, a module missing from the layer table"
            assert RANKS[target] < RANKS[layer], f"{path.name} ({layer}) imports {name} ({target})"
        top = name.split(".")[0]
        if top in CONFINED:
            assert layer in CONFINED[top], f"{path.name} ({layer}) imports {top}"


def test_every_import_form_is_seen():
    """The checker itself: each import form of another layer is caught."""
    config = PACKAGE / "config.py"  # checked as if config.py held each source
    forms = (
        "from psvae_opt import study",
        "import psvae_opt.study",
        "import psvae_opt.study as s",
        "from psvae_opt.study import counts",
        "from . import study",
        "from .study import counts",
        "def f():\n    from psvae_opt import study",
    )
    for source in forms:
        assert "study" in {_targets(n) for n in imported_modules(config, source)}, source
    assert {_targets(n) for n in imported_modules(config, "import os\nfrom pathlib import Path")} == {None}


def test_config_and_errors_use_the_standard_library_only():
    for module in ("errors", "config"):
        for name in imported_modules(PACKAGE / f"{module}.py"):
            top = name.split(".")[0]
            assert top in sys.stdlib_module_names or top in ("psvae_opt", "__future__"), f"{module} imports {name}"


def test_metrics_and_intervals_are_pure():
    assert {n.split(".")[0] for n in imported_modules(PACKAGE / "metrics.py")} <= {"numpy", "__future__"}
    assert {n.split(".")[0] for n in imported_modules(PACKAGE / "intervals.py")} <= set(sys.stdlib_module_names) | {
        "__future__"
    }
