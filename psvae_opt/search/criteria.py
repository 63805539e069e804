"""Candidate criteria for choosing a stage-2 model without ground truth (issue 15), pure numpy.

Every criterion is oriented so that the model it prefers scores higher. The guide's own,
``zu_corr`` (mean |Pearson r| between unsupervised latents), is blind to rotation: a 45-degree
mix of two independent factors is uncorrelated. The other candidates see what it misses:

- dependence measures that see rotation: pairwise mutual information between the unsupervised
  latents, corrected for the bias of the plug-in estimator by a shuffled null
  (:func:`pairwise_mutual_information`), and the normalised unbiased HSIC with Gaussian kernels
  (:func:`hsic_dependence`);
- cross-seed agreement: Unsupervised Disentanglement Ranking (Duan et al., ICLR 2020;
  :func:`udr_scores`) and ModelCentrality (Lin et al., ICML 2020; :func:`model_centrality`).
  Both compare models trained with different seeds, on the same frames; UDR needs at least
  :data:`MIN_SEEDS` seeds per beta, since a trial's score is the median over the others;
- guards (:func:`apply_guards`): label leakage and a reconstruction far worse than the best.

:func:`score_trials` computes all of them for the trials of one search.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from psvae_opt.model import metrics

MIN_SEEDS = 3  # UDR: a trial's score is the median over >= 2 other seeds of its beta
MAX_HSIC_FRAMES = 1000  # HSIC needs (N, N) kernels: evenly spaced frames beyond this
SHUFFLES = 10  # shuffled pairs that estimate the plug-in MI's bias


def rank_columns(x: np.ndarray) -> np.ndarray:
    """Ranks 0..N-1 of each column of (N, D) values (ties broken by order), as float."""
    return np.argsort(np.argsort(x, axis=0, kind="stable"), axis=0, kind="stable").astype(float)


def spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman rho of every column of (N, Da) ``a`` with every column of (N, Db) ``b``: (Da, Db)."""
    return metrics.correlations(rank_columns(a), rank_columns(b))


def quantile_bins(x: np.ndarray, n_bins: int) -> np.ndarray:
    """Equal-count bins of a 1-d array: (N,) int64 in 0..n_bins-1 (invariant to monotone maps)."""
    ranks = np.argsort(np.argsort(x, kind="stable"), kind="stable")
    return ranks * n_bins // len(x)


def default_bins(n_frames: int) -> int:
    """About five frames per cell of the joint histogram on average, 2 bins at least."""
    return max(2, int(round(np.sqrt(n_frames / 5))))


def _pairs(d: int) -> list[tuple[int, int]]:
    return [(i, j) for i in range(d) for j in range(i + 1, d)]


def bias_corrected_mi(a: np.ndarray, b: np.ndarray, n_bins: int, shuffles: int = SHUFFLES, seed: int = 0) -> float:
    """Plug-in mutual information (nats) of two 1-d arrays in equal-count bins, minus its mean under shuffling.

    The plug-in estimate of independent variables is far from 0 with a few hundred frames
    (about (bins - 1)^2 / 2N); shuffling one variable keeps the marginals and removes the
    dependence, so the shuffled mean estimates that bias. Can be slightly negative.
    """
    qa, qb = quantile_bins(a, n_bins), quantile_bins(b, n_bins)
    rng = np.random.default_rng(seed)
    null = [metrics.discrete_mutual_information(qa, rng.permutation(qb)) for _ in range(shuffles)]
    return metrics.discrete_mutual_information(qa, qb) - float(np.mean(null))


def pairwise_mutual_information(z_u: np.ndarray, n_bins: int | None = None, seed: int = 0) -> float:
    """Mean over pairs i < j of :func:`bias_corrected_mi` between unsupervised latents (N, D); NaN for D < 2."""
    n, d = z_u.shape
    if d < 2 or n < 4:
        return float("nan")
    bins = n_bins or default_bins(n)
    return float(np.mean([bias_corrected_mi(z_u[:, i], z_u[:, j], bins, seed=seed) for i, j in _pairs(d)]))


