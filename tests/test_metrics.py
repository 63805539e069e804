"""Metrics against known answers."""

from __future__ import annotations

import numpy as np
import pytest

from psvae_opt.model import metrics
from psvae_opt.model.metrics import label_mse, label_r2, label_r2_per_label, mutual_information_gap, pixel_mse, zu_corr


def test_pixel_mse():
    x = np.zeros((2, 1, 4, 4))
    assert pixel_mse(x, x + 0.5) == pytest.approx(0.25)
    assert pixel_mse(x, x) == 0.0


def test_label_mse_counts_valid_entries_only():
    y = np.zeros((2, 2))
    y_hat = np.array([[1.0, 100.0], [3.0, 0.0]])
    mask = np.array([[1.0, 0.0], [1.0, 1.0]])
    assert label_mse(y, y_hat, mask) == pytest.approx((1 + 9 + 0) / 3)


def test_label_r2_is_one_for_perfect_and_zero_for_the_mean():
    rng = np.random.default_rng(0)
    y = rng.standard_normal((500, 3)) * [1.0, 2.0, 0.5]
    mask = np.ones_like(y)
    assert label_r2(y, y, mask) == pytest.approx(1.0)
    assert label_r2(y, np.broadcast_to(y.mean(0), y.shape), mask) == pytest.approx(0.0, abs=1e-12)


def test_label_r2_weights_labels_by_variance_and_ignores_masked_entries():
    rng = np.random.default_rng(1)
    y = rng.standard_normal((1000, 2)) * [1.0, 3.0]
    y_hat = y.copy()
    y_hat[:, 0] = 0.0  # label 0 predicted by a constant near its mean: R^2 about 0
    mask = np.ones_like(y)
    r2, var = label_r2_per_label(y, y_hat, mask)
    assert r2[1] == pytest.approx(1.0) and r2[0] == pytest.approx(0.0, abs=0.01)
    assert label_r2(y, y_hat, mask) == pytest.approx((var[0] * r2[0] + var[1] * r2[1]) / var.sum())
    assert label_r2(y, y_hat, mask) == pytest.approx(0.9, abs=0.01)  # variances 1 and 9
    y_hat[:10, 1] = 1e6
    mask[:10, 1] = 0  # masked garbage predictions do not count
    assert label_r2_per_label(y, y_hat, mask)[0][1] == pytest.approx(1.0)


def test_zu_corr_known_answers():
    rng = np.random.default_rng(0)
    a = rng.standard_normal(20_000)
    assert zu_corr(np.stack([a, a], 1)) == pytest.approx(1.0)
    assert zu_corr(np.stack([a, -2 * a + 3], 1)) == pytest.approx(1.0)
    assert zu_corr(rng.standard_normal((20_000, 4))) < 0.02
    # all pairs, not only the first two dims: (1 + 0 + 0) / 3 for (a, a, independent)
    assert zu_corr(np.stack([a, a, rng.standard_normal(20_000)], 1)) == pytest.approx(1 / 3, abs=0.01)
    assert zu_corr(np.stack([a, np.ones_like(a)], 1)) == 0.0  # a collapsed latent
    assert np.isnan(zu_corr(a[:, None]))


def test_mig_is_high_for_axis_aligned_latents_and_low_for_mixed_or_random_ones():
    rng = np.random.default_rng(0)
    factors = rng.uniform(size=(5000, 2))
    assert mutual_information_gap(factors[:, ::-1] * 3 + 1, factors) > 0.9
    assert mutual_information_gap(rng.uniform(size=(5000, 2)), factors) < 0.05
    rotated = factors @ np.array([[1.0, 1.0], [1.0, -1.0]]) / np.sqrt(2)  # each latent mixes both
    assert mutual_information_gap(rotated, factors) < 0.3
    duplicated = np.stack([factors[:, 0], factors[:, 0]], 1)  # no gap for factor 0, none informs factor 1
    assert mutual_information_gap(duplicated, factors) < 0.05


