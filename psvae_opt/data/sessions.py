"""One or several session files loaded as one :class:`Session`.

A study may train on several sessions of one setup (``data.path`` a list of files or globs).
They are read into one Session, trials concatenated in the order given, each trial remembering
its session (``trial_sessions``) so that splits can be made within every session. The files
must agree in frame shape (C, H, W) and label names; every check runs on all files before any
frame is read. Each file's labels keep the z-scoring of their own import (BehaveNet's
convention: labels are normalised per session), so ``session_attrs`` holds every file's
``label_means`` and ``label_stds``.
"""

from __future__ import annotations

import glob
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from psvae_opt.data.layout import FileInfo, inspect_file, open_file, read_file
from psvae_opt.errors import DataError

GLOB_CHARS = "*?["


@dataclass(frozen=True, eq=False)
class Session:
    """One or more sessions held in memory, all trials concatenated along the frame axis.

    Attributes:
        path: the HDF5 file it was read from (the first one of several).
        images: (T, C, H, W) uint8 frames.
        labels: (T, L) float32 z-scored labels, 0 where masked.
        masks: (T, L) float32, 1 = valid label entry, 0 = missing.
        trial_names: dataset names of the trials, in order.
        trial_starts: (n_trials + 1,) frame offsets; trial i is frames
            ``trial_starts[i]:trial_starts[i + 1]``.
        label_names: one name per label column.
        factors: (T, F) float32 ground-truth factors, or None.
        factor_names: one name per factor column.
        factor_labeled: per factor, whether it is also a label.
        labels_sc: (T, L) float32 labels in pixels of the stored frames, or None.
        attrs: file-level attributes (of the first file).
        paths: every file, one per session.
        session_names: unique short names of the sessions (file stems).
        trial_sessions: (n_trials,) int64 session index of every trial.
        session_attrs: the file-level attributes of every session.
    """

    path: Path
    images: np.ndarray
    labels: np.ndarray
    masks: np.ndarray
    trial_names: tuple[str, ...]
    trial_starts: np.ndarray
    label_names: tuple[str, ...]
    factors: np.ndarray | None = None
    factor_names: tuple[str, ...] = ()
    factor_labeled: tuple[bool, ...] = ()
    labels_sc: np.ndarray | None = None
    attrs: Mapping[str, Any] = field(default_factory=dict)
    paths: tuple[Path, ...] = ()
    session_names: tuple[str, ...] = ()
    trial_sessions: np.ndarray = None  # type: ignore[assignment]  # filled in below: all trials in session 0
    session_attrs: tuple[Mapping[str, Any], ...] = ()

    def __post_init__(self) -> None:
        # one file: every new field follows from the old ones, so single-session callers need none
        if not self.paths:
            object.__setattr__(self, "paths", (self.path,))
        if not self.session_names:
            object.__setattr__(self, "session_names", (self.path.stem,))
        if self.trial_sessions is None:
            object.__setattr__(self, "trial_sessions", np.zeros(self.n_trials, np.int64))
        if not self.session_attrs:
            object.__setattr__(self, "session_attrs", (self.attrs,))

    @property
    def n_sessions(self) -> int:
        return len(self.paths)

    @property
    def frame_sessions(self) -> np.ndarray:
        """(T,) int64 session index of every frame."""
        return np.repeat(self.trial_sessions, np.diff(self.trial_starts)).astype(np.int64)

    @property
    def n_frames(self) -> int:
        return int(self.images.shape[0])

    @property
    def n_trials(self) -> int:
        return len(self.trial_names)

    @property
    def n_labels(self) -> int:
        return int(self.labels.shape[1])

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.images.shape[1:])  # type: ignore[return-value]

    @property
    def masked_fraction(self) -> float:
        return float(1.0 - self.masks.mean()) if self.masks.size else 0.0


def resolve_paths(path_or_paths: str | Path | Sequence[str | Path]) -> list[Path]:
    """The session files named by one path or several, globs expanded (in name order)."""
    items = [path_or_paths] if isinstance(path_or_paths, str | Path) else list(path_or_paths)
    if not items:
        raise DataError("data.path: an empty list; give one session file or several")
    paths: list[Path] = []
    for item in items:
        text = str(item)
        if any(c in text for c in GLOB_CHARS):
            found = sorted(glob.glob(text))
            if not found:
                raise DataError(f"data.path: {text} matches no file; check the pattern and the working folder")
            paths += [Path(p) for p in found]
        else:
            paths.append(Path(item))
    seen: dict[Path, Path] = {}
    for p in paths:
        key = p.resolve()
        if key in seen:
            raise DataError(f"data.path: {p} is named twice (also as {seen[key]}); give each session once")
        seen[key] = p
    return paths


