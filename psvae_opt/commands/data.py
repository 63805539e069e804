"""`psvae-opt data ...`: check a session file, write the demo dataset."""

from __future__ import annotations

import argparse
import logging

from psvae_opt.commands import Command

log = logging.getLogger(__name__)


def _add_data_check(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="a BehaveNet-layout HDF5 file")
    p.add_argument("--split", default="8;1;1;0", help="train;val;test;gap trials per block to report")


def _run_data_check(args: argparse.Namespace) -> int:
    import numpy as np

    from psvae_opt.config import parse_split
    from psvae_opt.data import frame_indices, load_session, split_trials
    from psvae_opt.model import check_frame_shape

    s = load_session(args.file)
    check_frame_shape(s.frame_shape, kernel_size=5)
    lengths = np.diff(s.trial_starts)
    print(f"file          {s.path}")
    print(f"trials        {s.n_trials} ({lengths.min()}-{lengths.max()} frames each)")
    print(f"frames        {s.n_frames}")
    print(f"frame shape   {s.frame_shape} (C, H, W), uint8")
    print(f"labels        {s.n_labels}: {', '.join(s.label_names)}")
    print(f"masked        {100 * s.masked_fraction:.2f}% of label entries")
    valid = s.masks > 0
    means = np.array([s.labels[valid[:, k], k].mean() if valid[:, k].any() else 0.0 for k in range(s.n_labels)])
    stds = np.array([s.labels[valid[:, k], k].std() if valid[:, k].any() else 0.0 for k in range(s.n_labels)])
    zscored = np.all(np.abs(means) < 0.1) and np.all(np.abs(stds - 1) < 0.1)
    print(f"z-scored      {'yes' if zscored else 'NO'} (label means {means.min():.2f}..{means.max():.2f}, stds {stds.min():.2f}..{stds.max():.2f})")
    if s.factors is not None:
        print(f"factors       {', '.join(s.factor_names)}")
    splits = split_trials(s.n_trials, parse_split(args.split), 0)
    sizes = ", ".join(f"{k} {len(v)} trials / {len(frame_indices(s.trial_starts, v))} frames" for k, v in splits.items())
    print(f"split {args.split}  {sizes}")
    if not zscored:
        log.warning("labels are not z-scored: psvae-opt expects z-scored labels (DESIGN section 1)")
    return 0


def _add_data_synth(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", help="HDF5 file to write")
    p.add_argument("--size", type=int, default=64, help="frame size in pixels (64 or 128; default 64)")
    p.add_argument("--trials", type=int, default=40)
    p.add_argument("--frames", type=int, default=100, help="frames per trial")
    p.add_argument("--views", type=int, default=1, help="1 (side) or 2 (side + bottom, as channels)")
    p.add_argument("--seed", type=int, default=0)


def _run_data_synth(args: argparse.Namespace) -> int:
    from psvae_opt.data import synth_session

    path = synth_session(args.out, size=args.size, trials=args.trials, frames=args.frames, views=args.views, seed=args.seed)
    print(f"wrote {path}: {args.trials} trials x {args.frames} frames, {args.views}x{args.size}x{args.size}")
    return 0


COMMANDS: dict[str, dict[str, Command]] = {
    "data": {
        "check": Command("validate a BehaveNet-layout HDF5 file and print a summary", _add_data_check, _run_data_check),
        "synth": Command("write the synthetic demo dataset (known generative factors)", _add_data_synth, _run_data_synth),
    }
}
