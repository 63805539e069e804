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
import torch.nn.functional as F
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
    weights: tuple[Tensor, Tensor],
    n_frames: int,
    estimator: str = "mss",
) -> LossTerms:
    """The PS-VAE objective of a minibatch: the terms of :func:`frame_nll`, :func:`label_nll`,
    :func:`kl_standard_normal` and :func:`decompose_kl`, averaged over the minibatch, in few
    kernels: eight sums, stacked, then the loss and the other terms as ``C @ sums + c``
    (:func:`term_weights`), two matrix-vector products instead of a kernel per term and weight.
    Only ``loss`` carries a gradient.

    Args:
        x: (B, C, H, W) frames in [0, 1].
        y: (B, L) z-scored labels, 0 where masked.
        mask: (B, L) 1 = valid label.
        out: the model's output for ``x`` (sampled latents).
        weights: :func:`term_weights` of the loss's alpha and the epoch's annealed weights.
        n_frames: N, training frames (for the aggregate-posterior estimate).
    """
    n_labels = y.shape[1]
    mu, logvar, z = out.mu.float(), out.logvar.float(), out.z.float()
    mu_s, logvar_s = mu[:, :n_labels], logvar[:, :n_labels]
    sums = [
        F.mse_loss(out.x_hat.float(), x.float(), reduction="sum"),
        ((y - out.y_hat.float()).square() * mask).sum(),
        mask.sum(),
        (mu_s.square() + logvar_s.exp() - logvar_s).sum(),
    ]
    if mu.shape[1] > n_labels:
        u = slice(n_labels, None)
        sums += latent_sums(z[:, u], mu[:, u], logvar[:, u], n_frames, estimator)
    else:
        sums += [torch.zeros((), device=mu.device)] * 4
    matrix, offset = weights
    v = torch.stack(sums)
    loss = torch.addmv(offset[:1], matrix[:1], v)[0]  # apart: its gradient does not pass the others
    with torch.no_grad():
        terms = torch.addmv(offset[1:], matrix[1:], v)
    return LossTerms(loss, *terms.unbind())


def latent_sums(z: Tensor, mu: Tensor, logvar: Tensor, n_frames: int, estimator: str = "mss") -> list[Tensor]:
    """Batch sums of log q(z_i | x_i), log q(z_i), sum_d log q(z_id) and of z_i^2 (log p(z_i)
    is -z_i^2 / 2), each log density without its -D/2 log(2 pi), which cancels in the
    differences that make ICMI, TC and DWKL (:func:`decompose_kl` keeps it, term by term)."""
    log_w = log_importance_weights(z.shape[0], n_frames, estimator, z.device)
    diff = z[:, None, :] - mu[None, :, :]
    pair = torch.addcmul(logvar * -0.5, diff.square(), torch.exp(-logvar), value=-0.5)  # (M, M, D)
    return [
        pair.diagonal(dim1=0, dim2=1).sum(),
        torch.logsumexp(pair.sum(2) + log_w, dim=1).sum(),
        torch.logsumexp(pair + log_w[:, :, None], dim=1).sum(),
        z.square().sum(),
    ]


@functools.lru_cache(maxsize=16)
def term_weights(
    alpha: float, kappa: float, beta_e: float, batch: int, n_pixels: int, n_labels: int, device=None
) -> tuple[Tensor, Tensor]:
    """(C, c): the (7, 8) matrix and (7,) offset that turn the eight sums of :func:`psvae_loss`
    into its terms, ``C @ sums + c`` in the order of :class:`LossTerms`, for a minibatch of
    ``batch`` frames of ``n_pixels`` values and ``n_labels`` labels, label weight ``alpha`` and
    the epoch's annealed weights ``kappa``, ``beta_e`` (:func:`anneal_weights`).

    The same tensors for the same weights (cached): a compiled step takes them as inputs, so a
    new epoch's weights do not compile it again. Do not modify them.
    """
    # sums: squared pixel error, masked squared label error, valid labels, sum over z_s of
    # mu^2 + sigma^2 - log sigma^2, then log q(z_i | x_i), log q(z_i), sum_d log q(z_id), z_i^2
    rows = [
        [0.5, 0, 0, 0, 0, 0, 0, 0],  # frame_nll
        [0, 0.5, 0.5 * LOG_2PI, 0, 0, 0, 0, 0],  # label_nll
        [0, 0, 0, 0.5, 0, 0, 0, 0],  # kl_s
        [0, 0, 0, 0, 1, -1, 0, 0],  # icmi
        [0, 0, 0, 0, 0, 1, -1, 0],  # tc
        [0, 0, 0, 0, 0, 0, 1, 0.5],  # dwkl: sum_d log q(z_id) - log p(z_i)
    ]
    offsets = [0.5 * n_pixels * LOG_2PI, 0.0, -0.5 * n_labels, 0.0, 0.0, 0.0]
    scale = (1.0, alpha, 1.0, kappa, beta_e, kappa)
    loss = [sum(w * row[k] for w, row in zip(scale, rows)) for k in range(8)]
    matrix = torch.tensor([loss, *rows], dtype=torch.float32, device=device) / batch
    offset = torch.tensor([sum(w * o for w, o in zip(scale, offsets)), *offsets], dtype=torch.float32, device=device)
    return matrix, offset