def _centred_gram(x: np.ndarray) -> np.ndarray:
    """Gaussian-kernel Gram matrix of a 1-d array, bandwidth the median distance, diagonal zeroed."""
    sq = (x[:, None] - x[None, :]) ** 2
    width = np.median(sq[np.triu_indices(len(x), k=1)])
    gram = np.exp(-sq / (2.0 * width)) if width > 0 else np.ones_like(sq)
    np.fill_diagonal(gram, 0.0)
    return gram


def unbiased_hsic(k: np.ndarray, l: np.ndarray) -> float:  # noqa: E741  (the paper's names)
    """The unbiased HSIC estimator (Song et al. 2012) of two (N, N) Gram matrices with zero diagonals, N >= 4."""
    n = len(k)
    k_sum, l_sum = k.sum(0), l.sum(0)
    trace = float((k * l).sum())
    return (trace + k_sum.sum() * l_sum.sum() / ((n - 1) * (n - 2)) - 2.0 * k_sum @ l_sum / (n - 2)) / (n * (n - 3))


def hsic_dependence(z_u: np.ndarray, max_frames: int = MAX_HSIC_FRAMES) -> float:
    """Mean over pairs i < j of normalised HSIC, HSIC(i, j) / sqrt(HSIC(i, i) HSIC(j, j)), between latents.

    0 for independent latents (up to noise, since the estimator is unbiased), 1 for identical
    ones; a rotated pair of independent non-Gaussian factors scores above 0. NaN for D < 2.

    Args:
        z_u: (N, D) latent means; more than ``max_frames`` frames are thinned evenly.
    """
    n, d = z_u.shape
    if d < 2 or n < 4:
        return float("nan")
    if n > max_frames:
        z_u = z_u[np.linspace(0, n - 1, max_frames).astype(int)]
    grams = [_centred_gram(z_u[:, i]) for i in range(d)]
    self_hsic = [unbiased_hsic(g, g) for g in grams]
    values = []
    for i, j in _pairs(d):
        scale = np.sqrt(self_hsic[i] * self_hsic[j])
        values.append(unbiased_hsic(grams[i], grams[j]) / scale if scale > 0 else 0.0)
    return float(np.mean(values))


def label_leak(z_u: np.ndarray, labels: np.ndarray, masks: np.ndarray | None = None) -> float:
    """The largest |Pearson r| of an unsupervised latent (N, D) with a label (N, L): label information in z_u."""
    return float(np.abs(metrics.correlations(z_u, labels, masks)).max(initial=0.0))


def informative_dims(z_u: np.ndarray, min_std: float) -> np.ndarray:
    """(D,) bool: latents whose means vary (std >= ``min_std``); a collapsed one carries no code."""
    return z_u.std(0) >= min_std


def udr_pair(za: np.ndarray, zb: np.ndarray, informative_a: np.ndarray, informative_b: np.ndarray) -> float:
    """UDR similarity of two models from their latents on the same frames (Duan et al. 2020).

    R = |Spearman| between the informative latents of one (rows) and the other (columns); the
    score is the mean over rows and columns of max^2 / sum: 1 when each latent of one model
    is one latent of the other (any order, any sign), lower when a latent mixes several.
    0 when either model has no informative latent.
    """
    if not informative_a.any() or not informative_b.any():
        return 0.0
    r = np.abs(spearman(za[:, informative_a], zb[:, informative_b]))
    with np.errstate(invalid="ignore", divide="ignore"):
        rows = np.where(r.sum(1) > 0, r.max(1) ** 2 / r.sum(1), 0.0)
        cols = np.where(r.sum(0) > 0, r.max(0) ** 2 / r.sum(0), 0.0)
    return float((rows.sum() + cols.sum()) / (len(rows) + len(cols)))


