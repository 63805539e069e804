"""One GPU check, ready to run in one call on a borrowed node: the machine, the default step,
how many workers fill the GPU, what an epoch and the guide's protocol cost, then compile
variants, memory and kernels, then whether training repeats and resumes.

    python benchmarks/gpu_check.py --budget 480       # on a GPU node, from the checkout
    python benchmarks/gpu_check.py --quick --budget 60  # the same code on the CPU, tiny sizes (a test runs it)

It needs only torch, numpy and h5py (the image's own): the package is imported from the
checkout, and nothing on its path imports PyAV, plotly, optuna, SQLAlchemy or tqdm. Each line
is printed as it is measured, "name: values [elapsed s]", in this order:

  machine        GPU, driver, compute mode, capability, native bf16, torch and its CUDA
  step default   ms/step, frames/s and GPU-busy share of the trainer's default step
  workers MODE   frames/s summed over 1, 2 and 4 worker processes: eager, compiled, CUDA graphs
                 (under MPS where the compute mode needs it)
  epoch          evaluation and a last.pt write against a training epoch of the protocol
  projection     the guide's protocol in GPU-hours, for the default step and the best set-up
  step VARIANT   compiled, compiled with CUDA graphs (with their compile seconds), fp32,
                 deterministic algorithms off
  memory         peak GPU memory of the default step
  kernels        operators (kernel launches) of one default step (benchmarks/step_ops.py)
  determinism    two same-seed runs, each in a fresh process
  resume         a run stopped mid-epoch in one process and resumed in another, against the first

A phase that fails prints its reason and the check goes on; one that would not fit in the
rest of ``--budget`` is skipped with a line saying so. With ``$OUT`` set, the lines are also
written to ``$OUT/gpu_check.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]  # the checkout's package, uninstalled

import torch  # noqa: E402

from psvae_opt.config import LossConfig, ModelConfig, TrainConfig, dump_config, load_config  # noqa: E402
from psvae_opt.data import load_session, split_frames, synth_session  # noqa: E402
from psvae_opt.training import gpus  # noqa: E402
from psvae_opt.training.devices import DeviceData, cpu_has_bf16, resolve_precision  # noqa: E402
from psvae_opt.training.loop import fit  # noqa: E402
from psvae_opt.training.run_folder import save_atomic  # noqa: E402
from psvae_opt.training.steps import build_model, build_training, evaluate, make_forward_loss, train_step  # noqa: E402

SIZES = {  # frame side, channels, batch, timed steps, warm-up steps, worker window (s), fit epochs, frames per trial
    "full": (128, (32, 64, 128, 256, 512), 128, 40, 10, 10.0, 3, 512),
    "quick": (32, (4, 8, 8, 8, 8), 16, 3, 1, 1.0, 2, 32),
}
PROTOCOL = {"models": 4 + 4 * 5, "epochs": 200, "frames": 100_000}
TRAIN_SHARE = 0.8  # data.split = "8;1;1;0": the training trials' share of the frames
TOLERANCE = 1e-3  # largest relative difference of two same-seed runs with autotuning (README)
N_LABELS = 4


class Report:
    """Prints each line with the seconds since the start, keeps them for the JSON copy, and
    runs phases within the budget: a failure or a phase that would not fit is a line too."""

    def __init__(self, budget: float) -> None:
        self.start, self.budget, self.lines = time.monotonic(), budget, []

    def left(self) -> float:
        return self.budget - (time.monotonic() - self.start)

    def line(self, name: str, text: str, **values) -> None:
        elapsed = time.monotonic() - self.start
        print(f"{name}: {text} [{elapsed:.1f} s]", flush=True)
        self.lines.append({"name": name, "text": text, "elapsed_s": round(elapsed, 2), **values})

    def phase(self, name: str, need: float, fn, *args):
        """``fn(*args)``, or a line why not: the budget left is under ``need`` seconds, or it failed."""
        if self.left() < need:
            self.line(name, f"skipped: budget ({self.left():.0f} s left, it needs about {need:.0f} s)")
            return None
        try:
            return fn(*args)
        except TimeoutError as exc:  # what it needed was more than the budget left
            self.line(name, f"stopped at the budget: {exc}")
            return None
        except Exception as exc:  # out of memory, no compiler, a dead worker: a line, not the end
            first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")
            self.line(name, f"failed: {type(exc).__name__}: {first[:200]}")
            return None

    def write(self) -> None:
        out = os.environ.get("OUT")
        if out:
            Path(out).mkdir(parents=True, exist_ok=True)
            (Path(out) / "gpu_check.json").write_text(json.dumps(self.lines, indent=1))


def machine_line(device: torch.device) -> str:
    facts = f"torch {torch.__version__}, CUDA {torch.version.cuda}, Python {sys.version.split()[0]}"
    if device.type != "cuda":
        return f"none (device {device}); native bf16 on this CPU {cpu_has_bf16()}; {os.cpu_count()} CPUs; {facts}"
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True
        ).stdout.split()
    except OSError:
        out = []
    major, minor = torch.cuda.get_device_capability(device)
    mode = gpus.compute_modes().get(str(device.index or 0), "?")
    return (
        f"{torch.cuda.get_device_name(device)}; driver {out[0] if out else '?'}; compute mode {mode}; "
        f"capability {major}.{minor}; native bf16 {gpus.native_bf16(device)}; {facts}"
    )


class Bench:
    """The trainer's step (build_training, make_forward_loss, train_step) on random frames held
    on the device, with the trainer's cuDNN settings."""

    def __init__(self, size: tuple, device: torch.device, precision: str, mode: str | None, deterministic=True):
        side, channels, batch = size[0], size[1], size[2]
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = deterministic, TrainConfig().autotune
        torch.manual_seed(0)
        self.model = build_model(ModelConfig(channels=channels), (1, side, side), N_LABELS, seed=0)
        self.model.to(device, memory_format=torch.channels_last)
        self.optimizer, self.network = build_training(self.model, 1e-4, 0.0, precision, mode)
        self.loss_cfg = LossConfig(alpha=1000.0, beta=5.0, anneal_epochs=0)
        pool = 8 * batch
        self.data = DeviceData(
            frames=torch.randint(0, 256, (pool, 1, side, side), dtype=torch.uint8, device=device),
            labels=torch.randn(pool, N_LABELS, device=device),
            masks=torch.ones(pool, N_LABELS, device=device),
            splits={"val": torch.arange(min(pool, 1024), device=device)},
        )
        self.order = torch.randint(0, pool, (16, batch), device=device)
        self.forward = make_forward_loss(self.loss_cfg, 100_000, precision, mode)
        self.device, self.precision, self.batch, self.n = device, precision, batch, 0

    def step(self) -> None:
        x, y, mask = self.data.batch(self.order[self.n % len(self.order)], True)
        self.n += 1
        train_step(self.network, self.optimizer, x, y, mask, self.forward)

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
        busy_us = sum(getattr(e, "self_device_time_total", 0) for e in prof.key_averages())
        return busy_us / 1e6 / wall


