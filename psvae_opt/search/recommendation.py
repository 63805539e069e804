"""Seed statistics and the recommendation of each stage, read from its complete trials.

The rules (docs/design.md, "Search protocol" and "Seeds decide"):

- stage 1: the knee of the pixel-MSE / label-MSE front of the seed means of each
  (alpha, n_unsup);
- stage 2: per beta, the mean of training ``zu_corr`` over seeds whose unsupervised latents
  did not collapse, with a t interval; the recommended beta has the lowest mean, and the
  verdict says whether its interval is clear of every other beta's. The recommended model is
  the lowest-``zu_corr`` healthy trial of that beta. ``--seeds auto`` adds seeds to the
  betas that are not yet told apart (:func:`plan_more_seeds`, :func:`top_up`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from psvae_opt.search import trial_queue
from psvae_opt.search.intervals import Interval, compare, t_interval
from psvae_opt.search.study import UNFINISHED, enqueue_points
from psvae_opt.training.run_folder import METRIC_NAMES

BASE_METRICS = (*(f"val_{m}" for m in METRIC_NAMES), "train_zu_corr", "mig", "max_label_leak")
FACTOR_PREFIX = "factor_r_"  # per unlabelled factor: the best |r| of an unsupervised latent
GROUPS = {1: ("alpha", "n_unsup"), 2: ("beta",)}


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


def nondominated(values: np.ndarray) -> np.ndarray:
    """(n, 2) values, both minimised -> (n,) bool: not dominated by any other row."""
    keep = np.ones(len(values), bool)
    for i, v in enumerate(values):
        worse_or_equal = np.all(values <= v, axis=1) & np.any(values < v, axis=1)
        keep[i] = not worse_or_equal.any()
    return keep


def summary_metrics(trials: Iterable[FrozenTrial]) -> tuple[str, ...]:
    """The metrics a summary reports: :data:`BASE_METRICS` and every ``factor_r_*`` the trials have."""
    factors = sorted({k for t in trials for k in t.user_attrs if k.startswith(FACTOR_PREFIX)})
    return (*BASE_METRICS, *factors)


def group_summary(
    trials: Sequence[FrozenTrial], by: Sequence[str], *, skip_collapsed: bool = False
) -> list[dict[str, Any]]:
    """Per value of the parameters ``by``: seeds and, for every metric, mean, sample std and t interval.

    The one implementation of per-seed statistics (plots and exports read these rows).

    Args:
        trials: complete trials.
        by: the grouping parameters, e.g. ("beta",) or ("alpha", "n_unsup").
        skip_collapsed: leave out trials whose unsupervised latents collapsed (user attribute
            ``collapsed``), unless every trial of the group collapsed (then ``all_collapsed``).

    Returns:
        one row per group, ordered by ``by``: the parameters, ``n_seeds``, ``seeds``,
        ``n_collapsed``, ``all_collapsed``, ``trials`` (numbers used), and ``{metric}_mean``,
        ``_std``, ``_low``, ``_high`` (95% t interval; None where no trial has the metric).
    """
    groups: dict[tuple, list[FrozenTrial]] = {}
    for t in trials:
        groups.setdefault(tuple(t.params[k] for k in by), []).append(t)
    metrics = summary_metrics(trials)
    rows = []
    for key in sorted(groups):
        members = groups[key]
        healthy = [t for t in members if not t.user_attrs.get("collapsed")]
        used = healthy if skip_collapsed and healthy else members
        row: dict[str, Any] = dict(zip(by, key))
        row.update(
            n_seeds=len(members),
            seeds=sorted(int(t.params.get("seed", 0)) for t in members),
            n_collapsed=len(members) - len(healthy),
            all_collapsed=not healthy,
            trials=sorted(t.number for t in used),
        )
        for metric in metrics:
            iv = t_interval([t.user_attrs[metric] for t in used if t.user_attrs.get(metric) is not None])
            row.update(_interval_columns(metric, iv))
        rows.append(row)
    return rows


def _interval_columns(metric: str, iv: Interval) -> dict[str, float | None]:
    def clean(x: float) -> float | None:
        return None if math.isnan(x) else x

    return {
        f"{metric}_mean": clean(iv.mean),
        f"{metric}_std": clean(iv.std),
        f"{metric}_low": clean(iv.low),
        f"{metric}_high": clean(iv.high),
    }


def _complete(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def seed_summary(study: optuna.Study, stage: int | None = None) -> list[dict[str, Any]]:
    """The stage's :func:`group_summary` (stage 2: by beta over healthy seeds; stage 1: by alpha, n_unsup).

    ``stage`` defaults to the study's ``stage`` attribute.
    """
    stage = int(stage or study.user_attrs.get("stage", 2))
    return group_summary(_complete(study), GROUPS[stage], skip_collapsed=stage == 2)


def withdraw_recommendation(study: optuna.Study) -> None:
    """Clear a stored recommendation (one of an earlier, smaller grid) while the stage is incomplete."""
    if study.user_attrs.get("recommendation") is not None:
        study.set_user_attr("recommendation", None)


def _basis(study: optuna.Study, rows: Sequence[dict[str, Any]]) -> dict[str, int]:
    """What a recommendation rests on: its groups (grid points without the seed) and complete trials."""
    return {"n_points": len(rows), "n_trials": len(_complete(study))}


def recommend_stage1(study: optuna.Study, store: bool = True) -> dict[str, Any] | None:
    """The knee of the front of seed means of (pixel MSE, label MSE); stored on the study
    unless ``store`` is False (read-only commands)."""
    rows = [
        r for r in seed_summary(study, 1) if r["val_pixel_mse_mean"] is not None and r["val_label_mse_mean"] is not None
    ]
    if not rows:
        return None
    values = np.array([[r["val_pixel_mse_mean"], r["val_label_mse_mean"]] for r in rows])
    front = [r for r, keep in zip(rows, nondominated(values)) if keep]
    best = front[knee_index(np.array([[r["val_pixel_mse_mean"], r["val_label_mse_mean"]] for r in front]))]
    by_number = {t.number: t for t in _complete(study)}
    trial = by_number[min(best["trials"], key=lambda n: by_number[n].params.get("seed", 0))]
    rec = {
        "alpha": float(best["alpha"]),
        "n_unsup": int(best["n_unsup"]),
        "n_seeds": best["n_seeds"],
        "trial": trial.number,
        "run_dir": trial.user_attrs.get("run_dir"),
        "pixel_mse": best["val_pixel_mse_mean"],
        "label_mse": best["val_label_mse_mean"],
        **_basis(study, rows),
    }
    if store:
        study.set_user_attr("seed_summary", rows)
        study.set_user_attr("recommendation", rec)
    return rec


def _zu_intervals(rows: Sequence[dict[str, Any]]) -> dict[float, Interval]:
    return {
        r["beta"]: Interval(
            len(r["trials"]),
            r["train_zu_corr_mean"],
            r["train_zu_corr_std"] or 0.0,
            r["train_zu_corr_low"],
            r["train_zu_corr_high"],
        )
        for r in rows
        if r["train_zu_corr_mean"] is not None
    }


def _candidates(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """The betas a recommendation chooses from: those with a trial whose latents did not collapse;
    all of them (with a warning) when every trial of every beta collapsed."""
    candidates = [r for r in rows if not r["all_collapsed"]]
    warnings = [
        f"beta {r['beta']:g} left out: every trial collapsed" for r in rows if r["all_collapsed"] and candidates
    ]
    if not candidates and rows:
        candidates = rows
        warnings.append(
            "every trial of every beta has a collapsed unsupervised dimension: recommending from all trials"
        )
    return candidates, warnings


def recommend_stage2(study: optuna.Study, store: bool = True) -> dict[str, Any] | None:
    """The beta of lowest mean training zu_corr over healthy seeds, the verdict against the
    runner-up, and the recommended model; stored on the study unless ``store`` is False."""
    rows = seed_summary(study, 2)
    candidates, warnings = _candidates(rows)
    intervals = _zu_intervals(candidates)
    if not intervals:
        return None
    verdict = compare(intervals)
    best = next(r for r in candidates if r["beta"] == verdict.best)
    by_number = {t.number: t for t in _complete(study)}
    model = by_number[min(best["trials"], key=lambda n: by_number[n].user_attrs["train_zu_corr"])]
    runner = intervals.get(verdict.runner_up) if verdict.runner_up is not None else None
    rec = {
        "beta": best["beta"],
        "zu_corr_mean": best["train_zu_corr_mean"],
        "zu_corr_std": best["train_zu_corr_std"],
        "zu_corr_low": best["train_zu_corr_low"],
        "zu_corr_high": best["train_zu_corr_high"],
        "n_seeds": best["n_seeds"],
        "n_healthy": best["n_seeds"] - best["n_collapsed"],
        "runner_up": verdict.runner_up,
        "runner_up_mean": runner.mean if runner else None,
        "runner_up_low": _finite(runner.low) if runner else None,
        "runner_up_high": _finite(runner.high) if runner else None,
        "overlapping": list(verdict.overlapping),
        "resolved": verdict.resolved,
        "trial": model.number,
        "seed": int(model.params["seed"]),
        "run_dir": model.user_attrs.get("run_dir"),
        "zu_corr": model.user_attrs["train_zu_corr"],
        "mig": model.user_attrs.get("mig"),
        "collapsed": bool(model.user_attrs.get("collapsed")),
        "warnings": warnings,
        **_basis(study, rows),
    }
    if store:
        study.set_user_attr("seed_summary", rows)
        study.set_user_attr("recommendation", rec)
    return rec


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def plan_more_seeds(study: optuna.Study, max_seeds: int) -> list[dict[str, Any]]:
    """Stage 2 ``--seeds auto``: the next round of (beta, seed) points, one per beta not yet told apart.

    Nothing while any trial is waiting or running (a round finishes first), nothing once the
    recommended beta is resolved. Otherwise the best beta and each beta whose interval overlaps
    it get their next unused seed, until a beta has tried ``max_seeds`` seeds.
    """
    trials = study.get_trials(deepcopy=False)
    if any(t.state in UNFINISHED for t in trials):
        return []
    candidates, _ = _candidates(group_summary(_complete(study), GROUPS[2], skip_collapsed=True))
    intervals = _zu_intervals(candidates)
    if not intervals:
        return []
    verdict = compare(intervals)
    if verdict.resolved:
        return []
    points = []
    for beta in (verdict.best, *verdict.overlapping):
        tried = {int(trial_queue.point_of(t).get("seed", -1)) for t in trials if _beta_of(t) == beta}
        if len(tried) < max_seeds:
            points.append({"beta": beta, "seed": next(s for s in range(len(tried) + 1) if s not in tried)})
    return points


def _beta_of(trial: FrozenTrial) -> float | None:
    beta = trial_queue.point_of(trial).get("beta")
    return None if beta is None else float(beta)


def top_up(study: optuna.Study, max_seeds: int | None) -> int:
    """Queue the next round of ``--seeds auto`` (nothing when seeds are fixed); returns how many."""
    if not max_seeds:
        return 0
    return enqueue_points(study, plan_more_seeds(study, max_seeds))
