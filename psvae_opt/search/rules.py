"""The recommendation rules of both stages, as pure functions: trial rows in, frozen choices out.

Nothing here reads or writes a database or a file (docs/design.md, "Choosing the model"):
:mod:`psvae_opt.search.recommendation` reads the trials and the criterion's scores, calls
these rules and stores their result as a separate step.

- stage 1: the knee of the pixel-MSE / label-MSE front of the seed means of each
  (alpha, n_unsup) (:func:`choose_stage1`);
- stage 2: for a criterion (higher = preferred), the beta of highest posterior probability of
  being best over seeds paired across betas, and whether its lead is resolved by a test with
  beta labels permuted within seeds (:mod:`psvae_opt.search.selection_stats`; a cross-seed
  criterion is recomputed in every resample; collapsed trials count as failures), then that
  beta's best-scoring healthy trial (:func:`choose_stage2`). The service's criterion and the
  guide's (``zu_corr``) are both applied, so that the two choices can be shown side by side.
  ``--seeds auto`` adds one seed to every beta per round until the lead is resolved at the
  level of one look (:func:`next_round`). A criterion that scores fewer than half of the
  trials chooses nothing (:func:`unscored`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from psvae_opt.search.intervals import Interval, t_interval
from psvae_opt.search.selection_stats import ALPHA, BetaChoice, Rescore, ScoredTrial, choose_beta, look_alpha
from psvae_opt.training.run_folder import METRIC_NAMES

GUIDE = "zu_corr"  # the guide's criterion: the lowest mean |r| between unsupervised latents (training frames)
BASE_METRICS = (*(f"val_{m}" for m in METRIC_NAMES), "train_zu_corr", "mig", "max_label_leak")
FACTOR_PREFIX = "factor_r_"  # per unlabelled factor: the best |r| of an unsupervised latent
GROUPS = {1: ("alpha", "n_unsup"), 2: ("beta",)}
MIN_SCORED_SHARE = 0.5  # a criterion that scores fewer of the trials than this chooses nothing


@dataclass(frozen=True)
class TrialRow:
    """A complete trial as the rules read it: its number, parameters and user attributes."""

    number: int
    params: Mapping[str, Any]
    user_attrs: Mapping[str, Any] = field(default_factory=dict)


def knee_index(values: np.ndarray) -> int:
    """Index of the front point nearest the utopia point, both objectives scaled to [0, 1].

    Args:
        values: (n, 2) objective values of the Pareto front, both minimised.
    """
    low, high = values.min(0), values.max(0)
    scaled = (values - low) / np.where(high > low, high - low, 1.0)
    return int(np.argmin(np.hypot(scaled[:, 0], scaled[:, 1])))


def nondominated(values: np.ndarray) -> np.ndarray:
    """(n, 2) values, both minimised -> (n,) bool: not dominated by any other row."""
    keep = np.ones(len(values), bool)
    for i, v in enumerate(values):
        worse_or_equal = np.all(values <= v, axis=1) & np.any(values < v, axis=1)
        keep[i] = not worse_or_equal.any()
    return keep


def summary_metrics(trials: Iterable[TrialRow]) -> tuple[str, ...]:
    """The metrics a summary reports: :data:`BASE_METRICS` and every ``factor_r_*`` the trials have."""
    factors = sorted({k for t in trials for k in t.user_attrs if k.startswith(FACTOR_PREFIX)})
    return (*BASE_METRICS, *factors)


def group_summary(
    trials: Sequence[TrialRow], by: Sequence[str], *, skip_collapsed: bool = False
) -> list[dict[str, Any]]:
    """Per value of the parameters ``by``: seeds and, for every metric, mean, sample std and t interval.

    The one implementation of per-seed statistics (plots and exports read these rows).

    Args:
        trials: complete trials (rows, or optuna's FrozenTrial: the same three fields).
        by: the grouping parameters, e.g. ("beta",) or ("alpha", "n_unsup").
        skip_collapsed: leave out trials whose unsupervised latents collapsed (user attribute
            ``collapsed``), unless every trial of the group collapsed (then ``all_collapsed``).

    Returns:
        one row per group, ordered by ``by``: the parameters, ``n_seeds``, ``seeds``,
        ``n_collapsed``, ``all_collapsed``, ``trials`` (numbers used), and ``{metric}_mean``,
        ``_std``, ``_low``, ``_high`` (95% t interval; None where no trial has the metric).
    """
    groups: dict[tuple, list[TrialRow]] = {}
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


@dataclass(frozen=True)
class Stage1Choice:
    """Stage 1's recommendation: the knee of the front of seed means."""

    alpha: float
    n_unsup: int
    n_seeds: int
    trial: int
    run_dir: str | None
    pixel_mse: float
    label_mse: float
    n_points: int  # grid points (alpha, n_unsup) the front was drawn from
    n_trials: int  # complete trials


def choose_stage1(trials: Sequence[TrialRow]) -> tuple[Stage1Choice | None, list[dict[str, Any]]]:
    """The knee of the (pixel MSE, label MSE) front of the seed means of each grid point, and the
    seed summary it was read from; None when no point has both means."""
    summary = group_summary(trials, GROUPS[1])
    rows = [r for r in summary if r["val_pixel_mse_mean"] is not None and r["val_label_mse_mean"] is not None]
    if not rows:
        return None, summary
    values = np.array([[r["val_pixel_mse_mean"], r["val_label_mse_mean"]] for r in rows])
    front = [r for r, keep in zip(rows, nondominated(values)) if keep]
    best = front[knee_index(np.array([[r["val_pixel_mse_mean"], r["val_label_mse_mean"]] for r in front]))]
    by_number = {t.number: t for t in trials}
    trial = by_number[min(best["trials"], key=lambda n: by_number[n].params.get("seed", 0))]
    choice = Stage1Choice(
        alpha=float(best["alpha"]),
        n_unsup=int(best["n_unsup"]),
        n_seeds=best["n_seeds"],
        trial=trial.number,
        run_dir=trial.user_attrs.get("run_dir"),
        pixel_mse=best["val_pixel_mse_mean"],
        label_mse=best["val_label_mse_mean"],
        n_points=len(rows),
        n_trials=len(trials),
    )
    return choice, summary


@dataclass(frozen=True)
class Pick:
    """One criterion's choice in stage 2: a beta (by P(best)) and its best-scoring healthy trial.

    Attributes:
        criterion: the criterion's name (:data:`GUIDE` for the guide's).
        beta, trial, seed, run_dir: the chosen model.
        score: its criterion score (higher = preferred; NaN when it could not be scored).
        zu_corr, mig, collapsed: the chosen model's guide criterion, MIG (None without ground
            truth) and health.
        betas, p_best, means, n_collapsed: per beta, its P(best), mean score over the paired
            seeds (collapsed trials at the floor) and collapsed trials.
        n_seeds: the paired seeds (seeds every beta has).
        resolved: the chosen beta's lead passed the randomisation test at level ``alpha``.
        p_value: that test's p-value (beta labels permuted within seeds, the criterion
            recomputed; NaN with one beta or one seed).
        alpha: the level of this look (0.05, or its share of the looks under ``--seeds auto``).
    """

    criterion: str
    beta: float
    trial: int
    seed: int
    run_dir: str | None
    score: float
    zu_corr: float | None
    mig: float | None
    collapsed: bool
    betas: tuple[float, ...]
    p_best: tuple[float, ...]
    means: tuple[float, ...]
    n_collapsed: tuple[int, ...]
    n_seeds: int
    resolved: bool
    p_value: float = math.nan
    alpha: float = ALPHA

    def p_best_of(self, beta: float) -> float:
        return self.p_best[self.betas.index(beta)]


def choose_index(
    betas: Sequence[float],
    seeds: Sequence[int],
    scores: Sequence[float],
    collapsed: Sequence[bool],
    rescore: Rescore | None = None,
    alpha: float = ALPHA,
) -> tuple[int, BetaChoice]:
    """The trial (index) a criterion chooses: its beta of highest P(best), then the best-scoring
    healthy trial of that beta (every trial of it collapsed or unscored: its first). When no
    trial of the search is healthy, collapsed trials are compared by their scores.

    Args:
        rescore: the criterion recomputed for any grouping of these trials (a cross-seed
            criterion's :meth:`psvae_opt.search.criteria.Regroupable.table`); None: per-trial scores.
        alpha: the level at which the lead is resolved.
    """
    scores = np.asarray(scores, float)
    dead = np.asarray(collapsed, bool) | ~np.isfinite(scores)
    if dead.all():  # nothing healthy: the collapsed trials are compared by their scores as they are
        dead = ~np.isfinite(scores)
    trials = [ScoredTrial(float(b), int(s), float(v), bool(c)) for b, s, v, c in zip(betas, seeds, scores, dead)]
    choice = choose_beta(trials, rescore, alpha=alpha)
    members = np.flatnonzero(np.asarray(betas, float) == choice.best)
    ranked = np.where(dead[members], -np.inf, scores[members])
    return int(members[np.argmax(ranked)]), choice


def unscored(trials: Sequence[TrialRow], scores: Mapping[int, float], criterion: str) -> str | None:
    """Why ``criterion`` cannot choose (in one line), or None: it scores fewer than
    :data:`MIN_SCORED_SHARE` of the stage-2 trials (e.g. every UDR score NaN), so a choice would
    rest on failures' floors."""
    trials = [t for t in trials if "beta" in t.params]
    scored = sum(math.isfinite(float(scores.get(t.number, math.nan))) for t in trials)
    if not trials or scored >= MIN_SCORED_SHARE * len(trials):
        return None
    share = f"{MIN_SCORED_SHARE:.0%}"
    return f"{criterion} scored {scored} of {len(trials)} trials (fewer than {share}): it chooses nothing"


def choose_stage2(
    trials: Sequence[TrialRow],
    scores: Mapping[int, float],
    criterion: str,
    rescore: Rescore | None = None,
    looks: int = 1,
) -> Pick | None:
    """Stage 2's choice under ``criterion`` from its complete trials and their scores
    (trial number -> score, higher = preferred; a missing or non-finite score counts as a failure).

    Args:
        rescore: the criterion recomputed for any grouping of ``trials`` (same order; see
            :func:`choose_index`); None: per-trial scores.
        looks: how many times the search may stop on this verdict (``--seeds auto``: one per
            round), each look at :func:`psvae_opt.search.selection_stats.look_alpha`.
    """
    keep = [i for i, t in enumerate(trials) if "beta" in t.params]
    if not keep:
        return None
    trials = [trials[i] for i in keep]
    if rescore is not None and keep != list(range(len(keep))):  # rescore indexes every row given
        full, positions = rescore, np.array(keep)
        rescore = lambda index, min_group=None: full(positions[index], min_group)  # noqa: E731
    values = [float(scores.get(t.number, math.nan)) for t in trials]
    index, choice = choose_index(
        [float(t.params["beta"]) for t in trials],
        [int(t.params.get("seed", 0)) for t in trials],
        values,
        [bool(t.user_attrs.get("collapsed")) for t in trials],
        rescore,
        look_alpha(looks),
    )
    model = trials[index]
    return Pick(
        criterion=criterion,
        beta=float(model.params["beta"]),
        trial=model.number,
        seed=int(model.params.get("seed", 0)),
        run_dir=model.user_attrs.get("run_dir"),
        score=values[index],
        zu_corr=model.user_attrs.get("train_zu_corr"),
        mig=model.user_attrs.get("mig"),
        collapsed=bool(model.user_attrs.get("collapsed")),
        betas=choice.betas,
        p_best=choice.p_best,
        means=choice.means,
        n_collapsed=choice.n_collapsed,
        n_seeds=choice.n_seeds,
        resolved=choice.resolved,
        p_value=choice.p_value,
        alpha=choice.alpha,
    )


def guide_scores(trials: Sequence[TrialRow]) -> dict[int, float]:
    """The guide's criterion oriented higher = preferred: minus the training ``zu_corr``."""
    return {
        t.number: -float(t.user_attrs["train_zu_corr"]) for t in trials if t.user_attrs.get("train_zu_corr") is not None
    }


def collapse_warnings(summary: Sequence[Mapping[str, Any]]) -> list[str]:
    """A line per beta every trial of which collapsed (they count as failures, not as absent), and
    one more when that is every beta (then their scores are compared as they are)."""
    lines = [
        f"beta {r['beta']:g}: every one of its {r['n_seeds']} trial(s) has a collapsed unsupervised dimension"
        for r in summary
        if r["all_collapsed"]
    ]
    if summary and len(lines) == len(summary):
        lines.append("every trial of every beta collapsed: the choice compares them as they are")
    return lines


def next_round(pick: Pick | None, tried: Mapping[float, Iterable[int]], max_seeds: int) -> list[dict[str, Any]]:
    """``--seeds auto``: the next round while the choice is unresolved: the lowest seed that not
    every beta has tried, for each beta that lacks it (paired blocks stay complete), until that
    seed reaches ``max_seeds``.

    Args:
        pick: the current choice (None: nothing scored yet, nothing to add).
        tried: per beta, the seeds it has tried (any state).
    """
    if pick is None or pick.resolved or not tried:
        return []
    seeds = {beta: set(s) for beta, s in tried.items()}
    k = next(k for k in range(max_seeds + 1) if k == max_seeds or not all(k in s for s in seeds.values()))
    if k >= max_seeds:
        return []
    return [{"beta": beta, "seed": k} for beta in sorted(seeds) if k not in seeds[beta]]
