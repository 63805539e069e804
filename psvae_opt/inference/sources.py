"""New data for a model: HDF5 session files or videos, checked against the model before any output.

Session files are checked from their headers (frame shape, label names) before a frame is read;
videos are decoded with the import's own reader (:func:`psvae_opt.data.video.read_video`:
FFmpeg's grayscale, then the same antialiased resize), so a frame encodes as it would after
``psvae-opt data import``. A model of C channels takes C videos per session (camera views, as
``data import`` stacks them); a one-channel model takes each video as a session of its own.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from psvae_opt.data import load_session, resolve_paths
from psvae_opt.data.layout import inspect_file, open_file
from psvae_opt.data.sessions import session_names
from psvae_opt.data.video import read_video
from psvae_opt.errors import ConfigError, DataError
from psvae_opt.inference.model import PsvaeModel


@dataclass(frozen=True)
class SessionFrames:
    """One session to encode.

    Attributes:
        name: a file-name-safe session name; paths: its file, or its videos (one per view).
        frames: (T, C, H, W) uint8; trial_starts: (n_trials + 1,) frame offsets.
        frame_rate: frames per second (None when unknown).
        labels, masks, labels_sc: (T, L) the file's z-scored labels, validity and stored-frame
            pixels (None for videos, and ``labels_sc`` for files without it).
        factors: (T, F) ground truth (synthetic data) with ``factor_names``, ``factor_labeled``.
        source_size: (L, 2) (H, W) of each label's source video, when the input tells it.
    """

    name: str
    paths: tuple[Path, ...]
    frames: np.ndarray
    trial_starts: np.ndarray
    frame_rate: float | None = None
    labels: np.ndarray | None = None
    masks: np.ndarray | None = None
    labels_sc: np.ndarray | None = None
    factors: np.ndarray | None = None
    factor_names: tuple[str, ...] = ()
    factor_labeled: tuple[bool, ...] = ()
    source_size: np.ndarray | None = None

    @property
    def n_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def n_trials(self) -> int:
        return len(self.trial_starts) - 1

    @property
    def times(self) -> np.ndarray:
        """(T,) seconds from the first frame (NaN when the frame rate is unknown)."""
        rate = self.frame_rate if self.frame_rate and np.isfinite(self.frame_rate) else float("nan")
        return np.arange(self.n_frames, dtype=np.float64) / rate


def _shape(shape: Sequence[int]) -> str:
    return " x ".join(map(str, shape))


def check_session_files(model: PsvaeModel, paths: Sequence[Path]) -> None:
    """Refuse, before any frame is read, a file whose frame shape or labels differ from the model's."""
    for path in paths:
        with open_file(path) as f:
            info = inspect_file(f, path)
        if info.frame_shape != model.frame_shape:
            raise DataError(
                f"{path}: frames of {_shape(info.frame_shape)} (C x H x W), but the model {model.folder} takes "
                f"{_shape(model.frame_shape)}; import the session with --size {model.frame_shape[1]} and "
                f"{model.frame_shape[0]} view(s)"
            )
        if info.label_names != model.label_names:
            raise DataError(
                f"{path}: labels {', '.join(info.label_names)}, but the model {model.folder} predicts "
                f"{', '.join(model.label_names)}; import the session with the model's --keypoints"
            )


def session_files(model: PsvaeModel, patterns: Sequence[str]) -> tuple[list[Path], tuple[str, ...]]:
    """The files named by paths or globs, checked against the model, and their output names."""
    paths = resolve_paths(list(patterns))
    for path in paths:
        if not path.is_file():
            raise DataError(f"{path}: no such session file; check the path")
    check_session_files(model, paths)
    return paths, tuple(n.replace("/", "_") for n in session_names(paths))


