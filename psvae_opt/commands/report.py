"""`psvae-opt report summary|curves|labels|traversal|movie`: the guide's diagnostics, as files.

Charts are interactive HTML (plotly), frames PNG and MP4; the writers live in
:mod:`psvae_opt.reports.diagnostics`. A trial's report uses the trial's own resolved configuration
(its data file, model and split), whatever the study file says now.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from psvae_opt.commands import Command, add_config_arguments, add_storage_argument, load_config_from, open_database_from
from psvae_opt.errors import ConfigError
from psvae_opt.reports.choices import CURVE_SPLITS, FPS, GRID_STEPS, MOVIE_BASES, MOVIE_STEPS
from psvae_opt.search import space

if TYPE_CHECKING:  # the writers are imported when a report runs: the command line starts at once
    import optuna

DEFAULT_OUT = "psvae-opt-out"


# -- the command ---------------------------------------------------------------------------------


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give whole numbers separated by commas, e.g. 3,4") from None


def _add_summary(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    add_storage_argument(p)
    p.add_argument("--stage", type=int, choices=space.STAGE_NUMBERS, required=True)
    p.add_argument("--out", metavar="DIR", help=f"output folder (default {DEFAULT_OUT}/STUDY)")


def _add_common(p: argparse.ArgumentParser) -> None:
    _add_summary(p)
    p.add_argument("--trial", type=int, metavar="N", help="trial number (default: the stage's recommended trial)")
    p.add_argument(
        "--split",
        choices=CURVE_SPLITS,
        default="val",
        help="split of the curves, of the default label trials and base frames (default val)",
    )


def _add_labels(p: argparse.ArgumentParser) -> None:
    _add_common(p)
    p.add_argument(
        "--trials", type=_int_list, metavar="LIST", help="session trial indices, e.g. 3,4 (default: two of --split)"
    )
    p.add_argument("--labels", metavar="LIST", help="label names or indices, e.g. paw_front_x,2 (default: all)")


def _add_traversal(p: argparse.ArgumentParser) -> None:
    _add_common(p)
    p.add_argument("--frame", type=int, metavar="N", help="base frame index in the session (default: one of --split)")
    p.add_argument("--steps", type=int, default=GRID_STEPS, help=f"steps per sweep (default {GRID_STEPS})")


def _add_movie(p: argparse.ArgumentParser) -> None:
    _add_common(p)
    p.add_argument(
        "--frames", type=_int_list, metavar="LIST", help=f"base frame indices (default: {MOVIE_BASES} of --split)"
    )
    p.add_argument("--steps", type=int, default=MOVIE_STEPS, help=f"frames from lower to upper (default {MOVIE_STEPS})")
    p.add_argument("--fps", type=int, default=FPS, help=f"frames per second (default {FPS})")


def _study(args: argparse.Namespace) -> tuple[optuna.Study, Path]:
    from psvae_opt.search.study import load_stage

    cfg = load_config_from(args)
    study = load_stage(open_database_from(args, read_only=True), cfg, args.stage)
    return study, Path(args.out or Path(DEFAULT_OUT) / study.study_name)


def _label_indices(text: str | None, names: Sequence[str]) -> list[int] | None:
    if not text:
        return None
    out = []
    for item in (v.strip() for v in text.split(",") if v.strip()):
        if item.isdigit():
            out.append(int(item))
        elif item in names:
            out.append(list(names).index(item))
        else:
            raise ConfigError(f"--labels: {item!r} is not a label; the labels are {', '.join(names)}")
    return out


@contextlib.contextmanager
def _no_empty_folder_left(out: Path) -> Iterator[None]:
    """Remove the folders of ``out`` that this command created if it fails before writing into them
    (a refused --steps, --frame, --fps, --trials or --labels leaves nothing behind)."""
    missing = [p for p in (out, *out.parents) if not p.exists()]
    try:
        yield
    except BaseException:
        for folder in missing:  # deepest first
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise


def _run_report(kind: str):
    def run(args: argparse.Namespace) -> int:
        study, out = _study(args)
        with _no_empty_folder_left(out):
            return _write_report(kind, args, study, out)

    return run


def _write_report(kind: str, args: argparse.Namespace, study: optuna.Study, out: Path) -> int:
    """Write one report into ``out``; a refused option raises before anything is written."""
    from psvae_opt.data import load_session
    from psvae_opt.inference.card import chosen_trial
    from psvae_opt.reports import run_charts, traversals
    from psvae_opt.reports.diagnostics import write_curves, write_labels, write_summary
    from psvae_opt.reports.stage_files import prepare_folder
    from psvae_opt.training.devices import resolve_device
    from psvae_opt.training.run_folder import SPLIT_CODES
    from psvae_opt.training.trained import load_run

    if kind == "summary":
        prepare_folder(out)
        print(write_summary(study, args.stage, out / "summary.html"))
        return 0
    trial, cfg = chosen_trial(study, args.trial, finished=False)
    number, run_dir = trial.number, Path(trial.user_attrs["run_dir"])
    stem = out / f"trial_{number:04d}"
    if kind == "curves":
        run_charts.training_curves_data(run_dir, args.split)  # a run without curves: refused before writing
        prepare_folder(out)
        print(write_curves(run_dir, Path(f"{stem}_curves_{args.split}.html"), [args.split]))
        return 0
    session = load_session(cfg.data.path)
    if kind == "labels":
        labels = _label_indices(args.labels, session.label_names)
        prepare_folder(out)
        print(write_labels(run_dir, session, Path(f"{stem}_labels.html"), args.trials, labels, args.split))
        return 0
    run_ = load_run(run_dir, session, resolve_device("auto"))  # wherever the report runs
    code = SPLIT_CODES[args.split]
    prepare_folder(out)
    if kind == "traversal":
        frame = args.frame if args.frame is not None else traversals.default_base_frames(run_.split, 1, code)[0]
        print(traversals.write_traversal_png(run_, session, Path(f"{stem}_traversal.png"), frame, args.steps))
    else:
        frames = args.frames or traversals.default_base_frames(run_.split, MOVIE_BASES, code)
        print(
            traversals.write_traversal_movie(run_, session, Path(f"{stem}_traversal.mp4"), frames, args.steps, args.fps)
        )
    return 0


COMMANDS = {
    "report": {
        "summary": Command(
            "search summary of a stage: metrics vs alpha / beta (HTML)", _add_summary, _run_report("summary")
        ),
        "curves": Command("training curves of a trial (HTML)", _add_common, _run_report("curves")),
        "labels": Command("true and predicted label traces of a trial (HTML)", _add_labels, _run_report("labels")),
        "traversal": Command("latent traversals from a base frame (PNG)", _add_traversal, _run_report("traversal")),
        "movie": Command("traversal movie of a few base frames (MP4)", _add_movie, _run_report("movie")),
    }
}