def session_names(paths: Sequence[Path]) -> tuple[str, ...]:
    """Unique short names: file stems, with as many parent folders as tell equal stems apart."""
    parts = [p.resolve().with_suffix("").parts for p in paths]
    for depth in range(1, max(len(p) for p in parts) + 1):
        names = ["/".join(p[-depth:]) for p in parts]
        if len(set(names)) == len(names):
            return tuple(names)
    return tuple(f"{p.stem}_{i}" for i, p in enumerate(paths))  # not reached: the paths differ


def _check_agree(infos: Sequence[FileInfo]) -> None:
    first = infos[0]
    for info in infos[1:]:
        where = f"{first.path} and {info.path}"
        if info.frame_shape != first.frame_shape:
            raise DataError(
                f"{where} differ in frame shape ({first.frame_shape} vs {info.frame_shape}, C x H x W); "
                "import every session at one --size and with the same camera views"
            )
        if info.label_names != first.label_names:
            a, b = first.label_names, info.label_names
            diff = f"{len(a)} vs {len(b)} labels"
            if len(a) == len(b):
                diff = next(f"{x!r} vs {y!r}" for x, y in zip(a, b) if x != y)
            raise DataError(f"{where} differ in label names ({diff}); import every session with the same --keypoints")


def session_bytes(path_or_paths: str | Path | Sequence[str | Path]) -> int:
    """Bytes of host memory :func:`load_session` fills (frames as uint8, labels and masks as
    float32), from the files' shapes alone: no frame is read."""
    total = 0
    for path in resolve_paths(path_or_paths):
        with open_file(path) as f:
            info = inspect_file(f, path)
        c, h, w = info.frame_shape
        total += info.n_frames * (c * h * w + 2 * 4 * len(info.label_names))
    return total


def load_session(path_or_paths: str | Path | Sequence[str | Path]) -> Session:
    """Read and validate one BehaveNet-layout HDF5 file, or several as one Session.

    Every frame is read once, here. With several files, trial names become
    ``{session_name}/{trial}`` so that they stay unique.
    """
    paths = resolve_paths(path_or_paths)
    with ExitStack() as stack:
        files = [stack.enter_context(open_file(p)) for p in paths]
        infos = [inspect_file(f, p) for f, p in zip(files, paths)]
        _check_agree(infos)
        offsets = np.cumsum([0] + [i.n_frames for i in infos])
        n_frames, n_labels = int(offsets[-1]), len(infos[0].label_names)
        images = np.empty((n_frames, *infos[0].frame_shape), np.uint8)
        labels = np.empty((n_frames, n_labels), np.float32)
        masks = np.empty_like(labels)
        parts = [
            read_file(f, info, images[a:b], labels[a:b], masks[a:b])
            for f, info, a, b in zip(files, infos, offsets, offsets[1:])
        ]
    names = session_names(paths)
    # factors only when every session has the same ones (a mix could not be scored as one)
    same_factors = len({i.factor_names for i in infos}) == 1 and infos[0].factor_names is not None
    sc = [p[2] for p in parts]
    trial_names = [t for i in infos for t in i.trial_names]
    if len(paths) > 1:
        trial_names = [f"{n}/{t}" for n, info in zip(names, infos) for t in info.trial_names]
    return Session(
        path=paths[0],
        images=images,
        labels=labels,
        masks=masks,
        trial_names=tuple(trial_names),
        trial_starts=np.concatenate([[0], *[i.trial_starts[1:] + o for i, o in zip(infos, offsets)]]).astype(np.int64),
        label_names=infos[0].label_names,
        factors=np.concatenate([p[0] for p in parts]) if same_factors else None,
        factor_names=infos[0].factor_names if same_factors else (),
        factor_labeled=parts[0][1] if same_factors else (),
        labels_sc=np.concatenate(sc) if all(x is not None for x in sc) else None,
        attrs=infos[0].attrs,
        paths=tuple(paths),
        session_names=names,
        trial_sessions=np.repeat(np.arange(len(infos)), [len(i.trial_names) for i in infos]).astype(np.int64),
        session_attrs=tuple(i.attrs for i in infos),
    )
