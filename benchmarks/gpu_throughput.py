"""GPU training throughput of the PS-VAE: one worker's variants, then the whole GPU shared by
several worker processes, and what that makes of the guide's full search.

    python benchmarks/gpu_throughput.py                      # on a GPU: the whole table, < 5 min on an H100/H200
    python benchmarks/gpu_throughput.py --no-compile         # without the torch.compile rows (minutes faster)
    python benchmarks/gpu_throughput.py --device cpu --quick # a smoke test of the same code on the CPU

1. One worker, per model (BehaveNet's 1x128x128 network, channels 32..512; the demo study's
   1x64x64 one, channels 8..128): fp32 vs bf16 autocast, NCHW vs channels-last,
   torch.compile and torch.compile with CUDA graphs ("reduce-overhead"); then a sweep of
   batch sizes in bf16 channels-last. A step is the trainer's own (``train_step``: forward,
   full loss, backward, fused Adam) on frames already on the device, as in training.
2. The whole GPU: 1, 2, 4 and 8 worker processes started together on one GPU, each training
   on its own frames; the sum of their frames/s over a common steady-state window (after a
   quarter of the window to settle). Without MPS the processes' kernels take turns on the GPU;
   more of them pays where one alone leaves it idle between its kernel launches.
3. The projection for the guide's protocol: 4 alphas + 4 betas x 5 seeds = 24 models of 200
   epochs over 100,000 frames at 128x128, at the best summed rate.

Each row is one line of a "|"-separated table. Timing waits for the device (CUDA events and
synchronize); warm-up steps come first (they include compilation). A variant that fails
(torch.compile on a machine without a compiler, out of memory) is reported in its row.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import torch

from psvae_opt.config import LossConfig, ModelConfig
from psvae_opt.model.network import count_parameters
from psvae_opt.training.devices import DeviceData
from psvae_opt.training.steps import build_model, build_optimizer, train_step

MODELS = {  # name -> (frame shape, channels): BehaveNet's network and the demo study's (studies/demo.toml)
    "behavenet": ((1, 128, 128), (32, 64, 128, 256, 512)),
    "demo": ((1, 64, 64), (8, 16, 32, 64, 128)),
}
N_LABELS = 4
PROTOCOL = {"models": 4 + 4 * 5, "epochs": 200, "frames": 100_000}
TARGET_HOURS = 1.5


@dataclass(frozen=True)
class Variant:
    name: str
    precision: str  # fp32 or bf16
    channels_last: bool
    compile: str = ""  # "" = eager, else a torch.compile mode ("default", "reduce-overhead" = CUDA graphs)


VARIANTS = (
    Variant("fp32", "fp32", False),
    Variant("fp32 channels-last", "fp32", True),
    Variant("bf16", "bf16", False),
    Variant("bf16 channels-last", "bf16", True),
    Variant("bf16 channels-last compile", "bf16", True, "default"),
    Variant("bf16 channels-last compile+cudagraphs", "bf16", True, "reduce-overhead"),
)
BY_NAME = {v.name: v for v in VARIANTS}


class Trainer:
    """The trainer's step on random frames of one model, held on the device."""

    def __init__(self, model_name: str, variant: Variant, batch: int, device: torch.device, pool: int):
        shape, channels = MODELS[model_name]
        torch.manual_seed(0)
        model = build_model(ModelConfig(channels=channels), shape, N_LABELS, seed=0)
        fmt = torch.channels_last if variant.channels_last else torch.contiguous_format
        self.model = model.to(device, memory_format=fmt)
        self.parameters = count_parameters(model)
        self.step_model = torch.compile(model, mode=variant.compile) if variant.compile else model
        self.optimizer = build_optimizer(model, learning_rate=1e-4)
        pool = max(pool, batch)
        self.data = DeviceData(
            frames=torch.randint(0, 256, (pool, *shape), dtype=torch.uint8, device=device),
            labels=torch.randn(pool, N_LABELS, device=device),
            masks=torch.ones(pool, N_LABELS, device=device),
            splits={},
        )
        self.order = torch.randint(0, pool, (64, batch), device=device)  # batches cycled through
        self.variant, self.batch, self.device, self.n = variant, batch, device, 0
        self.loss_cfg = LossConfig(alpha=1000.0, beta=5.0, anneal_epochs=0)

    def step(self) -> torch.Tensor:
        x, y, mask = self.data.batch(self.order[self.n % len(self.order)], self.variant.channels_last)
        self.n += 1
        return train_step(
            self.step_model, self.optimizer, x, y, mask, self.loss_cfg, epoch=0, n_frames=100_000,
            precision=self.variant.precision,
        )  # fmt: skip

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def measure(self, warmup: int, steps: int) -> float:
        """Frames/s over ``steps`` steps after ``warmup`` ones."""
        for _ in range(warmup):
            self.step()
        self.sync()
        if self.device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(steps):
                self.step()
            end.record()
            end.synchronize()
            seconds = start.elapsed_time(end) / 1000
        else:
            t0 = time.perf_counter()
            for _ in range(steps):
                self.step()
            seconds = time.perf_counter() - t0
        return steps * self.batch / seconds


