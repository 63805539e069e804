"""`psvae-opt data ...`: check a session file, write the demo dataset, import real data."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from psvae_opt.commands import Command

if TYPE_CHECKING:
    from psvae_opt.data import ImportSummary, Session

log = logging.getLogger(__name__)


def _add_data_check(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", metavar="FILE", help="BehaveNet-layout HDF5 file(s), one per session")
    p.add_argument("--split", default="8;1;1;0", help="train;val;test;gap trials per block to report")


def _print_one(s: Session, i: int, split: str) -> bool:
    """The summary of session ``i`` of ``s``; whether its labels are z-scored."""
    import numpy as np

    from psvae_opt.config import parse_split
    from psvae_opt.data import frame_indices, split_trials
    from psvae_opt.errors import DataError

    trials = np.flatnonzero(s.trial_sessions == i)
    a, b = int(s.trial_starts[trials[0]]), int(s.trial_starts[trials[-1] + 1])
    labels, masks = s.labels[a:b], s.masks[a:b]
    lengths = np.diff(s.trial_starts)[trials]
    print(f"file          {s.paths[i]}")
    print(f"trials        {len(trials)} ({lengths.min()}-{lengths.max()} frames each)")
    print(f"frames        {b - a}")
    print(f"frame shape   {s.frame_shape} (C, H, W), uint8")
    print(f"labels        {s.n_labels}: {', '.join(s.label_names)}")
    print(f"masked        {100 * (1.0 - masks.mean()):.2f}% of label entries")
    n_valid = np.maximum(masks.sum(axis=0), 1)  # masked entries are stored as 0
    means = labels.sum(axis=0) / n_valid
    stds = np.sqrt((np.where(masks > 0, labels - means, 0.0) ** 2).sum(axis=0) / n_valid)
    zscored = bool(np.all(np.abs(means) < 0.1) and np.all(np.abs(stds - 1) < 0.1))
    print(
        f"z-scored      {'yes' if zscored else 'NO'} (label means {means.min():.2f}..{means.max():.2f}, "
        f"stds {stds.min():.2f}..{stds.max():.2f})"
    )
    if s.factors is not None:
        print(f"factors       {', '.join(s.factor_names)}")
    try:
        splits = split_trials(len(trials), parse_split(split), 0)
    except DataError as exc:  # the file is fine; training it needs another split (or more trials)
        print(f"split {split}  warning: {exc}")
    else:
        starts = s.trial_starts[trials[0] : trials[-1] + 2] - a
        sizes = ", ".join(f"{k} {len(v)} trials / {len(frame_indices(starts, v))} frames" for k, v in splits.items())
        print(f"split {split}  {sizes}")
    return zscored


def _run_data_check(args: argparse.Namespace) -> int:
    from psvae_opt.config import ModelConfig, parse_split
    from psvae_opt.data import load_session, split_frames
    from psvae_opt.errors import DataError
    from psvae_opt.model.network import check_frame_shape

    s = load_session(args.files)
    try:
        check_frame_shape(s.frame_shape, kernel_size=ModelConfig().kernel_size)
    except DataError as exc:
        raise DataError(f"{s.path}: images/{s.trial_names[0]}: {exc}") from None
    for i in range(s.n_sessions):
        if i:
            print()
        if not _print_one(s, i, args.split):
            log.warning("%s: labels are not z-scored: psvae-opt expects z-scored labels", s.paths[i])
    if s.n_sessions > 1:
        try:
            splits = split_frames(s, parse_split(args.split), 0)
        except DataError as exc:
            sizes = f"warning: {exc}"
        else:
            sizes = ", ".join(f"{k} {len(v)} frames" for k, v in splits.items())
        print()
        print(
            f"combined      {s.n_sessions} sessions ({', '.join(s.session_names)}): {s.n_trials} trials, "
            f"{s.n_frames} frames, {s.frame_shape} (C, H, W), {s.n_labels} labels; split {args.split} "
            f"within each session: {sizes}"
        )
    return 0


def _add_data_synth(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", help="HDF5 file to write")
    p.add_argument("--size", type=int, default=64, help="frame size in pixels: 32, 64, 128, 192 or 256 (default 64)")
    p.add_argument("--trials", type=int, default=40)
    p.add_argument("--frames", type=int, default=100, help="frames per trial")
    p.add_argument("--views", type=int, default=1, help="1 (side) or 2 (side + bottom, as channels)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--scene",
        default="demo",
        help="demo, three_unlabelled, correlated, equal_effect or distractor (README, 'Data'; default demo)",
    )
    p.add_argument("--if-missing", action="store_true", help="do nothing when OUT already exists")


def _run_data_synth(args: argparse.Namespace) -> int:
    from psvae_opt.data import synth_session

    if args.if_missing and Path(args.out).exists():
        print(f"{args.out} exists; kept")
        return 0
    path = synth_session(
        args.out,
        size=args.size,
        trials=args.trials,
        frames=args.frames,
        views=args.views,
        seed=args.seed,
        scene=args.scene,
    )
    print(
        f"wrote {path}: scene {args.scene}, {args.trials} trials x {args.frames} frames, "
        f"{args.views}x{args.size}x{args.size}"
    )
    return 0


def _add_import_options(p: argparse.ArgumentParser, trial_length: int, trial_help: str, repeat: bool) -> None:
    if repeat:
        p.add_argument(
            "--labels",
            dest="labels",
            action="append",
            required=True,
            metavar="FILE",
            help="pose file (format detected from the content); once for all views, or once per --video in order",
        )
    else:
        p.add_argument("--labels", required=True, metavar="FILE", help="pose file (format detected from the content)")
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
    _add_import_options(p, 100, "frames per trial; the last, shorter trial is kept (default 100)", repeat=True)
    p.add_argument(
        "--likelihood-threshold",
        type=float,
        default=0.9,
        help="points whose likelihood (score, confidence) is below it are masked (default 0.9)",
    )
    p.add_argument(
        "--truncate", action="store_true", help="video and labels of different lengths: keep their common first frames"
    )
    p.add_argument(
        "--track", type=int, default=0, help="animal of a multi-animal file (SLEAP track, DeepLabCut individual)"
    )
    p.add_argument(
        "--pose-estimation",
        metavar="NAME",
        help="the PoseEstimation container of an NWB file that holds several (animals, cameras)",
    )
    p.add_argument(
        "--view-names",
        type=_names,
        metavar="A,B,...",
        help="with one --labels per --video: view names for the keypoints (default: the videos' file stems)",
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
    if s.padded:
        print(f"padded        {s.padded}")


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
        pose_estimation=args.pose_estimation,
        view_names=args.view_names,
    )
    _print_summary(summary)
    return 0


def _add_data_import_labeled(p: argparse.ArgumentParser) -> None:
    p.add_argument("--images", required=True, metavar="DIR", help="DeepLabCut project folder (holds labeled-data/)")
    _add_import_options(p, 1, "frames per trial (default 1: labeled frames are not consecutive)", repeat=False)


def _run_data_import_labeled(args: argparse.Namespace) -> int:
    from psvae_opt.data import import_labeled

    summary = import_labeled(
        args.images, args.labels, args.out, size=args.size, trial_length=args.trial_length, keypoints=args.keypoints
    )
    _print_summary(summary)
    return 0


COMMANDS: dict[str, dict[str, Command]] = {
    "data": {
        "check": Command(
            "validate BehaveNet-layout HDF5 files (one or several sessions) and print a summary",
            _add_data_check,
            _run_data_check,
        ),
        "synth": Command(
            "write the synthetic demo dataset (known generative factors)", _add_data_synth, _run_data_synth
        ),
        "import": Command(
            "import videos and their pose predictions (DeepLabCut, Lightning Pose, SLEAP, NWB)",
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
