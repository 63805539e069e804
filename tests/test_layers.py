"""The layer diagram of STYLE.md holds: a module imports only from the layers above it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "psvae_opt"

# Lower rank = higher in the diagram. A module may import psvae_opt modules of lower rank,
# and modules of its own package folder (psvae_opt.data.*).
RANKS = {
    "errors": 0,
    "config": 1,
    "data": 2,
    "metrics": 2,
    "model": 3,
    "losses": 4,
    "runs": 4.5,
    "devices": 4.5,
    "trainer": 5,
    "space": 6,
    "objectives": 7,
    "storage": 8,
    "study": 9,
    "workers": 10,
    "ratings": 10,
    "export": 11,
    "plots": 11,
    "traversals": 11,
    "dashboard": 11,
    "commands": 12,
    "cli": 13,
}
# Third-party packages confined to layers: package -> lowest rank allowed to import it.
CONFINED = {
    "h5py": ("data",),
    "optuna": (
        "space",
        "objectives",
        "storage",
        "study",
        "workers",
        "ratings",
        "export",
        "plots",
        "traversals",
        "dashboard",
        "commands",
        "cli",
    ),
    "plotly": ("export", "plots", "traversals", "dashboard", "commands"),
    "optuna_dashboard": ("ratings", "dashboard", "commands"),
}


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py"))


def _layer(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    return rel.parts[0] if rel.parts[0] != "__init__" else "__init__"


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_follow_the_layers(path: Path):
    layer = _layer(path)
    if layer == "__init__":
        return
    assert layer in RANKS, f"{layer} is not in the layer table of tests/test_layers.py"
    for name in _imports(path):
        parts = name.split(".")
        if parts[0] == "psvae_opt" and len(parts) > 1:
            target = parts[1]
            if target == layer:
                continue
            assert RANKS[target] < RANKS[layer] or target == "__init__", f"{path.name} ({layer}) imports {name}"
        for package, allowed in CONFINED.items():
            if parts[0] == package:
                assert layer in allowed, f"{path.name} ({layer}) imports {package}"


def test_config_and_errors_use_the_standard_library_only():
    import sys

    for module in ("errors", "config"):
        for name in _imports(PACKAGE / f"{module}.py"):
            top = name.split(".")[0]
            assert top in sys.stdlib_module_names or top in ("psvae_opt", "__future__"), f"{module} imports {name}"


def test_metrics_are_pure_numpy():
    assert {n.split(".")[0] for n in _imports(PACKAGE / "metrics.py")} <= {"numpy", "__future__"}
