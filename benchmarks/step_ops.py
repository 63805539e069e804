"""The operators of one training step, counted without a GPU: each is at least one kernel
launch on a GPU, so their number is what makes a small model's step launch-bound.

    python benchmarks/step_ops.py                 # BehaveNet's 1x128x128 network, bf16 and fp32
    python benchmarks/step_ops.py --json          # the counts as JSON
    python benchmarks/step_ops.py --top 15        # and the most frequent operators

One training step is what ``fit``'s batch loop runs: the forward pass and loss
(``steps.make_forward_loss``, eager), ``backward()`` and the optimizer step, counted after a
first step (the optimiser's state exists). A ``TorchDispatchMode`` sees every ATen operator
below autograd, the backward pass's included, as a GPU would launch them; "kernels" leaves out
views (no data moved), "casts" counts ``_to_copy`` (autocast's and the loss's dtype changes).
The frames come from a uint8 tensor as in ``DeviceData.batch``. The counts do not depend on the
batch size, so a small batch keeps this quick on a CPU.

It also runs on an older checkout (``--source DIR``: the package found there first), so that a
change's before and after are measured by the same code.
"""

from __future__ import annotations

import argparse
import collections
import inspect
import json
import sys
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

ROOT = Path(__file__).resolve().parents[1]


class OpCounter(TorchDispatchMode):
    """Counts ATen operators by name while active."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: collections.Counter[str] = collections.Counter()
        self.views = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        self.ops[name] += 1
        if is_view(func):
            self.views += 1
        return func(*args, **(kwargs or {}))


def is_view(func) -> bool:
    """Whether an operator only aliases its input (a view: no kernel runs)."""
    returns = func._schema.returns
    return bool(returns) and all(r.alias_info is not None and not r.alias_info.is_write for r in returns)


def one_step(precision: str, batch: int, size: int):
    """A callable running one training step of the package on the CPU, as ``fit`` does."""
    from psvae_opt.config import LossConfig, ModelConfig
    from psvae_opt.training import steps
    from psvae_opt.training.devices import DeviceData

    model_cfg, loss_cfg = ModelConfig(), LossConfig(anneal_epochs=0)
    torch.manual_seed(0)
    model = steps.build_model(model_cfg, (1, size, size), 4, seed=0).to(memory_format=torch.channels_last)
    optimizer = steps.build_optimizer(model, 1e-4)
    data = DeviceData(
        frames=torch.randint(0, 256, (batch, 1, size, size), dtype=torch.uint8),
        labels=torch.randn(batch, 4),
        masks=torch.ones(batch, 4),
        splits={},
    )
    idx = torch.arange(batch)
    params = inspect.signature(steps.train_step).parameters
    if "forward_loss" in params:  # this checkout: fit's lines through one forward-and-loss function
        forward_loss = steps.make_forward_loss(loss_cfg, 100_000, precision, None)
        if hasattr(steps, "build_training"):  # the optimizer and network fit uses
            optimizer, network = steps.build_training(model, 1e-4, 0.0, precision, None)
        else:
            network = model

        def step():
            x, y, mask = data.batch(idx, True)
            return steps.train_step(network, optimizer, x, y, mask, forward_loss)
    else:  # before: train_step(model, optimizer, x, y, mask, loss_cfg, epoch=, n_frames=, precision=)

        def step():
            x, y, mask = data.batch(idx, True)
            return steps.train_step(
                model, optimizer, x, y, mask, loss_cfg, epoch=0, n_frames=100_000, precision=precision
            )

    return step


def count(precision: str, batch: int, size: int) -> dict:
    step = one_step(precision, batch, size)
    step()  # the optimiser's state, cached weights: what every later step finds
    with OpCounter() as counter:
        step()
    total = sum(counter.ops.values())
    return {
        "precision": precision,
        "operators": total,
        "kernels": total - counter.views,
        "casts": counter.ops.get("_to_copy", 0),
        "ops": dict(counter.ops.most_common()),
    }


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=128, help="frame height and width (default 128)")
    p.add_argument("--batch", type=int, default=8, help="frames per step (default 8; counts do not depend on it)")
    p.add_argument("--precision", nargs="+", default=["bf16", "fp32"], choices=["bf16", "fp32"])
    p.add_argument("--source", type=Path, help="a checkout whose psvae_opt to count (default: this one)")
    p.add_argument("--top", type=int, default=0, help="also print the N most frequent operators")
    p.add_argument("--json", action="store_true", help="print JSON instead of lines")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    sys.path.insert(0, str((args.source or ROOT).resolve()))
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    results = [count(p, args.batch, args.size) for p in args.precision]
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for r in results:
        print(
            f"step ops {r['precision']}: {r['operators']} operators, {r['kernels']} kernels "
            f"(views left out), {r['casts']} casts  [1x{args.size}x{args.size}, one training step]"
        )
        for name, n in list(r["ops"].items())[: args.top]:
            print(f"    {n:4d}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