def test_dimension_kl_known_answers():
    n = 1000
    prior = metrics.dimension_kl(np.zeros((n, 2)), np.zeros((n, 2)))  # posterior = prior: an unused dimension
    np.testing.assert_allclose(prior, [0.0, 0.0], atol=1e-12)
    # KL(N(m, s^2) || N(0, 1)) = (m^2 + s^2 - 1 - ln s^2) / 2: m = 2, s^2 = e gives (4 + e - 2) / 2
    kl = metrics.dimension_kl(np.full((n, 1), 2.0), np.ones((n, 1)))
    np.testing.assert_allclose(kl, [(4.0 + np.e - 2.0) / 2.0])
    # a mean over frames: half the frames at the prior, half at mean 1 (KL 0.5 each)
    half = metrics.dimension_kl(np.repeat([[0.0], [1.0]], n // 2, axis=0), np.zeros((n, 1)))
    np.testing.assert_allclose(half, [0.25])
    assert metrics.dimension_kl(np.zeros((3, 4)), np.full((3, 4), -2.0)).shape == (4,)


def test_correlations_known_answers():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 1))
    a = np.hstack([x, -3 * x + 1, rng.normal(size=(500, 1)), np.ones((500, 1))])
    r = metrics.correlations(a, x)
    assert r.shape == (4, 1)
    np.testing.assert_allclose(r[:2, 0], [1.0, -1.0])  # identical and affinely reversed columns
    assert abs(r[2, 0]) < 0.15  # independent: about 0
    assert r[3, 0] == 0.0  # a constant column correlates with nothing
    np.testing.assert_allclose(metrics.correlations(x, np.zeros((500, 1))), [[0.0]])  # a constant factor too


def test_correlations_use_each_label_on_its_valid_rows_only():
    t = np.arange(10.0)[:, None]
    labels = np.hstack([t, -t])
    labels[5:, 1] = 1e6 * np.arange(5)  # garbage where the second label is missing
    mask = np.ones_like(labels)
    mask[5:, 1] = 0
    np.testing.assert_allclose(metrics.correlations(t, labels, mask), [[1.0, -1.0]])
    mask[1:, 0] = 0  # one valid row: no correlation can be measured
    np.testing.assert_allclose(metrics.correlations(t, labels, mask)[0, 0], 0.0)


def test_sap_is_one_for_identical_latents_and_about_zero_for_independent_or_mixed_ones():
    sap = metrics.separated_attribute_predictability
    rng = np.random.default_rng(0)
    factors = rng.standard_normal((20_000, 2))
    assert sap(factors, factors) == pytest.approx(1.0, abs=1e-3)  # the second latent's R^2 is ~1e-5
    assert sap(factors[:, ::-1] * [3.0, -0.5] + 2.0, factors) == pytest.approx(1.0, abs=1e-3)  # any order, scale, sign
    assert sap(rng.standard_normal((20_000, 3)), factors) < 0.002  # independent: R^2 about 1/N each
    rotated = factors @ np.array([[1.0, 1.0], [1.0, -1.0]]) / np.sqrt(2)  # each latent mixes both equally
    assert sap(rotated, factors) < 0.02  # not exactly 0: the two sample variances differ a little
    # latent 1 = 0.6 f0 + 0.8 g (g independent): factor 0's gap is 1 - 0.36; factor 1 is predicted by no latent
    g = rng.standard_normal(20_000)
    partial = np.stack([factors[:, 0], 0.6 * factors[:, 0] + 0.8 * g], 1)
    assert sap(partial, factors) == pytest.approx((0.64 + 0.0) / 2, abs=0.01)
    assert sap(factors[:, :1], factors[:, :1]) == pytest.approx(1.0)  # one latent: its R^2
    # a collapsed latent predicts nothing; a constant factor is left out
    assert sap(np.stack([factors[:, 0], np.ones(20_000)], 1), factors[:, :1]) == pytest.approx(1.0)
    assert sap(factors, np.stack([factors[:, 0], np.zeros(20_000)], 1)) == pytest.approx(1.0, abs=1e-3)
    assert np.isnan(sap(factors, np.zeros((20_000, 1))))
