"""`psvae-opt stage1|stage2|worker|export|status`: the commands of the two-stage search service.

Arguments in, text out; what runs is :mod:`psvae_opt.service.stage_run`.
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import TYPE_CHECKING, Any

from psvae_opt.commands import (
    Command,
    add_config_arguments,
    add_storage_argument,
    environment,
    load_config_from,
    open_database_from,
    storage_from,
)
from psvae_opt.config import CRITERIA, SAMPLER_NAMES
from psvae_opt.errors import ConfigError
from psvae_opt.search import space
from psvae_opt.service.launcher import LAUNCHERS

if TYPE_CHECKING:  # what runs a command is imported when it runs: the command line starts at once
    import optuna

    from psvae_opt.search.records import Stage1Recommendation, Stage2Recommendation
    from psvae_opt.service import stage_run

log = logging.getLogger(__name__)


def _seeds(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give a number of seeds, or auto") from None


def _add_stage(stage: int):
    def add(p: argparse.ArgumentParser) -> None:
        add_config_arguments(p)
        add_storage_argument(p)
        p.add_argument(
            "--workers", type=int, metavar="N",
            help="local worker processes, or SLURM array tasks (default 1, or one per GPU); 0 only creates and queues",
        )  # fmt: skip
        p.add_argument(
            "--gpus", metavar="LIST", help="GPUs of the local workers: indices of the visible ones, e.g. 0,1, or all"
        )
        p.add_argument(
            "--workers-per-gpu", type=int, default=1, metavar="K", help="workers sharing each GPU (default 1)"
        )
        p.add_argument("--launcher", choices=tuple(LAUNCHERS), default="local", help="local (default) or slurm")
        p.add_argument(
            "--wait", action="store_true", help="with --workers 0: wait until other workers finish the stage"
        )
        p.add_argument("--no-wait", action="store_true", help="slurm: return once the job array is submitted")
        p.add_argument("--dry-run", action="store_true", help="slurm: print the batch script, submit nothing")
        STAGE_OPTIONS[stage](p)

    return add


def _add_alpha_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sampler", choices=SAMPLER_NAMES, help="grid (default, from the study file), tpe or nsga2")
    p.add_argument("--n-trials", type=int, metavar="K", help="trial budget of tpe/nsga2 (default stage1.n_trials)")
    p.add_argument("--seeds", type=int, metavar="S", help="model seeds per alpha (default stage1.seeds)")


def _add_beta_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--seeds", type=_seeds, metavar="S|auto", help="model seeds per beta, or auto (default stage2.seeds)"
    )
    p.add_argument("--initial-seeds", type=int, metavar="S", help="--seeds auto: seeds to start with (default 3)")
    p.add_argument("--max-seeds", type=int, metavar="S", help="--seeds auto: most seeds per beta (default 10)")
    p.add_argument("--alpha", type=float, help="label weight (default: the stage-1 recommendation)")
    p.add_argument("--n-unsup", type=int, help="unsupervised latents (default: stage-1 recommendation)")
    p.add_argument(
        "--criterion", choices=CRITERIA, metavar="NAME",
        help="what chooses beta and the model (default stage2.criterion, udr: >= 3 seeds per beta; "
        "zu_corr is the guide's rule)",
    )  # fmt: skip


# each stage's own options (its record: psvae_opt.search.stages)
STAGE_OPTIONS = {1: _add_alpha_options, 2: _add_beta_options}


def _request(stage: int, args: argparse.Namespace) -> stage_run.StageRequest:
    """The stage's request: its options, and the environment (read here, at the edge)."""
    from psvae_opt.service import stage_run

    gpus = tuple(g.strip() for g in (args.gpus or "").split(",") if g.strip())
    if args.gpus is not None and not (gpus == ("all",) or (gpus and all(g.isdigit() for g in gpus))):
        raise ConfigError(f"--gpus {args.gpus!r}: give GPU indices separated by commas, e.g. --gpus 0,1, or all")
    environment.heartbeat_interval()  # its workers would each die of a bad value: refused here
    return stage_run.StageRequest(
        stage=stage,
        config_path=args.config,
        overrides=tuple(args.overrides),
        storage=storage_from(args),
        workers=args.workers,
        gpus=gpus,
        workers_per_gpu=args.workers_per_gpu,
        launcher=args.launcher,
        wait=args.wait,
        no_wait=args.no_wait,
        dry_run=args.dry_run,
        sampler=getattr(args, "sampler", None),
        n_trials=getattr(args, "n_trials", None),
        seeds=args.seeds,
        initial_seeds=getattr(args, "initial_seeds", None),
        max_seeds=getattr(args, "max_seeds", None),
        criterion=getattr(args, "criterion", None),
        alpha=getattr(args, "alpha", None),
        n_unsup=getattr(args, "n_unsup", None),
        patience=environment.db_patience(),
        artifacts=environment.artifacts(),
        cuda_visible=environment.cuda_visible(),
        mps_pipe=environment.mps_pipe(),
    )


