"""Demo quality: how fast a CPU training run on the demo dataset learns the labels.

Writes `data synth --size 64` (40 trials x 100 frames unless told otherwise), trains one
PS-VAE with the demo study file's model on the CPU, and prints validation label R^2 and the
wall time after every epoch, then the first epoch that reached the target.

    python benchmarks/demo_quality.py                 # target label_r2 >= 0.9, at most 10 minutes
    python benchmarks/demo_quality.py --minutes 5 --target 0.95
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from psvae_opt.commands import add_config_arguments
from psvae_opt.config import load_config
from psvae_opt.data import load_session, split_frames, synth_session
from psvae_opt.training.devices import resolve_precision, tune_cpu_allocator
from psvae_opt.training.loop import fit

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_arguments(p, required=False)
    p.set_defaults(config=str(REPO / "studies" / "demo.toml"))
    p.add_argument("--trials", type=int, default=40)
    p.add_argument("--frames", type=int, default=100)
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--minutes", type=float, default=10.0, help="stop after this much training time")
    p.add_argument("--target", type=float, default=0.9, help="validation label R^2 to reach")
    args = p.parse_args(argv)

    tune_cpu_allocator()
    work = Path(tempfile.mkdtemp(prefix="psvae-quality-"))
    data = synth_session(work / "demo.h5", size=64, trials=args.trials, frames=args.frames, seed=0)
    cfg = load_config(
        args.config, [f"data.path={data}", f"train.max_epochs={args.epochs}", "train.device=cpu", *args.overrides]
    )
    session = load_session(data)
    frames = split_frames(session, cfg.data.split_counts, cfg.data.data_seed, mode=cfg.data.split_mode)
    print(
        f"demo data: {session.n_frames} frames {session.frame_shape}, {len(frames['train'])} for training; "
        f"model channels {list(cfg.model.channels)}, {torch.get_num_threads()} CPU threads, "
        f"precision {resolve_precision(cfg.train.precision, torch.device('cpu'))}"
    )
    start, reached = time.perf_counter(), None

    def report(epoch: int, rows: dict) -> None:
        nonlocal reached
        r2, elapsed = rows["val"]["label_r2"], time.perf_counter() - start
        print(
            f"epoch {epoch:3d}  {elapsed:7.1f} s  val label_r2 {r2:.4f}  val pixel_mse {rows['val']['pixel_mse']:.5f}",
            flush=True,
        )
        if reached is None and r2 >= args.target:
            reached = (epoch, elapsed, r2)

    def out_of_time() -> bool:
        return time.perf_counter() - start > 60 * args.minutes

    try:
        fit(
            cfg.model,
            cfg.loss,
            cfg.train,
            session,
            frames,
            work / "run",
            progress=False,
            on_epoch=report,
            should_stop=out_of_time,
        )
    except KeyboardInterrupt:
        print(f"stopped at the {args.minutes:g}-minute limit")
    if reached is None:
        print(f"validation label_r2 never reached {args.target}")
        return 1
    epoch, elapsed, r2 = reached
    print(
        f"reached validation label_r2 {r2:.4f} >= {args.target} at epoch {epoch}, after {elapsed:.0f} s of CPU training"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
