"""Shared fixtures: tiny synthetic sessions written at test time, a CLI runner, tiny configs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from psvae_opt.cli import main
from psvae_opt.config import Config, load_config
from psvae_opt.data import synth_session

os.environ.setdefault("TZ", "UTC")

# A model small enough to train in seconds on a CPU; the architecture is BehaveNet's otherwise.
TINY_MODEL = ["model.channels=[4, 8, 8, 8, 8]"]


@pytest.fixture(scope="session")
def tiny_h5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 trials x 20 frames of the 32x32 demo scene (one view)."""
    return synth_session(tmp_path_factory.mktemp("data") / "tiny.h5", size=32, trials=10, frames=20, seed=0)


@pytest.fixture
def tiny_config(tiny_h5: Path) -> Config:
    return load_config(
        None,
        [
            f"data.path={tiny_h5}",
            "data.split=3;1;1;0",
            *TINY_MODEL,
            "train.max_epochs=3",
            "train.batch_size=16",
            "loss.anneal_epochs=1",
            "train.learning_rate=1e-3",
        ],
    )


class CliResult:
    def __init__(self, code: int, out: str, err: str):
        self.code, self.out, self.err = code, out, err


@pytest.fixture
def cli(capsys: pytest.CaptureFixture):
    """Run ``psvae-opt ARGS`` in-process; returns exit code, stdout and stderr."""

    def run(*args: str) -> CliResult:
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


def one_line_error(result: CliResult) -> str:
    """Assert a failed command printed exactly one error line and no traceback; return it."""
    assert result.code != 0
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1, result.err
    assert lines[0].startswith("psvae-opt: error: "), lines[0]
    assert "Traceback" not in result.err
    return lines[0]


def _without_root_file_powers() -> None:
    """In a child process of root: drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the bounding set,
    so that after exec file and folder permissions bind root as they bind any user."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def run_cli_unprivileged(args, cwd: Path) -> CliResult:
    """``psvae-opt ARGS`` in a child process that permissions bind (root, as in CI, may write anywhere)."""
    import subprocess
    import sys

    code = f"import sys\nfrom psvae_opt.cli import main\nsys.exit(main({[str(a) for a in args]!r}))"
    powers = _without_root_file_powers if os.geteuid() == 0 else None
    r = subprocess.run(
        [sys.executable, "-c", code], preexec_fn=powers, cwd=cwd, capture_output=True, text=True, timeout=300
    )
    return CliResult(r.returncode, r.stdout, r.stderr)


def random_frames(n: int, shape=(1, 32, 32), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server for the whole test session (skipped only outside CI when missing)."""
    from tests.pgserver import PostgresServer, find_bin

    if not find_bin("initdb"):
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not installed; scripts/system-deps.sh installs it")
        pytest.skip("PostgreSQL is not installed (Debian package postgresql)")
    server = PostgresServer()
    yield server
    server.close()


@pytest.fixture(scope="session")
def slurm():
    """A one-node SLURM cluster for the whole test session (skipped only outside CI when missing);
    SLURM_CONF points this process and its children at it."""
    from tests.slurmcluster import SlurmCluster, missing_binaries

    missing = missing_binaries()
    if missing or os.geteuid() != 0:
        why = f"{', '.join(missing)} not installed" if missing else "its daemons need root"
        if os.environ.get("CI"):
            pytest.fail(f"SLURM: {why}; scripts/system-deps.sh installs slurm-wlm and munge")
        pytest.skip(f"SLURM: {why} (Debian packages slurm-wlm, munge)")
    cluster = SlurmCluster()
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)
    yield cluster
    if previous is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = previous
    cluster.close()


@pytest.fixture(params=["sqlite", "postgres"])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test against an SQLite file and a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'studies.db'}"
    server = request.getfixturevalue("postgres")
    import psycopg

    name = f"t{os.getpid()}_{abs(hash(request.node.nodeid)) % 10**8}"
    with psycopg.connect(f"host=127.0.0.1 port={server.port} user=postgres dbname=postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    return server.url.rsplit("/", 1)[0] + f"/{name}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """GPU tests run only where CUDA is available (CI has none)."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