def _run_stage(stage: int):
    def run(args: argparse.Namespace) -> int:
        from psvae_opt.service import stage_run

        cfg = load_config_from(args)
        outcome = stage_run.run(_request(stage, args), cfg)
        if outcome.study is None:  # --dry-run
            print(f"# {outcome.script_path} (not written; nothing submitted)\n{outcome.script}", end="")
            return 0
        study = outcome.study
        print(f"study {study.study_name} in {outcome.storage_shown}: {outcome.queued} trials queued; {outcome.counts}")
        if outcome.job_id:
            print(f"submitted job array {outcome.job_id} ({args.workers or 1} tasks): {outcome.script_path}")
        if not outcome.followed:
            if not outcome.job_id:
                print(
                    f"no local workers; start them with: psvae-opt worker --config {args.config} --stage {stage} "
                    f"(and PSVAE_OPT_STORAGE={outcome.storage_shown})"
                )
            return 0
        return _print_outcome(stage, outcome)

    return run


def _fmt(value: Any, width: int = 9, spec: str = ".4f") -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}{spec}}"


def _print_front(study: optuna.Study, front: list[optuna.trial.FrozenTrial], stage: int) -> None:
    from psvae_opt.search.stages import STAGES

    names, params = STAGES[stage].objectives, STAGES[stage].params
    print(f"\nPareto front of {study.study_name} ({names[0]} vs {names[1]}, both minimised):")
    head = "".join(f"{p:>9}" for p in params) + "".join(f"{n:>12}" for n in names)
    print(f"  trial{head}{'label_r2':>10}{'mig':>8}  collapsed")
    for t in front:
        attrs = t.user_attrs
        cells = "".join(f"{t.params.get(p, 0):>9g}" for p in params) + "".join(f"{v:>12.5f}" for v in t.values)
        collapsed = attrs.get("collapsed_dims") or "-"
        print(
            f"  {t.number:5d}{cells}{_fmt(attrs.get('val_label_r2'), 10)}{_fmt(attrs.get('mig'), 8, '.3f')}"
            f"  {collapsed}"
        )


def _interval(row: dict, key: str) -> str:
    mean, low, high = row.get(f"{key}_mean"), row.get(f"{key}_low"), row.get(f"{key}_high")
    if mean is None:
        return f"{'-':>26}"
    if low is None or high is None or abs(low) == float("inf"):
        return f"{mean:>8.3f} [  -inf,    inf]".rjust(26)
    return f"{mean:>8.3f} [{low:>6.3f}, {high:>6.3f}]".rjust(26)


def _print_stage1(outcome: stage_run.StageOutcome) -> None:
    rec = outcome.recommendation
    seeds = f", means of {rec.n_seeds} seeds" if rec.n_seeds > 1 else ""
    print(f"\nrecommended alpha = {rec.alpha:g} (n_unsup = {rec.n_unsup}{seeds}): "
          f"trial {rec.trial}, the knee of the front")  # fmt: skip


def _print_stage2(outcome: stage_run.StageOutcome) -> None:
    from psvae_opt.search import recommendation

    rec = outcome.recommendation
    p_best = dict(zip(rec.betas, rec.p_best or ()))
    print(f"\n{'beta':>6} {'seeds':>6} {'collapsed':>9} {'zu_corr(train) [95% t]':>26} {'pixel_mse':>10} "
          f"{'label_mse':>10} {'leak':>6} {'mig':>6} {'P(best)':>8}")  # fmt: skip
    for row in outcome.summary:
        print(
            f"{row['beta']:>6g} {row['n_seeds']:>6d} {row['n_collapsed']:>9d} {_interval(row, 'train_zu_corr')} "
            f"{_fmt(row['val_pixel_mse_mean'], 10, '.5f')} {_fmt(row['val_label_mse_mean'], 10)} "
            f"{_fmt(row['max_label_leak_mean'], 6, '.2f')} {_fmt(row['mig_mean'], 6, '.2f')} "
            f"{_fmt(p_best.get(row['beta']), 8, '.3f')}"
        )
    print(recommendation.TABLE_FRAMES)
    if rec.warnings:
        print("\n" + "\n".join(f"warning: {warning}" for warning in rec.warnings))
    print()
    for line in recommendation.describe_stage2(rec):
        print(line)


def _print_outcome(stage: int, outcome: stage_run.StageOutcome) -> int:
    study, rec = outcome.study, outcome.recommendation
    _print_front(study, outcome.front, stage)
    if outcome.unfinished or outcome.gave_up:
        _print_unfinished(outcome.unfinished)
        _print_gave_up(outcome.gave_up)
        print(f"\nno recommendation: the stage is incomplete ({outcome.counts}); none is stored until it is")
        return 1
    if rec is None:
        print(f"\nno trial completed ({outcome.counts}); see the worker logs")
        return 1
    CHOICE_PRINTERS[stage](outcome)
    print(f"run folder {rec.run_dir}")
    print(f"(rests on {rec.n_points} grid point(s), {rec.n_trials} complete trial(s))")
    fails = outcome.counts.get("FAIL", 0)
    if fails:
        print(f"note: {fails} failed attempts ({outcome.counts}); each keeps its error as a user attribute")
    return 1 if outcome.worker_failures and not outcome.counts.get("COMPLETE") else 0