def step_phase(report: Report, name: str, size, device, precision: str, mode=None, deterministic=True):
    start = time.perf_counter()
    bench = Bench(size, device, precision, mode, deterministic)
    warm = bench.seconds(size[4])  # autotuning, and compilation for a compiled step
    set_up = time.perf_counter() - start
    wall = bench.seconds(size[3])
    busy = bench.busy_share(min(size[3], 10))
    ms, rate = 1000 * wall / size[3], size[3] * size[2] / wall
    shown = f"{100 * busy:.0f}%" if busy is not None else "-"
    extra = f"; set-up and warm-up {set_up:.1f} s" if mode else ""
    report.line(
        name,
        f"{ms:.2f} ms/step, {rate:,.0f} frames/s, GPU busy {shown} ({precision}, batch {size[2]}{extra})",
        frames_per_s=rate, ms_per_step=ms, warmup_s=warm,
    )  # fmt: skip
    return rate, bench


def child_worker(args: argparse.Namespace) -> int:
    """One worker of a workers line: warm up, say ready, train through the window, report."""
    size, device = SIZES[args.size], torch.device(args.device)
    torch.set_num_threads(args.threads)
    bench = Bench(size, device, args.precision, args.mode)  # the trainer's cuDNN settings
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


def _reply(proc: subprocess.Popen, what: str) -> str:
    line = proc.stdout.readline()
    if not line:  # it died: its exit code and the last line it wrote
        code = proc.wait()
        tail = (proc.stderr.read().strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"a worker exited with code {code} before {what}: {tail[:160]}")
    return line.strip()


