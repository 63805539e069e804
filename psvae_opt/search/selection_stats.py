"""Which beta: each beta's P(best), and whether its lead is resolved, over seeds paired across betas.

Seed k of every beta shares the initialisation and the batch order (both come from the model
seed), so the scores of one seed form a block: a good or bad initialisation moves every
beta's score together. A beta's merit is the mean of its trials' scores over the paired seeds
(higher = better; collapsed or unscorable trials at a floor, below).

A cross-seed criterion (UDR, centrality) scores a trial by its similarities to its siblings,
so the trials of one beta share pairs and their spread understates the noise of the beta's
mean (with 3 seeds, trial i scores (s_ij + s_ik) / 2). Both statements therefore recompute the
criterion itself in every resample, through a ``rescore`` function ((..., K, m) trial indices
grouped into betas -> their scores), and so hold for every criterion (issue 27):

- **resolved** is a randomisation test. With all betas equal, the K trials of one seed are
  exchangeable across betas, so permuting beta labels within each seed (one trial per seed per
  beta stays so), recomputing the criterion and taking the gap between the top two beta means
  gives the null distribution of the observed lead (the chosen beta's mean less the best other
  one). The search is resolved when that p-value, (1 + exceedances) / (1 + permutations), is at
  most ``alpha``: exact at any number of seeds (Monte Carlo with a fixed generator seed, so the
  same trials give the same answer). ``--seeds auto`` looks after every round, so it spends
  :data:`ALPHA` in equal shares over its looks (:func:`look_alpha`; Bonferroni over the looks).
  The exactness has a price: with 2 betas and 3 seeds only 4 distinct labellings exist, so no
  lead resolves there (p >= 0.25); 4 betas x 3 seeds have 576.
- **P(best)** is the posterior of a randomised block model, score = mu[beta] + s[seed] + e with
  a flat prior and p(sigma) ~ 1/sigma (Monte Carlo with a fixed generator seed), fitted to the
  jackknife pseudo-values of the beta means: pseudo[b, k] = n T_b - (n - 1) T_b(without seed k),
  the criterion recomputed on the other seeds. For a per-trial criterion these are the scores
  themselves; for a cross-seed one their spread carries the shared pairs (the jackknife variance
  of a mean of pair similarities errs on the large side, Efron and Stein 1981).

A collapsed trial (or one the criterion cannot score) counts as what it is, a failure: it takes
a floor below every healthy trial of the search (the lowest healthy score less the healthy
scores' range), so a beta that collapses often falls behind however well its survivors score.
:func:`operating_characteristics` simulates the procedure on independent scores; the
benchmark ``benchmarks/selection_calibration.py`` on simulated latents scored by the real criteria.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

ALPHA = 0.05  # the most searches with all betas equal that may be declared resolved, over all looks
PERMUTATIONS = 1999  # Monte Carlo permutations of beta labels: p-values down to 1/2000
DRAWS = 20_000  # Monte Carlo draws of P(best)
MC_SEED = 0  # the generator of the Monte Carlo draws: same scores, same P(best) and p-value

# (..., K, m) trial indices (row: a beta's trials, column: a seed), the fewest trials a group
# scores with (None: the criterion's own) -> (..., K, m) scores
Rescore = Callable[[np.ndarray, "int | None"], np.ndarray]


def look_alpha(looks: int = 1, alpha: float = ALPHA) -> float:
    """The level of each look when a search may stop at any of ``looks`` looks (``--seeds auto``:
    one per round): ``alpha`` in equal shares, so that all looks together stay within ``alpha``."""
    return alpha / max(1, looks)


@dataclass(frozen=True)
class ScoredTrial:
    """One finished trial of stage 2, as the beta statistics see it (score: higher = better)."""

    beta: float
    seed: int
    score: float
    collapsed: bool = False


@dataclass(frozen=True)
class PairedScores:
    """Scores of the seeds that every beta has: ``values[b, k]`` is beta ``betas[b]``, seed ``seeds[k]``.

    Attributes:
        floor: the score a collapsed or unscored trial was given (the lowest healthy score
            less the range of healthy scores, see :func:`_floor`; 0 when no trial is healthy).
        n_collapsed: per beta, its trials that took the floor.
        index: (K, n) int, the position in the trials given of beta b, seed k (for resampling).
    """

    betas: tuple[float, ...]
    seeds: tuple[int, ...]
    values: np.ndarray
    floor: float
    n_collapsed: tuple[int, ...]
    index: np.ndarray | None = None


def _floor(healthy: Sequence[float]) -> float:
    """The score of a failed trial: the lowest healthy score less the healthy range (less |lowest|,
    or 1 at a lowest of 0, when the range is 0: a failure is never as good as a healthy trial)."""
    if not healthy:
        return 0.0
    low, spread = min(healthy), max(healthy) - min(healthy)
    return float(low - (spread if spread > 0 else (abs(low) or 1.0)))


def paired_scores(trials: Sequence[ScoredTrial]) -> PairedScores:
    """The (betas x common seeds) table of scores, collapsed and non-finite scores set to the floor.

    Seeds that some beta lacks (a round still running, a crashed trial) are left out, so that
    every column is a complete block.
    """
    if not trials:
        raise ValueError("paired_scores needs at least one trial")
    healthy = [t.score for t in trials if not t.collapsed and np.isfinite(t.score)]
    floor = _floor(healthy)
    betas = tuple(sorted({float(t.beta) for t in trials}))
    seeds_of = {b: {t.seed for t in trials if float(t.beta) == b} for b in betas}
    common = tuple(sorted(set.intersection(*seeds_of.values())))
    cell = {(float(t.beta), t.seed): i for i, t in enumerate(trials)}
    index = np.array([[cell[(b, s)] for s in common] for b in betas], int).reshape(len(betas), len(common))
    values = np.full(index.shape, floor)
    collapsed = [0] * len(betas)
    for (i, k), n in np.ndenumerate(index):
        t = trials[n]
        if t.collapsed or not np.isfinite(t.score):
            collapsed[i] += 1
        else:
            values[i, k] = t.score
    return PairedScores(betas, common, values, floor, tuple(collapsed), index)


def p_best(values: np.ndarray, draws: int = DRAWS, seed: int = MC_SEED) -> np.ndarray:
    """P(best) of every row of a (K, n) table of paired scores (higher = better), K >= 1.

    Returns:
        (K,) summing to 1; uniform when n < 2 (one seed says nothing about the noise).
    """
    k, n = values.shape
    if k == 1:
        return np.ones(1)
    if n < 2:
        return np.full(k, 1.0 / k)
    means = values.mean(1)
    resid = values - means[:, None] - values.mean(0)[None, :] + values.mean()
    sse, df = float((resid**2).sum()), (k - 1) * (n - 1)
    if sse <= 1e-12 * max(1.0, float((values**2).sum())):  # no noise at all: the top mean(s) win
        top = np.isclose(means, means.max())
        return top / top.sum()
    rng = np.random.default_rng(seed)
    sigma = np.sqrt(sse / rng.chisquare(df, draws))
    mu = means[None, :] + (sigma / np.sqrt(n))[:, None] * rng.standard_normal((draws, k))
    return np.bincount(mu.argmax(1), minlength=k) / draws


@dataclass(frozen=True)
class BetaChoice:
    """The beta the scores favour and how sure that is.

    Attributes:
        betas, p_best, means, n_collapsed: per beta (means over the paired seeds, floors included).
        n_seeds: paired seeds used.
        best: the beta of highest P(best) (ties: the higher mean).
        resolved: the lead of ``best`` passed the randomisation test at level ``alpha`` (and there
            are 2 seeds or more; a single beta is resolved from 2 seeds on).
        p_value: the test's p-value (NaN with one beta or one seed).
        alpha: the level of this look.
    """

    betas: tuple[float, ...]
    p_best: tuple[float, ...]
    means: tuple[float, ...]
    n_collapsed: tuple[int, ...]
    n_seeds: int
    best: float
    resolved: bool
    p_value: float = float("nan")
    alpha: float = ALPHA


def _beta_means(rescore: Rescore, trials: Sequence[ScoredTrial], floor: float) -> Callable:
    """(..., K, m) trial indices -> (..., K) beta means of the rescored trials, failures at ``floor``."""
    collapsed = np.array([t.collapsed for t in trials], bool)

    def means(index: np.ndarray, min_group: int | None = None) -> np.ndarray:
        scores = rescore(index, min_group)
        return np.where(collapsed[index] | ~np.isfinite(scores), floor, scores).mean(-1)

    return means


def pseudo_values(means: Callable, index: np.ndarray) -> np.ndarray:
    """(K, n) jackknife pseudo-values of the beta means over seeds: n T - (n - 1) T(without seed k),
    the criterion recomputed on the other seeds (groups of 2 score). Needs n >= 3."""
    n = index.shape[1]
    without = np.stack([np.delete(index, k, axis=1) for k in range(n)])  # (n, K, n - 1)
    return n * means(index)[:, None] - (n - 1) * means(without, 2).T


def lead_p_value(
    means: Callable, index: np.ndarray, best: int, permutations: int = PERMUTATIONS, seed: int = MC_SEED
) -> float:
    """The randomisation p-value of beta ``best``'s lead over the best other beta: beta labels
    permuted within each seed (column of the (K, n) ``index``), the criterion recomputed, the
    gap between the top two means compared with the observed lead."""
    observed = means(index)
    lead = observed[best] - np.delete(observed, best).max()
    k, n = index.shape
    order = np.argsort(np.random.default_rng(seed).random((permutations, k, n)), axis=1)
    permuted = np.sort(means(index[order, np.arange(n)]), axis=1)  # (permutations, K)
    gaps = permuted[:, -1] - permuted[:, -2]
    exceed = int(np.sum(gaps >= lead - 1e-9 * max(1.0, abs(lead))))
    return (1 + exceed) / (1 + permutations)


def choose_beta(
    trials: Sequence[ScoredTrial],
    rescore: Rescore | None = None,
    *,
    alpha: float = ALPHA,
    draws: int = DRAWS,
    seed: int = MC_SEED,
    permutations: int = PERMUTATIONS,
) -> BetaChoice:
    """P(best) of every beta from stage 2's scored trials, the beta it favours and whether its lead
    is resolved at level ``alpha``.

    Args:
        rescore: the criterion recomputed for any grouping of ``trials`` (e.g. a
            :class:`psvae_opt.search.criteria.Regroupable`'s ``table``); None: the scores are
            per trial (each trial's own, whatever its siblings).
    """
    table = paired_scores(trials)
    k, n = table.values.shape
    if rescore is None:
        scores = np.array([t.score for t in trials], float)
        rescore = lambda index, min_group=None: scores[index]  # noqa: E731
    means_of = _beta_means(rescore, trials, table.floor)
    jackknife = n >= 3 and k > 1  # leaving a seed out keeps 2, the fewest a cross-seed criterion compares
    probs = p_best(pseudo_values(means_of, table.index) if jackknife else table.values, draws, seed)
    means = table.values.mean(1) if n else np.full(k, np.nan)
    best = int(np.lexsort((np.nan_to_num(means, nan=-np.inf), probs))[-1])  # by P(best), then mean
    p_value = lead_p_value(means_of, table.index, best, permutations, seed) if k > 1 and n >= 2 else float("nan")
    return BetaChoice(
        betas=table.betas,
        p_best=tuple(float(p) for p in probs),
        means=tuple(float(m) for m in means),
        n_collapsed=table.n_collapsed,
        n_seeds=n,
        best=table.betas[best],
        resolved=n >= 2 and (k == 1 or p_value <= alpha),
        p_value=p_value,
        alpha=alpha,
    )


def next_seed(choice: BetaChoice, max_seeds: int) -> int | None:
    """The seed every beta gets next (one round), or None once resolved or at the budget."""
    if choice.resolved or choice.n_seeds >= max_seeds:
        return None
    return choice.n_seeds


@dataclass(frozen=True)
class SearchOutcome:
    """One simulated adaptive search: whether it resolved, whether it chose the true best, its trials."""

    resolved: bool
    correct: bool
    trials: int


def run_adaptive(
    choose_at: Callable[[int, float], BetaChoice], initial_seeds: int, max_seeds: int
) -> tuple[BetaChoice, int]:
    """``--seeds auto`` as a loop: look at ``initial_seeds``, ``initial_seeds`` + 1, ... seeds
    (``choose_at(seeds, alpha)``, every look at the level :func:`look_alpha` of all the looks the
    budget allows) until resolved or at ``max_seeds``; the last choice and the seeds it used."""
    level = look_alpha(max_seeds - initial_seeds + 1)
    used = initial_seeds
    choice = choose_at(used, level)
    while next_seed(choice, max_seeds) is not None:
        used += 1
        choice = choose_at(used, level)
    return choice, used


def simulate_search(
    effect_sd: float,
    rng: np.random.Generator,
    *,
    n_betas: int = 4,
    initial_seeds: int = 3,
    max_seeds: int = 10,
    seed_sd: float = 1.0,
    draws: int = 2000,
    permutations: int = 999,
) -> SearchOutcome:
    """One search in which beta 0 is better than the others by ``effect_sd`` noise standard
    deviations (0: all equal) and every seed shifts every beta by a N(0, seed_sd^2) effect;
    independent trial scores (a per-trial criterion). ``initial_seeds == max_seeds``: fixed seeds."""
    n = max_seeds
    mu = np.zeros(n_betas)
    mu[0] = effect_sd
    scores = mu[:, None] + seed_sd * rng.standard_normal(n)[None, :] + rng.standard_normal((n_betas, n))
    mc_seed = int(rng.integers(2**31))

    def choose_at(used: int, alpha: float) -> BetaChoice:
        trials = [ScoredTrial(float(b), k, float(scores[b, k])) for b in range(n_betas) for k in range(used)]
        return choose_beta(trials, alpha=alpha, draws=draws, seed=mc_seed, permutations=permutations)

    choice, used = run_adaptive(choose_at, initial_seeds, max_seeds)
    return SearchOutcome(choice.resolved, choice.best == 0.0, used * n_betas)


@dataclass(frozen=True)
class OperatingCharacteristics:
    """Shares over simulated searches (see :func:`operating_characteristics`)."""

    effect_sd: float
    searches: int
    resolved: float  # declared resolved (with effect 0: the false-resolution rate)
    correct_when_resolved: float  # resolved on the true best, among resolved searches (NaN if none)
    correct: float  # the chosen beta is the true best, resolved or not
    mean_trials: float


def operating_characteristics(
    effect_sd: float, searches: int = 400, seed: int = 0, **kwargs: float
) -> OperatingCharacteristics:
    """Error rates and power of the adaptive procedure, by simulation with a fixed generator seed.

    Args:
        kwargs: :func:`simulate_search`'s options (n_betas, initial_seeds, max_seeds, ...).
    """
    rng = np.random.default_rng(seed)
    runs = [simulate_search(effect_sd, rng, **kwargs) for _ in range(searches)]
    resolved = [r for r in runs if r.resolved]
    return OperatingCharacteristics(
        effect_sd=effect_sd,
        searches=searches,
        resolved=len(resolved) / searches,
        correct_when_resolved=float(np.mean([r.correct for r in resolved])) if resolved else float("nan"),
        correct=float(np.mean([r.correct for r in runs])),
        mean_trials=float(np.mean([r.trials for r in runs])),
    )
