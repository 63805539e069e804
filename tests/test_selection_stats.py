"""Which-beta statistics: paired tables, P(best), collapsed trials counted, and the procedure's
error rates by simulation."""

from __future__ import annotations

import numpy as np
import pytest

from psvae_opt.search import selection_stats as stats
from psvae_opt.search.selection_stats import ScoredTrial


def test_the_paired_table_keeps_common_seeds_and_scores_collapsed_trials_below_every_healthy_one():
    trials = [
        ScoredTrial(1.0, 0, 0.5),
        ScoredTrial(1.0, 1, 0.7),
        ScoredTrial(1.0, 2, 0.9),  # seed 2 of beta 5 is still running: left out
        ScoredTrial(5.0, 0, 0.99, collapsed=True),
        ScoredTrial(5.0, 1, 0.2),
        ScoredTrial(10.0, 0, float("nan")),
        ScoredTrial(10.0, 1, 0.6),
    ]
    table = stats.paired_scores(trials)
    assert table.betas == (1.0, 5.0, 10.0) and table.seeds == (0, 1)
    # the lowest healthy score (seed 2 of beta 1 counts) less the healthy range: 0.2 - (0.9 - 0.2)
    assert table.floor == pytest.approx(-0.5)
    assert table.values == pytest.approx(np.array([[0.5, 0.7], [-0.5, 0.2], [-0.5, 0.6]]))
    assert table.n_collapsed == (0, 1, 1)
    # one healthy trial (no range): a failure still scores below it, by |lowest| (or 1 at 0)
    one = [ScoredTrial(1.0, 0, -0.3), ScoredTrial(5.0, 0, -2.0, collapsed=True)]
    assert stats.paired_scores(one).values == pytest.approx(np.array([[-0.3], [-0.6]]))
    assert stats.paired_scores([ScoredTrial(1.0, 0, 0.0), ScoredTrial(5.0, 0, 1.0, collapsed=True)]).floor == -1.0


def test_p_best_is_sure_of_a_clear_winner_and_even_between_equals():
    rng = np.random.default_rng(0)
    clear = rng.standard_normal((3, 5)) + np.array([[10.0], [0.0], [0.0]])
    probs = stats.p_best(clear)
    assert probs.sum() == pytest.approx(1.0) and probs[0] > 0.999
    equal = np.tile(rng.standard_normal(6), (4, 1))  # four betas, identical scores seed by seed
    assert stats.p_best(equal).tolist() == [0.25] * 4
    crossed = np.array([[0.1, 0.5, 0.3], [0.5, 0.1, 0.3]])  # equal means, each ahead on one seed
    assert stats.p_best(crossed) == pytest.approx([0.5, 0.5], abs=0.02)
    assert stats.p_best(clear[:, :1]).tolist() == [1 / 3] * 3  # one seed: no estimate of the noise
    assert stats.p_best(clear).tolist() == stats.p_best(clear).tolist()  # fixed generator: same answer


def test_pairing_removes_the_seed_effect():
    """Seeds move all betas together by far more than beta 0's lead: paired, the lead is still clear."""
    rng = np.random.default_rng(1)
    seed_effect = 20.0 * rng.standard_normal(6)
    table = seed_effect[None, :] + 0.3 * rng.standard_normal((3, 6)) + np.array([[1.5], [0.0], [0.0]])
    assert stats.p_best(table)[0] > 0.97
    # an unpaired view of the same numbers (every beta's seeds in a different order) cannot tell
    shuffled = np.stack([rng.permutation(row) for row in table])
    assert stats.p_best(shuffled)[0] < 0.9


def test_a_beta_whose_seeds_collapse_is_not_chosen_for_the_scores_of_its_survivor():
    trials = [ScoredTrial(1.0, k, s) for k, s in enumerate((0.60, 0.62, 0.61, 0.63))]
    trials += [ScoredTrial(5.0, k, 0.9, collapsed=k != 3) for k in range(4)]  # its one healthy seed is best of all
    choice = stats.choose_beta(trials)
    assert choice.best == 1.0 and choice.n_collapsed == (0, 3)
    floor = 0.60 - (0.9 - 0.60)
    assert choice.means[1] == pytest.approx((3 * floor + 0.9) / 4)
    assert choice.p_best[0] > choice.p_best[1]


def test_choose_beta_resolves_a_clear_winner_and_the_rule_stops_there_or_at_the_budget():
    rng = np.random.default_rng(2)
    scores = {1.0: 0.0, 5.0: 3.0, 10.0: 0.0}
    trials = [ScoredTrial(b, k, m + 0.3 * rng.standard_normal()) for b, m in scores.items() for k in range(4)]
    choice = stats.choose_beta(trials)
    assert choice.best == 5.0 and choice.resolved and choice.n_seeds == 4
    assert stats.next_seed(choice, max_seeds=10) is None
    crossed = {(1.0, 0): 0.1, (1.0, 1): 0.5, (5.0, 0): 0.5, (5.0, 1): 0.1}
    unclear = stats.choose_beta([ScoredTrial(b, k, s) for (b, k), s in crossed.items()])
    assert not unclear.resolved
    assert stats.next_seed(unclear, max_seeds=10) == 2 and stats.next_seed(unclear, max_seeds=2) is None


