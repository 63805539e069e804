"""Where an Optuna trial meets training: one trial = one PS-VAE fit.

A trial records, as user attributes, every metric of DESIGN section 4 on validation data
(``val_*``), the training-data ``train_zu_corr``, its run folder, resolved configuration and
seed, and, when the dataset has ground-truth factors, the mutual information gap (``mig``)
of its unsupervised latents against the unlabelled factors.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from psvae_opt import metrics, space
from psvae_opt.config import Config, dump_config
from psvae_opt.data import Session
from psvae_opt.runs import METRIC_NAMES, SPLIT_CODES, load_latents
from psvae_opt.trainer import FitResult, fit

log = logging.getLogger(__name__)


def set_attrs(trial: optuna.Trial, attrs: dict[str, Any]) -> None:
    """User attributes of a trial (workers replace this by a version that retries)."""
    for key, value in attrs.items():
        trial.set_user_attr(key, value)


@dataclass
class TrialContext:
    """What every trial of a worker shares: the study file, the data (loaded once), the stage.

    Attributes:
        fixed: stage 2's alpha and n_unsup (from the study).
        study_key: the study's ``run_key`` attribute, a level of the run folders.
        write_attrs: how user attributes are written (workers retry through database outages).
        should_stop: polled during training; True stops the trial (it is re-queued).
        on_finish: called with (trial, config, fit result) to upload diagnostics.
    """

    config: Config
    stage: int
    session: Session
    split_frames: dict[str, np.ndarray]
    sampler: str = "grid"
    seeds: int = 1
    fixed: dict[str, Any] = field(default_factory=dict)
    should_stop: Callable[[], bool] = lambda: False
    on_finish: Callable[[optuna.Trial, Config, FitResult], None] | None = None
    progress: bool = False
    study_key: str | None = None
    write_attrs: Callable[[optuna.Trial, dict[str, Any]], None] = set_attrs


def original_number(trial: optuna.trial.FrozenTrial) -> int:
    """The number of the first attempt of a retried trial (its own number otherwise)."""
    return int(trial.system_attrs.get("failed_trial", trial.number))


def run_dir_of(config: Config, stage: int, number: int, study_key: str | None = None) -> Path:
    """Run folder of a trial: retries of a trial share it, so they resume its checkpoint.

    ``study_key`` (the study's creation time, :func:`psvae_opt.study.create_stage`) keeps
    the trials of a study apart from those of an earlier study of the same name, say one
    in another database or started again after its database was deleted.
    """
    folder = Path(config.study.runs_dir).resolve() / space.study_name(config, stage)
    return (folder / study_key if study_key else folder) / f"trial_{number:04d}"


def trial_attributes(result: FitResult, seed: int, mig: float | None) -> dict[str, Any]:
    """User attributes of a finished trial."""
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
    if mig is not None:
        attrs["mig"] = mig
    return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in attrs.items()}


def unsupervised_mig(session: Session, result: FitResult, n_labels: int) -> float | None:
    """MIG of the unsupervised latent means against the unlabelled factors, on training frames."""
    if session.factors is None:
        return None
    unlabelled = [i for i, labelled in enumerate(session.factor_labeled) if not labelled]
    latents = load_latents(result.run_dir)
    z_u = latents["mu"][:, n_labels:]
    if not unlabelled or z_u.shape[1] == 0:
        return None
    train = latents["split"] == SPLIT_CODES["train"]
    return metrics.mutual_information_gap(z_u[train], session.factors[train][:, unlabelled])


def _objective_values(stage: int, result: FitResult) -> tuple[float, float]:
    first, second = space.OBJECTIVES[stage]
    split_of_first = "train" if first == "zu_corr" else "val"  # the guide's criterion is on training data
    return result.metrics[split_of_first][first], result.metrics["val"][second]


def objective(trial: optuna.Trial, ctx: TrialContext, first_number: int) -> tuple[float, float]:
    """Train the trial's PS-VAE; returns the stage's two objective values.

    Args:
        first_number: the number of the trial's first attempt (see :func:`original_number`);
            every attempt trains in that attempt's run folder and resumes its checkpoint.
    """
    params = space.suggest(trial, ctx.config, ctx.stage, ctx.sampler, ctx.seeds)
    config = space.trial_config(ctx.config, ctx.stage, params, ctx.fixed)
    run_dir = run_dir_of(ctx.config, ctx.stage, first_number, ctx.study_key)
    text = dump_config(config)
    attrs: dict[str, Any] = {"run_dir": str(run_dir), "config": text, "seed": config.train.model_seed}
    if first_number != trial.number:  # a retry: the failed attempt's error was copied along
        attrs.update(retry_of=first_number, error=None)
    ctx.write_attrs(trial, attrs)
    log.info("trial %d: %s -> %s", trial.number, params, run_dir)

    def progress(epoch: int, rows: dict[str, dict[str, float]]) -> None:
        try:  # progress is best effort: a database hiccup must not stop training
            trial.set_user_attr("epochs_done", epoch + 1)
        except Exception as exc:
            log.warning("could not record the progress of trial %d: %s", trial.number, exc)

    result = fit(
        config.model,
        config.loss,
        config.train,
        ctx.session,
        ctx.split_frames,
        run_dir,
        config_text=text,
        progress=ctx.progress,
        on_epoch=progress,
        should_stop=ctx.should_stop,
    )
    mig = unsupervised_mig(ctx.session, result, ctx.session.n_labels)
    ctx.write_attrs(trial, trial_attributes(result, config.train.model_seed, mig))
    if ctx.on_finish is not None:
        ctx.on_finish(trial, config, result)
    values = _objective_values(ctx.stage, result)
    if not all(np.isfinite(values)):
        raise ValueError(f"trial {trial.number} produced non-finite objectives {values}")
    return values
