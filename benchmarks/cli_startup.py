"""Start-up time of the command line: ``psvae-opt --help`` and ``psvae-opt status`` on a
finished SQLite study, the median of several runs each (wall clock, a fresh interpreter per run).

The study is built here, in a temporary folder: both stages of the demo study file, each with
a few complete trials (attributes as a worker records them) and the recommendation stored the
way the stage stores it. Nothing is trained.

    python benchmarks/cli_startup.py              # 7 runs of each command
    python benchmarks/cli_startup.py --repeats 15

Targets (docs/design.md, "Packages"): --help under 0.5 s, status under 1.5 s.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from machine import cpu_name

if TYPE_CHECKING:
    import optuna

ROOT = Path(__file__).resolve().parents[1]
STUDY_FILE = ROOT / "studies" / "demo.toml"
TARGETS = {"--help": 0.5, "status": 1.5}


def build_study(storage: str) -> None:
    """Both stages of the demo study, finished: trials complete, recommendation stored."""
    import optuna

    from psvae_opt.config import dump_config, load_config
    from psvae_opt.search import recommendation, space

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cfg = load_config(STUDY_FILE, ["stage2.criterion=zu_corr"])
    key = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
    grids = {1: space.stage1_grid(cfg, 2), 2: space.stage2_grid(cfg, 3)}
    for stage, grid in grids.items():
        study = optuna.create_study(
            storage=storage, study_name=space.study_name(cfg, stage), directions=list(space.DIRECTIONS[stage])
        )
        with warnings.catch_warnings(action="ignore", category=optuna.exceptions.ExperimentalWarning):
            study.set_metric_names(list(space.OBJECTIVES[stage]))
        attrs = {"stage": stage, "sampler": "grid", "study_file": dump_config(cfg), "run_key": key}
        if stage == 2:
            attrs.update(criterion="zu_corr", alpha=cfg.stage1.alphas[0], n_unsup=cfg.stage1.n_unsup[0], seeds=3)
        for name, value in attrs.items():
            study.set_user_attr(name, value)
        for number, params in enumerate(grid):
            study.add_trial(_trial(params, number))
        if stage == 1:
            recommendation.recommend_stage1(study)
        else:
            recommendation.recommend_stage2(study)


def _trial(params: dict, number: int) -> optuna.trial.FrozenTrial:
    import optuna

    wobble = 1.0 + 0.1 * ((number * 7) % 5)
    attrs = {
        "val_pixel_mse": 0.01 * wobble,
        "val_label_mse": 0.1 / wobble,
        "val_label_r2": 0.8,
        "train_zu_corr": 0.05 * wobble,
        "mig": 0.3,
        "max_label_leak": 0.1,
        "collapsed_dims": [],
        "collapsed": False,
        "run_dir": f"demo/runs/trial_{number:04d}",
    }
    dists = {
        name: optuna.distributions.FloatDistribution(1e-3, 1e6)
        if name in ("alpha", "beta")
        else optuna.distributions.IntDistribution(0, 100)
        for name in params
    }
    values = [attrs["val_pixel_mse"], attrs["val_label_mse"]] if "alpha" in params else [0.05 * wobble, 0.01]
    return optuna.trial.create_trial(params=params, distributions=dists, values=values, user_attrs=attrs)


def median_seconds(command: list[str], repeats: int, cwd: Path) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="runs of each command (default 7)")
    args = parser.parse_args()
    cli = [sys.executable, "-m", "psvae_opt.cli"]
    with tempfile.TemporaryDirectory() as tmp:
        storage = f"sqlite:///{Path(tmp) / 'study.db'}"
        build_study(storage)
        commands = {
            "--help": [*cli, "--help"],
            "status": [*cli, "status", "--config", str(STUDY_FILE), "--storage", storage],
        }
        subprocess.run(commands["status"], cwd=tmp, check=True)  # what status prints, once
        print(f"\nCPU: {cpu_name()}, {len(os.sched_getaffinity(0))} cores; python {platform.python_version()}")
        for name, command in commands.items():
            seconds = median_seconds(command, args.repeats, Path(tmp))
            verdict = "ok" if seconds < TARGETS[name] else "SLOW"
            target = f"target < {TARGETS[name]} s"
            print(f"psvae-opt {name:<7} median {seconds:.3f} s of {args.repeats} ({target}): {verdict}")


if __name__ == "__main__":
    main()
