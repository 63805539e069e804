"""bf16 copies of the weights that bf16 autocast would cast every step.

Under bf16 autocast every convolution and linear layer casts its fp32 weight and bias to bf16
in the forward pass, and the backward pass casts each of their gradients back: two kernels per
tensor and step (about 60 of a default step's 316 on a GPU). :class:`Bf16Weights` keeps those
bf16 copies instead: the forward pass reads them as they are, their gradients are copied into
the fp32 weights' gradients by one ``_foreach_copy_``, the fused optimizer updates the fp32
weights (which stay the model's: evaluation, checkpoints and ``state_dict`` see only them), and
one more ``_foreach_copy_`` rounds them into the copies again. The values are the ones autocast
would use (the same round-to-nearest cast of the same fp32 weights), so training follows the
same path to bf16 rounding.

It stands in for the optimizer in the training loop (``zero_grad``, ``step``, ``state_dict``,
``load_state_dict``) and for the model in the forward pass (called with the frames).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

CAST_LAYERS = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)  # autocast runs these in bf16


class Bf16Weights:
    """The fused optimizer of ``model``'s fp32 weights, with bf16 copies of those of its
    convolution and linear layers for the forward pass."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.model, self.optimizer = model, optimizer
        self.names = [
            f"{prefix}.{name}" if prefix else name
            for prefix, module in model.named_modules()
            if isinstance(module, CAST_LAYERS)
            for name, _ in module.named_parameters(recurse=False)
        ]
        params = dict(model.named_parameters())
        self.weights = [params[n] for n in self.names]  # fp32, updated by the optimizer
        self.others = [p for n, p in params.items() if n not in set(self.names)]
        with torch.no_grad():
            self.copies = [w.detach().to(torch.bfloat16).requires_grad_() for w in self.weights]
        for w in self.weights:
            w.grad = torch.zeros_like(w)  # filled from the copies' gradients at each step
        self.param_groups = optimizer.param_groups

    def __call__(self, x: Tensor, *args: Any, **kwargs: Any) -> Any:
        """The model's forward pass on the bf16 copies."""
        return functional_call(self.model, dict(zip(self.names, self.copies)), (x, *args), kwargs)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in (*self.copies, *self.others):
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        grads = [c.grad if c.grad is not None else torch.zeros_like(c) for c in self.copies]
        torch._foreach_copy_([w.grad for w in self.weights], grads)
        self.optimizer.step()
        self.refresh()

    @torch.no_grad()
    def refresh(self) -> None:
        """Round the fp32 weights into the copies (after a step, or after weights were loaded)."""
        torch._foreach_copy_(self.copies, self.weights)

    def state_dict(self) -> dict:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict) -> None:
        """The optimizer's state; the copies are rounded again from the model's weights, which
        a resume loads first."""
        self.optimizer.load_state_dict(state)
        self.refresh()
