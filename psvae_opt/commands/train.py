"""`psvae-opt train`: one PS-VAE from a study file."""

from __future__ import annotations

import argparse

from psvae_opt.commands import Command, add_config_arguments, load_config_from


def _add_train(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder (resumed if it holds last.pt)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _run_train(args: argparse.Namespace) -> int:
    from psvae_opt.commands import environment
    from psvae_opt.config import dump_config
    from psvae_opt.data import load_session, split_frames
    from psvae_opt.training.devices import require_cuda, tune_cpu_allocator
    from psvae_opt.training.loop import fit

    cfg = load_config_from(args)
    tune_cpu_allocator()
    session = load_session(cfg.data.path)
    frames = split_frames(session, cfg.data.split_counts, cfg.data.data_seed, mode=cfg.data.split_mode)
    if cfg.train.device.startswith("cuda"):  # here, where the environment is known, CUDA_VISIBLE_DEVICES is named
        require_cuda(f"train.device = {cfg.train.device!r}", environment.cuda_visible())
    result = fit(
        cfg.model,
        cfg.loss,
        cfg.train,
        session,
        frames,
        args.out,
        config_text=dump_config(cfg),
        progress=not args.no_progress,
    )
    val = result.metrics["val"]
    print(
        f"best epoch {result.best_epoch} of {result.epochs_run}: val loss {val['loss']:.1f}, "
        f"pixel_mse {val['pixel_mse']:.5f}, label_mse {val['label_mse']:.4f}, label_r2 {val['label_r2']:.3f}, "
        f"zu_corr(train) {result.metrics['train']['zu_corr']:.3f}"
    )
    print(f"run folder {result.run_dir}")
    return 0


COMMANDS = {"train": Command("train one PS-VAE from a study file", _add_train, _run_train)}