def _stage1_status(rec: Stage1Recommendation) -> list[str]:
    return [f"recommended alpha = {rec.alpha:g}, n_unsup = {rec.n_unsup} (trial {rec.trial}, {rec.run_dir})"]


def _stage2_status(rec: Stage2Recommendation) -> list[str]:
    from psvae_opt.search import recommendation

    return recommendation.describe_stage2(rec, run_dirs=True)


# what the stage command prints of each stage's recommendation, and what status prints of it
CHOICE_PRINTERS = {1: _print_stage1, 2: _print_stage2}
STATUS_LINES = {1: _stage1_status, 2: _stage2_status}


def _print_unfinished(trials: list) -> None:
    if not trials:
        return
    print(f"\nERROR: {len(trials)} trial(s) still waiting or running, with no worker of this launcher left:")
    for t in trials:
        print(f"  trial {t.number} {t.params or t.system_attrs.get('fixed_params')}: {t.state.name.lower()}")
    print("  run the stage again (or start workers) to finish them; a running trial whose worker died is re-queued")


def _print_gave_up(trials: list) -> None:
    if not trials:
        return
    from psvae_opt.search import trial_queue

    print(f"\nERROR: {len(trials)} grid point(s) gave up after spending their crash budget:")
    for t in trials:
        print(f"  trial {t.number} {t.params or trial_queue.fixed_point(t)}: {t.user_attrs.get('error')}")
    print("  run the stage again to resume them from their last saved epoch")


def _add_worker(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    add_storage_argument(p)
    p.add_argument(
        "--stage", type=int, nargs="+", choices=space.STAGE_NUMBERS, required=True, help="stage(s), in order"
    )
    p.add_argument("--wait", type=float, default=0, metavar="SECONDS", help="wait this long for a stage's study")
    p.add_argument("--progress", action="store_true", help="show a progress bar per trial")
    p.add_argument(
        "--gpu", metavar="auto|N",
        help="train on visible GPU N, or 'auto': the first GPU no other worker of this machine holds "
        "(for workers that see every GPU, as docker compose replicas do); default train.device",
    )  # fmt: skip


def _run_worker(args: argparse.Namespace) -> int:
    from psvae_opt.service import worker

    cfg = load_config_from(args)
    req = worker.WorkerRequest(
        stages=tuple(args.stage),
        storage=storage_from(args),
        gpu=args.gpu,
        wait=args.wait,
        progress=args.progress,
        patience=environment.db_patience(),
        heartbeat=environment.heartbeat_interval(),
        gpu_locks=environment.gpu_locks(),
        artifacts=environment.artifacts(),
        cuda_visible=environment.cuda_visible(),
        mps_pipe=environment.mps_pipe(),
    )
    total = worker.run(req, cfg)
    print(f"worker {os.getpid()}: {total} trials completed")
    return 0


def _add_export(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    add_storage_argument(p)
    p.add_argument("--stage", type=int, choices=space.STAGE_NUMBERS, required=True)
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the exported files")


def _run_export(args: argparse.Namespace) -> int:
    from psvae_opt.service import stage_status

    cfg = load_config_from(args)
    for path in stage_status.export(cfg, open_database_from(args, read_only=True), args.stage, args.out):
        print(path)
    return 0


def _add_status(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    add_storage_argument(p)


def _run_status(args: argparse.Namespace) -> int:
    from psvae_opt.service import stage_status

    cfg = load_config_from(args)
    db = open_database_from(args, read_only=True)
    print(f"storage {db.shown}")
    for st in stage_status.status(cfg, db, environment.heartbeat_interval()):
        if st.study is None:
            print(f"stage {st.stage}: not started ({st.name})")
            continue
        rec = st.recommendation
        state = ", ".join(f"{k.lower()} {v}" for k, v in st.counts.items()) or "no trials"
        print(f"stage {st.stage}: {st.name}: {state}")
        if st.gone:
            print(
                f"  {st.gone} of {st.running} running trial(s) have no live worker (no heartbeat for over "
                f"{st.grace:.0f} s): a worker re-queues them, or run the stage again"
            )
        for line in STATUS_LINES[st.stage](rec) if rec else ():
            print(f"  {line}")
        _print_gave_up(st.gave_up)
    return 0


COMMANDS = {
    "stage1": Command("search alpha: pixel MSE vs label MSE (Pareto front, knee)", _add_stage(1), _run_stage(1)),
    "stage2": Command("search beta with several model seeds: zu_corr vs pixel MSE", _add_stage(2), _run_stage(2)),
    "worker": Command(
        "join a study and run its queued trials (any machine that reaches the database)", _add_worker, _run_worker
    ),
    "export": Command(
        "write a stage's Pareto front, seed summary and failures (CSV, JSON, HTML)", _add_export, _run_export
    ),
    "status": Command("trial counts by state, the recommendations and trials that gave up", _add_status, _run_status),
}
