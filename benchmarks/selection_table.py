"""The selection benchmark's arithmetic (issue 15): how well each criterion's choice matches MIG.

Per search (one stage 2 on one dataset): each criterion chooses a beta by P(best) over the
paired seeds (:mod:`psvae_opt.search.selection_stats`) and, within it, its highest-scoring
trial; the regret is MIG(best trial) - MIG(chosen trial) and Spearman's rho compares the
criterion's scores with MIG over all trials. Over searches: the median rho, the mean regret,
the share of searches whose choice is within 10% of the best MIG, and the pre-registered
verdict of issue 15, item 3, against the guide's ``zu_corr``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from psvae_opt.search.criteria import rank_columns
from psvae_opt.search.rules import choose_index

REFERENCE = "zu_corr"  # the guide's criterion: every verdict is against it
RHO_PASS, WIN_SHARE, REGRET_PASS, P_PASS = 0.5, 0.8, 0.10, 0.05  # issue 15, item 3 (8 of 10 searches = 80%)


def spearman_rho(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho of two 1-d arrays over the entries where both are not NaN (-inf ranks lowest)."""
    keep = ~(np.isnan(x) | np.isnan(y))
    if keep.sum() < 3:
        return float("nan")
    ranks = rank_columns(np.stack([x[keep], y[keep]], 1))
    ranks = _average_ties(np.stack([x[keep], y[keep]], 1), ranks)
    a, b = ranks[:, 0] - ranks[:, 0].mean(), ranks[:, 1] - ranks[:, 1].mean()
    denom = math.sqrt(float((a**2).sum() * (b**2).sum()))
    return float((a * b).sum() / denom) if denom > 0 else float("nan")


def _average_ties(values: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """Tied values share their average rank (the guards tie every excluded trial at -inf)."""
    out = ranks.copy()
    for col in range(values.shape[1]):
        for v in np.unique(values[:, col]):
            tied = values[:, col] == v
            out[tied, col] = ranks[tied, col].mean()
    return out


def wilcoxon_less(d: Sequence[float]) -> float:
    """One-sided p-value of the Wilcoxon signed-rank test that the differences ``d`` tend below 0.

    Exact (all 2^n sign patterns, average ranks for ties, zeros left out) for n <= 16; the
    normal approximation beyond.
    """
    d = np.array([v for v in d if np.isfinite(v) and v != 0.0])
    n = len(d)
    if n == 0:
        return 1.0
    ranks = _average_ties(np.abs(d)[:, None], rank_columns(np.abs(d)[:, None]) + 1.0)[:, 0]
    observed = ranks[d > 0].sum()  # small when the differences are mostly negative
    if n <= 16:
        totals = np.array([sum(r for r, s in zip(ranks, signs) if s) for signs in itertools.product((0, 1), repeat=n)])
        return float((totals <= observed + 1e-9).mean())
    mean, sd = n * (n + 1) / 4, math.sqrt(n * (n + 1) * (2 * n + 1) / 24)
    return 0.5 * math.erfc(-((observed - mean) / sd) / math.sqrt(2))


@dataclass(frozen=True)
class SearchTrials:
    """One search's complete trials: (n,) arrays and each criterion's scores (higher = preferred)."""

    name: str
    betas: np.ndarray
    seeds: np.ndarray
    mig: np.ndarray
    collapsed: np.ndarray
    scores: Mapping[str, np.ndarray]
    service_choice: int | None = None  # index of the trial the service recommends today


def choose(search: SearchTrials, scores: np.ndarray) -> int:
    """The trial a criterion chooses, by the service's own rule (:func:`psvae_opt.search.rules.choose_index`)."""
    return choose_index(search.betas, search.seeds, scores, search.collapsed)[0]


@dataclass(frozen=True)
class Evaluation:
    """A criterion in one search."""

    rho: float
    regret: float
    within_10: float  # 1 or 0; for ``random``, the expected share
    chosen: int


def evaluate(search: SearchTrials) -> dict[str, Evaluation]:
    """Every criterion of the search, plus ``service`` (today's recommendation) and ``random`` (expected)."""
    best = float(np.nanmax(search.mig))

    def judged(chosen: int, rho: float) -> Evaluation:
        regret = best - float(search.mig[chosen])
        return Evaluation(rho, regret, float(search.mig[chosen] >= 0.9 * best), chosen)

    out = {name: judged(choose(search, s), spearman_rho(s, search.mig)) for name, s in search.scores.items()}
    if search.service_choice is not None:
        out["service"] = judged(search.service_choice, float("nan"))
    regrets = best - search.mig
    out["random"] = Evaluation(
        float("nan"), float(np.nanmean(regrets)), float(np.nanmean(search.mig >= 0.9 * best)), -1
    )
    return out


@dataclass(frozen=True)
class Verdict:
    """A criterion over all searches, and whether it passes issue 15's pre-registered rule."""

    criterion: str
    median_rho: float
    mean_regret: float
    share_within_10: float
    rho_wins: int  # searches where its rho beats the reference's
    searches: int
    regret_p: float  # Wilcoxon: its regrets below the reference's
    passes: bool
    reason: str


def verdicts(evaluations: Sequence[Mapping[str, Evaluation]]) -> list[Verdict]:
    """The table: one row per criterion, the reference first."""
    names = list(evaluations[0])
    ref = [e[REFERENCE] for e in evaluations]
    rows = []
    for name in sorted(names, key=lambda n: (n != REFERENCE, n)):
        mine = [e[name] for e in evaluations]
        rho = np.array([m.rho for m in mine])
        wins = sum(m.rho > r.rho for m, r in zip(mine, ref) if np.isfinite(m.rho) and np.isfinite(r.rho))
        regret = float(np.mean([m.regret for m in mine]))
        p = wilcoxon_less([m.regret - r.regret for m, r in zip(mine, ref)]) if name != REFERENCE else 1.0
        median_rho = float(np.nanmedian(rho)) if np.isfinite(rho).any() else float("nan")
        by_rho = median_rho >= RHO_PASS and wins >= WIN_SHARE * len(mine)
        by_regret = regret <= REGRET_PASS and p < P_PASS
        reason = (
            "reference (the guide's rule)"
            if name == REFERENCE
            else "rho" * by_rho + " and " * (by_rho and by_regret) + "regret" * by_regret or "fails"
        )
        rows.append(
            Verdict(
                name,
                median_rho,
                regret,
                float(np.mean([m.within_10 for m in mine])),
                wins,
                len(mine),
                p,
                name != REFERENCE and (by_rho or by_regret),
                reason,
            )
        )
    return rows
