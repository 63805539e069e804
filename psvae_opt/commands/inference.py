"""`psvae-opt model export` and `psvae-opt encode`: the chosen model at work on new data.

What runs is :mod:`psvae_opt.inference`; this module parses arguments and prints.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import replace
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
    from psvae_opt.search.study import load_stage

    cfg = load_config_from(args)
    check_bundle_out(args.out)
    study = load_stage(open_database_from(args), cfg, args.stage)
    out = export_model(study, args.trial, args.out)
    print(f"model bundle {out} (study {study.study_name}, trial {_trial_of(out)})")
    return 0


def _trial_of(folder: Path) -> str:
    import json

    return str(json.loads((folder / "bundle.json").read_text()).get("trial"))


def _add_encode(p: argparse.ArgumentParser) -> None:
    p.add_argument("sessions", nargs="*", metavar="SESSION.h5", help="session files of the HDF5 layout, or globs")
    p.add_argument("--model", required=True, metavar="DIR", help="bundle folder of `psvae-opt model export`")
    p.add_argument("--out", required=True, metavar="DIR", help="folder of the encoded sessions")
    p.add_argument(
        "--video", action="append", default=[], metavar="FILE",
        help="encode a video (repeatable: one session each; for a C-channel model, the C views of one session)",
    )  # fmt: skip
    p.add_argument("--format", default="npz", metavar="LIST", help="npz,csv,behavenet,nwb (default npz)")
    p.add_argument("--reconstructions", action="store_true", help="also write reconstructed frames (npz)")
    p.add_argument("--batch-size", type=int, default=256, metavar="N", help="frames per forward pass (default 256)")
    p.add_argument("--gpu", action="store_true", help="encode on the first visible GPU")
    p.add_argument("--trial-length", type=int, default=100, metavar="N", help="--video: frames per trial (default 100)")
    p.add_argument("--frame-rate", type=float, metavar="FPS", help="frame rate where the input records none")
    p.add_argument("--nwb-source", metavar="FILE", help="nwb: append to a copy of this NWB file (one session only)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _check_encode_args(args: argparse.Namespace) -> None:
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size {args.batch_size}: give 1 or more frames")
    if args.frame_rate is not None and not args.frame_rate > 0:
        raise ConfigError(f"--frame-rate {args.frame_rate}: give a positive number of frames per second")
    if args.nwb_source is not None and not Path(args.nwb_source).is_file():
        raise ConfigError(f"--nwb-source {args.nwb_source}: no such file")


def _rate(recorded: float | None, given: float) -> float:
    """The input's own frame rate where it records one, else ``--frame-rate``."""
    return recorded if recorded is not None and math.isfinite(recorded) and recorded > 0 else given


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


def _run_encode(args: argparse.Namespace) -> int:
    from psvae_opt.inference import formats, sources
    from psvae_opt.inference.model import load_model
    from psvae_opt.training.devices import require_cuda

    _check_encode_args(args)
    names = formats.parse_formats(args.format)
    formats.check_out(Path(args.out))
    device = "cpu"
    if args.gpu:
        require_cuda("--gpu")
        device = "cuda"
    model = load_model(args.model, device)
    count, sessions = sources.iter_sessions(model, args.sessions, args.video, args.trial_length)
    if args.nwb_source and (count != 1 or "nwb" not in names):
        raise ConfigError("--nwb-source: give exactly one session and --format with nwb")
    if args.frame_rate:
        sessions = (replace(s, frame_rate=_rate(s.frame_rate, args.frame_rate)) for s in sessions)

    def report(session, encoding, paths) -> None:
        files = ", ".join(p.name for p in paths)
        print(f"{session.name}: {session.n_frames} frames, {session.n_trials} trials -> {files}")
        for line in _score_lines(encoding.scores):
            print(f"  {line}")

    written = formats.write_sessions(
        model,
        sessions,
        args.out,
        names,
        batch_size=args.batch_size,
        reconstructions=args.reconstructions,
        nwb_source=Path(args.nwb_source) if args.nwb_source else None,
        progress=not args.no_progress,
        on_session=report,
    )
    print(f"{len(written)} files in {args.out}")
    return 0


COMMANDS = {
    "model": {
        "export": Command(
            "write the bundle of a trained model (default: the recommended one)", _add_export, _run_export
        )
    },
    "encode": Command("encode session files or videos with a model bundle", _add_encode, _run_encode),
}