def _group_indices(groups: Sequence[object]) -> dict[object, list[int]]:
    out: dict[object, list[int]] = {}
    for i, g in enumerate(groups):
        out.setdefault(g, []).append(i)
    return out


def pair_matrix(
    latents: Sequence[np.ndarray], similarity: Callable[[int, int], float], wanted: np.ndarray
) -> np.ndarray:
    """(n, n) symmetric similarities of the trial pairs that ``wanted`` (bool (n, n)) marks, NaN elsewhere.

    Args:
        similarity: (i, j) -> the similarity of trials i and j (called once per unordered pair).
    """
    n = len(latents)
    out = np.full((n, n), np.nan)
    for i, j in zip(*np.nonzero(np.triu(wanted, k=1) | np.triu(wanted.T, k=1))):
        out[i, j] = out[j, i] = similarity(int(i), int(j))
    return out


def group_scores(sims: np.ndarray, groups: Sequence[object], aggregate: Callable, min_group: int) -> np.ndarray:
    """Each trial's ``aggregate`` (np.median, np.mean) of its similarities to the other trials of its
    group; NaN for a trial whose group has fewer than ``min_group`` trials. The one aggregation
    of :func:`udr_scores` and :func:`model_centrality` (and of :class:`Regroupable`)."""
    out = np.full(len(sims), np.nan)
    for members in _group_indices(groups).values():
        if len(members) < min_group:
            continue
        for i in members:
            out[i] = float(aggregate([sims[i, j] for j in members if j != i]))
    return out


def _same_group(groups: Sequence[object]) -> np.ndarray:
    """(n, n) bool: distinct trials of one group."""
    out = np.zeros((len(groups), len(groups)), bool)
    for members in _group_indices(groups).values():
        out[np.ix_(members, members)] = True
    np.fill_diagonal(out, False)
    return out


def udr_scores(
    latents: Sequence[np.ndarray], informative: Sequence[np.ndarray], groups: Sequence[object]
) -> np.ndarray:
    """Each trial's UDR: the median of :func:`udr_pair` with the other trials of its group (beta).

    Returns:
        (n_trials,); NaN for a trial whose group has fewer than :data:`MIN_SEEDS` trials.
    """
    sims = pair_matrix(latents, _udr_similarity(latents, informative), _same_group(groups))
    return group_scores(sims, groups, np.median, MIN_SEEDS)


def _udr_similarity(latents: Sequence[np.ndarray], informative: Sequence[np.ndarray]) -> Callable[[int, int], float]:
    return lambda i, j: udr_pair(latents[i], latents[j], informative[i], informative[j])


def mig_similarity(za: np.ndarray, zb: np.ndarray) -> float:
    """MIG of one model's latents with the other's taken as the factors, averaged both ways (Lin et al. 2020)."""
    both = [metrics.mutual_information_gap(za, zb), metrics.mutual_information_gap(zb, za)]
    return float(np.nanmean(both)) if np.isfinite(both).any() else 0.0


def model_centrality(latents: Sequence[np.ndarray], groups: Sequence[object] | None = None) -> np.ndarray:
    """Each trial's mean :func:`mig_similarity` to the other trials (of its group, if given); the medoid scores highest.

    Returns:
        (n_trials,); NaN for a trial alone in its group.
    """
    groups = groups if groups is not None else [0] * len(latents)
    sims = pair_matrix(latents, lambda i, j: mig_similarity(latents[i], latents[j]), _same_group(groups))
    return group_scores(sims, groups, np.mean, 2)


def apply_guards(
    scores: np.ndarray,
    pixel_mse: np.ndarray,
    leak: np.ndarray,
    *,
    mse_ratio: float | None = 1.5,
    leak_limit: float | None = 0.5,
) -> np.ndarray:
    """Scores with excluded trials set to -inf: a pixel MSE above ``mse_ratio`` x the search's
    best, or a label leak above ``leak_limit`` (None switches a guard off). If every trial
    would be excluded, the scores are returned unchanged (a choice must still be made)."""
    keep = np.ones(len(scores), bool)
    if mse_ratio is not None:
        keep &= pixel_mse <= mse_ratio * np.nanmin(pixel_mse)
    if leak_limit is not None:
        keep &= leak <= leak_limit
    return np.where(keep, scores, -np.inf) if keep.any() else np.asarray(scores, float)


