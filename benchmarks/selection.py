"""Selection benchmark (issues 15 and 27): which rule chooses the model a scientist would choose?

For each of K synthetic datasets (data seeds from ``--first-dataset``, the scene variants of
``--scenes`` in turn: the scenes of ``data synth --scene``, and ``two_views``, the demo seen by
two cameras) it runs a full stage 2 through the service itself (betas x S seeds, local CPU
workers, one SQLite database for all), then scores every complete trial with every candidate
criterion of :mod:`psvae_opt.search.criteria` (validation frames; the guide's ``zu_corr`` on
training frames, as the guide says) and with the ground truth, MIG and SAP against the scene's
unlabelled behaviour factors, on a held-out session of the same scene (another data seed, at
least 2,000 frames that no criterion reads). It writes ``trials.csv`` (every trial, every
score), then scores that file alone (:mod:`selection_table`: the criteria beside the baselines,
intervals, per scene) into ``selection.csv``, ``scenes.csv`` (at which beta each search's best
model lies) and ``selection.html``; every file names the commit. ``--keep NAME`` copies the
small CSVs to ``benchmarks/results/NAME`` so that anyone can score them again.

Everything is resumable: datasets already written are kept, and a study that exists is
resumed (only its missing trials run). The default size (4 betas x 5 seeds of the demo
network) takes about a quarter hour of 2 free CPU cores per search; ``--quick`` runs a tiny
version (three scenes, one of them new) in minutes.

    python benchmarks/selection.py --out bench/selection --datasets 12           # two of each scene
    python benchmarks/selection.py --out /tmp/sel --quick                        # tiny, for the tests
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import optuna
import torch
from machine import cpu_name
from selection_table import TRIAL_COLUMNS, SearchTrials, rescore

from psvae_opt.config import load_config
from psvae_opt.data import Session, load_session, synth_session
from psvae_opt.data.synth import SCENES
from psvae_opt.model import metrics
from psvae_opt.search import criteria
from psvae_opt.search.records import stored_recommendation
from psvae_opt.search.storage import open_database
from psvae_opt.service import stage_run as stages
from psvae_opt.training.run_folder import SPLIT_CODES, load_latents, unsupervised_latents
from psvae_opt.training.trained import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
# scene variant -> (scene of data synth, camera views)
VARIANTS = {
    "demo": ("demo", 1),
    "three_unlabelled": ("three_unlabelled", 1),
    "two_views": ("demo", 2),
    "correlated": ("correlated", 1),
    "equal_effect": ("equal_effect", 1),
    "distractor": ("distractor", 1),
}
EVAL_FRAMES = 2000  # the held-out session of every search: at least this many frames
EVAL_SEED = 1_000_000  # its data seed: this + the search's index (the training data seed)


@dataclass(frozen=True)
class Size:
    """How big the benchmark is: datasets, the stage-2 grid, the data, the training and the scenes."""

    datasets: int
    betas: tuple[float, ...]
    seeds: int
    frame_size: int
    trials: int
    frames: int
    overrides: tuple[str, ...]
    variants: tuple[str, ...] = tuple(VARIANTS)


FULL = Size(10, (1.0, 5.0, 10.0, 20.0), 5, 64, 30, 100, ())  # the demo's data and network (studies/demo.toml)
QUICK = Size(  # minutes on 2 CPU cores: the demo network on 32x32 frames, few epochs; too short to rank criteria
    3,
    (1.0, 20.0),
    3,
    32,
    20,
    40,
    ("train.max_epochs=6", "loss.anneal_epochs=2", "train.batch_size=32"),
    ("demo", "equal_effect", "distractor"),
)


def write_dataset(path: Path, variant: str, size: Size, seed: int, frames: int | None = None) -> Path:
    """The dataset of one search (``frames``: at least this many, in trials of the size's length)."""
    scene, views = VARIANTS[variant]
    trials = size.trials if frames is None else -(-frames // size.frames)
    return synth_session(
        path, size=size.frame_size, trials=trials, frames=size.frames, views=views, seed=seed, scene=scene
    )


def plan(first: int, count: int, variants: tuple[str, ...] = tuple(VARIANTS)) -> list[tuple[int, str]]:
    """The searches as (dataset index = data seed, scene variant): ``count`` from ``first``, the
    variants in turn by index (a second set of datasets for a fresh verdict starts after the first)."""
    return [(i, variants[i % len(variants)]) for i in range(first, first + count)]


def commit_name() -> str:
    """The commit the benchmark runs (``+changes`` when tracked files differ from it)."""
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True
        )
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
        )
    except OSError:
        return "unknown"
    return head.stdout.strip() + ("+changes" if dirty.stdout.strip() else "") if head.returncode == 0 else "unknown"


