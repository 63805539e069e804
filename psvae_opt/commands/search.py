"""`psvae-opt stage1|stage2|worker|export|status`: the two-stage search service.

A stage command creates (or resumes) its study, queues its trials once, starts local
workers (or, with ``--workers 0``, leaves them to ``psvae-opt worker`` on other machines),
then prints the Pareto front and the recommendation it stores on the study.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

import optuna

from psvae_opt import space
from psvae_opt.commands import Command, add_config_arguments, add_storage_argument, load_config_from
from psvae_opt.commands.dashboard import open_rating_study, save_search_summary, trial_uploader
from psvae_opt.config import SAMPLER_NAMES, Config
from psvae_opt.dashboard import record_artifact_dir
from psvae_opt.data import load_session, split_frames
from psvae_opt.errors import ConfigError, StorageError
from psvae_opt.export import export_stage
from psvae_opt.storage import describe, open_storage, resolve_url, with_retries
from psvae_opt.study import (
    counts,
    create_stage,
    enqueue_budget,
    enqueue_points,
    load_stage,
    pareto_front,
    recommend_stage1,
    recommend_stage2,
)
from psvae_opt.workers import StopFlag, check_gpus, launch_local, run_worker, worker_command

log = logging.getLogger(__name__)


def _add_stage(stage: int):
    def add(p: argparse.ArgumentParser) -> None:
        add_config_arguments(p)
        add_storage_argument(p)
        p.add_argument(
            "--workers", type=int, default=1, help="local worker processes; 0 only creates and queues (default 1)"
        )
        p.add_argument("--gpus", metavar="LIST", help="GPU ids for the workers, round-robin, e.g. 0,1 (default: CPU)")
        p.add_argument(
            "--wait", action="store_true", help="with --workers 0: wait until other workers finish the stage"
        )
        if stage == 1:
            p.add_argument("--sampler", choices=SAMPLER_NAMES, help="grid (default, from the study file), tpe or nsga2")
            p.add_argument(
                "--n-trials", type=int, metavar="K", help="trial budget of tpe/nsga2 (default stage1.n_trials)"
            )
        else:
            p.add_argument("--seeds", type=int, metavar="S", help="model seeds per beta (default stage2.seeds)")
            p.add_argument("--alpha", type=float, help="label weight (default: the stage-1 recommendation)")
            p.add_argument(
                "--n-unsup", type=int, help="unsupervised latents (default: stage-1 recommendation, else model.n_unsup)"
            )

    return add


def _stage2_settings(args: argparse.Namespace, cfg: Config, storage: optuna.storages.BaseStorage) -> dict:
    rec = None
    if args.alpha is None or args.n_unsup is None:
        try:
            rec = load_stage(storage, cfg, 1).user_attrs.get("recommendation")
        except StorageError:
            rec = None
    if args.alpha is None and rec is None:
        raise ConfigError(
            "stage 2 needs alpha: give --alpha A, or run `psvae-opt stage1` first so its recommendation is used"
        )
    alpha = args.alpha if args.alpha is not None else rec["alpha"]
    n_unsup = args.n_unsup if args.n_unsup is not None else (rec["n_unsup"] if rec else cfg.model.n_unsup)
    seeds = args.seeds if args.seeds is not None else cfg.stage2.seeds
    if n_unsup < 2:
        raise ConfigError(
            f"stage 2 compares unsupervised latents, so it needs n_unsup >= 2 (got {n_unsup}); give --n-unsup 2 or more"
        )
    if alpha <= 0 or seeds < 1:
        raise ConfigError(f"--alpha {alpha} --seeds {seeds}: alpha must be > 0 and seeds >= 1")
    return {"alpha": float(alpha), "n_unsup": int(n_unsup), "seeds": int(seeds)}


def _wait_until_done(study: optuna.Study) -> None:
    while True:
        c = with_retries(lambda: counts(study), what="counting trials")
        if not c.get("RUNNING") and not c.get("WAITING"):
            return
        log.info("waiting for workers: %s", c)
        time.sleep(10)


def _print_front(study: optuna.Study, stage: int) -> None:
    names = space.OBJECTIVES[stage]
    params = ("alpha", "n_unsup") if stage == 1 else ("beta", "seed")
    print(f"\nPareto front of {study.study_name} ({names[0]} vs {names[1]}, both minimised):")
    print(
        "  trial "
        + "".join(f"{p:>9}" for p in params)
        + "".join(f"{n:>12}" for n in names)
        + f"{'label_r2':>10}{'mig':>8}"
    )
    for t in pareto_front(study):
        mig = t.user_attrs.get("mig")
        print(
            f"  {t.number:5d} "
            + "".join(f"{t.params[p]:>9g}" for p in params)
            + "".join(f"{v:>12.5f}" for v in t.values)
            + f"{t.user_attrs.get('val_label_r2', float('nan')):>10.4f}"
            + (f"{mig:>8.3f}" if mig is not None else f"{'-':>8}")
        )


def _run_stage(stage: int):
    def run(args: argparse.Namespace) -> int:
        cfg = load_config_from(args)
        url = resolve_url(args.storage)
        storage = open_storage(url, heartbeat=False)
        gpus = check_gpus(args.gpus)
        if args.workers < 0:
            raise ConfigError(f"--workers {args.workers}: give 0 or more")
        if args.workers:
            load_session(cfg.data.path)  # refuse bad data here, not in every worker
        if stage == 1:
            sampler = args.sampler or cfg.stage1.sampler
            study = create_stage(storage, cfg, 1, sampler=sampler)
            queued = (
                enqueue_points(study, space.stage1_grid(cfg))
                if sampler == "grid"
                else enqueue_budget(study, args.n_trials or cfg.stage1.n_trials)
            )
        else:
            fixed = _stage2_settings(args, cfg, storage)
            study = create_stage(storage, cfg, 2, fixed=fixed)
            open_rating_study(storage, study)  # the traversal rating form (psvae_opt.ratings)
            queued = enqueue_points(study, space.stage2_grid(cfg, fixed["seeds"]))
        record_artifact_dir(study, cfg)
        print(f"study {study.study_name} in {describe(url)}: {queued} trials queued; {counts(study)}")
        failures = 0
        if args.workers:
            command = worker_command(args.config, args.overrides, stage, url)
            log_dir = Path(cfg.study.runs_dir) / study.study_name / "workers"
            failures = launch_local(command, args.workers, gpus, study, log_dir)
        elif args.wait:
            _wait_until_done(study)
        else:
            print(
                f"no local workers; start them with: psvae-opt worker --config {args.config} --stage {stage} "
                f"--storage {describe(url)}"
            )
            return 0
        return _report_stage(study, stage, failures)

    return run


def _report_stage(study: optuna.Study, stage: int, failures: int) -> int:
    rec = recommend_stage1(study) if stage == 1 else recommend_stage2(study)
    save_search_summary(study, stage)
    state = counts(study)
    _print_front(study, stage)
    if rec is None:
        print(f"\nno trial completed ({state}); see the worker logs")
        return 1
    if stage == 1:
        print(
            f"\nrecommended alpha = {rec['alpha']:g} (n_unsup = {rec['n_unsup']}): trial {rec['trial']}, "
            "the knee of the front"
        )
    else:
        from psvae_opt.study import seed_summary

        print(f"\n{'beta':>6} {'seeds':>6} {'zu_corr(train)':>20} {'pixel_mse':>20} {'label_mse':>20} {'mig':>16}")
        for row in seed_summary(study):
            cells = "".join(_mean_std(row, k) for k in ("train_zu_corr", "val_pixel_mse", "val_label_mse", "mig"))
            print(f"{row['beta']:>6g} {row['n_seeds']:>6d}{cells}")
        print(
            f"\nrecommended beta = {rec['beta']:g} (mean zu_corr {rec['zu_corr_mean']:.3f}); "
            f"recommended model: trial {rec['trial']}, seed {rec['seed']}"
        )
    print(f"run folder {rec['run_dir']}")
    if state.get("FAIL"):
        print(f"note: {state['FAIL']} failed attempts ({state}); failed trials keep their error as a user attribute")
    return 0 if not failures or state.get("COMPLETE") else 1


def _mean_std(row: dict, key: str) -> str:
    mean, std = row.get(f"{key}_mean"), row.get(f"{key}_std")
    return f"{'-':>20}" if mean is None else f"{mean:>12.4f} ± {std:<6.4f}"


def _add_worker(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    add_storage_argument(p)
    p.add_argument(
        "--stage", type=int, nargs="+", choices=space.STAGES, required=True, help="stage(s) to work on, in order"
    )
    p.add_argument(
        "--wait", type=float, default=0, metavar="SECONDS", help="wait this long for a stage's study to be created"
    )
    p.add_argument("--progress", action="store_true", help="show a progress bar per trial")
    p.add_argument(
        "--gpu",
        metavar="auto|N",
        help="train on GPU N, or 'auto': the first GPU no other worker of this machine holds "
        "(for workers that see every GPU, as docker compose replicas do); default train.device",
    )


def _wait_for_study(storage, cfg: Config, stage: int, seconds: float) -> optuna.Study:
    """The stage's study once it exists and has trials (or once ``seconds`` have passed)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            study = with_retries(lambda: load_stage(storage, cfg, stage), what="loading the study")
            if (
                with_retries(lambda s=study: s.get_trials(deepcopy=False), what="reading the study")
                or time.monotonic() >= deadline
            ):
                return study
        except StorageError:
            if time.monotonic() >= deadline:
                raise
        time.sleep(5)


