"""The PS-VAE objective (docs/design.md, "Loss"), as named per-frame terms.

    loss = -log N(x | x_hat, I) - alpha * log N(y | y_hat, I)[valid]
           + KL_s + kappa_e * ICMI + beta_e * TC + kappa_e * DWKL

All terms are nats per frame, averaged over the minibatch. ICMI, TC and DWKL decompose the
unsupervised KL as in Chen et al. 2018: with z_i a sample of q(z_u | x_i),

    ICMI = log q(z_i | x_i) - log q(z_i)
    TC   = log q(z_i) - sum_d log q(z_id)
    DWKL = sum_d log q(z_id) - log p(z_i)

so that their sum is exactly log q(z_i | x_i) - log p(z_i). The aggregate posterior
q(z) = (1/N) sum_n q(z | x_n) over the N training frames is estimated from the M frames of
the minibatch by importance weights that include their normalising constants:

- ``"mss"`` (minibatch stratified sampling, the default): the frame's own posterior has
  weight 1/N, each of the M - 1 others (N - 1) / (N (M - 1)); an unbiased estimate of q(z_i)
  that is exact when the minibatch is the whole dataset;
- ``"mws"`` (minibatch weighted sampling, Chen et al.'s main estimator): every weight is
  1 / (N M). Kept for comparison: it is a lower bound whose TC is biased upward by
  (D - 1) log M when the minibatch is the whole dataset (D = n_unsup).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import torch
from torch import Tensor

from psvae_opt.model.network import ModelOutput

LOG_2PI = math.log(2.0 * math.pi)


class LossTerms(NamedTuple):
    """Scalar tensors, nats per frame averaged over the minibatch."""

    loss: Tensor
    frame_nll: Tensor
    label_nll: Tensor
    kl_s: Tensor
    icmi: Tensor
    tc: Tensor
    dwkl: Tensor


def anneal_weights(epoch: float, anneal_epochs: int, beta: float) -> tuple[float, float]:
    """(kappa_e, beta_e) of training epoch ``epoch`` (0 = the first): BehaveNet's schedule.

    BehaveNet's weights are ``linspace(0, 1, anneal_epochs)`` (times beta), indexed by its epoch
    counter, whose epoch 0 only evaluates the untrained network; its first training epoch takes
    the second value. So training epoch e (0-based) has weight (e + 1) / (anneal_epochs - 1),
    full weight from e = anneal_epochs - 2 on, and ``anneal_epochs`` of 0, 1 or 2 weight every
    training epoch fully (0 = off).
    """
    ramp = min(max((epoch + 1) / (anneal_epochs - 1), 0.0), 1.0) if anneal_epochs > 2 else 1.0
    return ramp, ramp * float(beta)


def first_full_weight_epoch(anneal_epochs: int) -> int:
    """The first training epoch (0-based) whose annealed weights are full: annealing is complete."""
    return max(anneal_epochs - 2, 0)


def gaussian_log_density(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """Elementwise log N(z; mu, exp(logvar)); broadcasts."""
    return -0.5 * (LOG_2PI + logvar + (z - mu) ** 2 * torch.exp(-logvar))


def frame_nll(x: Tensor, x_hat: Tensor) -> Tensor:
    """-log N(x | x_hat, I) per frame, constant included: (B, C, H, W) -> (B,)."""
    sq = ((x - x_hat) ** 2).flatten(1).sum(1)
    return 0.5 * sq + 0.5 * x[0].numel() * LOG_2PI


def label_nll(y: Tensor, y_hat: Tensor, mask: Tensor) -> Tensor:
    """-log N(y | y_hat, I) over the valid entries per frame: (B, L) -> (B,)."""
    return (0.5 * mask * ((y - y_hat) ** 2 + LOG_2PI)).sum(1)


def kl_standard_normal(mu: Tensor, logvar: Tensor) -> Tensor:
    """Analytic KL(N(mu, exp(logvar)) || N(0, I)) per frame: (B, D) -> (B,)."""
    return 0.5 * (mu**2 + torch.exp(logvar) - 1.0 - logvar).sum(1)


@functools.lru_cache(maxsize=8)
def log_importance_weights(m: int, n: int, estimator: str, device=None) -> Tensor:
    """(M, M) log weights w[i, j] of q(z_i | x_j) in the estimate of q(z_i); the same tensor
    every step (cached: built once rather than by three kernels per step). Do not modify it.

    Args:
        m: minibatch size M.
        n: number of frames N of the dataset the aggregate posterior is over (N >= M).
        estimator: "mss" or "mws" (see the module docstring).
    """
    n = max(n, m)
    if estimator == "mws":
        return torch.full((m, m), -math.log(n * m), device=device)
    if estimator != "mss":
        raise ValueError(f"unknown KL estimator {estimator!r}")
    if m == 1:
        return torch.full((1, 1), -math.log(n), device=device)
    weights = torch.full((m, m), math.log((n - 1) / (n * (m - 1))), device=device)
    weights.fill_diagonal_(-math.log(n))
    return weights


def decompose_kl(z: Tensor, mu: Tensor, logvar: Tensor, n_frames: int, estimator: str = "mss"):
    """Per-frame (ICMI, TC, DWKL) of the unsupervised latents.

    One (M, M, D) density tensor gives all three: its diagonal is log q(z_i | x_i) per
    dimension, and log p(z_i) needs no density call (a standard normal), so a step launches a
    handful of kernels here rather than about fifty.

    Args:
        z: (M, D) samples of q(z | x_i).
        mu, logvar: (M, D) posterior parameters.
        n_frames: N, frames in the dataset the aggregate posterior is over.

    Returns:
        three (M,) tensors whose sum is log q(z_i | x_i) - log p(z_i).
    """
    m = z.shape[0]
    log_w = log_importance_weights(m, n_frames, estimator, z.device)
    pair = gaussian_log_density(z[:, None, :], mu[None, :, :], logvar[None, :, :])  # (M, M, D)
    log_qz_x = pair.diagonal(dim1=0, dim2=1).sum(0)  # (D, M) -> (M,): frame i's own posterior
    log_qz = torch.logsumexp(pair.sum(2) + log_w, dim=1)
    log_prod_qzd = torch.logsumexp(pair + log_w[:, :, None], dim=1).sum(1)
    log_pz = -0.5 * (LOG_2PI + z**2).sum(1)
    return log_qz_x - log_qz, log_qz - log_prod_qzd, log_prod_qzd - log_pz


def psvae_loss(
    x: Tensor,
    y: Tensor,
    mask: Tensor,
    out: ModelOutput,
    *,
    alpha: float,
    kappa: float | Tensor,
    beta_e: float | Tensor,
    n_frames: int,
    estimator: str = "mss",
) -> LossTerms:
    """The PS-VAE objective of a minibatch.

    Args:
        x: (B, C, H, W) frames in [0, 1].
        y: (B, L) z-scored labels, 0 where masked.
        mask: (B, L) 1 = valid label.
        out: the model's output for ``x`` (sampled latents).
        n_frames: N, training frames (for the aggregate-posterior estimate).
        kappa, beta_e: the epoch's annealed weights (:func:`anneal_weights`); a training step
            passes them as 0-d tensors, so that a new epoch's weights do not compile it again.
    """
    n_labels = y.shape[1]
    x_hat, y_hat = out.x_hat.float(), out.y_hat.float()
    mu, logvar, z = out.mu.float(), out.logvar.float(), out.z.float()
    nll_x = frame_nll(x.float(), x_hat).mean()
    nll_y = label_nll(y, y_hat, mask).mean()
    kl_s = kl_standard_normal(mu[:, :n_labels], logvar[:, :n_labels]).mean()
    if mu.shape[1] > n_labels:
        u = slice(n_labels, None)
        icmi, tc, dwkl = (t.mean() for t in decompose_kl(z[:, u], mu[:, u], logvar[:, u], n_frames, estimator))
    else:
        icmi = tc = dwkl = torch.zeros((), device=mu.device)
    loss = nll_x + alpha * nll_y + kl_s + kappa * icmi + beta_e * tc + kappa * dwkl
    return LossTerms(loss, nll_x, nll_y, kl_s, icmi, tc, dwkl)
