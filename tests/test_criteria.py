"""The candidate selection criteria against known answers: a rotated perfect code, models that are
permutations and sign flips of one code, and independent noise."""

from __future__ import annotations

import numpy as np
import pytest

from psvae_opt.data.synth import FACTOR_NAMES, smooth_trajectories
from psvae_opt.model import metrics
from psvae_opt.search import criteria

ANGLES = (0, 10, 20, 30, 45)


def rotate(z: np.ndarray, degrees: float) -> np.ndarray:
    a = np.deg2rad(degrees)
    return z @ np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]])


@pytest.fixture(scope="module")
def perfect_code() -> np.ndarray:
    """The demo's true jaw and chest, standardised and decorrelated: (3000, 2), zu_corr 0 at every angle."""
    traj = smooth_trajectories(3000, np.random.default_rng(0))
    code = traj[:, [FACTOR_NAMES.index("jaw"), FACTOR_NAMES.index("chest")]]
    code = code - code.mean(0)
    values, vectors = np.linalg.eigh(np.cov(code.T, bias=True))
    return code @ vectors @ np.diag(values**-0.5) @ vectors.T


def test_the_rotated_perfect_code_scores_worse_with_the_angle_on_mi_and_hsic_but_not_on_zu_corr(perfect_code):
    rotated = [rotate(perfect_code, a) for a in ANGLES]
    guide = [-metrics.zu_corr(z) for z in rotated]
    mi = [-criteria.pairwise_mutual_information(z) for z in rotated]
    hsic = [-criteria.hsic_dependence(z) for z in rotated]
    assert np.allclose(guide, 0.0, atol=1e-9)  # the guide's criterion cannot tell 0 from 45 degrees
    assert all(a > b for a, b in zip(mi, mi[1:])), mi
    assert all(a > b for a, b in zip(hsic, hsic[1:])), hsic
    assert abs(mi[0]) < 0.05 and -mi[-1] > 0.2  # bias-corrected: about 0 nats for the true code
    assert abs(hsic[0]) < 0.01 and -hsic[-1] > 0.05


def test_the_bias_correction_brings_independent_noise_near_zero_on_few_frames():
    z = np.random.default_rng(1).standard_normal((300, 2))
    bins = criteria.default_bins(300)
    plug_in = metrics.discrete_mutual_information(
        criteria.quantile_bins(z[:, 0], bins), criteria.quantile_bins(z[:, 1], bins)
    )
    assert plug_in > 0.05  # the plug-in estimate's bias, about (bins - 1)^2 / 2N
    assert abs(criteria.pairwise_mutual_information(z)) < 0.03
    assert abs(criteria.hsic_dependence(z)) < 0.02


def test_identical_latents_have_full_dependence():
    x = np.random.default_rng(2).standard_normal(400)
    assert criteria.hsic_dependence(np.stack([x, 3 * x + 1], 1)) == pytest.approx(1.0)
    assert criteria.pairwise_mutual_information(np.stack([x, np.exp(x)], 1)) > 1.0  # monotone map: same bins
    assert np.isnan(criteria.hsic_dependence(x[:, None])) and np.isnan(criteria.pairwise_mutual_information(x[:, None]))


def code_and_copies(seed: int = 3, n: int = 2000, d: int = 3):
    """A code (n, d) of independent factors and a copy with permuted, sign-flipped, rescaled latents."""
    rng = np.random.default_rng(seed)
    code = rng.uniform(-1, 1, (n, d))
    copy = -2.0 * code[:, ::-1] + 0.01 * rng.standard_normal((n, d))
    copy[:, 1] *= -1
    return code, copy, rng


