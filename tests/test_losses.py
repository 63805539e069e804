"""The PS-VAE objective: known answers for every term."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from psvae_opt.model.losses import (
    LOG_2PI,
    LossTerms,
    anneal_weights,
    decompose_kl,
    first_full_weight_epoch,
    frame_nll,
    gaussian_log_density,
    kl_standard_normal,
    label_nll,
    log_importance_weights,
    psvae_loss,
    term_weights,
)
from psvae_opt.model.network import ModelOutput


def test_kl_of_the_prior_itself_is_zero_and_known_otherwise():
    assert kl_standard_normal(torch.zeros(3, 4), torch.zeros(3, 4)).abs().max() < 1e-7
    # KL(N(1, 1) || N(0, 1)) = 0.5 per dimension; KL(N(0, e^2) || N(0, 1)) = (e^2 - 1 - 2) / 2
    assert torch.allclose(kl_standard_normal(torch.ones(1, 4), torch.zeros(1, 4)), torch.tensor([2.0]))
    assert torch.allclose(
        kl_standard_normal(torch.zeros(1, 1), torch.full((1, 1), 2.0)), torch.tensor([(math.e**2 - 3) / 2])
    )


def test_frame_nll_keeps_the_gaussian_constant():
    x = torch.rand(2, 1, 8, 8)
    assert torch.allclose(frame_nll(x, x), torch.full((2,), 0.5 * 64 * LOG_2PI))
    assert torch.allclose(frame_nll(x, x + 0.5) - frame_nll(x, x), torch.full((2,), 0.5 * 64 * 0.25))


def test_masked_labels_contribute_no_error():
    y = torch.zeros(2, 3)
    y_hat = torch.tensor([[1.0, 100.0, 0.0], [0.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    nll = label_nll(y, y_hat, mask)
    assert torch.allclose(nll, torch.tensor([0.5 * (1 + 2 * LOG_2PI), 0.5 * 3 * LOG_2PI]))


@pytest.mark.parametrize(
    ("epoch", "expected"),
    # BehaveNet: linspace(0, 1, 100) by its epoch counter, whose epoch 0 does not train; our
    # epoch e is its epoch e + 1: weight (e + 1) / 99, full from e = 98
    [(0, (1 / 99, 5 / 99)), (49, (50 / 99, 250 / 99)), (97, (98 / 99, 490 / 99)), (98, (1.0, 5.0)), (250, (1.0, 5.0))],
)
def test_annealing_weights(epoch: int, expected: tuple[float, float]):
    assert anneal_weights(epoch, anneal_epochs=100, beta=5.0) == pytest.approx(expected)


@pytest.mark.parametrize("anneal_epochs", [3, 4, 10, 20])
def test_annealing_follows_behavenets_table_epoch_by_epoch(anneal_epochs: int):
    # BehaveNet's kl weights: linspace(0, 1, A) then ones, indexed by its epoch counter (0 = untrained)
    table = np.append(np.linspace(0, 1, anneal_epochs), np.ones(40))
    ours = [anneal_weights(e, anneal_epochs, beta=2.0) for e in range(30)]
    np.testing.assert_allclose([k for k, _ in ours], table[1:31], rtol=1e-12)
    np.testing.assert_allclose([b for _, b in ours], 2.0 * table[1:31], rtol=1e-12)
    full = [e for e in range(30) if ours[e][0] == 1.0]
    assert full[0] == first_full_weight_epoch(anneal_epochs) == anneal_epochs - 2


@pytest.mark.parametrize("anneal_epochs", [0, 1, 2])
def test_annealing_off_or_too_short_to_weigh_any_training_epoch_less(anneal_epochs: int):
    # 0 is off; BehaveNet's linspace of 1 or 2 points spends its 0 on the untrained epoch
    assert anneal_weights(0, anneal_epochs=anneal_epochs, beta=20.0) == (1.0, 20.0)
    assert first_full_weight_epoch(anneal_epochs) == 0


@pytest.mark.parametrize("estimator", ["mss", "mws"])
def test_the_three_terms_sum_to_the_single_sample_kl(estimator: str):
    torch.manual_seed(0)
    mu, logvar = torch.randn(64, 3), torch.randn(64, 3) * 0.3 - 1
    z = mu + torch.exp(0.5 * logvar) * torch.randn(64, 3)
    icmi, tc, dwkl = decompose_kl(z, mu, logvar, n_frames=1000, estimator=estimator)
    expected = gaussian_log_density(z, mu, logvar).sum(1) - gaussian_log_density(z, torch.zeros(1), torch.zeros(1)).sum(
        1
    )
    assert torch.allclose(icmi + tc + dwkl, expected, atol=1e-4)


def _latents(correlated: bool, n: int = 512, width: float = 0.3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(n, 2, generator=g)
    if correlated:
        mu[:, 1] = 0.95 * mu[:, 0] + math.sqrt(1 - 0.95**2) * mu[:, 1]
    logvar = torch.full((n, 2), 2 * math.log(width))
    return mu + width * torch.randn(n, 2, generator=g), mu, logvar


def test_tc_is_near_zero_for_independent_and_positive_for_correlated_latents():
    # the minibatch is the whole small dataset (N = M): the stratified estimate is exact
    tc_independent = decompose_kl(*_latents(False), n_frames=512)[1].mean()
    tc_correlated = decompose_kl(*_latents(True), n_frames=512)[1].mean()
    assert abs(tc_independent) < 0.05
    assert tc_correlated > 0.5


def test_minibatch_weighted_sampling_is_biased_by_d_minus_one_log_m():
    # with N = M every stratified weight is 1/N and every MWS weight 1/(N M): the MWS TC is
    # the exact one plus (D - 1) log M, 6.24 nats here for independent latents (D = 2)
    args = _latents(False)
    tc_mss = decompose_kl(*args, n_frames=512, estimator="mss")[1]
    tc_mws = decompose_kl(*args, n_frames=512, estimator="mws")[1]
    assert torch.allclose(tc_mws - tc_mss, torch.full((512,), math.log(512)), atol=1e-3)


def test_importance_weights_are_normalised():
    for n, m in [(10_000, 128), (128, 128), (50, 2)]:
        w = log_importance_weights(m, n, "mss").exp()
        assert torch.allclose(w.sum(1), torch.ones(m), atol=1e-5)  # estimates of a mean over N
        assert w[0, 0] == pytest.approx(1 / n)
    assert log_importance_weights(4, 100, "mws").exp()[1, 2] == pytest.approx(1 / 400)


def test_total_loss_weights_every_term():
    torch.manual_seed(1)
    b, n_labels = 16, 2
    x = torch.rand(b, 1, 8, 8)
    out = ModelOutput(
        torch.rand(b, 1, 8, 8), torch.randn(b, n_labels), torch.randn(b, 4), torch.randn(b, 4) * 0.1, torch.randn(b, 4)
    )
    y, mask = torch.randn(b, n_labels), torch.ones(b, n_labels)
    kappa, beta_e = anneal_weights(25, anneal_epochs=100, beta=10.0)
    assert (kappa, beta_e) == pytest.approx((26 / 99, 260 / 99))  # the 26th training epoch of a 100-epoch ramp
    terms = psvae_loss(x, y, mask, out, weights=term_weights(50.0, kappa, beta_e, b, 64, n_labels), n_frames=1000)
    expected = (
        terms.frame_nll + 50 * terms.label_nll + terms.kl_s + kappa * (terms.icmi + terms.dwkl) + beta_e * terms.tc
    )
    assert torch.allclose(terms.loss, expected)
    assert torch.allclose(terms.kl_s, kl_standard_normal(out.mu[:, :2], out.logvar[:, :2]).mean())


def reference_loss(x, y, mask, out, alpha, kappa, beta_e, n_frames, estimator):
    """The loss as the term functions define it, one term at a time (psvae_loss before its
    terms were fused): the standard psvae_loss must keep."""
    n_labels = y.shape[1]
    nll_x, nll_y = frame_nll(x, out.x_hat.float()).mean(), label_nll(y, out.y_hat, mask).mean()
    kl_s = kl_standard_normal(out.mu[:, :n_labels], out.logvar[:, :n_labels]).mean()
    u = slice(n_labels, None)
    icmi, tc, dwkl = (t.mean() for t in decompose_kl(out.z[:, u], out.mu[:, u], out.logvar[:, u], n_frames, estimator))
    loss = nll_x + alpha * nll_y + kl_s + kappa * icmi + beta_e * tc + kappa * dwkl
    return (loss, nll_x, nll_y, kl_s, icmi, tc, dwkl)


@pytest.mark.parametrize("estimator", ["mss", "mws"])
@pytest.mark.parametrize("x_dtype", [torch.float32, torch.bfloat16])
def test_the_fused_loss_equals_its_terms_one_by_one(estimator: str, x_dtype: torch.dtype):
    """psvae_loss sums and combines the terms in a few kernels; every term and the total equal
    the term functions' (float rounding: a relative 1e-5 of the largest term)."""
    gen = torch.Generator().manual_seed(3)
    b, n_labels, k = 32, 3, 6
    x = torch.rand(b, 1, 16, 16, generator=gen)
    mu, logvar = torch.randn(b, k, generator=gen), torch.randn(b, k, generator=gen) * 0.5 - 1
    z = mu + torch.exp(0.5 * logvar) * torch.randn(b, k, generator=gen)
    out = ModelOutput(
        torch.rand(b, 1, 16, 16, generator=gen).to(x_dtype), torch.randn(b, n_labels, generator=gen), mu, logvar, z
    )
    mask = (torch.rand(b, n_labels, generator=gen) > 0.3).float()
    y = torch.randn(b, n_labels, generator=gen) * mask
    for alpha, kappa, beta_e in ((1000.0, 1.0, 1.0), (50.0, 0.25, 5.0)):
        weights = term_weights(alpha, kappa, beta_e, b, 256, n_labels)
        fused = psvae_loss(x, y, mask, out, weights=weights, n_frames=5000, estimator=estimator)
        expected = reference_loss(x, y, mask, out, alpha, kappa, beta_e, 5000, estimator)
        for name, got, want in zip(LossTerms._fields, fused, expected):
            assert float(got) == pytest.approx(float(want), rel=1e-5, abs=1e-3), name
