"""Training throughput of the PS-VAE: frames per second of the trainer's own optimizer step.

One step = forward, the full PS-VAE loss (with the ICMI/TC/DWKL decomposition), backward and
an Adam update on a batch of frames already on the device (uint8 frames gathered and scaled
on the device, as in training). Prints the parameter count and frames/s per frame size.

    python benchmarks/train_throughput.py                    # what training uses (bf16 where native)
    python benchmarks/train_throughput.py --precision fp32   # plain fp32
    python benchmarks/train_throughput.py --allocators       # CPU: glibc default vs tuned

The glibc allocator returns large freed blocks to the kernel and gets fresh zeroed pages
for the next large activation; psvae-opt's training turns that off (``tune_cpu_allocator``),
and so does this benchmark unless ``--no-tune-allocator``. ``--allocators`` runs both.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch

from psvae_opt.config import LossConfig
from psvae_opt.model.network import PSVAE, count_parameters
from psvae_opt.training.devices import DeviceData, resolve_precision, tune_cpu_allocator
from psvae_opt.training.steps import build_optimizer, make_forward_loss, train_step


def measure(size: int, args: argparse.Namespace, device: torch.device) -> dict:
    """Frames/s of ``train_step`` on random frames of 1 x size x size."""
    torch.manual_seed(0)
    n_labels = 4
    model = PSVAE((1, size, size), n_labels, args.n_unsup).to(device)
    channels_last = args.channels_last
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    step_model = torch.compile(model) if args.compile else model
    optimizer = build_optimizer(model, learning_rate=1e-4)
    n_pool = 8 * args.batch_size
    data = DeviceData(
        frames=torch.randint(0, 256, (n_pool, 1, size, size), dtype=torch.uint8, device=device),
        labels=torch.randn(n_pool, n_labels, device=device),
        masks=torch.ones(n_pool, n_labels, device=device),
        splits={},
    )
    loss_cfg = LossConfig(alpha=1000.0, beta=5.0, anneal_epochs=0)
    forward_loss = make_forward_loss(loss_cfg, 100_000, args.precision, None)
    gen = torch.Generator().manual_seed(0)

    def step() -> torch.Tensor:
        idx = torch.randint(0, n_pool, (args.batch_size,), generator=gen).to(device)
        batch = data.batch(idx, channels_last)
        return train_step(step_model, optimizer, *batch, forward_loss)

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    float(loss)  # waits for the device
    seconds = time.perf_counter() - start
    return {
        "frame": f"1x{size}x{size}",
        "parameters": count_parameters(model),
        "frames_per_s": args.steps * args.batch_size / seconds,
        "ms_per_step": 1000 * seconds / args.steps,
    }


def run(args: argparse.Namespace) -> list[dict]:
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.tune_allocator:
        tune_cpu_allocator()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    args.precision = resolve_precision(args.precision, device)
    results = [measure(size, args, device) for size in args.sizes]
    for r in results:
        r.update(
            device=str(torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"),
            precision=args.precision,
            channels_last=args.channels_last,
            compile=args.compile,
            batch_size=args.batch_size,
            threads=torch.get_num_threads(),
        )
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    gpu = torch.cuda.is_available()
    p.add_argument("--device", default="auto")
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16"],
        default="auto",
        help="auto (default): what training uses, bf16 where the hardware has it",
    )
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False)
    p.add_argument("--n-unsup", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0 = torch's default)")
    p.add_argument("--steps", type=int, default=50 if gpu else 10)
    p.add_argument("--warmup", type=int, default=10 if gpu else 3)
    p.add_argument(
        "--tune-allocator",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="keep freed memory in the process (as psvae-opt's training does)",
    )
    p.add_argument("--allocators", action="store_true", help="CPU: compare glibc default and tuned settings")
    p.add_argument("--json", action="store_true", help="print one JSON object per line")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.allocators:
        rest = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--allocators"]
        for name, flag in (
            ("glibc default", "--no-tune-allocator"),
            ("glibc tuned (no mmap, no trim)", "--tune-allocator"),
        ):
            out = subprocess.run(
                [sys.executable, __file__, *rest, flag, "--json"], capture_output=True, text=True, check=True
            )
            for line in out.stdout.splitlines():
                r = json.loads(line)
                print(
                    f"{name:32s} {r['frame']:10s} {r['frames_per_s']:9.1f} frames/s  ({r['ms_per_step']:.1f} ms/step)"
                )
        return 0
    for r in run(args):
        if args.json:
            print(json.dumps(r))
        else:
            print(
                f"{r['frame']:10s} {r['frames_per_s']:9.1f} frames/s  {r['ms_per_step']:7.2f} ms/step  "
                f"params {r['parameters']:,}  [{r['device']}, {r['precision']}, channels_last={r['channels_last']}, "
                f"compile={r['compile']}, batch {r['batch_size']}, threads {r['threads']}]"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
