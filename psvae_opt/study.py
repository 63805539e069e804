"""The studies of both stages: creation, the trial queue, Pareto fronts and recommendations.

Study user attributes hold what the stage was run with (``stage``, ``sampler``; stage 2's
``alpha``, ``n_unsup``, ``seeds``), the ``run_key`` level of its run folders and, once trials
finish, its ``recommendation`` (and for stage 2 the per-beta ``seed_summary``).
"""

from __future__ import annotations

import datetime
import math
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from psvae_opt import space
from psvae_opt.config import Config, dump_config
from psvae_opt.errors import ConfigError, StorageError
from psvae_opt.runs import METRIC_NAMES
from psvae_opt.storage import describe

SUMMARY_METRICS = tuple(f"val_{m}" for m in METRIC_NAMES) + ("train_zu_corr", "mig")
UNFINISHED = (TrialState.RUNNING, TrialState.WAITING)


def create_stage(
    storage: optuna.storages.BaseStorage,
    config: Config,
    stage: int,
    *,
    sampler: str = "grid",
    fixed: dict | None = None,
) -> optuna.Study:
    """Create the stage's study (or load it, checking it was run with the same settings)."""
    study = optuna.create_study(
        storage=storage,
        study_name=space.study_name(config, stage),
        directions=list(space.DIRECTIONS[stage]),
        sampler=space.SAMPLERS[sampler](config.stage1.model_seed),
        load_if_exists=True,
    )
    wanted = {"stage": stage, "sampler": sampler, **(fixed or {})}
    for key, value in wanted.items():
        old = study.user_attrs.get(key)
        if old is not None and old != value:
            raise ConfigError(
                f"study {study.study_name!r} was started with {key} = {old!r}, not {value!r}; "
                f"finish it with the same settings or choose a new name with --set study.name=NEW"
            )
    if not study.user_attrs:
        study.set_metric_names(list(space.OBJECTIVES[stage]))
        for key, value in wanted.items():
            study.set_user_attr(key, value)
        study.set_user_attr("study_file", dump_config(config))
        # the run folders' own level: a study of the same name started later (or in another
        # database) trains in new folders instead of resuming this one's checkpoints
        study.set_user_attr("run_key", datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S"))
    return study


def load_stage(storage: optuna.storages.BaseStorage, config: Config, stage: int) -> optuna.Study:
    """Load an existing stage study; a clear error when it was never created."""
    name = space.study_name(config, stage)
    names = [s.study_name for s in storage.get_all_studies()]
    if name not in names:
        where = describe(getattr(storage, "url", "the database"))
        raise StorageError(f"no stage-{stage} study {name!r} in {where}; run `psvae-opt stage{stage}` first")
    study = optuna.load_study(study_name=name, storage=storage)
    # Each worker process draws from its own stream: equally seeded adaptive samplers in
    # parallel workers would propose the same points.
    study.sampler = space.SAMPLERS[study.user_attrs.get("sampler", "grid")](None)
    return study


def _key(params: dict[str, Any]) -> tuple:
    return tuple(sorted((k, round(float(v), 9)) for k, v in params.items()))


def enqueue_points(study: optuna.Study, points: list[dict[str, Any]]) -> int:
    """Queue every grid point that has no complete, running or waiting trial; returns how many.

    Run again after a crash, it queues only what is missing (failed points run again).
    """
    taken = {
        _key(t.system_attrs.get("fixed_params", t.params))
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, *UNFINISHED))
    }
    new = [p for p in points if _key(p) not in taken]
    for params in new:
        study.enqueue_trial(params)
    return len(new)


def enqueue_budget(study: optuna.Study, n_trials: int) -> int:
    """Queue empty trials (the sampler fills them when popped) up to ``n_trials`` in all."""
    have = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, *UNFINISHED)))
    for _ in range(max(n_trials - have, 0)):
        study.enqueue_trial({})
    return max(n_trials - have, 0)


def counts(study: optuna.Study) -> dict[str, int]:
    """Trials by state."""
    out = {state.name: 0 for state in TrialState}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name] += 1
    return {k: v for k, v in out.items() if v}


def knee_index(values: np.ndarray) -> int:
    """Index of the front point nearest the utopia point, both objectives scaled to [0, 1].

    Args:
        values: (n, 2) objective values of the Pareto front, both minimised.
    """
    low, high = values.min(0), values.max(0)
    scaled = (values - low) / np.where(high > low, high - low, 1.0)
    return int(np.argmin(np.hypot(scaled[:, 0], scaled[:, 1])))


def pareto_front(study: optuna.Study) -> list[FrozenTrial]:
    """Complete, non-dominated trials, ordered by the first objective."""
    return sorted(study.best_trials, key=lambda t: (t.values[0], t.values[1]))


def recommend_stage1(study: optuna.Study) -> dict[str, Any] | None:
    """The knee of the pixel-MSE / label-MSE front; stored on the study."""
    front = pareto_front(study)
    if not front:
        return None
    best = front[knee_index(np.array([t.values for t in front]))]
    rec = {
        "alpha": float(best.params["alpha"]),
        "n_unsup": int(best.params["n_unsup"]),
        "trial": best.number,
        "run_dir": best.user_attrs.get("run_dir"),
        "pixel_mse": best.values[0],
        "label_mse": best.values[1],
    }
    study.set_user_attr("recommendation", rec)
    return rec


def seed_summary(study: optuna.Study) -> list[dict[str, Any]]:
    """Per beta: the number of seeds and the mean and spread (sample std) of every metric."""
    by_beta: dict[float, list[FrozenTrial]] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        by_beta.setdefault(float(t.params["beta"]), []).append(t)
    rows = []
    for beta in sorted(by_beta):
        trials = by_beta[beta]
        row: dict[str, Any] = {
            "beta": beta,
            "n_seeds": len(trials),
            "seeds": sorted(int(t.params["seed"]) for t in trials),
        }
        for key in SUMMARY_METRICS:
            values = np.array([t.user_attrs.get(key) for t in trials if t.user_attrs.get(key) is not None], float)
            row[f"{key}_mean"] = float(values.mean()) if len(values) else None
            row[f"{key}_std"] = float(values.std(ddof=1)) if len(values) > 1 else (0.0 if len(values) else None)
        rows.append(row)
    return rows


def recommend_stage2(study: optuna.Study) -> dict[str, Any] | None:
    """The beta of lowest mean zu_corr and, within it, the seed of lowest zu_corr; stored."""
    summary = seed_summary(study)
    if not summary:
        return None
    best = min(summary, key=lambda r: r["train_zu_corr_mean"] if r["train_zu_corr_mean"] is not None else math.inf)
    trials = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if float(t.params["beta"]) == best["beta"]
    ]
    model = min(trials, key=lambda t: t.user_attrs["train_zu_corr"])
    rec = {
        "beta": best["beta"],
        "zu_corr_mean": best["train_zu_corr_mean"],
        "zu_corr_std": best["train_zu_corr_std"],
        "trial": model.number,
        "seed": int(model.params["seed"]),
        "run_dir": model.user_attrs.get("run_dir"),
        "zu_corr": model.user_attrs["train_zu_corr"],
    }
    study.set_user_attr("seed_summary", summary)
    study.set_user_attr("recommendation", rec)
    return rec
