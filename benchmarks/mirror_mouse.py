"""Reconstruction quality on real data: the mirror-mouse study's model on the mirror-mouse session.

Imports ``../shared/data/mirror-mouse-eks`` at 64x64 (as in the README's "Importing real data")
into a temporary folder, or takes an imported file with ``--data``, trains one PS-VAE with the
model, loss and optimiser of ``studies/mirror-mouse.toml`` and prints validation and test label
R^2 and pixel MSE of the best checkpoint, with the wall time and the CPU it ran on.

    python benchmarks/mirror_mouse.py                                # the study file as it is
    python benchmarks/mirror_mouse.py --alpha 1000 --beta 1 --epochs 60 --lr 1e-4 --seed 0
    python benchmarks/mirror_mouse.py --data data/mirror-mouse-eks.h5 --json

The last line of ``--json`` output is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from machine import cpu_name

from psvae_opt.commands import add_config_arguments
from psvae_opt.config import load_config
from psvae_opt.data import import_video, load_session, split_frames
from psvae_opt.training.devices import resolve_precision, tune_cpu_allocator
from psvae_opt.training.loop import fit

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO.parent / "shared" / "data" / "mirror-mouse-eks"
VIDEO, LABELS = "180607_004.mp4", "180607_004.train_frames=75.rng=0.csv"


def pooled_r2(y: np.ndarray, y_hat: np.ndarray, mask: np.ndarray) -> float:
    """BehaveNet's label R^2: one R^2 over the valid entries of all labels together, (N, L) arrays.

    psvae-opt's ``label_r2`` is per label, weighted by label variance; pooling also counts the
    spread between the labels' means as explained variance.
    """
    valid = mask > 0
    truth, pred = y[valid], y_hat[valid]
    ss_tot = ((truth - truth.mean()) ** 2).sum()
    return float(1.0 - ((truth - pred) ** 2).sum() / ss_tot) if ss_tot > 0 else float("nan")


def imported_session(source: Path, out: Path, size: int) -> Path:
    """Import the mirror-mouse video and its pose predictions as the README does (``--truncate``)."""
    summary = import_video([source / VIDEO], source / LABELS, out, size=size, truncate=True)
    return summary.path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_arguments(p, required=False)
    p.set_defaults(config=str(REPO / "studies" / "mirror-mouse.toml"))
    p.add_argument("--data", help="an imported session (.h5); default: import --source into a temporary folder")
    p.add_argument("--source", default=str(SOURCE), help="folder holding the mirror-mouse video and pose file")
    p.add_argument("--size", type=int, default=64, help="frame size of the import (default 64)")
    p.add_argument("--epochs", type=int, help="train.max_epochs (default: the study file's)")
    p.add_argument("--alpha", type=float, help="loss.alpha (default: the study file's)")
    p.add_argument("--beta", type=float, help="loss.beta (default: the study file's)")
    p.add_argument("--lr", type=float, help="train.learning_rate (default: the study file's)")
    p.add_argument("--seed", type=int, help="train.model_seed (default: the study file's)")
    p.add_argument("--json", action="store_true", help="end with one JSON line of every figure")
    return p


def _overrides(args: argparse.Namespace, data: Path) -> list[str]:
    flags = {
        "train.max_epochs": args.epochs,
        "loss.alpha": args.alpha,
        "loss.beta": args.beta,
        "train.learning_rate": args.lr,
        "train.model_seed": args.seed,
    }
    given = [f"{key}={value!r}" for key, value in flags.items() if value is not None]
    return [f"data.path={data}", "train.device=cpu", *given, *args.overrides]


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    tune_cpu_allocator()
    with tempfile.TemporaryDirectory(prefix="psvae-mirror-") as tmp:
        work = Path(tmp)
        data = Path(args.data) if args.data else imported_session(Path(args.source), work / "mirror.h5", args.size)
        cfg = load_config(args.config, _overrides(args, data))
        session = load_session(data)
        frames = split_frames(session, cfg.data.split_counts, cfg.data.data_seed, mode=cfg.data.split_mode)
        precision = resolve_precision(cfg.train.precision, torch.device("cpu"))
        print(
            f"data {data.name}: {session.n_frames} frames {session.frame_shape}, {session.n_labels} labels, "
            f"split {cfg.data.split} ({cfg.data.split_mode}): " + ", ".join(f"{k} {len(v)}" for k, v in frames.items())
        )
        print(
            f"model channels {list(cfg.model.channels)}, n_unsup {cfg.model.n_unsup}; alpha {cfg.loss.alpha:g}, "
            f"beta {cfg.loss.beta:g}, anneal_epochs {cfg.loss.anneal_epochs}; lr {cfg.train.learning_rate:g}, "
            f"{cfg.train.max_epochs} epochs, batch {cfg.train.batch_size}, seed {cfg.train.model_seed}, "
            f"precision {precision}"
        )
        start = time.perf_counter()
        result = fit(cfg.model, cfg.loss, cfg.train, session, frames, work / "run", progress=False)
        seconds = time.perf_counter() - start
        y_hat = np.load(work / "run" / "latents.npz")["y_hat"]
    pooled = {split: pooled_r2(session.labels[idx], y_hat[idx], session.masks[idx]) for split, idx in frames.items()}
    figures = {
        "best_epoch": result.best_epoch,
        "epochs": result.epochs_run,
        "seconds": round(seconds, 1),
        "cpu": cpu_name(),
        "threads": torch.get_num_threads(),
        "precision": precision,
        "alpha": cfg.loss.alpha,
        "beta": cfg.loss.beta,
        "learning_rate": cfg.train.learning_rate,
        "model_seed": cfg.train.model_seed,
    }
    for split in ("val", "test"):
        m = result.metrics.get(split, {})
        for key in ("label_r2", "pixel_mse", "label_mse"):
            figures[f"{split}_{key}"] = m.get(key, float("nan"))
        figures[f"{split}_label_r2_pooled"] = pooled[split]
        print(
            f"{split:4s}  label_r2 {figures[f'{split}_label_r2']:.4f}  pixel_mse {figures[f'{split}_pixel_mse']:.5f}  "
            f"label_mse {figures[f'{split}_label_mse']:.4f}  (BehaveNet's pooled label R^2 {pooled[split]:.4f})"
        )
    print(
        f"best epoch {result.best_epoch} of {result.epochs_run}; {seconds:.0f} s on {figures['cpu']} "
        f"({figures['threads']} threads)"
    )
    if args.json:
        print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