def run_search(index: int, variant: str, out: Path, size: Size, alpha: float, workers: int) -> SearchTrials:
    """Write (or keep) dataset ``index`` of ``variant`` and its held-out session, run (or resume)
    its stage 2 and score its trials."""
    data, held_out = (out / "data" / f"{index:02d}_{variant}{tail}.h5" for tail in ("", "_eval"))
    data.parent.mkdir(parents=True, exist_ok=True)
    if not data.exists():
        write_dataset(data, variant, size, seed=index)
    if not held_out.exists():
        write_dataset(held_out, variant, size, seed=EVAL_SEED + index, frames=EVAL_FRAMES)
    scene = SCENES[VARIANTS[variant][0]]
    overrides = (
        f"data.path={data}",
        f"study.name=selection-{index:02d}-{variant}",
        f"study.runs_dir={out / 'runs'}",
        f"stage2.betas={list(size.betas)}",
        "train.device=cpu",
        *size.overrides,
    )
    config = str(REPO / "studies" / "demo.toml")
    cfg = load_config(config, list(overrides))
    storage = f"sqlite:///{out / 'studies.db'}"
    req = stages.StageRequest(
        stage=2,
        config_path=config,
        overrides=overrides,
        storage=storage,
        workers=workers,
        seeds=size.seeds,
        alpha=alpha,
        n_unsup=len(scene.factor_names) - len(scene.label_names),  # one per unlabelled factor, the distractor too
    )
    mapped = stages.check_request(req, cfg)
    outcome = stages.run_stage(req, cfg, open_database(storage), mapped)
    name = f"{index:02d} {variant}"
    return score_search(
        name, variant, outcome.study, load_session(data), load_session(held_out), cfg.study.collapse_std
    )


def held_out_latents(run_dir: str, session: Session, n_labels: int) -> np.ndarray:
    """The unsupervised latent means of a trial's best model on every frame of ``session``."""
    model = load_checkpoint(run_dir, load_config(Path(run_dir) / "config.toml").model, session.frame_shape, n_labels)
    with torch.no_grad():
        means = [
            model.encode(torch.from_numpy(session.images[i : i + 500]).float().div_(255.0))[0]
            for i in range(0, session.n_frames, 500)
        ]
    return torch.cat(means).numpy()[:, n_labels:]


def score_search(
    name: str, variant: str, study: optuna.Study, session: Session, held_out: Session, collapse_std: float
) -> SearchTrials:
    """Every criterion (validation frames) and the truth (MIG and SAP on the held-out session,
    MIG on validation frames beside it) for the complete trials of a stage-2 study."""
    trials = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    behaviour = [session.factor_names.index(n) for n in SCENES[VARIANTS[variant][0]].behaviour]
    views, mig, sap, mig_val = [], [], [], []
    for t in trials:
        lat = load_latents(t.user_attrs["run_dir"])
        val = lat["split"] == SPLIT_CODES["val"]
        z_val, z_train = unsupervised_latents(lat, "val"), unsupervised_latents(lat, "train")
        z_held = held_out_latents(t.user_attrs["run_dir"], held_out, int(lat["n_labels"]))
        mig.append(metrics.mutual_information_gap(z_held, held_out.factors[:, behaviour]))
        sap.append(metrics.separated_attribute_predictability(z_held, held_out.factors[:, behaviour]))
        mig_val.append(metrics.mutual_information_gap(z_val, session.factors[val][:, behaviour]))
        views.append(
            criteria.TrialLatents(
                group=float(t.params["beta"]),
                z_u=z_val,
                train_z_u=z_train,
                labels=session.labels[val],
                masks=session.masks[val],
                pixel_mse=float(t.user_attrs["val_pixel_mse"]),
                informative=criteria.informative_dims(z_train, collapse_std),
            )
        )
    rec = stored_recommendation(study.user_attrs)
    numbers = [t.number for t in trials]
    return SearchTrials(
        name=name,
        betas=np.array([v.group for v in views]),
        seeds=np.array([int(t.params["seed"]) for t in trials]),
        mig=np.array(mig),
        collapsed=np.array([bool(t.user_attrs.get("collapsed")) for t in trials]),
        scores=criteria.score_trials(views),
        service_choice=numbers.index(rec.trial) if rec is not None and rec.trial in numbers else None,
        scene=variant,
        sap=np.array(sap),
        pixel_mse=np.array([v.pixel_mse for v in views]),
        mig_val=np.array(mig_val),
    )


