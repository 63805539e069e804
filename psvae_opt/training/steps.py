"""One PS-VAE's pieces of training: building it, its optimiser, the forward pass and loss of a
training batch, one optimizer step and the evaluation of a set of frames.
:mod:`psvae_opt.training.loop` strings them together; the benchmarks time ``train_step`` alone.

The forward pass and loss of a training step are one function (:func:`make_forward_loss`), the
one route to the loss: eager as it is, or under ``train.compile`` compiled together: one graph
(fused kernels, and CUDA graphs with ``compile_mode = "reduce-overhead"``) instead of the model
compiled alone and the loss's many small kernels launched one by one from Python. Its backward
pass is compiled too; the optimizer step stays outside (fused Adam is one kernel already).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from psvae_opt.config import LossConfig, ModelConfig
from psvae_opt.model import metrics
from psvae_opt.model.losses import LossTerms, anneal_weights, psvae_loss, term_weights
from psvae_opt.model.network import PSVAE, ModelOutput
from psvae_opt.training.bf16_weights import Bf16Weights
from psvae_opt.training.devices import DeviceData, autocast

log = logging.getLogger(__name__)


def build_model(model_cfg: ModelConfig, frame_shape, n_labels: int, seed: int) -> PSVAE:
    """The PS-VAE a study file describes."""
    return PSVAE(
        frame_shape,
        n_labels,
        model_cfg.n_unsup,
        channels=model_cfg.channels,
        kernel_size=model_cfg.kernel_size,
        strides=model_cfg.strides,
        batch_norm=model_cfg.batch_norm,
        seed=seed,
    )


def build_optimizer(model: torch.nn.Module, learning_rate: float, weight_decay: float = 0.0) -> torch.optim.Adam:
    """Adam with AMSGrad (BehaveNet's optimiser), the fused kernel: one pass over all
    parameters instead of a dozen (42 -> 8 ms a step for the 8.7 M-parameter model on 2 CPU cores)."""
    return torch.optim.Adam(model.parameters(), lr=learning_rate, weight_decay=weight_decay, amsgrad=True, fused=True)


def build_training(
    model: PSVAE, learning_rate: float, weight_decay: float, precision: str, mode: str | None
) -> tuple[torch.optim.Optimizer | Bf16Weights, Callable[[Tensor], ModelOutput]]:
    """(optimizer, network) of a training step: :func:`build_optimizer` and the model itself,
    or for an eager bf16 step (``mode`` None) :class:`Bf16Weights` as both (compiled, the
    casts it saves fuse into other kernels anyway)."""
    optimizer = build_optimizer(model, learning_rate, weight_decay)
    if precision == "bf16" and mode is None:
        shadow = Bf16Weights(model, optimizer)
        return shadow, shadow
    return optimizer, model


def _batches(n: int, size: int) -> list[tuple[int, int]]:
    """Near-equal consecutive batches covering n items, none larger than ``size``."""
    edges = np.linspace(0, n, -(-n // size) + 1).round().astype(int).tolist()
    return list(zip(edges[:-1], edges[1:]))


def loss_terms(
    x: Tensor, y: Tensor, mask: Tensor, out: ModelOutput, loss_cfg: LossConfig, *, epoch: float, n_frames: int
) -> LossTerms:
    """The PS-VAE loss of a batch with a study's loss settings; training and evaluation share it,
    so that the loss they report is the one that is minimised.

    Args:
        x: (B, C, H, W) frames; y, mask: (B, L) labels and validity; out: the model's output on x.
        n_frames: frames N of the aggregate-posterior estimate (the training set, or the evaluated frames).
    """
    weights = epoch_weights(loss_cfg, epoch, x, y)
    return psvae_loss(x, y, mask, out, weights=weights, n_frames=n_frames, estimator=loss_cfg.kl_estimator)


def epoch_weights(loss_cfg: LossConfig, epoch: float, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`~psvae_opt.model.losses.term_weights` of ``epoch``'s annealed weights for batches
    shaped as ``x`` (B, C, H, W) and ``y`` (B, L), on their device (cached there)."""
    kappa, beta_e = anneal_weights(epoch, loss_cfg.anneal_epochs, loss_cfg.beta)
    return term_weights(loss_cfg.alpha, kappa, beta_e, x.shape[0], x[0].numel(), y.shape[1], x.device)


@torch.no_grad()
def evaluate(
    model: PSVAE,
    data: DeviceData,
    idx: Tensor,
    loss_cfg: LossConfig,
    *,
    epoch: float,
    batch_size: int = 1024,
    channels_last: bool = False,
    seed: int = 0,
) -> tuple[dict[str, float], np.ndarray, np.ndarray, np.ndarray]:
    """Every metric of :data:`METRIC_NAMES` on the frames ``idx``, in fp32 whatever the training
    precision: metrics and latents (which MIG and traversals read) keep their digits, and a
    forward pass costs little next to training.

    The loss terms use one posterior sample per frame (drawn from a generator seeded with
    ``seed``, so evaluation is repeatable); pixel and label errors use the latent means.
    The aggregate posterior of ICMI/TC/DWKL is over the ``len(idx)`` evaluated frames; when
    they take several batches, each batch is a random draw from all of them (a seeded
    permutation), as the minibatch estimator assumes: consecutive frames of one trial have
    overlapping posteriors and would inflate TC and DWKL.

    Returns:
        (metrics, mu (N, K) latent means, y_hat (N, L) label predictions, logvar (N, K) latent
        log-variances), arrays on the CPU.
    """
    model.eval()
    device = data.frames.device
    gen = torch.Generator(device=device).manual_seed(seed)
    n = len(idx)
    batches = _batches(n, batch_size)
    order = torch.arange(n, device=idx.device)
    if len(batches) > 1:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).to(idx.device)
    sums = dict.fromkeys(LossTerms._fields + ("pixel_mse",), 0.0)
    mus, y_hats, logvars = [], [], []
    for a, b in batches:
        x, y, mask = data.batch(idx[order[a:b]], channels_last)
        mu, logvar = model.encode(x)
        eps = torch.randn(mu.shape, generator=gen, device=device, dtype=mu.dtype)
        z = mu + torch.exp(0.5 * logvar) * eps
        x_sample, x_mean = model.decode(z), model.decode(mu)
        y_hat = model.predict_labels(mu[:, : model.n_labels])
        out = ModelOutput(x_sample, y_hat, mu, logvar, z)
        terms = loss_terms(x, y, mask, out, loss_cfg, epoch=epoch, n_frames=n)
        for key, value in zip(LossTerms._fields, terms):
            sums[key] += float(value) * (b - a)
        sums["pixel_mse"] += metrics.pixel_mse(x, x_mean) * (b - a)
        mus.append(mu.cpu())
        y_hats.append(y_hat.cpu())
        logvars.append(logvar.cpu())
    back = torch.argsort(order).cpu()  # rows in the order of idx again
    mu_all, y_hat_all = torch.cat(mus)[back].numpy(), torch.cat(y_hats)[back].numpy()
    logvar_all = torch.cat(logvars)[back].numpy()
    y_np, m_np = data.labels[idx].cpu().numpy(), data.masks[idx].cpu().numpy()
    result = {k: sums[k] / n for k in ("loss", "kl_s", "icmi", "tc", "dwkl", "pixel_mse")}
    result["label_mse"] = metrics.label_mse(y_np, y_hat_all, m_np)
    result["label_r2"] = metrics.label_r2(y_np, y_hat_all, m_np)
    result["zu_corr"] = metrics.zu_corr(mu_all[:, model.n_labels :])
    return result, mu_all, y_hat_all, logvar_all


