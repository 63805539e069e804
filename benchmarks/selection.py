"""Selection benchmark (issue 15): which criterion chooses the model a scientist would choose?

For each of K synthetic datasets (data seeds 0..K-1, or K from ``--first-dataset``; scene
variants in turn: the demo scene, the demo with the hind paw's height unlabelled, i.e. three
unlabelled factors, and the demo seen by two cameras) it runs a full stage 2 through the
service itself (betas x S seeds, local CPU workers, one SQLite database for all), then scores
every complete trial with every candidate criterion of :mod:`psvae_opt.search.criteria` and
with MIG against the true unlabelled factors, all on validation frames (the guide's ``zu_corr``
on training frames, as the guide says). It prints the table and writes ``trials.csv`` (every
trial, every score), ``selection.csv`` (one row per criterion) and ``selection.html`` into
``--out``.

Everything is resumable: datasets already written are kept, and a study that exists is
resumed (only its missing trials run). The default size (10 datasets x 4 betas x 5 seeds of
the demo network) takes hours of CPU; ``--quick`` runs a tiny version in a couple of minutes.

    python benchmarks/selection.py --out bench/selection             # the full benchmark
    python benchmarks/selection.py --out /tmp/sel --quick            # tiny, for the tests
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import optuna
from mirror_mouse import cpu_name
from selection_table import SearchTrials, evaluate, verdicts

from psvae_opt.config import load_config
from psvae_opt.data import Session, load_session, synth_session, write_session
from psvae_opt.data.synth import FACTOR_NAMES, FRAME_RATE, LABEL_NAMES, render_frames, smooth_trajectories
from psvae_opt.model import metrics
from psvae_opt.search import criteria
from psvae_opt.search.storage import open_database
from psvae_opt.service import stage_run as stages
from psvae_opt.training.run_folder import SPLIT_CODES, load_latents, unsupervised_latents

REPO = Path(__file__).resolve().parents[1]
# scene variant -> (camera views, labels left out): the paws' positions are labels unless left out
VARIANTS = {"demo": (1, ()), "three_unlabelled": (1, ("paw_hind_y",)), "two_views": (2, ())}


@dataclass(frozen=True)
class Size:
    """How big the benchmark is: datasets, the stage-2 grid, the data and the training."""

    datasets: int
    betas: tuple[float, ...]
    seeds: int
    frame_size: int
    trials: int
    frames: int
    overrides: tuple[str, ...]


FULL = Size(10, (1.0, 5.0, 10.0, 20.0), 5, 64, 30, 100, ())  # the demo's data and network (studies/demo.toml)
QUICK = Size(  # minutes on 2 CPU cores: the demo network on 32x32 frames, few epochs; too short to rank criteria
    3, (1.0, 20.0), 3, 32, 20, 40, ("train.max_epochs=6", "loss.anneal_epochs=2", "train.batch_size=32")
)


def write_dataset(path: Path, variant: str, size: Size, seed: int) -> Path:
    """The dataset of one search; the demo writer itself where the variant is one it can write."""
    views, unlabel = VARIANTS[variant]
    if not unlabel:
        return synth_session(path, size=size.frame_size, trials=size.trials, frames=size.frames, views=views, seed=seed)
    rng = np.random.default_rng(seed)  # the demo's scene and trajectories, fewer labels
    traj = smooth_trajectories(size.trials * size.frames, rng)
    images = render_frames(traj, size.frame_size, views, rng)
    names = [n for n in LABEL_NAMES if n not in unlabel]
    labels_sc = traj[:, [FACTOR_NAMES.index(n) for n in names]] * size.frame_size - 0.5
    means, stds = labels_sc.mean(0), labels_sc.std(0)

    def cut(a: np.ndarray) -> list[np.ndarray]:
        return [a[i * size.frames : (i + 1) * size.frames] for i in range(size.trials)]

    return write_session(
        path,
        cut(images),
        cut((labels_sc - means) / stds),
        labels_sc=cut(labels_sc),
        factors=cut(traj),
        factor_names=FACTOR_NAMES,
        factor_labeled=[n in names for n in FACTOR_NAMES],
        label_names=names,
        attrs={"source": "benchmarks/selection.py", "frame_rate": FRAME_RATE, "seed": seed},
    )


def plan(first: int, count: int) -> list[tuple[int, str]]:
    """The searches as (dataset index = data seed, scene variant): ``count`` from ``first``, the
    variants in turn by index (a second set of datasets for a fresh verdict starts after the first)."""
    return [(i, list(VARIANTS)[i % len(VARIANTS)]) for i in range(first, first + count)]


def run_search(index: int, variant: str, out: Path, size: Size, alpha: float, workers: int) -> tuple[str, SearchTrials]:
    """Write (or keep) dataset ``index`` of ``variant``, run (or resume) its stage 2 and score its trials."""
    data = out / "data" / f"{index:02d}_{variant}.h5"
    data.parent.mkdir(parents=True, exist_ok=True)
    if not data.exists():
        write_dataset(data, variant, size, seed=index)
    n_unsup = 2 + len(VARIANTS[variant][1])  # one unsupervised latent per unlabelled factor
    overrides = (
        f"data.path={data}",
        f"study.name=selection-{index:02d}",
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
        n_unsup=n_unsup,
    )
    mapped = stages.check_request(req, cfg)
    outcome = stages.run_stage(req, cfg, open_database(storage), mapped)
    name = f"{index:02d} {variant}"
    return name, score_search(name, outcome.study, load_session(data), cfg.study.collapse_std)


def score_search(name: str, study: optuna.Study, session: Session, collapse_std: float) -> SearchTrials:
    """Every criterion and MIG (validation frames) for the complete trials of a stage-2 study."""
    trials = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    unlabelled = [i for i, labelled in enumerate(session.factor_labeled) if not labelled]
    views, mig = [], []
    for t in trials:
        lat = load_latents(t.user_attrs["run_dir"])
        val = lat["split"] == SPLIT_CODES["val"]
        z_val, z_train = unsupervised_latents(lat, "val"), unsupervised_latents(lat, "train")
        mig.append(metrics.mutual_information_gap(z_val, session.factors[val][:, unlabelled]))
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
    rec = study.user_attrs.get("recommendation") or {}
    numbers = [t.number for t in trials]
    return SearchTrials(
        name=name,
        betas=np.array([v.group for v in views]),
        seeds=np.array([int(t.params["seed"]) for t in trials]),
        mig=np.array(mig),
        collapsed=np.array([bool(t.user_attrs.get("collapsed")) for t in trials]),
        scores=criteria.score_trials(views),
        service_choice=numbers.index(rec["trial"]) if rec.get("trial") in numbers else None,
    )


def write_trials(path: Path, searches: list[SearchTrials]) -> None:
    names = list(searches[0].scores)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["search", "beta", "seed", "collapsed", "mig", *names])
        for s in searches:
            for i in range(len(s.mig)):
                w.writerow([s.name, s.betas[i], s.seeds[i], s.collapsed[i], s.mig[i], *(s.scores[n][i] for n in names)])


def write_table(path: Path, rows: list) -> None:
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(asdict(rows[0])))
        w.writeheader()
        w.writerows(asdict(r) for r in rows)


def write_html(path: Path, rows: list, per_search: list[dict], header: str) -> None:
    """One page: median rho, mean regret and share within 10% per criterion; rho per search."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    names = [r.criterion for r in rows]
    titles = ("median Spearman rho with MIG", "mean regret (MIG)", "share within 10% of the best MIG", "rho per search")
    fig = make_subplots(rows=2, cols=2, subplot_titles=titles)
    colours = ["#2a9d8f" if r.passes else ("#888" if r.criterion == "zu_corr" else "#e76f51") for r in rows]
    fig.add_bar(x=names, y=[r.median_rho for r in rows], marker_color=colours, row=1, col=1, showlegend=False)
    fig.add_bar(x=names, y=[r.mean_regret for r in rows], marker_color=colours, row=1, col=2, showlegend=False)
    fig.add_bar(x=names, y=[r.share_within_10 for r in rows], marker_color=colours, row=2, col=1, showlegend=False)
    for search in per_search:
        fig.add_trace(
            go.Scatter(x=names, y=[search["eval"][n].rho for n in names], mode="markers", name=search["name"]),
            row=2,
            col=2,
        )
    fig.update_layout(title=header, height=800)
    fig.write_html(path, include_plotlyjs=True)