def workers_phase(report: Report, args, precision: str, mode: str | None, counts: list[int], share: float) -> float:
    """Summed frames/s of 1, 2, 4 worker processes; they are killed when ``share`` of the
    budget left is spent (a line says so)."""
    label = {None: "eager", "default": "compiled", "reduce-overhead": "cuda-graphs"}[mode]
    rates: dict[int, float] = {}
    deadline = time.monotonic() + share * report.left()
    for n in counts:
        argv = [sys.executable, os.path.abspath(__file__), "--child", "worker", "--device", args.device]
        threads = 1 if args.size == "quick" else max(1, (os.cpu_count() or 1) // n)  # tiny steps: one thread
        argv += ["--precision", precision, "--size", args.size, "--threads", str(threads)]
        argv += ["--mode", mode] if mode else []
        procs = [
            subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(n)
        ]
        watchdog = threading.Timer(max(deadline - time.monotonic(), 0.0), _kill_all, (procs,))
        watchdog.start()
        try:
            for proc in procs:
                if _reply(proc, "it was ready") != "ready":
                    raise RuntimeError("a worker answered something else than ready")
            go = time.time() + 0.5
            for proc in procs:
                proc.stdin.write(f"{go}\n")
                proc.stdin.flush()
            rates[n] = sum(json.loads(_reply(proc, "it reported"))["rate"] for proc in procs)
        except RuntimeError:
            if time.monotonic() < deadline:
                raise
            break  # the budget's share is spent: the counts measured so far
        finally:
            watchdog.cancel()
            for proc in procs:
                if proc.poll() is None and n not in rates:
                    proc.kill()
                proc.wait()
    if not rates:
        raise TimeoutError(f"no worker reported within its share of the budget ({share * 100:.0f}% of what was left)")
    shown = ", ".join(f"{n}: {r:,.0f}" for n, r in rates.items())
    shown += "" if len(rates) == len(counts) else f" (then the budget's share was spent: {len(rates)} of {len(counts)})"
    report.line(f"workers {label}", f"summed frames/s by worker processes ({precision}) {shown}", rates=rates)
    return max(rates.values())


def _kill_all(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.kill()


def needs_mps(device: torch.device) -> str | None:
    """Why several processes cannot share the GPU (exclusive compute mode, no MPS), or None."""
    if device.type != "cuda":
        return None
    mode = gpus.compute_modes().get(str(device.index or 0), "")
    if mode in gpus.EXCLUSIVE_MODES and not gpus.mps_running():
        return f"compute mode {mode} and no MPS daemon: start nvidia-cuda-mps-control -d"
    return None


def epoch_phase(report: Report, bench: Bench, rate: float, folder: Path) -> float:
    """Evaluation (training rows and validation: 512 + 10% of the frames) and one last.pt write,
    against a training epoch of the protocol's training frames at ``rate``."""
    epoch_frames = int(PROTOCOL["frames"] * TRAIN_SHARE)
    val, wanted = bench.data.splits["val"], 512 + PROTOCOL["frames"] // 10
    bench.sync()
    start, evaluated = time.perf_counter(), 0
    while evaluated < wanted:
        evaluate(bench.model, bench.data, val, bench.loss_cfg, epoch=0, batch_size=1024, channels_last=True)
        evaluated += len(val)
    bench.sync()
    eval_s = (time.perf_counter() - start) * wanted / evaluated
    state = {"model": bench.model.state_dict(), "optimizer": bench.optimizer.state_dict()}
    start = time.perf_counter()
    save_atomic(state, folder / "last.pt")
    ckpt_s = time.perf_counter() - start
    mb = (folder / "last.pt").stat().st_size / 1e6
    epoch_s = epoch_frames / rate
    report.line(
        "epoch",
        f"training {epoch_frames:,} frames {epoch_s:.2f} s; evaluation {eval_s:.2f} s ({100 * eval_s / epoch_s:.0f}%); "
        f"last.pt ({mb:.0f} MB) {ckpt_s:.2f} s ({100 * ckpt_s / epoch_s:.0f}% if every epoch; at most once a minute)",
    )  # fmt: skip
    return eval_s / epoch_s


def projection_phase(report: Report, name: str, rate: float, eval_share: float) -> None:
    train = PROTOCOL["frames"] * TRAIN_SHARE  # an epoch trains on the split's training frames only
    total = PROTOCOL["models"] * PROTOCOL["epochs"] * train
    hours = total / max(rate, 1e-9) * (1 + eval_share) / 3600
    report.line(
        f"projection {name}",
        f"{PROTOCOL['models']} models x {PROTOCOL['epochs']} epochs x {train:,.0f} training frames at {rate:,.0f} "
        f"frames/s plus {100 * eval_share:.0f}% evaluation = {hours:.2f} GPU-hours (target 1.5)",
        gpu_hours=hours,
    )  # fmt: skip


def kernels_phase(report: Report, bench: Bench) -> None:
    from step_ops import OpCounter

    bench.step()
    with OpCounter() as counter:
        bench.step()
    total = sum(counter.ops.values())
    casts = counter.ops.get("_to_copy", 0)
    report.line("kernels", f"{total - counter.views} operators launched per default step ({casts} casts)")


def child_fit(args: argparse.Namespace) -> int:
    """One training run in this fresh process (determinism and resume): ``--stop-after`` stop
    polls, then the run saves last.pt and stops, as a preempted worker's does."""
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(Path(args.config))
    session = load_session(cfg.data.path)
    frames = split_frames(session, cfg.data.split_counts, cfg.data.data_seed)
    polls: list[int] = []
    stop = (lambda: polls.append(1) or len(polls) > args.stop_after) if args.stop_after else None
    try:
        fit(cfg.model, cfg.loss, cfg.train, session, frames, args.out, config_text=dump_config(cfg), progress=False,
            should_stop=stop)  # fmt: skip
    except KeyboardInterrupt:
        print("stopped", flush=True)
    return 0


def largest_difference(a: Path, b: Path) -> float:
    rows_a, rows_b = (p.read_text().splitlines()[1:] for p in (a / "metrics.csv", b / "metrics.csv"))
    worst = 0.0 if len(rows_a) == len(rows_b) else float("inf")
    for ra, rb in zip(rows_a, rows_b):
        for x, y in zip(ra.split(",")[2:], rb.split(",")[2:]):
            worst = max(worst, abs(float(x) - float(y)) / max(abs(float(x)), 1e-12))
    return worst


def fresh_fit(config: Path, out: Path, seconds: float, stop_after: int = 0) -> None:
    """One training run in a new process, killed after ``seconds``."""
    argv = [sys.executable, os.path.abspath(__file__), "--child", "fit", "--config", str(config), "--out", str(out)]
    argv += ["--threads", "1"] if "quick" in config.name else []
    try:
        done = subprocess.run([*argv, "--stop-after", str(stop_after)], capture_output=True, text=True, timeout=seconds)
    except subprocess.TimeoutExpired:
        raise TimeoutError(f"a training process did not finish within the budget left ({seconds:.0f} s)") from None
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"the training process exited with code {done.returncode}: {tail[:160]}")


def determinism_phase(report: Report, config: Path, folder: Path) -> None:
    fresh_fit(config, folder / "a", report.left())
    fresh_fit(config, folder / "b", report.left())
    same = largest_difference(folder / "a", folder / "b")
    verdict = "within" if same <= TOLERANCE else "OVER"
    report.line(
        "determinism",
        f"two same-seed runs in fresh processes (autotune on): largest relative difference {same:.2e} "
        f"({verdict} {TOLERANCE:g})", difference=same,
    )  # fmt: skip


def resume_phase(report: Report, config: Path, folder: Path, polls_per_epoch: int) -> None:
    if not (folder / "a" / "summary.json").exists():
        fresh_fit(config, folder / "a", report.left())
    fresh_fit(config, folder / "cut", report.left(), stop_after=int(1.5 * polls_per_epoch))  # mid-epoch 1
    fresh_fit(config, folder / "cut", report.left())
    resumed = largest_difference(folder / "a", folder / "cut")
    report.line(
        "resume",
        f"stopped mid-epoch 1 and resumed in another process vs uninterrupted: largest relative difference "
        f"{resumed:.2e} ({'identical' if resumed == 0 else 'differs'})", difference=resumed,
    )  # fmt: skip


def run_check(args: argparse.Namespace) -> int:
    size, device = SIZES[args.size], torch.device(args.device)
    report, cuda = Report(args.budget), device.type == "cuda"
    if args.quick and not cuda:
        torch.set_num_threads(1)  # tiny steps: one thread each, for this process and its workers
    no_cuda = "skipped: no CUDA (CPU run)"
    report.line("machine", machine_line(device))
    auto = resolve_precision("auto", device)
    counts = args.workers or ([1, 2] if args.quick else [1, 2, 4])
    found = report.phase("step default", 5, step_phase, report, "step default", size, device, auto)
    default_rate, bench = found or (0.0, None)
    best, modes = default_rate, [None, "default", "reduce-overhead"]
    for mode in modes:
        label = f"workers {({None: 'eager', 'default': 'compiled', 'reduce-overhead': 'cuda-graphs'})[mode]}"
        if mode and not cuda:
            report.line(label, no_cuda)
            continue
        if cuda and max(counts) > 1 and (why := needs_mps(device)):
            report.line(label, f"skipped: {why}")
            continue
        share = 0.3 if mode is None else 0.2  # of the budget left: the later phases keep theirs
        rate = report.phase(label, 8 if args.quick else 60, workers_phase, report, args, auto, mode, counts, share)
        best = max(best, rate or 0.0)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        folder = Path(tmp)
        eval_share = 0.0
        if bench is not None:
            eval_share = report.phase("epoch", 2, epoch_phase, report, bench, default_rate, folder) or 0.0
        for name, rate in (("default", default_rate), ("best", best)):
            if rate:
                projection_phase(report, name, rate, eval_share)
            else:
                report.line(f"projection {name}", "skipped: no step was measured")
        variants = [
            ("step compiled", auto, "default", True), ("step compiled cuda-graphs", auto, "reduce-overhead", True),
            ("step fp32", "fp32", None, True), ("step deterministic off", auto, None, False),
        ]  # fmt: skip
        for name, precision, mode, deterministic in variants:
            if (mode and not cuda) or (name == "step deterministic off" and not cuda):
                report.line(name, no_cuda)
                continue
            report.phase(name, 5 if args.quick else 90, step_phase, report, name, size, device, precision, mode,
                         deterministic)  # fmt: skip
        if cuda and bench is not None:
            report.line("memory", f"peak {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB (all steps above)")
        else:
            report.line("memory", no_cuda)
        if bench is not None:
            report.phase("kernels", 2, kernels_phase, report, bench)
        h5 = synth_session(folder / "check.h5", size=size[0], trials=10, frames=size[7], seed=0)
        settings = [f"data.path={h5}", "data.split=8;1;1;0", f"model.channels={list(size[1])}",
                    f"train.max_epochs={size[6]}", f"train.batch_size={size[2]}", "loss.anneal_epochs=2",
                    f"train.device={device}"]  # fmt: skip
        config = folder / f"check-{args.size}.toml"
        config.write_text(dump_config(load_config(None, settings)))
        per_epoch = int(len(load_session(h5).images) * TRAIN_SHARE) // size[2] + 1  # stop polls per epoch
        report.phase("determinism", 10 if args.quick else 120, determinism_phase, report, config, folder)
        report.phase("resume", 10 if args.quick else 120, resume_phase, report, config, folder, per_epoch)
    report.write()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="tiny sizes (the same code on the CPU; a test runs it)")
    p.add_argument("--budget", type=float, default=480.0, help="seconds the whole check may take (default 480)")
    p.add_argument("--dir", type=Path, default=None, help="where runs and the timed checkpoint go (default a temp dir)")
    p.add_argument("--workers", type=int, nargs="+", default=None, help="worker counts (default 1 2 4; quick 1 2)")
    p.add_argument("--size", default="full", help=argparse.SUPPRESS)
    p.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    p.add_argument("--mode", default=None, help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--child", choices=("worker", "fit"), help=argparse.SUPPRESS)
    p.add_argument("--config", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--stop-after", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.budget <= 0:
        p.error(f"--budget {args.budget:g}: give the seconds the check may take, above 0")
    if args.child == "worker":
        return child_worker(args)
    if args.child == "fit":
        return child_fit(args)
    args.size = "quick" if args.quick else "full"
    return run_check(args)


if __name__ == "__main__":
    sys.exit(main())