def write_trials(path: Path, searches: list[SearchTrials], commit: str) -> None:
    names = list(searches[0].scores)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([*TRIAL_COLUMNS, *names, "commit"])
        for s in searches:
            for i in range(len(s.mig)):
                w.writerow(
                    [
                        s.name,
                        s.scene,
                        s.betas[i],
                        s.seeds[i],
                        s.collapsed[i],
                        s.pixel_mse[i],
                        s.mig[i],
                        s.sap[i],
                        s.mig_val[i],
                        int(s.service_choice == i),
                        *(s.scores[n][i] for n in names),
                        commit,
                    ]
                )


def write_html(path: Path, rows: list, header: str) -> None:
    """One page: median rho (floored and raw), mean regret with its interval and share within 10%."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    rows = [r for r in rows if r.scope == "all"]
    names = [r.criterion for r in rows]
    titles = ("median Spearman rho with MIG (floored, raw)", "mean regret (MIG), 95% bootstrap interval")
    fig = make_subplots(rows=2, cols=1, subplot_titles=titles)
    fig.add_bar(x=names, y=[r.median_rho for r in rows], name="floored", row=1, col=1)
    fig.add_bar(x=names, y=[r.median_rho_raw for r in rows], name="raw", row=1, col=1)
    error = {"type": "data", "symmetric": False}
    error["array"] = [r.regret_high - r.mean_regret for r in rows]
    error["arrayminus"] = [r.mean_regret - r.regret_low for r in rows]
    colours = ["#2a9d8f" if r.passes else "#e76f51" for r in rows]
    fig.add_trace(go.Bar(x=names, y=[r.mean_regret for r in rows], error_y=error, marker_color=colours), row=2, col=1)
    fig.update_layout(title=header, height=900, showlegend=False)
    fig.write_html(path, include_plotlyjs=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path, help="folder for data, studies, runs and the tables")
    p.add_argument("--quick", action="store_true", help="a tiny size (3 datasets x 2 betas x 3 seeds, 6 epochs)")
    p.add_argument("--datasets", type=int, help="number of datasets (default 10; quick 3)")
    p.add_argument("--first-dataset", type=int, default=0, help="index (= data seed) of the first dataset (default 0)")
    p.add_argument("--seeds", type=int, help="model seeds per beta (default 5; quick 3; UDR needs 3)")
    p.add_argument("--scenes", help=f"scene variants in turn, comma-separated (default all: {', '.join(VARIANTS)})")
    p.add_argument("--alpha", type=float, default=1000.0, help="label weight of stage 2 (default 1000)")
    p.add_argument("--workers", type=int, default=2, help="local CPU workers per search (default 2)")
    p.add_argument(
        "--keep", metavar="NAME", help="copy the CSVs to benchmarks/results/NAME (small; for the repository)"
    )
    args = p.parse_args(argv)
    if args.first_dataset < 0:
        p.error(f"--first-dataset {args.first_dataset}: give an index >= 0 (it is the data seed)")
    size = QUICK if args.quick else FULL
    if args.scenes:
        unknown = [v for v in args.scenes.split(",") if v not in VARIANTS]
        if unknown:
            p.error(f"--scenes {unknown[0]}: no such scene variant; choose from {', '.join(VARIANTS)}")
        size = replace(size, variants=tuple(args.scenes.split(",")))
    size = replace(size, datasets=args.datasets or size.datasets, seeds=args.seeds or size.seeds)
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TZ", "UTC")
    commit = commit_name()
    start, before = time.perf_counter(), len(list((args.out / "runs").glob("*/*/trial_*")))
    searches = [
        run_search(i, variant, args.out.resolve(), size, args.alpha, args.workers)
        for i, variant in plan(args.first_dataset, size.datasets, size.variants)
    ]
    minutes = (time.perf_counter() - start) / 60
    header = (
        f"selection benchmark at commit {commit}: {size.datasets} searches x {len(size.betas)} betas x "
        f"{size.seeds} seeds{' (quick)' if args.quick else ''}, {minutes:.1f} min on {os.cpu_count()} CPUs "
        f"({cpu_name()}) training {len(list((args.out / 'runs').glob('*/*/trial_*'))) - before} models "
        f"(the others resumed); truth: MIG and SAP on held-out sessions of {EVAL_FRAMES} frames"
    )
    print(header)
    write_trials(args.out / "trials.csv", searches, commit)
    (args.out / "run.txt").write_text(header + "\n")
    rows = rescore(args.out / "trials.csv", args.out, commit)
    write_html(args.out / "selection.html", rows, header)
    files = ["trials.csv", "selection.csv", "scenes.csv", "run.txt"]
    if args.keep:
        keep = RESULTS / args.keep
        keep.mkdir(parents=True, exist_ok=True)
        for name in files:
            shutil.copyfile(args.out / name, keep / name)
        print(f"kept: {keep}")
    print(f"files: {', '.join(str(args.out / n) for n in files)}, {args.out / 'selection.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
