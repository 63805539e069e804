"""The recommendation of each stage: read the trials (and, for a criterion that needs them, their
latents), apply the pure rules of :mod:`psvae_opt.search.rules`, and store the result on the
study as a separate step (read-only commands pass ``store=False``).

Stage 2 applies two criteria: the study's (``stage2.criterion`` or ``--criterion``, recorded as
the study attribute ``criterion``) and the guide's ``zu_corr``; the stored recommendation is
the first, with the second beside it under ``guide`` whenever the criterion is not the guide's.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, fields, replace
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from psvae_opt.errors import DataError
from psvae_opt.search import criteria, rules, trial_queue
from psvae_opt.search.records import Stage1Recommendation, Stage2Recommendation, StoredPick
from psvae_opt.search.rules import GROUPS, GUIDE, Pick, TrialRow, group_summary
from psvae_opt.search.study import UNFINISHED, enqueue_points

log = logging.getLogger(__name__)
TABLE_FRAMES = "(zu_corr, leak and mig on training frames; pixel and label MSE on validation frames)"


def pareto_front(study: optuna.Study) -> list[FrozenTrial]:
    """Complete, non-dominated trials, ordered by the first objective."""
    return sorted(study.best_trials, key=lambda t: (t.values[0], t.values[1]))


def rows_of(trials: Sequence[FrozenTrial]) -> list[TrialRow]:
    return [TrialRow(t.number, dict(t.params), dict(t.user_attrs)) for t in trials]


def _complete(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def withdraw_recommendation(study: optuna.Study) -> None:
    """Clear a stored recommendation (one of an earlier, smaller grid) while the stage is incomplete."""
    if study.user_attrs.get("recommendation") is not None:
        study.set_user_attr("recommendation", None)


def recommend_stage1(study: optuna.Study, store: bool = True) -> Stage1Recommendation | None:
    """The knee of the front of seed means of (pixel MSE, label MSE); stored on the study
    unless ``store`` is False (read-only commands)."""
    choice, summary = rules.choose_stage1(rows_of(_complete(study)))
    if choice is None:
        return None
    rec = Stage1Recommendation(**asdict(choice))
    if store:
        study.set_user_attr("seed_summary", summary)
        study.set_user_attr("recommendation", rec.stored())
    return rec


def study_criterion(study: optuna.Study) -> str:
    """The criterion stage 2 recommends with: the study's ``criterion`` attribute (the guide's if none)."""
    return str(study.user_attrs.get("criterion") or GUIDE)


def criterion_scoring(
    trials: Sequence[TrialRow], criterion: str
) -> tuple[dict[int, float], criteria.Regroupable | None]:
    """Each trial's score under ``criterion`` (higher = preferred), read from its attributes (the
    guide's) or from its run folder's latents on validation frames (the others), and the same
    criterion for any grouping of ``trials`` (rows in their order; None for the guide's), which
    the beta statistics recompute in every resample. A trial whose latents cannot be read is
    left out (it counts as a failure), with a warning."""
    if criterion == GUIDE:
        return rules.guide_scores(trials), None
    from psvae_opt.training.run_folder import load_latents, unsupervised_latents

    views, positions = [], np.full(len(trials), -1)
    for i, t in enumerate(trials):
        try:
            lat = load_latents(t.user_attrs.get("run_dir") or "")
        except DataError as e:
            log.warning("trial %d: not scored by %s: %s", t.number, criterion, e)
            continue
        z_val, z_train = unsupervised_latents(lat, "val"), unsupervised_latents(lat, "train")
        informative = np.ones(z_val.shape[1], bool)
        informative[list(t.user_attrs.get("collapsed_dims") or [])] = False
        views.append(
            criteria.TrialLatents(
                group=float(t.params.get("beta", np.nan)),
                z_u=z_val,
                train_z_u=z_train,
                labels=None,
                masks=None,
                pixel_mse=float(t.user_attrs.get("val_pixel_mse", np.nan)),
                informative=informative,
                leak=t.user_attrs.get("max_label_leak"),
            )
        )
        positions[i] = len(views) - 1
    if not views:
        return {}, None
    read = np.flatnonzero(positions >= 0)
    scores = dict(zip((trials[i].number for i in read), (float(v) for v in criteria.score(criterion, views))))
    seeds = [int(trials[i].params.get("seed", 0)) for i in read]
    return scores, _on_rows(criteria.regroupable(criterion, views, seeds), positions)


def _on_rows(scoring: criteria.Regroupable, positions: np.ndarray) -> criteria.Regroupable:
    """``scoring`` of the trials read, spread over every row (``positions``: row -> trial read, or -1):
    a row without latents scores NaN and is no sibling's pair."""
    have, n = positions >= 0, len(positions)
    per_trial, sims, excluded = None, None, None
    if scoring.per_trial is not None:
        per_trial = np.full(n, np.nan)
        per_trial[have] = scoring.per_trial[positions[have]]
    else:
        sims = np.full((n, n), np.nan)
        sims[np.ix_(have, have)] = scoring.sims[np.ix_(positions[have], positions[have])]
    if scoring.excluded is not None:
        excluded = np.zeros(n, bool)
        excluded[have] = scoring.excluded[positions[have]]
    return replace(scoring, per_trial=per_trial, sims=sims, excluded=excluded)


def looks_of(study: optuna.Study) -> int:
    """How many times stage 2 may stop on its verdict: one per round under ``--seeds auto``
    (``max_seeds`` - ``initial_seeds`` + 1), else 1."""
    attrs = study.user_attrs
    if attrs.get("seeds") != "auto" or attrs.get("max_seeds") is None:
        return 1
    return max(1, int(attrs["max_seeds"]) - int(attrs.get("initial_seeds") or 3) + 1)


def choose(rows: Sequence[TrialRow], criterion: str, looks: int = 1) -> tuple[Pick | None, str | None]:
    """Stage 2's choice under ``criterion``, or None and why (in one line) when the criterion
    scores too few trials (:func:`rules.unscored`)."""
    scores, scoring = criterion_scoring(rows, criterion)
    problem = rules.unscored(rows, scores, criterion)
    if problem:
        return None, problem
    rescore = scoring.table if scoring is not None else None
    return rules.choose_stage2(rows, scores, criterion, rescore, looks), None


def _stored_pick(pick: Pick) -> StoredPick:
    values = {f.name: getattr(pick, f.name) for f in fields(StoredPick) if f.name != "frames"}
    values["p_value"] = None if math.isnan(pick.p_value) else pick.p_value
    return StoredPick(**values, frames=frames_of(pick.criterion))


def frames_of(criterion: str) -> dict[str, str]:
    """Which frames each figure of a choice comes from: the criterion's score, zu_corr and MIG."""
    training = ("zu_corr", "mutual_information_train", "hsic_train", "label_leak")
    score = "training" if criterion.removesuffix("+guards") in training else "validation"
    return {"score": score, "zu_corr": "training", "mig": "training"}


def recommend_stage2(
    study: optuna.Study, store: bool = True, criterion: str | None = None
) -> Stage2Recommendation | None:
    """Stage 2's choice under the study's criterion (or ``criterion``), the guide's beside it,
    and the seed summary; stored on the study unless ``store`` is False.

    The record holds the service's :class:`~psvae_opt.search.rules.Pick` (with ``frames``: which
    frames each figure comes from) plus ``guide`` (the guide's Pick, or None when the criterion
    is the guide's), ``differs`` (the two choose different trials), ``warnings``, ``n_points``,
    ``n_trials``, the chosen beta's seed means of ``zu_corr`` (``zu_corr_mean``, ``_low``,
    ``_high``), ``n_healthy`` and ``fallback`` (None, or why the criterion chose nothing and the
    guide's rule chose instead). None when nothing can be chosen (no trial, or neither criterion
    scores enough trials: logged).
    """
    rows = rows_of(_complete(study))
    criterion = criterion or study_criterion(study)
    looks = looks_of(study)
    pick, problem = choose(rows, criterion, looks)
    guide, guide_problem = (pick, problem) if criterion == GUIDE else choose(rows, GUIDE, looks)
    fallback = None
    if pick is None and problem is not None and guide is not None:
        pick, guide, fallback = guide, None, f"{problem}; the guide's rule ({GUIDE}) chooses instead"
    if pick is None:
        for line in (problem, guide_problem):
            if line:
                log.warning("stage 2 recommends no model: %s", line)
        return None
    summary = group_summary(rows, GROUPS[2], skip_collapsed=True)
    chosen = next(r for r in summary if r["beta"] == pick.beta)
    chosen_pick = _stored_pick(pick)
    rec = Stage2Recommendation(
        **{f.name: getattr(chosen_pick, f.name) for f in fields(StoredPick)},
        guide=None if guide is None or guide is pick else _stored_pick(guide),
        differs=guide is not None and guide.trial != pick.trial,
        warnings=tuple(rules.collapse_warnings(summary)),
        n_points=len(summary),
        n_trials=len(rows),
        n_healthy=chosen["n_seeds"] - chosen["n_collapsed"],
        zu_corr_mean=chosen["train_zu_corr_mean"],
        zu_corr_low=chosen["train_zu_corr_low"],
        zu_corr_high=chosen["train_zu_corr_high"],
        fallback=fallback,
    )
    if store:
        study.set_user_attr("seed_summary", summary)
        study.set_user_attr("recommendation", rec.stored())
    return rec


def plan_more_seeds(study: optuna.Study, max_seeds: int) -> list[dict[str, Any]]:
    """Stage 2 ``--seeds auto``: the next round of (beta, seed) points (:func:`rules.next_round`).

    Nothing while any trial is waiting or running (a round finishes first), nothing once the
    choice under the study's criterion is resolved (its lead passed the test at the level of one
    look) or the budget is spent, or when the criterion scores too few trials to choose.
    """
    trials = study.get_trials(deepcopy=False)
    if any(t.state in UNFINISHED for t in trials):
        return []
    pick, _ = choose(rows_of(_complete(study)), study_criterion(study), looks_of(study))
    tried: dict[float, set[int]] = {}
    for t in trials:
        point = trial_queue.point_of(t)
        if point.get("beta") is not None:
            tried.setdefault(float(point["beta"]), set()).add(int(point.get("seed", 0)))
    return rules.next_round(pick, tried, max_seeds)


def top_up(study: optuna.Study, max_seeds: int | None) -> int:
    """Queue the next round of ``--seeds auto`` (nothing when seeds are fixed); returns how many."""
    if not max_seeds:
        return 0
    return enqueue_points(study, plan_more_seeds(study, max_seeds))


def describe_stage2(rec: Stage2Recommendation, run_dirs: bool = False) -> list[str]:
    """Stage 2's recommendation in words: the service's choice, how sure it is, and the
    guide's beside it whenever the two differ (the printout, ``status``, the model card and the
    dashboard note all say it so)."""
    where = (lambda pick: f", {pick.run_dir}") if run_dirs else (lambda pick: "")
    lines = [f"recommended beta = {rec.beta:g} by {rec.criterion}: {_certainty(rec)}"]
    if rec.fallback:
        lines.append(f"  not by the study's criterion: {rec.fallback}")
    lines.append(f"recommended model: {_model(rec)}{where(rec)}")
    if len(rec.betas) > 1 and not rec.resolved:
        lines.append("  more seeds would settle beta: run stage 2 again with --seeds auto (or more --seeds)")
    guide = rec.guide
    if guide and rec.differs:
        model = f"{_model(guide)}{where(guide)}"
        lines.append(f"the guide's rule (zu_corr) chooses otherwise: beta {guide.beta:g}, {model}")
    elif guide:
        lines.append("the guide's rule (zu_corr) chooses the same model")
    return lines


def _certainty(pick: StoredPick) -> str:
    if pick.p_best is None:
        return "recorded by an earlier psvae-opt (no P(best)): run stage 2 again to update it"
    if len(pick.betas) == 1:
        return "the only beta"
    verdict = "resolved" if pick.resolved else "NOT resolved (another beta may be better)"
    test = ""
    if pick.p_value is not None:  # recorded since issue 27: the randomisation test
        test = f", lead p = {pick.p_value:.3f} (resolves at <= {pick.alpha:.3g})"
    return f"P(best) {pick.p_best_of(pick.beta):.2f} over {pick.n_seeds} paired seed(s){test}, {verdict}"


def _model(pick: StoredPick) -> str:
    frames = pick.frames or {}

    def named(figure: str, key: str) -> str:  # the frames a figure comes from, where recorded
        return f"{figure} ({frames[key]} frames)" if key in frames else figure

    parts = [f"{named(f'{pick.criterion} score', 'score')} {pick.score:.3f}"] if pick.criterion != GUIDE else []
    if pick.zu_corr is not None:
        parts.append(f"{named('zu_corr', 'zu_corr')} {pick.zu_corr:.3f}")
    if pick.mig is not None:
        parts.append(f"{named('MIG', 'mig')} {pick.mig:.3f}")
    if pick.collapsed:
        parts.append("a collapsed dimension")
    return f"trial {pick.trial}, seed {pick.seed} ({', '.join(parts)})"
