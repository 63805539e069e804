"""The eager bf16 step on bf16 weight copies (training/bf16_weights.py) against plain autocast."""

from __future__ import annotations

import pytest
import torch

from psvae_opt.config import LossConfig, ModelConfig
from psvae_opt.training.bf16_weights import Bf16Weights
from psvae_opt.training.steps import build_model, build_optimizer, build_training, make_forward_loss, train_step

MODEL = ModelConfig(channels=(4, 8, 8, 8, 8))


def losses(shadowed: bool, steps: int = 6) -> tuple[list[float], torch.nn.Module]:
    torch.manual_seed(0)
    model = build_model(MODEL, (1, 32, 32), 3, seed=0).to(memory_format=torch.channels_last)
    if shadowed:
        optimizer, network = build_training(model, 1e-3, 0.0, "bf16", None)
        assert isinstance(optimizer, Bf16Weights)
    else:
        optimizer, network = build_optimizer(model, 1e-3), model
    forward_loss = make_forward_loss(LossConfig(anneal_epochs=0), 1000, "bf16", None)
    gen = torch.Generator().manual_seed(1)
    out = []
    for _ in range(steps):
        x = torch.rand(16, 1, 32, 32, generator=gen).contiguous(memory_format=torch.channels_last)
        y, mask = torch.randn(16, 3, generator=gen), torch.ones(16, 3)
        out.append(float(train_step(network, optimizer, x, y, mask, forward_loss)))
    return out, model


def test_bf16_copies_train_as_autocast_does():
    """Same weights, same casts: the losses of six steps agree to bf16 rounding, the fp32
    weights stay the model's, and the copies are their bf16 rounding after each step."""
    plain, plain_model = losses(False)
    shadow, model = losses(True)
    assert shadow == pytest.approx(plain, rel=2e-3)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    for a, b in zip(model.parameters(), plain_model.parameters()):
        assert torch.allclose(a, b, rtol=1e-2, atol=1e-3)


def test_the_copies_follow_loaded_weights():
    torch.manual_seed(0)
    model = build_model(MODEL, (1, 32, 32), 3, seed=0)
    shadow = Bf16Weights(model, build_optimizer(model, 1e-3))
    state = shadow.state_dict()
    with torch.no_grad():
        model.to_mean.weight.add_(1.0)
    shadow.load_state_dict(state)  # as a resume does after loading the model
    index = shadow.names.index("to_mean.weight")
    assert torch.equal(shadow.copies[index], model.to_mean.weight.to(torch.bfloat16))
    assert shadow.copies[index].dtype == torch.bfloat16 and shadow.copies[index].requires_grad