def format_table(rows: list) -> str:
    lines = ["| criterion | median rho | wins vs zu_corr | mean regret | Wilcoxon p | within 10% | verdict |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        lines.append(
            f"| {r.criterion} | {r.median_rho:.2f} | {r.rho_wins}/{r.searches} | {r.mean_regret:.3f} | "
            f"{r.regret_p:.3f} | {r.share_within_10:.0%} | {'PASS' if r.passes else '-'} ({r.reason}) |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path, help="folder for data, studies, runs and the table")
    p.add_argument("--quick", action="store_true", help="a tiny size (3 datasets x 2 betas x 3 seeds, 2 epochs)")
    p.add_argument("--datasets", type=int, help="number of datasets (default 10; quick 3)")
    p.add_argument("--first-dataset", type=int, default=0, help="index (= data seed) of the first dataset (default 0)")
    p.add_argument("--seeds", type=int, help="model seeds per beta (default 5; quick 3; UDR needs 3)")
    p.add_argument("--alpha", type=float, default=1000.0, help="label weight of stage 2 (default 1000)")
    p.add_argument("--workers", type=int, default=2, help="local CPU workers per search (default 2)")
    args = p.parse_args(argv)
    if args.first_dataset < 0:
        p.error(f"--first-dataset {args.first_dataset}: give an index >= 0 (it is the data seed)")
    size = QUICK if args.quick else FULL
    size = replace(size, datasets=args.datasets or size.datasets, seeds=args.seeds or size.seeds)
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TZ", "UTC")
    start = time.perf_counter()
    searches = [
        run_search(i, variant, args.out.resolve(), size, args.alpha, args.workers)[1]
        for i, variant in plan(args.first_dataset, size.datasets)
    ]
    per_search = [{"name": s.name, "eval": evaluate(s)} for s in searches]
    rows = verdicts([s["eval"] for s in per_search])
    minutes = (time.perf_counter() - start) / 60
    header = (
        f"selection benchmark: {size.datasets} searches x {len(size.betas)} betas x {size.seeds} seeds"
        f"{' (quick)' if args.quick else ''}, {minutes:.1f} min on {os.cpu_count()} CPUs ({cpu_name()})"
    )
    write_trials(args.out / "trials.csv", searches)
    write_table(args.out / "selection.csv", rows)
    write_html(args.out / "selection.html", rows, per_search, header)
    print(header)
    print(format_table(rows))
    print(f"files: {args.out / 'selection.csv'}, {args.out / 'trials.csv'}, {args.out / 'selection.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
