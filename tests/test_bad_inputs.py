"""Every bad input a user can give: one line, a non-zero exit, no traceback, nothing created or changed.

One table: each row builds its input, runs the command (in-process, or as a child process that file
permissions bind where the row needs them), and compares the files it names before and after.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from psvae_opt.cli import main
from psvae_opt.data import synth_session, write_session
from tests.conftest import TINY_MODEL, CliResult, one_line_error, run_cli_unprivileged
from tests.test_data_pose_files import write_dlc_csv
from tests.test_data_video import moving_frames, write_video

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class World:
    """A finished tiny stage 1 and the files the rows start from."""

    root: Path
    config: Path
    data: Path
    db: Path

    @property
    def url(self) -> str:
        return f"sqlite:///{self.db}"

    def run_dir(self) -> Path:
        (run,) = (self.root / "runs" / "t-stage1").glob("*/trial_0000")
        return run


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("bad")
    data = synth_session(root / "tiny.h5", size=32, trials=10, frames=20, seed=0)
    config = root / "study.toml"
    channels = TINY_MODEL[0].split("=", 1)[1]
    config.write_text(
        f'[study]\nname = "t"\nruns_dir = "{root / "runs"}"\n[data]\npath = "{data}"\nsplit = "3;1;1;0"\n'
        f"[model]\nchannels = {channels}\n[train]\nmax_epochs = 2\nbatch_size = 16\n[loss]\nanneal_epochs = 1\n"
        "[stage1]\nalphas = [100.0]\nn_unsup = [2]\n"
    )
    world = World(root, config, data, root / "done.db")
    assert main(["stage1", "--config", str(config), "--storage", world.url, "--workers", "1"]) == 0
    return world


def snapshot(paths: list[Path]) -> dict[str, object]:
    """Each path's state: missing, a file's bytes, or a folder's listing."""
    out: dict[str, object] = {}
    for path in paths:
        if path.is_dir():
            out[str(path)] = sorted(str(p.relative_to(path)) for p in path.rglob("*"))
        elif path.exists():
            out[str(path)] = path.read_bytes()
        else:
            out[str(path)] = None
    return out


@dataclass(frozen=True)
class Case:
    """A bad input: how to set it up (returns the arguments and the paths to watch), the expected line."""

    setup: Callable[[World, Path], tuple[list, list[Path]]]
    message: str
    unprivileged: bool = False  # run where file permissions bind (root ignores them)


def _stage2_alpha(value: str) -> Callable:
    def setup(w: World, t: Path) -> tuple[list, list[Path]]:
        db = t / "new.db"
        return ["stage2", "--config", w.config, "--storage", f"sqlite:///{db}", "--alpha", value], [db]

    return setup


def _learning_rate_in_file(w: World, t: Path) -> tuple[list, list[Path]]:
    bad = t / "bad.toml"
    bad.write_text(w.config.read_text().replace("max_epochs = 2", "max_epochs = 2\nlearning_rate = inf"))
    return ["train", "--config", bad, "--out", t / "run"], [t / "run"]


def _n_trials(value: str) -> Callable:
    def setup(w: World, t: Path) -> tuple[list, list[Path]]:
        db = t / "new.db"
        return [
            "stage1",
            "--config",
            w.config,
            "--storage",
            f"sqlite:///{db}",
            "--sampler",
            "tpe",
            "--n-trials",
            value,
        ], [db]

    return setup


def _empty_validation_trial(w: World, t: Path) -> tuple[list, list[Path]]:
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (0 if i == 3 else 20, 1, 32, 32), dtype=np.uint8) for i in range(5)]
    labels = [rng.standard_normal((len(f), 2)) for f in frames]
    data = write_session(t / "holes.h5", frames, labels)
    return ["train", "--config", w.config, "--set", f"data.path={data}", "--out", t / "run"], [t / "run", data]


def _unknown_coords(w: World, t: Path) -> tuple[list, list[Path]]:
    video = write_video(t / "side.avi", moving_frames(8), fps=30)
    values = np.random.default_rng(1).uniform(0, 40, (8, 3))
    labels = write_dlc_csv(t / "side.csv", ["nose"], values, coords=("x", "y", "prob"))
    out = t / "out.h5"
    out.write_bytes(b"an earlier import")
    return ["data", "import", "--video", video, "--labels", labels, "--out", out, "--size", "16"], [out]


def _sqlite_copy(w: World, t: Path, mode: str) -> tuple[list, list[Path]]:
    db = t / "copy.db"
    if mode == "corrupt":
        db.write_bytes(b"not a database at all " * 50)
    else:
        shutil.copy(w.db, db)
        db.chmod(0o444)
        t.chmod(0o555)  # no journal can be made beside it either
    return ["stage1", "--config", w.config, "--storage", f"sqlite:///{db}", "--workers", "0"], [db, t]


def _out_under_file(command: str) -> Callable:
    def setup(w: World, t: Path) -> tuple[list, list[Path]]:
        blocker = t / "notes.txt"
        blocker.write_text("a file")
        common = ["--config", w.config, "--storage", w.url, "--stage", "1", "--out", blocker / "sub"]
        args = ["export", *common] if command == "export" else ["report", command, *common]
        return args, [blocker, w.db]

    return setup


def _out_locked(command: str) -> Callable:
    def setup(w: World, t: Path) -> tuple[list, list[Path]]:
        locked = t / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        common = ["--config", w.config, "--storage", w.url, "--stage", "1", "--out", locked / "out"]
        args = ["export", *common] if command == "export" else ["report", command, *common]
        return args, [locked]

    return setup