def read_session_file(path: Path, name: str) -> SessionFrames:
    """One session file (already checked) in memory."""
    s = load_session(path)
    rate = s.attrs.get("frame_rate")
    size = s.attrs.get("label_source_size")
    return SessionFrames(
        name=name,
        paths=(path,),
        frames=s.images,
        trial_starts=np.asarray(s.trial_starts),
        frame_rate=float(rate) if rate is not None else None,
        labels=s.labels,
        masks=s.masks,
        labels_sc=s.labels_sc,
        factors=s.factors,
        factor_names=s.factor_names,
        factor_labeled=s.factor_labeled,
        source_size=None if size is None else np.asarray(size, np.float64).reshape(-1, 2),
    )


def video_groups(model: PsvaeModel, videos: Sequence[str]) -> list[list[Path]]:
    """Videos per session: all of them as the C views of one session, or one session each (C = 1)."""
    c, h, w = model.frame_shape
    if h != w:
        raise DataError(f"the model {model.folder} takes {h} x {w} frames; videos are resized to squares only")
    paths = [Path(v) for v in videos]
    for path in paths:
        if not path.is_file():
            raise DataError(f"{path}: video not found; check --video")
    if c == 1:
        return [[p] for p in paths]
    if len(paths) != c:
        raise DataError(
            f"{len(paths)} --video for a model of {c} channels (camera views); give one --video per view, in the "
            "order of the import"
        )
    return [paths]


def _label_sizes(model: PsvaeModel, shapes: Sequence[tuple[int, int]]) -> np.ndarray:
    """(L, 2) source size of each label for new videos of ``shapes``: the view each label came from
    is the training view of the same size (any of equal size gives the same pixels)."""
    trained = model.label_source_size()
    views = model.info.get("view_frame_sizes") or [list(shapes[0])]
    out = np.empty_like(trained)
    for label, size in enumerate(trained):
        view = next((v for v, s in enumerate(views) if list(map(float, s)) == list(size)), 0)
        out[label] = shapes[min(view, len(shapes) - 1)]
    return out


def read_video_session(model: PsvaeModel, videos: Sequence[Path], trial_length: int) -> SessionFrames:
    """Decode a session's videos (one per view) at the model's frame size; trials of ``trial_length``."""
    if trial_length < 1:
        raise ConfigError(f"--trial-length {trial_length}: must be >= 1 frame")
    clips = [read_video(v, model.frame_shape[1]) for v in videos]
    lengths = {c.n_frames for c in clips}
    if len(lengths) > 1:
        listed = ", ".join(f"{c.path} has {c.n_frames}" for c in clips)
        raise DataError(f"the views differ in length ({listed} frames); give videos of one session cut alike")
    frames = np.stack([c.frames for c in clips], axis=1)
    starts = np.append(np.arange(0, len(frames), trial_length), len(frames)).astype(np.int64)
    return SessionFrames(
        name=clips[0].path.stem,
        paths=tuple(c.path for c in clips),
        frames=frames,
        trial_starts=starts,
        frame_rate=clips[0].frame_rate,
        source_size=_label_sizes(model, [c.source_shape for c in clips]),
    )


def iter_sessions(
    model: PsvaeModel, sessions: Sequence[str], videos: Sequence[str], trial_length: int = 100
) -> tuple[int, Iterator[SessionFrames]]:
    """Check every input against the model up front; returns the number of sessions and an
    iterator that reads them one at a time (a long study never sits in memory whole)."""
    if bool(sessions) == bool(videos):
        raise ConfigError("give session files (HDF5) or --video files, one of the two")
    if sessions:
        paths, names = session_files(model, sessions)
        if len(set(names)) != len(names):
            raise ConfigError("two session files have the same name; give each session once")
        return len(paths), (read_session_file(p, n) for p, n in zip(paths, names))
    groups = video_groups(model, videos)
    names = [g[0].stem for g in groups]
    if len(set(names)) != len(names):
        repeated = next(n for n in names if names.count(n) > 1)
        raise ConfigError(f"two videos are named {repeated!r}; give videos of different file names")
    return len(groups), (read_video_session(model, g, trial_length) for g in groups)