def test_with_all_betas_equal_at_most_five_percent_of_searches_resolve():
    """Calibration: 1,000 simulated adaptive searches (3 to 10 seeds, 4 betas), no beta better."""
    null = stats.operating_characteristics(0.0, searches=1000, seed=11)
    assert null.resolved <= 0.05
    assert null.correct == pytest.approx(0.25, abs=0.05)  # a beta chosen at random among equals
    assert 4 * 3 <= null.mean_trials <= 4 * 10


def test_power_grows_with_the_effect_and_resolutions_are_right():
    figures = [stats.operating_characteristics(d, searches=200, seed=12) for d in (0.5, 1.0, 1.5)]
    resolved = [f.resolved for f in figures]
    assert resolved[0] < resolved[1] < resolved[2] and resolved[2] > 0.7
    assert all(f.correct_when_resolved > 0.9 for f in figures)
    assert figures[2].mean_trials < figures[0].mean_trials  # clear cases stop early


def test_pseudo_values_are_the_scores_of_a_per_trial_criterion_and_carry_the_shared_pairs_of_a_cross_seed_one():
    rng = np.random.default_rng(20)
    values = rng.standard_normal((3, 4))
    trials = [ScoredTrial(float(b), k, float(values[b, k])) for b in range(3) for k in range(4)]
    table = stats.paired_scores(trials)
    means = stats._beta_means(lambda idx, m=None: values.ravel()[idx], trials, table.floor)
    assert stats.pseudo_values(means, table.index) == pytest.approx(values)
    # a trial's score the mean of its pair similarities with its siblings (3 seeds): the
    # pseudo-value of seed i is s_ij + s_ik - s_jk, whose spread is the mean's true noise
    sims = rng.uniform(size=(3, 3))
    sims = (sims + sims.T) / 2

    def pairs(idx: np.ndarray, min_group: int | None = None) -> np.ndarray:
        m = idx.shape[-1]
        grid = sims[idx[..., :, None] % 3, idx[..., None, :] % 3]
        return grid[..., ~np.eye(m, dtype=bool)].reshape(*idx.shape, m - 1).mean(-1)

    one = [ScoredTrial(0.0, k, 0.0) for k in range(3)]
    pseudo = stats.pseudo_values(stats._beta_means(pairs, one, 0.0), np.arange(3)[None, :])[0]
    s01, s02, s12 = sims[0, 1], sims[0, 2], sims[1, 2]
    assert pseudo == pytest.approx([s01 + s02 - s12, s01 + s12 - s02, s02 + s12 - s01])


def test_the_lead_p_value_is_uniform_with_all_betas_equal():
    """An exact randomisation test: P(p <= a) <= a at every a (600 null tables, 4 betas x 4 seeds,
    seed effects; tolerance 1.96 binomial standard errors)."""
    rng = np.random.default_rng(21)
    p = []
    for i in range(600):
        values = rng.standard_normal((4, 4)) + 3.0 * rng.standard_normal(4)[None, :]
        trials = [ScoredTrial(float(b), k, float(values[b, k])) for b in range(4) for k in range(4)]
        p.append(stats.choose_beta(trials, draws=200, seed=i, permutations=499).p_value)
    for a in (0.05, 0.2, 0.5):
        assert np.mean(np.array(p) <= a) <= a + 1.96 * np.sqrt(a * (1 - a) / 600), a
    assert np.mean(np.array(p) <= 0.5) >= 0.5 - 1.96 * np.sqrt(0.25 / 600)  # and not far below: it has power to spend


def test_looks_share_alpha_and_the_adaptive_loop_stops_at_resolution_or_budget():
    assert stats.look_alpha(8) == pytest.approx(0.00625) and stats.look_alpha(1) == 0.05
    calls = []

    def choose_at(used: int, alpha: float) -> stats.BetaChoice:
        calls.append((used, alpha))
        return stats.BetaChoice((1.0, 5.0), (0.5, 0.5), (0.0, 0.0), (0, 0), used, 1.0, used == 6, 0.001, alpha)

    choice, used = stats.run_adaptive(choose_at, 3, 10)
    assert used == 6 and choice.resolved and calls == [(k, 0.05 / 8) for k in (3, 4, 5, 6)]
    calls.clear()
    assert stats.run_adaptive(choose_at, 3, 5)[1] == 5 and [c[0] for c in calls] == [3, 4, 5]
