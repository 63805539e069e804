"""`psvae-opt model export` and `psvae-opt encode`: the chosen model at work on new data.

What runs is :mod:`psvae_opt.inference`; this module parses arguments and prints.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from psvae_opt.commands import (
    Command,
    add_config_arguments,
    add_storage_argument,
    load_config_from,
    open_database_from,
)
from psvae_opt.errors import ConfigError
from psvae_opt.search.space import STAGE_NUMBERS


def _add_export(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    add_storage_argument(p)
    p.add_argument(
        "--stage", type=int, choices=STAGE_NUMBERS, default=2, help="the stage whose trial to export (default 2)"
    )
    p.add_argument("--trial", type=int, metavar="N", help="trial number (default: the stage's recommended trial)")
    p.add_argument("--out", required=True, metavar="DIR", help="bundle folder to write (an earlier bundle is replaced)")


def _run_export(args: argparse.Namespace) -> int:
    from psvae_opt.inference.bundle import check_bundle_out
    from psvae_opt.inference.card import export_model
    from psvae_opt.reports.traversals import write_traversal_movie, write_traversal_png
    from psvae_opt.search.study import load_stage

    cfg = load_config_from(args)
    check_bundle_out(args.out)
    study = load_stage(open_database_from(args), cfg, args.stage)
    render = {"traversal.png": write_traversal_png, "traversal.mp4": write_traversal_movie}
    out = export_model(study, args.trial, args.out, render=render)
    print(f"model bundle {out} (study {study.study_name}, trial {_trial_of(out)})")
    return 0


def _trial_of(folder: Path) -> str:
    import json

    return str(json.loads((folder / "bundle.json").read_text()).get("trial"))


def _add_encode(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "sessions", nargs="*", metavar="INPUT",
        help="session files (HDF5), videos, folders of them, or globs: each session is written as it finishes",
    )  # fmt: skip
    p.add_argument("--model", required=True, metavar="DIR", help="bundle folder of `psvae-opt model export`")
    p.add_argument("--out", required=True, metavar="DIR", help="folder of the encoded sessions")
    p.add_argument(
        "--video", action="append", default=[], metavar="FILE",
        help="a video, folder or glob (repeatable: a session each; for a C-channel model, the C views of one session)",
    )  # fmt: skip
    p.add_argument("--format", default="npz", metavar="LIST", help="npz,csv,dlc,behavenet,nwb (default npz)")
    p.add_argument("--reconstructions", action="store_true", help="also write reconstructed frames (npz)")
    p.add_argument("--batch-size", type=int, default=256, metavar="N", help="frames per forward pass (default 256)")
    p.add_argument("--gpu", action="store_true", help="encode on the first visible GPU")
    p.add_argument(
        "--precision", choices=("auto", "fp32", "bf16"), default="auto",
        help="auto: bf16 on a GPU that multiplies it natively (as training), fp32 on the CPU",
    )  # fmt: skip
    p.add_argument("--trial-length", type=int, default=100, metavar="N", help="videos: frames per trial (default 100)")
    p.add_argument("--frame-rate", type=float, metavar="FPS", help="frame rate where the input records none")
    p.add_argument("--crop", metavar="X,Y,W,H", help="videos: crop to this box (source pixels) before the resize")
    p.add_argument("--frames", metavar="START:END", help="videos: encode frames START to END (END excluded, optional)")
    p.add_argument("--allow-short", action="store_true", help="encode a video that decodes fewer frames than declared")
    p.add_argument(
        "--movie", metavar="START:END",
        help="also write NAME.recon.mp4: frames START to END (source numbers) beside their reconstructions",
    )  # fmt: skip
    p.add_argument("--nwb-source", metavar="FILE", help="nwb: append to a copy of this NWB file (one session only)")
    p.add_argument("--skip-existing", action="store_true", help="leave sessions whose outputs are all in --out")
    p.add_argument("--keep-going", action="store_true", help="go on past a failed session; list failures at the end")
    p.add_argument("--no-progress", action="store_true", help="no progress bar or progress lines")


def _ints(text: str, option: str, n: int, sep: str) -> list[int | None]:
    parts = text.split(sep)
    try:
        values = [int(v) if v.strip() else None for v in parts]
    except ValueError:
        values = []
    if len(values) != n:
        raise ConfigError(f"{option} {text!r}: give {n} whole numbers separated by {sep!r}")
    return values


def video_options(args: argparse.Namespace):
    """--crop, --frames, --trial-length, --frame-rate and --allow-short, checked."""
    from psvae_opt.inference.sources import VideoOptions

    if args.trial_length < 1:
        raise ConfigError(f"--trial-length {args.trial_length}: must be >= 1 frame")
    crop = None
    if args.crop:
        crop = _ints(args.crop, "--crop", 4, ",")
        if None in crop or crop[0] < 0 or crop[1] < 0 or crop[2] < 1 or crop[3] < 1:  # type: ignore[operator]
            raise ConfigError(f"--crop {args.crop}: give X,Y >= 0 and W,H >= 1 (pixels of the video)")
    start, stop = 0, None
    if args.frames:
        start, stop = _ints(args.frames, "--frames", 2, ":")
        start = start or 0
        if start < 0 or (stop is not None and stop <= start):
            raise ConfigError(f"--frames {args.frames}: give START:END with 0 <= START < END (END may be left out)")
    return VideoOptions(args.trial_length, tuple(crop) if crop else None, start, stop, args.frame_rate,
                        args.allow_short)  # type: ignore[arg-type]  # fmt: skip


def _check_encode_args(args: argparse.Namespace) -> None:
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size {args.batch_size}: give 1 or more frames")
    if args.frame_rate is not None and not args.frame_rate > 0:
        raise ConfigError(f"--frame-rate {args.frame_rate}: give a positive number of frames per second")
    if args.nwb_source is not None and not Path(args.nwb_source).is_file():
        raise ConfigError(f"--nwb-source {args.nwb_source}: no such file")


def _score_lines(scores: dict[str, float]) -> list[str]:
    """The scores of a session in words: label R^2, and each unlabelled factor's best |r|."""
    lines = []
    if "label_r2" in scores:
        lines.append(f"label R^2 {scores['label_r2']:.3f} (predicted vs the file's labels)")
    factors = {k.removeprefix("factor_r_"): v for k, v in scores.items() if k.startswith("factor_r_")}
    if factors:
        listed = ", ".join(f"{name} {r:.3f}" for name, r in factors.items())
        lines.append(f"true factors vs the best unsupervised latent, |r|: {listed}")
    return lines


