"""`psvae-opt data ...`: check a session file, write the demo dataset, import real data."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from psvae_opt.commands import Command

if TYPE_CHECKING:
    from psvae_opt.data import ImportSummary

log = logging.getLogger(__name__)


def _add_data_check(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="a BehaveNet-layout HDF5 file")
    p.add_argument("--split", default="8;1;1;0", help="train;val;test;gap trials per block to report")


def _run_data_check(args: argparse.Namespace) -> int:
    import numpy as np

    from psvae_opt.config import ModelConfig, parse_split
    from psvae_opt.data import frame_indices, load_session, split_trials
    from psvae_opt.errors import DataError
    from psvae_opt.model import check_frame_shape

    s = load_session(args.file)
    try:
        check_frame_shape(s.frame_shape, kernel_size=ModelConfig().kernel_size)
    except DataError as exc:
        raise DataError(f"{s.path}: images/{s.trial_names[0]}: {exc}") from None
    lengths = np.diff(s.trial_starts)
    print(f"file          {s.path}")
    print(f"trials        {s.n_trials} ({lengths.min()}-{lengths.max()} frames each)")
    print(f"frames        {s.n_frames}")
    print(f"frame shape   {s.frame_shape} (C, H, W), uint8")
    print(f"labels        {s.n_labels}: {', '.join(s.label_names)}")
    print(f"masked        {100 * s.masked_fraction:.2f}% of label entries")
    n_valid = np.maximum(s.masks.sum(axis=0), 1)  # masked entries are stored as 0
    means = s.labels.sum(axis=0) / n_valid
    stds = np.sqrt((np.where(s.masks > 0, s.labels - means, 0.0) ** 2).sum(axis=0) / n_valid)
    zscored = np.all(np.abs(means) < 0.1) and np.all(np.abs(stds - 1) < 0.1)
    print(
        f"z-scored      {'yes' if zscored else 'NO'} (label means {means.min():.2f}..{means.max():.2f}, "
        f"stds {stds.min():.2f}..{stds.max():.2f})"
    )
    if s.factors is not None:
        print(f"factors       {', '.join(s.factor_names)}")
    try:
        splits = split_trials(s.n_trials, parse_split(args.split), 0)
    except DataError as exc:  # the file is fine; training it needs another split (or more trials)
        print(f"split {args.split}  warning: {exc}")
    else:
        sizes = ", ".join(
            f"{k} {len(v)} trials / {len(frame_indices(s.trial_starts, v))} frames" for k, v in splits.items()
        )
        print(f"split {args.split}  {sizes}")
    if not zscored:
        log.warning("labels are not z-scored: psvae-opt expects z-scored labels (DESIGN section 1)")
    return 0


def _add_data_synth(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", help="HDF5 file to write")
    p.add_argument("--size", type=int, default=64, help="frame size in pixels: 32, 64, 128, 192 or 256 (default 64)")
    p.add_argument("--trials", type=int, default=40)
    p.add_argument("--frames", type=int, default=100, help="frames per trial")
    p.add_argument("--views", type=int, default=1, help="1 (side) or 2 (side + bottom, as channels)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--if-missing", action="store_true", help="do nothing when OUT already exists")


def _run_data_synth(args: argparse.Namespace) -> int:
    from psvae_opt.data import synth_session

    if args.if_missing and Path(args.out).exists():
        print(f"{args.out} exists; kept")
        return 0
    path = synth_session(
        args.out, size=args.size, trials=args.trials, frames=args.frames, views=args.views, seed=args.seed
    )
    print(f"wrote {path}: {args.trials} trials x {args.frames} frames, {args.views}x{args.size}x{args.size}")
    return 0


def _add_import_options(p: argparse.ArgumentParser, trial_length: int, trial_help: str) -> None:
    p.add_argument("--labels", required=True, metavar="FILE", help="pose file; its format is detected from the content")
    p.add_argument("--out", required=True, metavar="OUT.h5", help="HDF5 file to write (BehaveNet layout)")
    p.add_argument("--size", type=int, default=128, help="frames are resized to SIZE x SIZE pixels (default 128)")
    p.add_argument("--trial-length", type=int, default=trial_length, help=trial_help)
    p.add_argument(
        "--keypoints", type=_names, metavar="A,B,...", help="keypoints to keep, in this order (default: all)"
    )


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _add_data_import(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--video",
        dest="videos",
        action="append",
        required=True,
        metavar="VIDEO",
        help="MP4/AVI video; repeat for more camera views of the same session (stacked as channels)",
    )
    _add_import_options(p, 100, "frames per trial; the last, shorter trial is kept (default 100)")
    p.add_argument(
        "--likelihood-threshold",
        type=float,
        default=0.9,
        help="points whose likelihood is below it are masked (default 0.9; SLEAP files have no likelihood)",
    )
    p.add_argument(
        "--truncate", action="store_true", help="video and labels of different lengths: keep their common first frames"
    )
    p.add_argument(
        "--track", type=int, default=0, help="animal of a multi-animal file (SLEAP track, DeepLabCut individual)"
    )


def _print_summary(s: ImportSummary) -> None:
    c, h, w = s.frame_shape
    keypoints = len(s.label_names) // 2
    print(f"wrote {s.path}: {s.n_frames} frames in {s.n_trials} trials, {c}x{h}x{w} (C x H x W)")
    print(f"labels        {len(s.label_names)} ({keypoints} keypoints, x then y), z-scored")
    print(f"masked        {100 * s.masked_fraction:.2f}% of label entries")
    if s.frame_rate is not None:
        print(f"frame rate    {s.frame_rate:g} fps")
    if s.dropped:
        print(f"truncated     {s.dropped}")


def _run_data_import(args: argparse.Namespace) -> int:
    from psvae_opt.data import import_video

    summary = import_video(
        args.videos,
        args.labels,
        args.out,
        size=args.size,
        trial_length=args.trial_length,
        likelihood_threshold=args.likelihood_threshold,
        keypoints=args.keypoints,
        truncate=args.truncate,
        track=args.track,
    )
    _print_summary(summary)
    return 0


def _add_data_import_labeled(p: argparse.ArgumentParser) -> None:
    p.add_argument("--images", required=True, metavar="DIR", help="DeepLabCut project folder (holds labeled-data/)")
    _add_import_options(p, 1, "frames per trial (default 1: labeled frames are not consecutive)")


def _run_data_import_labeled(args: argparse.Namespace) -> int:
    from psvae_opt.data import import_labeled

    summary = import_labeled(
        args.images, args.labels, args.out, size=args.size, trial_length=args.trial_length, keypoints=args.keypoints
    )
    _print_summary(summary)
    return 0


COMMANDS: dict[str, dict[str, Command]] = {
    "data": {
        "check": Command("validate a BehaveNet-layout HDF5 file and print a summary", _add_data_check, _run_data_check),
        "synth": Command(
            "write the synthetic demo dataset (known generative factors)", _add_data_synth, _run_data_synth
        ),
        "import": Command(
            "import videos and their pose predictions (DeepLabCut, Lightning Pose, SLEAP)",
            _add_data_import,
            _run_data_import,
        ),
        "import-labeled": Command(
            "import hand-labeled frames (DeepLabCut's CollectedData)",
            _add_data_import_labeled,
            _run_data_import_labeled,
        ),
    }
}