def _choose_gpu(args: argparse.Namespace) -> tuple[list[str], object]:
    """``--gpu``: the ``--set`` override of train.device, and the GPU lock held while working."""
    if args.gpu is None:
        return [], None
    if args.gpu != "auto":
        if not args.gpu.isdigit():
            raise ConfigError(f"--gpu {args.gpu!r}: give auto or a GPU index such as 0")
        return [f"train.device=cuda:{args.gpu}"], None
    import torch

    from psvae_opt.devices import claim_gpu

    gpu, lock = claim_gpu(torch.cuda.device_count() if torch.cuda.is_available() else 0)
    log.info("worker %d takes GPU %d", os.getpid(), gpu)
    return [f"train.device=cuda:{gpu}"], lock


def _run_worker(args: argparse.Namespace) -> int:
    from psvae_opt.devices import tune_cpu_allocator
    from psvae_opt.objectives import TrialContext

    device, _gpu_lock = _choose_gpu(args)  # the lock is held until the worker exits
    args.overrides = [*args.overrides, *device]
    cfg = load_config_from(args)
    tune_cpu_allocator()
    storage = open_storage(args.storage, heartbeat=True)
    session, frames = None, None
    stop = StopFlag()
    stop.install()
    total = 0
    for stage in args.stage:
        study = _wait_for_study(storage, cfg, stage, args.wait)
        if session is None:  # after the wait: the launcher may be the one writing the data
            session = load_session(cfg.data.path)
            frames = split_frames(session, cfg.data.split_counts, cfg.data.data_seed)
        attrs = study.user_attrs
        ctx = TrialContext(
            cfg,
            stage,
            session,
            frames,
            sampler=attrs.get("sampler", "grid"),
            seeds=attrs.get("seeds", 1),
            fixed={k: attrs[k] for k in ("alpha", "n_unsup") if k in attrs},
            progress=args.progress,
            study_key=attrs.get("run_key"),
        )
        ctx.on_finish = trial_uploader(study, session, cfg)
        total += run_worker(study, ctx, stop)
    print(f"worker {os.getpid()}: {total} trials completed")
    return 0


