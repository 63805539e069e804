"""A cohort at a time: every session and video named by paths, folders or globs, each encoded and
written on its own as it finishes.

Inputs are checked up front from their headers (a session file's frame shape and labels, a
video's stream), so most refusals come before anything is decoded. Each session is then
streamed through the model into a hidden staging folder beside ``--out`` and its files moved
into ``--out`` only once all of them are written: a session that fails leaves nothing of itself,
and the sessions finished before it stay. ``skip_existing`` leaves a session whose every output
is already there; ``keep_going`` records a failed session and goes on with the next (the
failures are returned and written to ``encode-failures.tsv`` in ``--out``).
"""

from __future__ import annotations

import glob
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from psvae_opt.data.sessions import GLOB_CHARS, session_names
from psvae_opt.errors import ConfigError, DataError, PsvaeError
from psvae_opt.inference import formats
from psvae_opt.inference.behavenet import behavenet_trials
from psvae_opt.inference.encode import Encoding, encode_session
from psvae_opt.inference.model import PsvaeModel
from psvae_opt.inference.movie import MOVIE, write_movie
from psvae_opt.inference.provenance import as_json, provenance
from psvae_opt.inference.sources import (
    SessionFrames,
    VideoOptions,
    check_session_files,
    open_video_session,
    read_session_file,
    video_groups,
)
from psvae_opt.inference.tables import check_dlc

SESSION_SUFFIXES = (".h5", ".hdf5")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".mpg", ".mpeg", ".webm")
FAILURES = "encode-failures.tsv"


@dataclass(frozen=True)
class Input:
    """One session to encode, not yet read: ``read()`` loads a session file or opens videos."""

    name: str
    paths: tuple[Path, ...]
    read: Callable[[], SessionFrames]


@dataclass(frozen=True)
class Failure:
    name: str
    paths: tuple[Path, ...]
    message: str


@dataclass
class Outcome:
    written: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)


def expand(items: Sequence[str], suffixes: tuple[str, ...], what: str) -> list[Path]:
    """Paths named by ``items``: files as given, folders as their files of ``suffixes`` (sorted), globs."""
    out: list[Path] = []
    for item in items:
        if any(c in item for c in GLOB_CHARS):
            found = sorted(Path(p) for p in glob.glob(item))
            if not found:
                raise DataError(f"{item}: matches no file; check the pattern and the working folder")
            for p in found:
                out += sorted(q for q in p.iterdir() if q.suffix.lower() in suffixes) if p.is_dir() else [p]
        elif Path(item).is_dir():
            inside = sorted(q for q in Path(item).iterdir() if q.suffix.lower() in suffixes)
            if not inside:
                raise DataError(f"{item}: a folder without {what} ({', '.join(suffixes)})")
            out += inside
        elif not Path(item).is_file():
            raise DataError(f"{item}: not found (no such file or folder); check the path")
        else:
            out.append(Path(item))
    return list(dict.fromkeys(out))


def plan(
    model: PsvaeModel, sessions: Sequence[str], videos: Sequence[str], options: VideoOptions, keep_going: bool
) -> tuple[list[Input], list[Failure]]:
    """Every input checked against the model from its header; failures kept when ``keep_going``."""
    named = expand(sessions, SESSION_SUFFIXES + VIDEO_SUFFIXES, "session files or videos")
    files = [p for p in named if p.suffix.lower() not in VIDEO_SUFFIXES]
    movies = [p for p in named if p.suffix.lower() in VIDEO_SUFFIXES] + expand(videos, VIDEO_SUFFIXES, "videos")
    if not files and not movies:
        raise ConfigError("give session files (HDF5), videos or folders of them to encode")
    inputs: list[Input] = []
    failures: list[Failure] = []

    def add(name: str, paths: tuple[Path, ...], check: Callable[[], Any], read: Callable[[], SessionFrames]):
        try:
            check()
        except PsvaeError as exc:
            if not keep_going:
                raise
            failures.append(Failure(name, paths, str(exc)))
            return
        inputs.append(Input(name, paths, read))

    names = [n.replace("/", "_") for n in session_names(files)] if files else []
    for path, name in zip(files, names):
        add(name, (path,), lambda p=path: check_session_files(model, [p]),
            lambda p=path, n=name: read_session_file(p, n, options.frame_rate))  # fmt: skip
    for group in video_groups(model, movies) if movies else []:
        add(group[0].stem, tuple(group), lambda g=group: open_video_session(model, g, options),
            lambda g=group: open_video_session(model, g, options))  # fmt: skip
    seen = [i.name for i in inputs] + [f.name for f in failures]
    repeated = next((n for n in seen if seen.count(n) > 1), None)
    if repeated is not None:
        raise ConfigError(f"two inputs are named {repeated!r}; give sessions and videos of different file names")
    return inputs, failures


def _staging(out: Path, name: str) -> Path:
    staging = out.parent / f".{out.name}.{name}.staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir(parents=True)
    except OSError as exc:
        raise DataError(f"--out {out}: cannot write there ({exc.strerror or exc}); choose another folder") from None
    return staging