def _damaged_checkpoint(name: str, command: list[str]) -> Callable:
    def setup(w: World, t: Path) -> tuple[list, list[Path]]:
        path = w.run_dir() / name
        shutil.copy(path, t / f"{name}.orig")  # restored by the test
        path.write_bytes(b"\x80\x02 half a checkpoint")
        args = [a.replace("OUT", str(t / "out")) for a in command]
        return [*args[:1], *args[1:]], [t / "out"]

    return setup


def _missing_db(command: list[str]) -> Callable:
    def setup(w: World, t: Path) -> tuple[list, list[Path]]:
        db = t / "none.db"
        args = [*command, "--config", w.config, "--storage", f"sqlite:///{db}"]
        if command[0] == "export":
            args += ["--stage", "1", "--out", t / "out"]
        return args, [db, t / "out"]

    return setup


CASES = {
    "stage2 --alpha nan": Case(_stage2_alpha("nan"), "--alpha nan: give a finite label weight > 0"),
    "stage2 --alpha inf": Case(_stage2_alpha("inf"), "--alpha inf: give a finite label weight > 0"),
    "train.learning_rate = inf (--set)": Case(
        lambda w, t: (
            ["train", "--config", w.config, "--set", "train.learning_rate=inf", "--out", t / "run"],
            [t / "run"],
        ),
        "train.learning_rate: must be a finite number, got inf",
    ),
    "train.learning_rate = inf (study file)": Case(
        _learning_rate_in_file, "train.learning_rate: must be a finite number, got inf"
    ),
    "--n-trials 0": Case(_n_trials("0"), "--n-trials 0: give 1 or more"),
    "--n-trials -3": Case(_n_trials("-3"), "--n-trials -3: give 1 or more"),
    "an empty validation trial": Case(_empty_validation_trial, "has 0 frames"),
    "a coords column named prob": Case(_unknown_coords, "names a column 'prob'"),
    "a corrupt SQLite file": Case(lambda w, t: _sqlite_copy(w, t, "corrupt"), "cannot open the study database"),
    "a read-only SQLite file": Case(
        lambda w, t: _sqlite_copy(w, t, "readonly"), "attempt to write a readonly database", unprivileged=True
    ),
    "export --out under a file": Case(_out_under_file("export"), "cannot write there"),
    "report summary --out under a file": Case(_out_under_file("summary"), "cannot write there"),
    "report curves --out under a file": Case(_out_under_file("curves"), "cannot write there"),
    "export --out without permission": Case(_out_locked("export"), "cannot write there", unprivileged=True),
    "report labels --out without permission": Case(_out_locked("labels"), "cannot write there", unprivileged=True),
    "dashboard --port 70000": Case(
        lambda w, t: (["dashboard", "--config", w.config, "--storage", w.url, "--port", "70000"], [w.db]),
        "--port 70000: give a port between 1 and 65535",
    ),
    "a damaged best.pt (report traversal)": Case(
        _damaged_checkpoint(
            "best.pt", ["report", "traversal", "--config", "CFG", "--storage", "URL", "--stage", "1", "--out", "OUT"]
        ),  # fmt: skip
        "best.pt: cannot load the checkpoint",
    ),
    "status without a database": Case(_missing_db(["status"]), "no study database at"),
    "export without a database": Case(_missing_db(["export"]), "no study database at"),
    "stage1 --gpus 0 where CUDA is unusable": Case(
        lambda w, t: (
            ["stage1", "--config", w.config, "--storage", f"sqlite:///{t / 'n.db'}", "--gpus", "0"],
            [t / "n.db"],
        ),
        "CUDA",
    ),
    "train.device = cuda where CUDA is unusable": Case(
        lambda w, t: (["train", "--config", w.config, "--set", "train.device=cuda", "--out", t / "run"], [t / "run"]),
        "CUDA",
    ),
    "train --out on another run's folder": Case(
        lambda w, t: (["train", "--config", w.config, "--set", "loss.beta=7", "--out", w.run_dir()], [w.run_dir()]),
        "holds a run of another configuration",
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_a_bad_input_is_one_line_and_changes_nothing(name: str, world: World, tmp_path: Path, capsys):
    case = CASES[name]
    if "CUDA is unusable" in name and torch.cuda.is_available():
        pytest.skip("CUDA works here")
    args, watched = case.setup(world, tmp_path)
    args = [str(a).replace("CFG", str(world.config)).replace("URL", world.url) for a in args]
    before = snapshot(watched)
    try:
        if case.unprivileged:
            result = run_cli_unprivileged(args, tmp_path)
        else:
            code = main(args)
            captured = capsys.readouterr()
            result = CliResult(code, captured.out, captured.err)
        line = one_line_error(result)
        assert case.message in line, line
        assert result.code == 1
        assert snapshot(watched) == before
    finally:
        for path in [tmp_path, *tmp_path.rglob("*")]:
            if path.is_dir():
                path.chmod(0o755)
        for orig in tmp_path.glob("*.pt.orig"):  # a damaged checkpoint of the shared run: restored
            shutil.copy(orig, world.run_dir() / orig.name.removesuffix(".orig"))


def test_no_password_in_a_malformed_url_message(world: World, capsys):
    code = main(["status", "--config", str(world.config), "--storage", "postgresql+psycopg://lab:hunter2@db:port/x"])
    err = capsys.readouterr().err
    assert code == 1 and "hunter2" not in err and "lab:***@db" in err