def test_udr_of_a_permuted_sign_flipped_copy_is_the_top_score_and_of_noise_low():
    code, copy, rng = code_and_copies()
    every = np.ones(3, bool)
    # a model compared with itself sets the top score, below 1 only by the chance |rho| of its own factors
    top = criteria.udr_pair(code, code, every, every)
    assert 0.95 < top <= 1.0
    assert criteria.udr_pair(code, copy, every, every) == pytest.approx(top, abs=1e-3)
    noise = rng.standard_normal(code.shape)
    assert criteria.udr_pair(code, noise, every, every) < 0.1
    mixed = code.copy()
    mixed[:, :2] = rotate(code[:, :2], 45)
    assert 0.3 < criteria.udr_pair(code, mixed, every, every) < 0.9
    assert criteria.udr_pair(code, copy, every, np.zeros(3, bool)) == 0.0


def test_udr_leaves_out_collapsed_latents():
    code, copy, rng = code_and_copies()
    padded = np.concatenate([copy, 1e-3 * rng.standard_normal((len(copy), 1))], 1)  # a dead fourth latent
    informative = criteria.informative_dims(padded, 0.25)
    assert informative.tolist() == [True, True, True, False]
    every = np.ones(3, bool)
    assert criteria.udr_pair(code, padded, every, informative) == pytest.approx(
        criteria.udr_pair(code, code, every, every), abs=1e-3
    )
    assert criteria.udr_pair(code, padded, every, np.ones(4, bool)) < criteria.udr_pair(
        code, padded, every, informative
    )


def test_udr_scores_take_the_median_over_the_other_seeds_of_a_beta_and_need_three():
    code, copy, rng = code_and_copies()
    copy2 = code[:, [1, 2, 0]] * np.array([1.0, -1.0, 0.5])
    noise = rng.standard_normal(code.shape)
    latents = [code, copy, copy2, noise, code, copy]
    groups = [1.0, 1.0, 1.0, 1.0, 5.0, 5.0]
    every = np.ones(3, bool)
    scores = criteria.udr_scores(latents, [every] * 6, groups)
    top = criteria.udr_pair(code, code, every, every)
    assert scores[:3] == pytest.approx([top] * 3, abs=1e-3)  # the median of (top, top, noise)
    assert scores[3] < 0.1
    assert np.isnan(scores[4:]).all()  # beta 5 has two seeds only


def test_model_centrality_picks_the_medoid_and_scores_copies_at_the_top():
    code, copy, rng = code_and_copies(n=3000, d=2)
    rotated = rotate(code, 45)
    scores = criteria.model_centrality([code, copy, code[:, ::-1], rotated])
    assert scores[:3].min() > 0.6 and scores[3] < 0.5 * scores[:3].min()
    assert int(np.argmin(scores)) == 3
    assert criteria.mig_similarity(code, copy) > 0.9
    assert criteria.mig_similarity(code, rng.standard_normal(code.shape)) < 0.05
    alone = criteria.model_centrality([code, copy, rotated], groups=[1, 1, 5])
    assert np.isnan(alone[2]) and alone[0] == pytest.approx(criteria.mig_similarity(code, copy))


def test_guards_exclude_poor_reconstructions_and_leaks_but_never_every_trial():
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    mse = np.array([0.010, 0.012, 0.020, 0.011])
    leak = np.array([0.1, 0.7, 0.1, 0.2])
    guarded = criteria.apply_guards(scores, mse, leak, mse_ratio=1.5, leak_limit=0.5)
    assert guarded.tolist() == [0.9, -np.inf, -np.inf, 0.6]
    assert criteria.apply_guards(scores, mse, leak, mse_ratio=None, leak_limit=None).tolist() == scores.tolist()
    assert criteria.apply_guards(scores, mse, leak, leak_limit=0.0).tolist() == scores.tolist()


def test_label_leak_is_the_largest_correlation_with_a_label():
    rng = np.random.default_rng(4)
    labels = rng.standard_normal((500, 2))
    z_u = np.stack([rng.standard_normal(500), labels[:, 1] + 0.5 * rng.standard_normal(500)], 1)
    expected = abs(np.corrcoef(z_u[:, 1], labels[:, 1])[0, 1])
    assert criteria.label_leak(z_u, labels, np.ones_like(labels)) == pytest.approx(expected)