def row(section: str, model: str, variant: str, batch: int, workers: int, rate: float | None, note: str = "") -> dict:
    return {
        "section": section, "model": model, "variant": variant, "batch": batch, "workers": workers,
        "frames_per_s": rate, "note": note,
    }  # fmt: skip


def single(args: argparse.Namespace, device: torch.device, model: str, variant: Variant, batch: int) -> dict:
    section = "batch" if batch != args.batch_size else "single"
    if variant.compile and (args.quick or args.no_compile):
        return row(section, model, variant.name, batch, 1, None, "skipped")
    if variant.compile == "reduce-overhead" and device.type != "cuda":
        return row(section, model, variant.name, batch, 1, None, "skipped (CUDA graphs need a GPU)")
    if variant.compile:
        torch._dynamo.reset()  # a fresh cache per model (importing dynamo alone takes seconds: only here)
    try:
        trainer = Trainer(model, variant, batch, device, pool=8 * batch)
        rate = trainer.measure(args.warmup, args.steps)
    except Exception as exc:  # compile without a compiler, out of memory: a row, not the end
        first = next((ln for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
        return row(section, model, variant.name, batch, 1, None, f"failed: {type(exc).__name__}: {first[:120]}")
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return row(section, model, variant.name, batch, 1, rate, f"{trainer.parameters:,} parameters")


def concurrent(args: argparse.Namespace, model: str, variant: Variant, workers: int) -> dict:
    """Summed frames/s of ``workers`` processes sharing the device over a common window."""
    argv = [sys.executable, os.path.abspath(__file__), "--child", "--device", args.device, "--models", model]
    argv += ["--multi-variant", variant.name, "--batch-size", str(args.batch_size), "--warmup", str(args.warmup)]
    argv += ["--window", str(args.window), "--threads", str(max(1, (os.cpu_count() or 1) // workers))]
    logs = [tempfile.TemporaryFile("w+") for _ in range(workers)]  # not pipes: a chatty worker never blocks
    procs = [
        subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True) for log in logs
    ]
    try:
        ready = [p.stdout.readline().strip() for p in procs]  # each has built, warmed up and waits
        if any(r != "ready" for r in ready):
            raise RuntimeError("a worker process failed to start")
        start = time.time() + 0.5
        for p in procs:
            p.stdin.write(f"{start}\n")
            p.stdin.flush()
        results = [json.loads(p.stdout.readline()) for p in procs]
    except (RuntimeError, json.JSONDecodeError):
        for p in procs:
            p.kill()
            p.wait()
        errors = [log.seek(0) or log.read().strip().splitlines() for log in logs]
        last = next((e[-1] for e in errors if e), "no message")
        return row("gpu", model, variant.name, args.batch_size, workers, None, f"failed: {last[:120]}")
    finally:
        for log in logs:
            log.close()
    for p in procs:
        p.wait()
    overlap = min(r["end"] for r in results) - max(r["start"] for r in results)
    note = f"{overlap:.1f} s window common to all (of {args.window:g} s each)"
    return row("gpu", model, variant.name, args.batch_size, workers, sum(r["frames_per_s"] for r in results), note)


def child(args: argparse.Namespace) -> int:
    """One worker process of :func:`concurrent`: warm up, say ready, train through the window."""
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    trainer = Trainer(args.models[0], BY_NAME[args.multi_variant], args.batch_size, device, pool=4096)
    for _ in range(args.warmup):
        trainer.step()
    trainer.sync()
    print("ready", flush=True)
    go = float(sys.stdin.readline())
    settle = go + args.window / 4  # every process is running by then: steady state
    while time.time() < settle:
        trainer.step()
    trainer.sync()  # a step boundary: the window starts with an empty queue
    t0, steps = time.time(), 0
    while time.time() < t0 + args.window:
        trainer.step()
        steps += 1
    trainer.sync()  # the steps launched so far have all run
    t1 = time.time()
    print(json.dumps({"frames_per_s": steps * args.batch_size / (t1 - t0), "start": t0, "end": t1}), flush=True)
    return 0


def projection(rates: list[dict]) -> tuple[str, float | None]:
    """The guide's protocol at the best summed rate of BehaveNet's model (frames/s -> hours)."""
    total = PROTOCOL["models"] * PROTOCOL["epochs"] * PROTOCOL["frames"]
    need = total / (TARGET_HOURS * 3600)
    best = max((r for r in rates if r["frames_per_s"]), key=lambda r: r["frames_per_s"], default=None)
    if best is None:
        return f"projection: no BehaveNet rate measured; the protocol needs {need:,.0f} frames/s", None
    hours = total / best["frames_per_s"] / 3600
    return (
        f"projection: {PROTOCOL['models']} models x {PROTOCOL['epochs']} epochs x {PROTOCOL['frames']:,} frames = "
        f"{total:,} frames / {best['frames_per_s']:,.0f} frames/s ({best['workers']} worker(s), {best['variant']}, "
        f"batch {best['batch']}) = {hours:.2f} h on one GPU (target {TARGET_HOURS} h needs {need:,.0f} frames/s)",
        hours,
    )


def print_row(r: dict) -> None:
    rate = f"{r['frames_per_s']:,.0f}" if r["frames_per_s"] else "-"
    ms = f"{1000 * r['batch'] / r['frames_per_s'] * r['workers']:.2f}" if r["frames_per_s"] else "-"
    cells = [r["section"], r["model"], r["variant"], str(r["batch"]), str(r["workers"]), rate, ms, r["note"]]
    print("| " + " | ".join(cells) + " |", flush=True)


def run(args: argparse.Namespace) -> list[dict]:
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        name = torch.cuda.get_device_name(device)
    else:
        name = f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}; batch {args.batch_size} unless the batch column says")
    print("| section | model | variant | batch | workers | frames/s | ms/step | note |")
    rows = []
    for model in args.models:
        for variant in (BY_NAME[name] for name in args.variants):
            rows.append(single(args, device, model, variant, args.batch_size))
            print_row(rows[-1])
        for batch in args.batch_sizes:
            if batch != args.batch_size:
                rows.append(single(args, device, model, BY_NAME["bf16 channels-last"], batch))
                print_row(rows[-1])
    for model in args.multi_models:
        for workers in args.workers:
            rows.append(concurrent(args, model, BY_NAME[args.multi_variant], workers))
            print_row(rows[-1])
    text, _ = projection([r for r in rows if r["model"] == "behavenet" and r["section"] in ("single", "gpu")])
    print(text)
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="tiny run (few steps, batch 8, no compile): a smoke test")
    p.add_argument("--models", nargs="+", choices=sorted(MODELS), default=["behavenet", "demo"])
    p.add_argument("--variants", nargs="+", choices=list(BY_NAME), default=list(BY_NAME), metavar="NAME")
    p.add_argument("--multi-models", nargs="*", choices=sorted(MODELS), default=["behavenet"])
    p.add_argument("--multi-variant", choices=sorted(BY_NAME), default="bf16 channels-last")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8], help="worker processes on the device")
    p.add_argument("--batch-size", type=int, default=128, help="the training batch (BehaveNet's)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 128, 256, 512, 1024])
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--window", type=float, default=8.0, help="seconds each concurrent worker is measured")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile variants")
    p.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.batch_size, args.batch_sizes, args.steps, args.warmup = 8, [4, 8], 2, 1
        args.workers, args.window = [1, 2], 1.0
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child(args)
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