def geometry_line(g: dict) -> str:
    """The resize, crop, frame range and frame rate used, in words."""
    sizes = g.get("source_size")
    resize = g.get("resize")
    size = "stored frames, no resize"
    if resize:
        size = f"{' + '.join(f'{w}x{h}' for h, w in sizes or [])} resized to {resize[1]}x{resize[0]}"
    crop = g.get("crop")
    crop_text = f"crop x,y,w,h {','.join(map(str, crop))}" if crop else "no crop"
    a, b = (g.get("frames") or [0, None])[:2]
    rate = g.get("frame_rate")
    rate_text = f"{rate:g} fps ({g.get('frame_rate_from')})" if rate and rate == rate else "frame rate unknown"
    return f"{size}, {crop_text}, frames {a}:{'' if b is None else b}, {rate_text}, times from {g.get('time_from')}"


def _settings(args: argparse.Namespace, device: str) -> dict:
    import sys

    import torch

    from psvae_opt.training.devices import resolve_precision

    precision = args.precision
    if precision == "auto":
        precision = resolve_precision("auto", torch.device(device)) if device != "cpu" else "fp32"
    progress = "off" if args.no_progress else "auto"
    options = {k: v for k, v in vars(args).items() if k not in ("run", "command", "func") and not callable(v)}
    return {
        "batch_size": args.batch_size, "precision": precision, "progress": progress, "allow_short": args.allow_short,
        "reconstructions": args.reconstructions, "nwb_source": Path(args.nwb_source) if args.nwb_source else None,
        "warn": lambda line: print(f"psvae-opt: warning: {line}", file=sys.stderr, flush=True),
        "options": {**options, "device": device, "precision": precision}, "movie": _movie(args.movie),
    }  # fmt: skip


def _movie(text: str | None) -> tuple[int, int] | None:
    from psvae_opt.inference.movie import MAX_FRAMES

    if text is None:
        return None
    start, stop = _ints(text, "--movie", 2, ":")
    if start is None or stop is None or not 0 <= start < stop or stop - start > MAX_FRAMES:
        raise ConfigError(f"--movie {text}: give START:END with 0 <= START < END and at most {MAX_FRAMES} frames")
    return start, stop


def _run_encode(args: argparse.Namespace) -> int:
    from psvae_opt.errors import DataError
    from psvae_opt.inference import cohort, formats
    from psvae_opt.inference.model import load_model
    from psvae_opt.training.devices import require_cuda

    _check_encode_args(args)
    names = formats.parse_formats(args.format)
    if args.nwb_source and "nwb" not in names:
        raise ConfigError("--nwb-source: give --format with nwb (the file the latents are appended to)")
    out = Path(args.out)
    formats.check_out(out)
    options = video_options(args)
    device = "cpu"
    if args.gpu:
        require_cuda("--gpu")
        device = "cuda"
    model = load_model(args.model, device)
    inputs, failures = cohort.plan(model, args.sessions, args.video, options, args.keep_going)
    if args.nwb_source and len(inputs) + len(failures) != 1:  # --format with nwb: checked above
        raise ConfigError("--nwb-source: give exactly one session and --format with nwb")

    def report(session, encoding, paths) -> None:
        files = ", ".join(p.name for p in paths)
        print(f"{session.name}: {session.n_frames} frames, {session.n_trials} trials -> {files}", flush=True)
        print(f"  {geometry_line(session.geometry)}")
        for line in _score_lines(encoding.scores):
            print(f"  {line}")

    settings = _settings(args, device)
    outcome = cohort.run_cohort(
        model, inputs, out, names, settings, skip_existing=args.skip_existing, keep_going=args.keep_going,
        failures=failures, on_session=report,
    )  # fmt: skip
    done = len(inputs) - len(outcome.skipped) - (len(outcome.failures) - len(failures))
    print(f"{done} session(s) written ({len(outcome.written)} files) in {out}", end="")
    print(f"; {len(outcome.skipped)} skipped (already there)" if outcome.skipped else "")
    if outcome.failures:
        for f in outcome.failures:
            print(f"failed: {f.name}: {' '.join(f.message.split())}")
        raise DataError(
            f"{len(outcome.failures)} of {len(inputs) + len(failures)} session(s) failed, listed above and in "
            f"{out / cohort.FAILURES}"
        )
    return 0


COMMANDS = {
    "model": {
        "export": Command(
            "write the bundle of a trained model (default: the recommended one)", _add_export, _run_export
        )
    },
    "encode": Command(
        "encode sessions and videos (files, folders, globs) with a model bundle", _add_encode, _run_encode
    ),
}