def test_score_trials_orients_every_criterion_so_that_the_disentangled_model_wins(perfect_code):
    """Three seeds of each of two betas: beta 1 finds the code (permuted, flipped), beta 5 a rotation of it."""
    rng = np.random.default_rng(5)
    z = perfect_code[:1000]
    labels = rng.standard_normal((1000, 2))
    good = [z, -z[:, ::-1], z * np.array([1.0, -1.0])]
    bad = [rotate(z, a) for a in (40, 45, 50)]
    trials = [
        criteria.TrialLatents(beta, lat, lat, labels, np.ones_like(labels), 0.01, np.ones(2, bool))
        for beta, lat in [(1.0, g) for g in good] + [(5.0, b) for b in bad]
    ]
    scores = criteria.score_trials(trials)
    assert set(scores) == {*criteria.PER_TRIAL, "udr", "centrality", *(f"{n}+guards" for n in criteria.GUARDED)}
    for name in ("mutual_information", "hsic", "udr", "centrality"):
        assert scores[name][:3].min() > scores[name][3:].max(), name
    top = criteria.udr_pair(z, z, np.ones(2, bool), np.ones(2, bool))
    assert scores["udr"][:3] == pytest.approx([top] * 3, abs=1e-3) and top > 0.95


def test_a_regroupable_criterion_scores_as_the_criterion_and_recomputes_for_any_grouping():
    """The beta statistics resample groups: at the search's own grouping the scores are the
    criterion's, and a regrouping scores as the criterion would on those groups."""
    rng = np.random.default_rng(7)
    factors = rng.uniform(-1, 1, size=(400, 2))
    latents = [factors @ (np.eye(2) + 0.4 * rng.standard_normal((2, 2))) for _ in range(9)]
    betas, seeds = [1.0] * 3 + [5.0] * 3 + [10.0] * 3, [0, 1, 2] * 3
    trials = [
        criteria.TrialLatents(b, z, z, None, None, 0.01 * (1 + (i == 4)), np.ones(2, bool), leak=0.6 * (i == 0))
        for i, (b, z) in enumerate(zip(betas, latents))
    ]
    own = np.arange(9).reshape(3, 3)
    swapped = own.copy()
    swapped[[0, 1], 1] = swapped[[1, 0], 1]  # seed 1 of betas 1 and 5 trade places
    for name in ("udr", "centrality", "zu_corr", "udr+guards"):
        scoring = criteria.regroupable(name, trials, seeds)
        assert scoring.table(own).ravel() == pytest.approx(criteria.score(name, trials)), name
        relabelled = [criteria.TrialLatents(**{**t.__dict__, "group": float(g)}) for t, g in zip(
            trials, np.argsort(swapped.ravel()) // 3
        )]  # fmt: skip
        expected = criteria.score(name, relabelled)[swapped.ravel()]
        assert scoring.table(swapped[None]).ravel() == pytest.approx(expected), name
    guarded = criteria.regroupable("udr+guards", trials, seeds).table(own).ravel()
    # excluded: trial 0 (label leak 0.6 > 0.5) and trial 4 (pixel MSE 2 x the best > 1.5 x)
    assert np.flatnonzero(np.isneginf(guarded)).tolist() == [0, 4] and np.isfinite(np.delete(guarded, [0, 4])).all()
    pairs = criteria.regroupable("udr", trials, seeds)
    assert pairs.table(own[:, :2], min_group=2).ravel() == pytest.approx(
        [pairs.sims[0, 1], pairs.sims[0, 1], pairs.sims[3, 4], pairs.sims[3, 4], pairs.sims[6, 7], pairs.sims[6, 7]]
    )  # two seeds: each trial's UDR is its one pair
    assert np.isnan(pairs.table(own[:, :2])).all()  # the criterion's own minimum: 3 seeds
