"""Configuration at the edges: only psvae_opt/commands/environment.py reads environment
variables, and what it reads is what the commands pass down."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from psvae_opt.commands import environment
from psvae_opt.errors import StorageError

PACKAGE = Path(__file__).resolve().parents[1] / "psvae_opt"
EDGE = PACKAGE / "commands" / "environment.py"


def environment_reads(source: str) -> list[int]:
    """Lines of ``source`` that read the process environment: ``os.getenv``, ``os.environ[...]``,
    ``os.environ.get(...)`` (any method but ``setdefault``), ``X in os.environ``, iteration,
    whatever form the name takes (``from os import environ``).

    Not reads: handing the whole environment to a child (``{**os.environ, ...}``,
    ``dict(os.environ, ...)``), setting a variable (``os.environ[X] = ...``) and
    ``os.environ.setdefault`` (a default for a library in this process).
    """
    tree = ast.parse(source)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in ("getenv", "getenvb"):
            lines.append(node.lineno)
        is_environ = (isinstance(node, ast.Attribute) and node.attr in ("environ", "environb")) or (
            isinstance(node, ast.Name) and node.id in ("environ", "environb", "getenv")
        )
        if not is_environ or isinstance(parents.get(node), ast.ImportFrom):
            continue
        parent = parents.get(node)
        child_copy = (isinstance(parent, ast.Dict) and None in parent.keys and node in parent.values) or (
            isinstance(parent, ast.Call)
            and isinstance(parent.func, ast.Name)
            and parent.func.id == "dict"
            and parent.args[:1] == [node]
        )
        setting = (isinstance(parent, ast.Subscript) and isinstance(parent.ctx, ast.Store | ast.Del)) or (
            isinstance(parent, ast.Attribute) and parent.attr == "setdefault"
        )
        if not (child_copy or setting):
            lines.append(node.lineno)
    return sorted(set(lines))


@pytest.mark.parametrize(
    "path", sorted(p for p in PACKAGE.rglob("*.py") if p != EDGE), ids=lambda p: str(p.relative_to(PACKAGE))
)
def test_nothing_but_the_edge_reads_the_environment(path: Path):
    assert environment_reads(path.read_text()) == [], f"{path} reads os.environ; read it in {EDGE.name}"


def test_the_edge_does_read_it():
    assert environment_reads(EDGE.read_text())


@pytest.mark.parametrize(
    "source",
    [
        "import os\nx = os.environ.get('A')",
        "import os\nx = os.environ['A']",
        "import os\nx = os.getenv('A')",
        "import os\nx = 'A' in os.environ",
        "import os\nx = dict(os.environ.items())",
        "from os import environ\nx = environ.get('A')",
        "from os import getenv\nx = getenv('A')",
        "import os\ndef f():\n    return {k: v for k, v in os.environ.items()}",
        "import os\nx = os.environ.copy()",
    ],
)
def test_the_scan_sees_every_form_of_reading(source: str):
    assert environment_reads(source), source


@pytest.mark.parametrize(
    "source",
    [
        "import os\nenv = {**os.environ, 'TZ': 'UTC'}",
        "import os\nenv = dict(os.environ, TZ='UTC')",
        "import os\nos.environ['A'] = '1'",
        "import os\nos.environ.setdefault('A', '1')",
        "import os\nx = os.path.join('a', 'b')",
    ],
)
def test_the_scan_lets_children_get_an_environment(source: str):
    assert environment_reads(source) == [], source


def test_the_storage_flag_wins_then_the_variable():
    assert environment.storage_url(None, {}) is None  # the SQLite file here (search.storage.resolve_url)
    assert environment.storage_url(None, {"PSVAE_OPT_STORAGE": ""}) is None
    assert environment.storage_url(None, {"PSVAE_OPT_STORAGE": "postgresql+psycopg://u@h/db"}) == (
        "postgresql+psycopg://u@h/db"
    )
    assert environment.storage_url("sqlite:///x.db", {"PSVAE_OPT_STORAGE": "postgresql+psycopg://u@h/db"}) == (
        "sqlite:///x.db"
    )


def test_timings_from_the_environment():
    assert environment.heartbeat_interval({}) == 30 and environment.db_patience({}) == 300
    env = {"PSVAE_OPT_HEARTBEAT": "5", "PSVAE_OPT_DB_PATIENCE": "90.5"}
    assert environment.heartbeat_interval(env) == 5 and environment.db_patience(env) == 90.5
    for bad in ("soon", "0", "nan", "inf", "2.5"):
        with pytest.raises(StorageError, match=f"^PSVAE_OPT_HEARTBEAT='{bad}': give a whole number of seconds >= 1"):
            environment.heartbeat_interval({"PSVAE_OPT_HEARTBEAT": bad})
    with pytest.raises(StorageError, match="^PSVAE_OPT_DB_PATIENCE='-1': give a number of seconds >= 1"):
        environment.db_patience({"PSVAE_OPT_DB_PATIENCE": "-1"})


def test_folders_and_visible_gpus_as_given():
    assert environment.gpu_locks({}) is None and environment.gpu_locks({"PSVAE_OPT_GPU_LOCKS": "/l"}) == "/l"
    assert environment.artifacts({"PSVAE_OPT_ARTIFACTS": ""}) is None
    assert environment.artifacts({"PSVAE_OPT_ARTIFACTS": "/m"}) == "/m"
    assert environment.cuda_visible({}) is None
    assert environment.cuda_visible({"CUDA_VISIBLE_DEVICES": ""}) == ""  # "" hides every GPU: kept, not unset


def test_the_real_environment_is_read_by_default(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PSVAE_OPT_HEARTBEAT", "7")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert environment.heartbeat_interval() == 7 and environment.cuda_visible() == "3,5"
