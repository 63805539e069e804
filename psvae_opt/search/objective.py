"""Where an Optuna trial meets training: one trial = one PS-VAE fit.

A trial records, as user attributes (docs/design.md, "Trial record"): every metric on
validation data (``val_*``), the training-data ``train_zu_corr``, test errors, its run
folder, resolved configuration and seed; the health of each unsupervised dimension
(``zu_std``, ``zu_kl``, ``collapsed_dims``, ``collapsed``); its leakage (``zu_label_corr``,
``max_label_leak``) and, when the data has ground-truth factors, ``zu_factor_corr``,
``factor_r_<name>`` per unlabelled factor and the mutual information gap ``mig``. With several
sessions, the validation label R^2 and pixel MSE of each session (``val_label_r2_by_session``,
``val_pixel_mse_by_session``: session name -> value).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial

from psvae_opt.config import Config, dump_config
from psvae_opt.data import Session
from psvae_opt.errors import StorageError
from psvae_opt.model import metrics
from psvae_opt.search import space
from psvae_opt.search.stages import STAGES
from psvae_opt.search.storage import error_line
from psvae_opt.training.loop import fit
from psvae_opt.training.run_end import FitResult
from psvae_opt.training.run_folder import METRIC_NAMES, SPLIT_CODES, confined

log = logging.getLogger(__name__)

AttrWriter = Callable[[optuna.Trial, dict[str, Any]], None]


def set_attrs(trial: optuna.Trial, attrs: dict[str, Any]) -> None:
    """User attributes of a trial, plainly (workers pass a writer that retries)."""
    for key, value in attrs.items():
        trial.set_user_attr(key, value)


@dataclass(frozen=True)
class TrialHooks:
    """What a worker does beside training (diagnostics, the dashboard); every hook is best effort.

    Attributes:
        on_epoch: (trial, run folder, epoch, {split: metrics}) after every epoch.
        on_finish: (trial, trial config, fit result) once the fit is done, while the trial still runs.
        on_complete: (study, finished trial) once the worker has told the study the trial is
            COMPLETE (MLflow logging); a failure there logs a warning.
    """

    on_epoch: Callable[[optuna.Trial, Path, int, dict[str, dict[str, float]]], None] | None = None
    on_finish: Callable[[optuna.Trial, Config, FitResult], None] | None = None
    on_complete: Callable[[optuna.Study, FrozenTrial], None] | None = None


@dataclass(frozen=True)
class TrialContext:
    """What every trial of a worker shares; built once per worker and stage.

    Attributes:
        config: the study file with its overrides.
        session, split_frames: the data, loaded once, and its split.
        sampler: the stage's sampler name.
        seed_upper: the largest model seed of the study (the range of the ``seed`` parameter).
        fixed: stage 2's alpha and n_unsup (from the study).
        study_key: the study's ``run_key`` attribute, a level of the run folders.
        hooks: diagnostics and dashboard uploads.
    """

    config: Config
    stage: int
    session: Session
    split_frames: Mapping[str, np.ndarray]
    sampler: str = "grid"
    seed_upper: int = 0
    fixed: Mapping[str, Any] = field(default_factory=dict)
    study_key: str | None = None
    progress: bool = False
    hooks: TrialHooks = TrialHooks()


RUN_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")  # a study's run_key: its creation time, 20261205-131214


def run_dir_of(config: Config, stage: int, number: int, study_key: str | None = None) -> Path:
    """Run folder of a trial: every attempt of a grid point shares it, so retries resume its checkpoint.

    ``study_key`` (the study's creation time, :func:`psvae_opt.search.study.create_stage`) keeps
    the trials of a study apart from those of an earlier study of the same name, say one
    in another database or started again after its database was deleted.
    """
    root = Path(config.study.runs_dir).resolve()
    folder = root / space.study_name(config, stage)
    if study_key is not None and not RUN_KEY.fullmatch(str(study_key)):
        raise StorageError(
            f"study {space.study_name(config, stage)!r} has the run_key {str(study_key)!r}, not one psvae-opt "
            "writes (letters, digits, '-', '_'); the database was altered: start a new study with --set study.name=NEW"
        )
    run_dir = (folder / study_key if study_key else folder) / f"trial_{number:04d}"
    return confined(root, run_dir, "the run folder")


def fit_attributes(result: FitResult, seed: int) -> dict[str, Any]:
    """Metrics and bookkeeping of a finished fit, as user attributes."""
    attrs: dict[str, Any] = {f"val_{m}": result.metrics["val"][m] for m in METRIC_NAMES}
    attrs["train_zu_corr"] = result.metrics["train"]["zu_corr"]
    if "test" in result.metrics:
        attrs.update({f"test_{m}": result.metrics["test"][m] for m in ("pixel_mse", "label_mse", "label_r2")})
    attrs.update(
        best_epoch=result.best_epoch,
        epochs=result.epochs_run,
        seed=seed,
        annealing_complete=result.annealing_complete,
        resumed_from_epoch=result.resumed_from,
    )
    return attrs


BY_SESSION = ("label_r2", "pixel_mse")  # validation metrics recorded per session


def session_attributes(summary: Mapping[str, Any]) -> dict[str, Any]:
    """``val_<metric>_by_session`` (session name -> value) from a run's summary; empty for one session."""
    per_session = summary.get("per_session", {})
    if not per_session:
        return {}
    return {
        f"val_{m}_by_session": {name: splits["val"][m] for name, splits in per_session.items() if "val" in splits}
        for m in BY_SESSION
    }


def latent_attributes(session: Session, latents: Mapping[str, np.ndarray], collapse_std: float) -> dict[str, Any]:
    """Health and leakage of the unsupervised latents, on the training frames.

    Args:
        latents: a run's ``latents.npz`` arrays (``mu``, ``logvar``, ``split``, ``n_labels``).
        collapse_std: a dimension whose posterior means vary less than this (std over training
            frames; the prior's is 1) is collapsed.
    """
    n_labels = int(latents["n_labels"])
    train = latents["split"] == SPLIT_CODES["train"]
    z_u = latents["mu"][train][:, n_labels:]
    if z_u.shape[1] == 0:
        return {}
    std = z_u.std(0)
    attrs: dict[str, Any] = {"zu_std": std.tolist()}
    if "logvar" in latents:
        attrs["zu_kl"] = metrics.dimension_kl(z_u, latents["logvar"][train][:, n_labels:]).tolist()
    collapsed = [int(d) for d in np.flatnonzero(std < collapse_std)]
    attrs.update(collapsed_dims=collapsed, collapsed=bool(collapsed))
    label_r = metrics.correlations(z_u, session.labels[train], session.masks[train])
    attrs.update(zu_label_corr=label_r.tolist(), max_label_leak=float(np.abs(label_r).max(initial=0.0)))
    if session.factors is not None:
        factor_r = metrics.correlations(z_u, session.factors[train])
        attrs.update(zu_factor_corr=factor_r.tolist(), factor_names=list(session.factor_names))
        unlabelled = [i for i, labelled in enumerate(session.factor_labeled) if not labelled]
        for i in unlabelled:
            attrs[f"factor_r_{session.factor_names[i]}"] = float(np.abs(factor_r[:, i]).max())
        if unlabelled:
            attrs["mig"] = metrics.mutual_information_gap(z_u, session.factors[train][:, unlabelled])
    return attrs


def _objective_values(stage: int, result: FitResult) -> tuple[float, float]:
    first, second = space.OBJECTIVES[stage]
    split_of_first = "train" if first == "zu_corr" else "val"  # the guide's criterion is on training data
    return result.metrics[split_of_first][first], result.metrics["val"][second]


def _finite_or_none(attrs: dict[str, Any]) -> dict[str, Any]:
    def plain(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return None if isinstance(v, float) and not np.isfinite(v) else v

    return {k: plain(v) for k, v in attrs.items()}


def objective(
    trial: optuna.Trial,
    ctx: TrialContext,
    first_number: int,
    *,
    should_stop: Callable[[], bool] = lambda: False,
    write_attrs: AttrWriter = set_attrs,
    owner_check: Callable[[], None] | None = None,
) -> tuple[float, float]:
    """Train the trial's PS-VAE; returns the stage's two objective values.

    Args:
        first_number: the number of the first attempt of the trial's grid point; every
            attempt trains in that attempt's run folder and resumes its checkpoint.
        should_stop: polled during training; True stops it with KeyboardInterrupt.
        owner_check: called before every write to the run folder; raises when the trial was taken over.
    """
    stage = STAGES[ctx.stage]
    params = stage.suggest(trial, ctx.config, ctx.sampler, ctx.seed_upper)
    config = stage.configure(ctx.config, params, dict(ctx.fixed))
    run_dir = run_dir_of(ctx.config, ctx.stage, first_number, ctx.study_key)
    text = dump_config(config)
    write_attrs(trial, {"run_dir": str(run_dir), "config": text, "seed": config.train.model_seed})
    log.info("trial %d: %s -> %s", trial.number, params, run_dir)

    def on_epoch(epoch: int, rows: dict[str, dict[str, float]]) -> None:
        try:  # progress is best effort: a database hiccup must not stop training
            trial.set_user_attr("epochs_done", epoch + 1)
            if ctx.hooks.on_epoch is not None:
                ctx.hooks.on_epoch(trial, run_dir, epoch, rows)
        except Exception as exc:  # progress is best effort: a database hiccup must not stop training
            log.warning("could not record the progress of trial %d: %s", trial.number, error_line(exc))

    result = fit(
        config.model,
        config.loss,
        config.train,
        ctx.session,
        dict(ctx.split_frames),
        run_dir,
        config_text=text,
        progress=ctx.progress,
        on_epoch=on_epoch,
        should_stop=should_stop,
        owner_check=owner_check,
    )
    if should_stop():  # a stop signal: diagnostics could outlast SLURM's grace time; re-queue now
        raise KeyboardInterrupt(
            f"stopped before the diagnostics of trial {trial.number}; its next attempt only evaluates"
        )
    attrs = fit_attributes(result, config.train.model_seed)
    attrs.update(latent_attributes(ctx.session, result.latents, ctx.config.study.collapse_std))
    attrs.update(session_attributes(result.summary))
    write_attrs(trial, _finite_or_none(attrs))
    if attrs.get("collapsed"):
        log.warning(
            "trial %d: unsupervised dimension(s) %s collapsed (posterior-mean std %s)",
            trial.number,
            attrs["collapsed_dims"],
            [round(s, 3) for s in attrs["zu_std"]],
        )
    if ctx.hooks.on_finish is not None:
        ctx.hooks.on_finish(trial, config, result)
    values = _objective_values(ctx.stage, result)
    if not all(np.isfinite(values)):
        raise ValueError(f"trial {trial.number} produced non-finite objectives {values}")
    return values