@dataclass(frozen=True)
class TrialLatents:
    """What a criterion reads of one trial (every field from what a trial already stores).

    Attributes:
        group: the trial's beta (cross-seed criteria compare trials of one group).
        z_u: (N, D) unsupervised latent means on the frames scored (validation frames).
        train_z_u: (M, D) the same on the training frames (the guide's criterion reads these).
        labels, masks: (N, L) labels and validity on the frames of ``z_u``.
        pixel_mse: validation pixel MSE.
        informative: (D,) bool, latents that did not collapse.
    """

    group: float
    z_u: np.ndarray
    train_z_u: np.ndarray
    labels: np.ndarray | None
    masks: np.ndarray | None
    pixel_mse: float
    informative: np.ndarray
    leak: float | None = None  # the label leak already measured (the service's ``max_label_leak``)

    def label_leak(self) -> float:
        if self.leak is not None:
            return self.leak
        if self.labels is None:
            return float("nan")
        return label_leak(self.z_u, self.labels, self.masks)


PER_TRIAL: dict[str, Callable[[TrialLatents], float]] = {
    "zu_corr": lambda t: -metrics.zu_corr(t.train_z_u),  # the guide's, on training frames
    "zu_corr_val": lambda t: -metrics.zu_corr(t.z_u),
    "mutual_information": lambda t: -pairwise_mutual_information(t.z_u),
    "hsic": lambda t: -hsic_dependence(t.z_u),
    "label_leak": lambda t: -t.label_leak(),
    # training frames: more of them, but a good model reproduces the true factors' own
    # finite-sample dependence there (issue 15); the benchmark decides which frames to use
    "mutual_information_train": lambda t: -pairwise_mutual_information(t.train_z_u),
    "hsic_train": lambda t: -hsic_dependence(t.train_z_u),
}
GUARDED = ("zu_corr", "mutual_information", "hsic", "udr", "centrality")  # scored again behind the guards


CROSS_SEED = ("udr", "centrality")  # compare the trials of one beta
NAMES = (*PER_TRIAL, *CROSS_SEED, *(f"{name}+guards" for name in GUARDED))  # every criterion


def score(name: str, trials: Sequence[TrialLatents]) -> np.ndarray:
    """One criterion (a name of :data:`NAMES`) for the trials of one search, higher = preferred."""
    if name not in NAMES:
        raise ValueError(f"unknown criterion {name!r}; one of {', '.join(NAMES)}")
    base = name.removesuffix("+guards")
    if base in PER_TRIAL:
        values = np.array([PER_TRIAL[base](t) for t in trials], float)
    elif base == "udr":
        values = udr_scores([t.z_u for t in trials], [t.informative for t in trials], [t.group for t in trials])
    else:
        values = model_centrality([t.z_u for t in trials], [t.group for t in trials])
    if base == name:
        return values
    leak = np.array([t.label_leak() for t in trials], float)
    return apply_guards(values, np.array([t.pixel_mse for t in trials], float), leak)


def score_trials(trials: Sequence[TrialLatents]) -> dict[str, np.ndarray]:
    """Every criterion for the trials of one search, higher = preferred: name -> (n_trials,).

    ``udr`` and ``centrality`` compare trials of one beta (NaN with too few seeds);
    ``<name>+guards`` are the criteria behind :func:`apply_guards`.
    """
    scores = {name: np.array([f(t) for t in trials], float) for name, f in PER_TRIAL.items()}
    latents, groups = [t.z_u for t in trials], [t.group for t in trials]
    scores["udr"] = udr_scores(latents, [t.informative for t in trials], groups)
    scores["centrality"] = model_centrality(latents, groups)
    mse = np.array([t.pixel_mse for t in trials], float)
    leak = -scores["label_leak"]
    for name in GUARDED:
        scores[f"{name}+guards"] = apply_guards(scores[name], mse, leak)
    return scores


