"""The step's one route to the loss: a compilation that fails falls back to the eager step, logged."""

from __future__ import annotations

import logging

import pytest
import torch

from psvae_opt.config import LossConfig, ModelConfig
from psvae_opt.training import steps


def test_a_failed_compilation_trains_eager_and_says_so(monkeypatch, caplog: pytest.LogCaptureFixture):
    calls = []

    def broken_compile(fn, **kwargs):
        def compiled(*args, **kw):
            calls.append(kwargs["mode"])
            raise RuntimeError("InductorError: no working C compiler\nmore")

        return compiled

    monkeypatch.setattr(torch, "compile", broken_compile)
    model = steps.build_model(ModelConfig(channels=(4, 8, 8, 8, 8)), (1, 32, 32), 2, seed=0)
    compiled = steps.make_forward_loss(LossConfig(), 100, "fp32", "reduce-overhead")
    eager = steps.make_forward_loss(LossConfig(), 100, "fp32", None)
    x, y, mask = torch.rand(4, 1, 32, 32), torch.randn(4, 2), torch.ones(4, 2)
    with caplog.at_level(logging.WARNING, logger="psvae_opt.training.steps"):
        torch.manual_seed(0)
        first = compiled(model, x, y, mask, 0)
        torch.manual_seed(0)
        second = compiled(model, x, y, mask, 0)
    torch.manual_seed(0)
    assert torch.equal(first.loss, eager(model, x, y, mask, 0).loss) and torch.equal(first.loss, second.loss)
    assert calls == ["reduce-overhead"]  # tried once, then eager for good
    assert caplog.messages == [
        "train.compile: compiling the step failed (RuntimeError: InductorError: no working C compiler); training eager"
    ]
