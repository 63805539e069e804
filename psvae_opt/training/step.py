"""The forward pass and the loss of a training step as one function, compiled together under
``train.compile``: one graph (fused kernels, and CUDA graphs with ``compile_mode =
"reduce-overhead"``) instead of the model compiled alone and the loss's many small kernels
launched one by one from Python. The backward pass of the compiled region is compiled too;
the optimizer step stays outside (fused Adam is one kernel already)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from psvae_opt.config import COMPILE_MODES, LossConfig
from psvae_opt.model.losses import LossTerms, anneal_weights, psvae_loss
from psvae_opt.training.devices import autocast

__all__ = ["COMPILE_MODES", "forward_loss", "make_forward_loss"]
ForwardLoss = Callable[[torch.nn.Module, Tensor, Tensor, Tensor, Tensor, Tensor], LossTerms]


def forward_loss(
    model: torch.nn.Module,
    x: Tensor,
    y: Tensor,
    mask: Tensor,
    kappa: Tensor,
    beta_e: Tensor,
    *,
    alpha: float,
    n_frames: int,
    estimator: str,
    precision: str,
) -> LossTerms:
    """The model's output for ``x`` (B, C, H, W) under ``precision``'s autocast and its loss
    terms, with the annealing weights (``kappa``, ``beta_e``: 0-d tensors) as inputs."""
    with autocast(x.device, precision):
        out = model(x)
    return psvae_loss(
        x, y, mask, out, alpha=alpha, beta=0.0, epoch=0, anneal_epochs=0, n_frames=n_frames,
        estimator=estimator, weights=(kappa, beta_e),
    )  # fmt: skip


def make_forward_loss(
    loss_cfg: LossConfig, n_frames: int, precision: str, mode: str | None
) -> Callable[[torch.nn.Module, Tensor, Tensor, Tensor, float], LossTerms]:
    """``f(model, x, y, mask, epoch) -> LossTerms``: :func:`forward_loss` compiled with
    ``torch.compile(mode=mode)`` (``mode`` None: eager, the same code). Static shapes
    (``dynamic=False``): every training batch has the same size (the last partial one is dropped).
    """
    fn = forward_loss if mode is None else torch.compile(forward_loss, mode=mode, dynamic=False)
    weights: dict[tuple[float, torch.device], tuple[Tensor, Tensor]] = {}

    def step(model: torch.nn.Module, x: Tensor, y: Tensor, mask: Tensor, epoch: float) -> LossTerms:
        key = (epoch, x.device)
        if key not in weights:  # tensors made once per epoch: no host-to-device copy per step
            kappa, beta_e = anneal_weights(epoch, loss_cfg.anneal_epochs, loss_cfg.beta)
            weights.clear()
            weights[key] = (torch.tensor(kappa, device=x.device), torch.tensor(beta_e, device=x.device))
        return fn(
            model, x, y, mask, *weights[key], alpha=loss_cfg.alpha, n_frames=n_frames,
            estimator=loss_cfg.kl_estimator, precision=precision,
        )  # fmt: skip

    return step
