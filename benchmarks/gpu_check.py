"""One GPU check, ready to run: the facts of the GPU, whether training on it is repeatable and
resumable, how fast a step is and where the time of an epoch goes, how many workers fill it,
and what that makes of the guide's full protocol.

    python benchmarks/gpu_check.py                  # on a GPU: under 8 minutes on an H100
    python benchmarks/gpu_check.py --dir /scratch   # time checkpoints on the cluster's file system
    python benchmarks/gpu_check.py --quick          # the same code on the CPU, tiny sizes (the tests run it)

One line each, "name: values":
  gpu          driver, compute mode, compute capability, native bf16
  determinism  two same-seed runs with the defaults (cuDNN autotuning on): their largest
               relative difference in any per-epoch metric, against the README's tolerance
  resume       a run stopped mid-epoch and resumed against the uninterrupted one
  step VARIANT ms/step, frames/s and the GPU-busy share (kernel time over wall time) of the
               trainer's own step at 1x128x128 (BehaveNet's network): default, autotune off,
               fp32, bf16, batch 256 and 512, compiled, compiled with CUDA graphs
  epoch        evaluation and a last.pt write against a training epoch of 80,000 frames
  workers      frames/s summed over 1, 2 and 4 worker processes sharing the GPU
  projection   the guide's protocol (24 models x 200 epochs x 100,000 frames) in GPU-hours
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from psvae_opt.config import LossConfig, ModelConfig, dump_config, load_config
from psvae_opt.data import load_session, split_frames, synth_session
from psvae_opt.training import gpus
from psvae_opt.training.devices import DeviceData, cpu_has_bf16, resolve_precision
from psvae_opt.training.loop import fit
from psvae_opt.training.run_folder import save_atomic
from psvae_opt.training.steps import build_model, build_optimizer, evaluate, make_forward_loss, train_step

SIZES = {  # frame side, model channels, batch, timed steps, warm-up steps, worker window (s)
    "full": (128, (32, 64, 128, 256, 512), 128, 40, 10, 10.0),
    "quick": (32, (4, 8, 8, 8, 8), 16, 3, 1, 1.0),
}
PROTOCOL = {"models": 4 + 4 * 5, "epochs": 200, "frames": 100_000}
EPOCH_FRAMES = 80_000  # training frames of an epoch of the protocol (8 of 10 trials)
TOLERANCE = 1e-3  # largest relative difference of two same-seed runs with autotuning (README)
N_LABELS = 4


def gpu_line(device: torch.device) -> str:
    if device.type != "cuda":
        return f"gpu: none (device {device}); native bf16 on this CPU: {cpu_has_bf16()}"
    out = subprocess.run(
        ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True
    ).stdout.split()
    index = str(device.index or 0)
    major, minor = torch.cuda.get_device_capability(device)
    return (
        f"gpu: {torch.cuda.get_device_name(device)}; driver {out[0] if out else '?'}; compute mode "
        f"{gpus.compute_modes().get(index, '?')}; capability {major}.{minor}; native bf16 {gpus.native_bf16(device)}; "
        f"torch {torch.__version__} CUDA {torch.version.cuda}"
    )


def study(h5: Path, size: tuple, device: torch.device, epochs: int, *extra: str):
    channels = size[1]
    return load_config(
        None,
        [
            f"data.path={h5}", "data.split=8;1;1;0", f"model.channels={list(channels)}", f"train.max_epochs={epochs}",
            f"train.batch_size={size[2]}", "loss.anneal_epochs=2", f"train.device={device}", *extra,
        ],
    )  # fmt: skip


def run_fit(cfg, out: Path, should_stop=None):
    session = load_session(cfg.data.path)
    frames = split_frames(session, cfg.data.split_counts, cfg.data.data_seed)
    text = dump_config(cfg)
    return fit(
        cfg.model, cfg.loss, cfg.train, session, frames, out, config_text=text, progress=False, should_stop=should_stop
    )


def largest_difference(a: Path, b: Path) -> float:
    rows_a, rows_b = (p.read_text().splitlines()[1:] for p in (a / "metrics.csv", b / "metrics.csv"))
    worst = 0.0 if len(rows_a) == len(rows_b) else float("inf")
    for ra, rb in zip(rows_a, rows_b):
        for x, y in zip(ra.split(",")[2:], rb.split(",")[2:]):
            worst = max(worst, abs(float(x) - float(y)) / max(abs(float(x)), 1e-12))
    return worst


def repeat_lines(h5: Path, size: tuple, device: torch.device, folder: Path) -> list[str]:
    cfg = study(h5, size, device, 3)
    run_fit(cfg, folder / "a")
    run_fit(cfg, folder / "b")
    same = largest_difference(folder / "a", folder / "b")
    polls, per_epoch = [], polls_per_epoch(cfg)
    try:  # stopped in the middle of epoch 1
        run_fit(cfg, folder / "cut", should_stop=lambda: polls.append(1) or len(polls) > 1.5 * per_epoch)
    except KeyboardInterrupt:
        pass
    run_fit(cfg, folder / "cut")
    resumed = largest_difference(folder / "a", folder / "cut")
    verdict = "within" if same <= TOLERANCE else "OVER"
    return [
        f"determinism: two same-seed runs (autotune on): largest relative difference {same:.2e}"
        f" ({verdict} {TOLERANCE:g})",
        f"resume: stopped mid-epoch 1 and resumed vs uninterrupted: largest relative difference {resumed:.2e}"
        f" ({'identical' if resumed == 0 else 'differs'})",
    ]


def polls_per_epoch(cfg) -> int:
    """Stop polls of one epoch: one per batch of the 8 training trials in 10, one at its end."""
    n_train = int(len(load_session(cfg.data.path).images) * 0.8)
    return n_train // cfg.train.batch_size + 1


class Bench:
    """The trainer's step (train_step) on random frames held on the device."""

    def __init__(self, size: tuple, device: torch.device, precision: str, batch: int, compile_mode: str | None):
        side, channels = size[0], size[1]
        torch.manual_seed(0)
        self.model = build_model(ModelConfig(channels=channels), (1, side, side), N_LABELS, seed=0)
        self.model.to(device, memory_format=torch.channels_last)
        self.optimizer = build_optimizer(self.model, 1e-4)
        self.loss_cfg = LossConfig(alpha=1000.0, beta=5.0, anneal_epochs=0)
        pool = 8 * batch
        self.data = DeviceData(
            frames=torch.randint(0, 256, (pool, 1, side, side), dtype=torch.uint8, device=device),
            labels=torch.randn(pool, N_LABELS, device=device),
            masks=torch.ones(pool, N_LABELS, device=device),
            splits={"val": torch.arange(min(pool, 1024), device=device)},
        )
        self.order = torch.randint(0, pool, (16, batch), device=device)
        self.forward = make_forward_loss(self.loss_cfg, 100_000, precision, compile_mode)
        self.device, self.precision, self.batch, self.n = device, precision, batch, 0

    def step(self) -> None:
        x, y, mask = self.data.batch(self.order[self.n % len(self.order)], True)
        self.n += 1
        train_step(self.model, self.optimizer, x, y, mask, self.forward)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def seconds(self, steps: int) -> float:
        self.sync()
        start = time.perf_counter()
        for _ in range(steps):
            self.step()
        self.sync()
        return time.perf_counter() - start

    def busy_share(self, steps: int) -> float | None:
        """Kernel time over wall time of ``steps`` steps (CUDA only)."""
        if self.device.type != "cuda":
            return None
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            wall = self.seconds(steps)
        busy_us = sum(
            getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0)
            for e in prof.key_averages()
        )
        return busy_us / 1e6 / wall