def _add_export(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    add_storage_argument(p)
    p.add_argument("--stage", type=int, choices=space.STAGES, required=True)
    p.add_argument(
        "--out", required=True, metavar="DIR", help="folder for pareto.csv/json/html (and seeds_summary.csv)"
    )


def _run_export(args: argparse.Namespace) -> int:
    cfg = load_config_from(args)
    study = load_stage(open_storage(args.storage, heartbeat=False), cfg, args.stage)
    if not pareto_front(study):
        raise StorageError(f"study {study.study_name!r} has no complete trial yet ({counts(study)}); nothing to export")
    # trials may have finished since the launcher stored its recommendation (or it did not wait)
    (recommend_stage1 if args.stage == 1 else recommend_stage2)(study)
    save_search_summary(study, args.stage)  # for stages whose workers ran elsewhere
    for path in export_stage(study, args.stage, args.out):
        print(path)
    return 0


def _add_status(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    add_storage_argument(p)


def _run_status(args: argparse.Namespace) -> int:
    cfg = load_config_from(args)
    url = resolve_url(args.storage)
    storage = open_storage(url, heartbeat=False)
    print(f"storage {describe(url)}")
    for stage in space.STAGES:
        try:
            study = load_stage(storage, cfg, stage)
        except StorageError:
            print(f"stage {stage}: not started ({space.study_name(cfg, stage)})")
            continue
        rec = study.user_attrs.get("recommendation")
        state = ", ".join(f"{k.lower()} {v}" for k, v in counts(study).items()) or "no trials"
        print(f"stage {stage}: {study.study_name}: {state}")
        if rec:
            what = (
                f"alpha = {rec['alpha']:g}, n_unsup = {rec['n_unsup']}"
                if stage == 1
                else f"beta = {rec['beta']:g}, seed {rec['seed']}"
            )
            print(f"  recommended {what} (trial {rec['trial']}, {rec['run_dir']})")
    return 0


COMMANDS = {
    "stage1": Command("search alpha: pixel MSE vs label MSE (Pareto front, knee)", _add_stage(1), _run_stage(1)),
    "stage2": Command("search beta with several model seeds: zu_corr vs pixel MSE", _add_stage(2), _run_stage(2)),
    "worker": Command(
        "join a study and run its queued trials (any machine that reaches the database)", _add_worker, _run_worker
    ),
    "export": Command("write a stage's Pareto front (CSV, JSON, HTML) and seed summary", _add_export, _run_export),
    "status": Command("trial counts by state and the current recommendations", _add_status, _run_status),
}