def _precheck(model: PsvaeModel, session: SessionFrames, names: list[str], nwb_source: Path | None) -> None:
    """What can be refused before a frame is encoded: no frame rate for NWB, too few trials."""
    rate = session.frame_rate
    if "nwb" in names and nwb_source is None and not (rate and rate == rate):
        raise DataError(f"{session.paths[0]}: no frame rate, so NWB timestamps are unknown; give --frame-rate FPS")
    n = session.n_frames if session.frames is not None else session.declared_frames
    if nwb_source is not None and n:
        _timed(replace(session, trial_starts=np.array([0, n])), nwb_source, lambda line: None)
    if "behavenet" in names and n:
        behavenet_trials(model.info, session.n_trials if session.frames is not None else -(-n // session.trial_length))


def encode_one(
    model: PsvaeModel, item: Input, out: Path, names: list[str], settings: dict[str, Any]
) -> tuple[SessionFrames, Encoding, list[Path]]:
    """Encode one session and write its files into ``out`` (all of them, or none)."""
    session = item.read()
    nwb_source = settings.get("nwb_source")
    _precheck(model, session, names, nwb_source)
    staging = _staging(out, item.name)
    try:
        recon = staging / ".reconstructions.raw" if settings.get("reconstructions") else None
        session, encoding = encode_session(
            model, session, batch_size=settings["batch_size"], recon_file=recon, precision=settings["precision"],
            progress=settings["progress"], allow_short=settings["allow_short"], warn=settings["warn"],
            movie=_movie_range(session, settings.get("movie")),
        )  # fmt: skip
        session = _timed(session, nwb_source, settings["warn"])
        if "behavenet" in names:
            behavenet_trials(model.info, session.n_trials)
        record = provenance(model.info, model.folder, session.paths, session.geometry, settings["options"])
        text = as_json(record)
        target = formats.Target(staging, session, encoding, model, record, text, nwb_source, out)
        for name in names:
            formats.FORMATS[name](target)
        (staging / formats.PROVENANCE.format(session.name)).write_text(text + "\n")
        if settings.get("movie") is not None:
            if encoding.movie is None:
                a, b = settings["movie"]
                last = session.first_frame + session.n_frames
                raise DataError(
                    f"--movie {a}:{b}: no frame of {session.name} there (it has {session.first_frame}:{last})"
                )
            write_movie(staging / MOVIE.format(session.name), *encoding.movie, session.frame_rate or float("nan"))
        written = _move_in(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return session, encoding, written


def _movie_range(session: SessionFrames, movie: tuple[int, int] | None) -> tuple[int, int] | None:
    """``--movie START:END`` (source frame numbers) as indices of the frames encoded."""
    if movie is None:
        return None
    return movie[0] - session.first_frame, movie[1] - session.first_frame


def _timed(session: SessionFrames, nwb_source: Path | None, warn: Callable[[str], None]) -> SessionFrames:
    """The session with the NWB source's frame times, when it has them (else frame / rate)."""
    geometry = {**session.geometry, "time_from": "frame / frame rate"}
    if nwb_source is not None:
        g = session.geometry
        short = g.get("frames_declared") is not None and g.get("frames_decoded") != g.get("frames_declared")
        whole = session.frames is not None or ((g.get("frames") or [0, None])[1] is None and not short)
        found = formats.nwb_times(nwb_source, session.first_frame, session.n_frames, whole)
        if found is not None:
            return replace(session, timestamps=found[0], geometry={**geometry, "time_from": found[1]})
        if not (session.frame_rate and session.frame_rate == session.frame_rate):
            raise DataError(f"{nwb_source}: no ImageSeries with timestamps or a rate, and the input has no frame "
                            "rate; give --frame-rate FPS")  # fmt: skip
        warn(f"{nwb_source}: no ImageSeries with timestamps or a rate; times are frame / {session.frame_rate:g} fps")
    return replace(session, geometry=geometry)


def _move_in(staging: Path, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in sorted(staging.iterdir()):
        if path.name.startswith("."):
            continue  # spooled reconstructions, already in the npz
        target = out / path.name
        if path.is_dir() and target.is_dir():
            shutil.rmtree(target)
        os.replace(path, target)
        written.append(target)
    return written


def run_cohort(
    model: PsvaeModel,
    inputs: Sequence[Input],
    out: Path,
    names: list[str],
    settings: dict[str, Any],
    *,
    skip_existing: bool = False,
    keep_going: bool = False,
    failures: Sequence[Failure] = (),
    on_session: Callable[[SessionFrames, Encoding, list[Path]], None] | None = None,
) -> Outcome:
    """Encode each input in turn (see the module docstring); returns what was written and what failed."""
    formats.require_libraries(names)
    if "dlc" in names:
        check_dlc(model)
    outcome = Outcome(failures=list(failures))
    for item in inputs:
        expected = formats.output_names(item.name, names)
        if settings.get("movie") is not None:
            expected.append(MOVIE.format(item.name))
        if skip_existing and all((out / n).exists() for n in expected):
            outcome.skipped.append(item.name)
            continue
        try:
            session, encoding, written = encode_one(model, item, out, names, settings)
        except (PsvaeError, OSError) as exc:  # OSError: a file unreadable midway, a full disk
            if not keep_going:
                raise
            outcome.failures.append(Failure(item.name, item.paths, str(exc) or type(exc).__name__))
            continue
        outcome.written += written
        if on_session is not None:
            on_session(session, encoding, written)
    _record_failures(out, outcome.failures)
    return outcome


def _record_failures(out: Path, failures: Sequence[Failure]) -> None:
    """``encode-failures.tsv`` in ``out`` lists this run's failures (an earlier run's list is removed)."""
    path = out / FAILURES
    if not failures:
        path.unlink(missing_ok=True)
        return
    out.mkdir(parents=True, exist_ok=True)
    lines = ["session\tsources\terror"] + [
        f"{f.name}\t{','.join(map(str, f.paths))}\t{' '.join(f.message.split())}" for f in failures
    ]
    path.write_text("\n".join(lines) + "\n")