def step_line(name: str, size: tuple, device: torch.device, precision: str, batch: int, autotune: bool, mode=None):
    torch.backends.cudnn.benchmark = autotune
    try:
        bench = Bench(size, device, precision, batch, mode)
        bench.seconds(size[4])  # warm-up: autotuning and compilation
        wall = bench.seconds(size[3])
        busy = bench.busy_share(min(size[3], 10))
    except Exception as exc:  # compile without a compiler, out of memory: a line, not the end
        return f"step {name}: failed ({type(exc).__name__}: {str(exc).strip().splitlines()[0][:120]})", None, None
    ms, rate = 1000 * wall / size[3], size[3] * batch / wall
    shown = f"{100 * busy:.0f}%" if busy is not None else "-"
    line = f"step {name}: {ms:.2f} ms/step, {rate:,.0f} frames/s, GPU busy {shown} ({precision}, batch {batch})"
    return line, rate, bench


def epoch_line(bench: Bench, rate: float, folder: Path) -> tuple[str, float]:
    """Evaluation (train rows and validation: 512 + 10% of the epoch's frames) and one last.pt
    write, against a training epoch of EPOCH_FRAMES at ``rate``."""
    val = bench.data.splits["val"]
    bench.sync()
    start = time.perf_counter()
    evaluated = 0
    while evaluated < 512 + EPOCH_FRAMES // 8:
        evaluate(bench.model, bench.data, val, bench.loss_cfg, epoch=0, batch_size=1024, channels_last=True)
        evaluated += len(val)
    bench.sync()
    eval_s = (time.perf_counter() - start) * (512 + EPOCH_FRAMES // 8) / evaluated
    state = {"model": bench.model.state_dict(), "optimizer": bench.optimizer.state_dict()}
    start = time.perf_counter()
    save_atomic(state, folder / "last.pt")
    ckpt_s = time.perf_counter() - start
    mb = (folder / "last.pt").stat().st_size / 1e6
    epoch_s = EPOCH_FRAMES / rate
    line = (
        f"epoch: training {EPOCH_FRAMES:,} frames {epoch_s:.2f} s; evaluation {eval_s:.2f} s"
        f" ({100 * eval_s / epoch_s:.0f}%); last.pt ({mb:.0f} MB) {ckpt_s:.2f} s"
        f" ({100 * ckpt_s / epoch_s:.0f}% if every epoch; at most once a minute now)"
    )
    return line, eval_s / epoch_s


def child(args: argparse.Namespace) -> int:
    """One worker of the workers line: warm up, say ready, train through the window."""
    size, device = SIZES[args.size], torch.device(args.device)
    torch.set_num_threads(args.threads)
    torch.backends.cudnn.benchmark = True
    bench = Bench(size, device, args.precision, size[2], None)
    bench.seconds(size[4])
    print("ready", flush=True)
    go = float(sys.stdin.readline())
    while time.time() < go + size[5] / 4:  # everyone is running by then
        bench.step()
    bench.sync()
    t0, steps = time.time(), 0
    while time.time() < t0 + size[5]:
        bench.step()
        steps += 1
    bench.sync()
    print(json.dumps({"rate": steps * size[2] / (time.time() - t0)}), flush=True)
    return 0


def workers_line(args: argparse.Namespace, counts: list[int], precision: str) -> tuple[str, float]:
    rates = {}
    for n in counts:
        argv = [sys.executable, os.path.abspath(__file__), "--child", "--device", args.device, "--precision", precision]
        argv += ["--size", args.size, "--threads", str(max(1, (os.cpu_count() or 1) // n))]
        procs = [subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(n)]
        if any(proc.stdout.readline().strip() != "ready" for proc in procs):
            rates[n] = 0.0
        else:
            go = time.time() + 0.5
            for proc in procs:
                proc.stdin.write(f"{go}\n")
                proc.stdin.flush()
            rates[n] = sum(json.loads(proc.stdout.readline())["rate"] for proc in procs)
        for proc in procs:
            if rates[n] == 0.0:  # one failed to start: the others wait on stdin forever
                proc.kill()
            proc.wait()
    shown = ", ".join(f"{n}: {r:,.0f}" for n, r in rates.items())
    return f"workers: summed frames/s by worker processes on the device ({precision}) {shown}", max(rates.values())


def projection_line(rate: float, eval_share: float) -> str:
    total = PROTOCOL["models"] * PROTOCOL["epochs"] * PROTOCOL["frames"]
    hours = total / max(rate, 1e-9) * (1 + eval_share) / 3600
    return (
        f"projection: {PROTOCOL['models']} models x {PROTOCOL['epochs']} epochs x {PROTOCOL['frames']:,} frames at "
        f"{rate:,.0f} frames/s plus {100 * eval_share:.0f}% evaluation = {hours:.2f} GPU-hours (target 1.5)"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="tiny sizes and no compile (a smoke test on the CPU)")
    p.add_argument("--dir", type=Path, default=None, help="where runs and the timed checkpoint go (default a temp dir)")
    p.add_argument("--workers", type=int, nargs="+", default=None, help="worker counts (default 1 2 4; quick 1 2)")
    p.add_argument("--size", default="full", help=argparse.SUPPRESS)
    p.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child(args)
    args.size = "quick" if args.quick else "full"
    size, device = SIZES[args.size], torch.device(args.device)
    print(gpu_line(device), flush=True)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        folder = Path(tmp)
        h5 = synth_session(folder / "check.h5", size=size[0], trials=10, frames=max(4 * size[2], 100), seed=0)
        for line in repeat_lines(h5, size, device, folder):
            print(line, flush=True)
        auto = resolve_precision("auto", device)
        batch = size[2]
        variants = [
            ("default", auto, batch, True, None), ("autotune off", auto, batch, False, None),
            ("fp32", "fp32", batch, True, None), ("bf16", "bf16", batch, True, None),
            (f"bf16 batch {2 * batch}", "bf16", 2 * batch, True, None),
            (f"bf16 batch {4 * batch}", "bf16", 4 * batch, True, None),
            ("compiled", auto, batch, True, "default"), ("compiled cuda-graphs", auto, batch, True, "reduce-overhead"),
        ]  # fmt: skip
        default_rate, default_bench = 0.0, None
        for name, precision, b, autotune, mode in variants:
            if mode and (args.quick or (mode == "reduce-overhead" and device.type != "cuda")):
                print(f"step {name}: skipped ({'--quick' if args.quick else 'CUDA graphs need a GPU'})", flush=True)
                continue
            line, rate, bench = step_line(name, size, device, precision, b, autotune, mode)
            print(line, flush=True)
            if name == "default" and rate:
                default_rate, default_bench = rate, bench
        torch.backends.cudnn.benchmark = True
        eval_share = 0.0
        if default_bench is not None:
            line, eval_share = epoch_line(default_bench, default_rate, folder)
            print(line, flush=True)
        line, best = workers_line(args, args.workers or ([1, 2] if args.quick else [1, 2, 4]), auto)
        print(line, flush=True)
        print(projection_line(max(best, default_rate), eval_share), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