@dataclass(frozen=True)
class Regroupable:
    """A criterion's scores for any grouping of a search's trials into betas, so that the beta
    statistics can recompute a cross-seed criterion in every resample of seeds or permutation
    of beta labels (:mod:`psvae_opt.search.selection_stats`).

    Attributes:
        per_trial: (n,) scores that do not depend on the grouping (None for a cross-seed criterion).
        sims: (n, n) pair similarities of trials of different seeds (cross-seed criteria; NaN elsewhere).
        aggregate: np.median (UDR) or np.mean (centrality): a trial's score from its similarities.
        min_group: the fewest trials of a group that score (UDR: :data:`MIN_SEEDS`).
        excluded: (n,) bool, trials the guards exclude (their score is -inf, as :func:`apply_guards`).
    """

    per_trial: np.ndarray | None
    sims: np.ndarray | None
    aggregate: Callable = np.median
    min_group: int = 1
    excluded: np.ndarray | None = None

    def table(self, idx: np.ndarray, min_group: int | None = None) -> np.ndarray:
        """Scores of the trials ``idx`` ((..., K, m) trial indices, each row of m one group): (..., K, m).

        A similarity that is NaN (a trial without latents) is left out, and a trial with fewer than
        ``min_group`` - 1 others scores NaN; ``min_group`` overrides :attr:`min_group` (the
        leave-one-seed-out estimates score groups of 2).
        """
        idx = np.asarray(idx)
        m = idx.shape[-1]
        if self.per_trial is not None:
            out = self.per_trial[idx]
        elif m < 2:
            out = np.full(idx.shape, np.nan)
        else:
            pairs = self.sims[idx[..., :, None], idx[..., None, :]]  # (..., K, m, m)
            others = pairs[..., ~np.eye(m, dtype=bool)].reshape(*idx.shape, m - 1)
            valid = np.isfinite(others)
            if valid.all():
                agg = self.aggregate(others, axis=-1)
            else:  # the nan-aware aggregates are slow: only where needed
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    agg = {np.median: np.nanmedian, np.mean: np.nanmean}[self.aggregate](others, axis=-1)
            need = max(2, self.min_group if min_group is None else min_group)
            out = np.where(valid.sum(-1) + 1 >= need, agg, np.nan)
        if self.excluded is not None:
            out = np.where(self.excluded[idx], -np.inf, out)
        return np.asarray(out, float)


def regroupable(name: str, trials: Sequence[TrialLatents], seeds: Sequence[int]) -> Regroupable:
    """:class:`Regroupable` scores of criterion ``name`` for the trials of one search (``seeds``: each
    trial's model seed; a cross-seed criterion compares every pair of trials of different seeds)."""
    if name not in NAMES:
        raise ValueError(f"unknown criterion {name!r}; one of {', '.join(NAMES)}")
    base = name.removesuffix("+guards")
    excluded = None
    if base != name:
        leak = np.array([t.label_leak() for t in trials], float)
        guarded = apply_guards(np.zeros(len(trials)), np.array([t.pixel_mse for t in trials], float), leak)
        excluded = np.isneginf(guarded)
    if base in PER_TRIAL:
        return Regroupable(np.array([PER_TRIAL[base](t) for t in trials], float), None, excluded=excluded)
    latents = [t.z_u for t in trials]
    seeds = np.asarray(seeds)
    wanted = seeds[:, None] != seeds[None, :]
    if base == "udr":
        similarity = _udr_similarity(latents, [t.informative for t in trials])
        return Regroupable(None, pair_matrix(latents, similarity, wanted), np.median, MIN_SEEDS, excluded)
    sims = pair_matrix(latents, lambda i, j: mig_similarity(latents[i], latents[j]), wanted)
    return Regroupable(None, sims, np.mean, 2, excluded)