def train_step(
    network: Callable[[Tensor], ModelOutput],
    optimizer: torch.optim.Optimizer | Bf16Weights,
    x: Tensor,
    y: Tensor,
    mask: Tensor,
    forward_loss: Callable[[Callable[[Tensor], ModelOutput], Tensor, Tensor, Tensor, float], LossTerms],
    epoch: float = 0,
) -> Tensor:
    """One optimizer step on a minibatch, the lines of ``fit``'s batch loop (for the benchmarks);
    returns the detached loss (a CUDA graph's output: read it before the next step).

    Args:
        x: (B, C, H, W) frames in [0, 1]; y, mask: (B, L) labels and validity.
        network, optimizer: :func:`build_training`'s.
        forward_loss: the forward pass and loss (:func:`make_forward_loss`, eager or compiled).
    """
    loss = forward_loss(network, x, y, mask, epoch).loss
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def forward_loss(
    model: Callable[[Tensor], ModelOutput],
    x: Tensor,
    y: Tensor,
    mask: Tensor,
    matrix: Tensor,
    offset: Tensor,
    *,
    n_frames: int,
    estimator: str,
    precision: str,
) -> LossTerms:
    """The model's output for ``x`` (B, C, H, W) under ``precision``'s autocast and its loss
    terms, with the epoch's weights (``matrix``, ``offset``: :func:`epoch_weights`) as inputs."""
    with autocast(x.device, precision):
        out = model(x)
    return psvae_loss(x, y, mask, out, weights=(matrix, offset), n_frames=n_frames, estimator=estimator)


def make_forward_loss(
    loss_cfg: LossConfig, n_frames: int, precision: str, mode: str | None
) -> Callable[[Callable[[Tensor], ModelOutput], Tensor, Tensor, Tensor, float], LossTerms]:
    """``f(model, x, y, mask, epoch) -> LossTerms``: :func:`forward_loss`, eager (``mode``
    None) or compiled with ``torch.compile(mode=mode)``. Static shapes (``dynamic=False``):
    every training batch has the same size (the last partial one is dropped); the epoch's
    weights are tensors made once per epoch (no host-to-device copy per step, no recompile).
    A compilation that fails at the first step (no C compiler, no Triton for this GPU) is
    logged and the step runs eager instead.
    """
    fn = forward_loss if mode is None else _first_call_falls_back(torch.compile(forward_loss, mode=mode, dynamic=False))

    def step(model: Callable[[Tensor], ModelOutput], x: Tensor, y: Tensor, mask: Tensor, epoch: float) -> LossTerms:
        matrix, offset = epoch_weights(loss_cfg, epoch, x, y)
        return fn(
            model, x, y, mask, matrix, offset, n_frames=n_frames, estimator=loss_cfg.kl_estimator,
            precision=precision,
        )  # fmt: skip

    return step


def _first_call_falls_back(compiled: Callable[..., LossTerms]) -> Callable[..., LossTerms]:
    """``compiled``, or :func:`forward_loss` eager from the first call on if compiling fails there."""
    chosen: list[Callable[..., LossTerms]] = []

    def call(*args, **kwargs) -> LossTerms:
        if chosen:
            return chosen[0](*args, **kwargs)
        try:
            out = compiled(*args, **kwargs)
        except Exception as exc:  # inductor and dynamo raise many kinds; the eager step is the same code
            first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
            log.warning("train.compile: compiling the step failed (%s: %s); training eager", type(exc).__name__, first)
            chosen.append(forward_loss)
            return forward_loss(*args, **kwargs)
        chosen.append(compiled)
        return out

    return call
