"""New data for a model: HDF5 session files or videos, checked against the model before any output.

Session files are checked from their headers (frame shape, label names) before a frame is read;
videos are streamed through the import's own reader (:func:`psvae_opt.data.video.iter_video`:
FFmpeg's grayscale, then the same antialiased resize), so a frame encodes as it would after
``psvae-opt data import``, and a video is never held whole. A model of C channels takes C
videos per session (camera views, as ``data import`` stacks them); a one-channel model takes
each video as a session of its own.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from itertools import zip_longest
from pathlib import Path

import numpy as np

from psvae_opt.data import load_session
from psvae_opt.data.layout import inspect_file, open_file
from psvae_opt.data.video import Crop, VideoInfo, iter_video, probe_video
from psvae_opt.errors import DataError
from psvae_opt.inference.model import PsvaeModel


@dataclass(frozen=True)
class SessionFrames:
    """One session to encode.

    Attributes:
        name: a file-name-safe session name; paths: its file, or its videos (one per view).
        frames: (T, C, H, W) uint8 (session files), or None for videos, which are streamed
            through ``reader`` (yields (n, C, H, W) uint8 chunks) and never held whole.
        trial_starts: (n_trials + 1,) frame offsets (for videos, set once decoded: :func:`with_length`).
        frame_rate: frames per second (None when unknown).
        labels, masks, labels_sc: (T, L) the file's z-scored labels, validity and stored-frame
            pixels (None for videos, and ``labels_sc`` for files without it).
        factors: (T, F) ground truth (synthetic data) with ``factor_names``, ``factor_labeled``.
        source_size: (L, 2) (H, W) of each label's source video (its crop), when the input tells it.
        label_offset: (L,) pixels added to predicted labels (a crop's x for x labels, y for y labels).
        first_frame: the source frame of frame 0 (``--frames START``).
        declared_frames: frames the videos declare for the range encoded (0: unknown).
        trial_length: frames per trial (videos); timestamps: (T,) seconds from an NWB source.
        geometry: the resize, crop, frame range and frame rate used (stored in every output).
    """

    name: str
    paths: tuple[Path, ...]
    frames: np.ndarray | None
    trial_starts: np.ndarray
    frame_rate: float | None = None
    labels: np.ndarray | None = None
    masks: np.ndarray | None = None
    labels_sc: np.ndarray | None = None
    factors: np.ndarray | None = None
    factor_names: tuple[str, ...] = ()
    factor_labeled: tuple[bool, ...] = ()
    source_size: np.ndarray | None = None
    label_offset: np.ndarray | None = None
    first_frame: int = 0
    declared_frames: int = 0
    trial_length: int = 100
    timestamps: np.ndarray | None = None
    geometry: dict = field(default_factory=dict)
    reader: Callable[[], Iterator[np.ndarray]] | None = None

    @property
    def n_frames(self) -> int:
        return int(self.frames.shape[0]) if self.frames is not None else int(self.trial_starts[-1])

    @property
    def n_trials(self) -> int:
        return len(self.trial_starts) - 1

    @property
    def times(self) -> np.ndarray:
        """(T,) seconds: the NWB source's times, else source frame index / rate (NaN without a rate)."""
        if self.timestamps is not None:
            return self.timestamps
        rate = self.frame_rate if self.frame_rate and np.isfinite(self.frame_rate) else float("nan")
        return (self.first_frame + np.arange(self.n_frames, dtype=np.float64)) / rate

    def chunks(self, size: int) -> Iterator[np.ndarray]:
        """(n, C, H, W) uint8 chunks of every frame, in order."""
        if self.reader is not None:
            yield from self.reader()
            return
        assert self.frames is not None
        for a in range(0, len(self.frames), size):
            yield self.frames[a : a + size]


def with_length(session: SessionFrames, n_frames: int) -> SessionFrames:
    """A streamed session once its frames are counted: trials of ``trial_length`` frames."""
    starts = np.append(np.arange(0, n_frames, session.trial_length), n_frames).astype(np.int64)
    return replace(session, trial_starts=starts)


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


def read_session_file(path: Path, name: str, frame_rate: float | None = None) -> SessionFrames:
    """One session file (already checked) in memory; ``frame_rate`` where the file records none."""
    s = load_session(path)
    rate = s.attrs.get("frame_rate")
    size = s.attrs.get("label_source_size")
    rate, origin = (float(rate), "session file") if rate is not None else (frame_rate, "--frame-rate")
    return SessionFrames(
        name=name,
        paths=(path,),
        frames=s.images,
        trial_starts=np.asarray(s.trial_starts),
        frame_rate=rate,
        labels=s.labels,
        masks=s.masks,
        labels_sc=s.labels_sc,
        factors=s.factors,
        factor_names=s.factor_names,
        factor_labeled=s.factor_labeled,
        source_size=None if size is None else np.asarray(size, np.float64).reshape(-1, 2),
        geometry={"resize": None, "crop": None, "frames": [0, int(s.images.shape[0])], "frame_rate": rate,
                  "frame_rate_from": origin if rate is not None else None, **_start_time(path, None)},
    )  # fmt: skip


def _start_time(path: Path, tagged: str | None) -> dict[str, str]:
    """When the recording began, as a new NWB file's session start: the video's ``creation_time``
    tag, else the file's modification time (a copy may have changed it: the provenance says which)."""
    if tagged:
        try:
            when = datetime.datetime.fromisoformat(tagged.replace("Z", "+00:00"))
            if when.tzinfo is None:
                when = when.replace(tzinfo=datetime.UTC)
            return {"session_start_time": when.isoformat(), "session_start_time_from": "video creation_time tag"}
        except ValueError:
            pass
    when = datetime.datetime.fromtimestamp(path.stat().st_mtime, datetime.UTC)
    return {"session_start_time": when.isoformat(), "session_start_time_from": "file modification time"}


def video_groups(model: PsvaeModel, paths: Sequence[Path]) -> list[list[Path]]:
    """Videos per session: all of them as the C views of one session, or one session each (C = 1)."""
    c, h, w = model.frame_shape
    if h != w:
        raise DataError(f"the model {model.folder} takes {h} x {w} frames; videos are resized to squares only")
    if c == 1:
        return [[p] for p in paths]
    if len(paths) != c:
        raise DataError(
            f"{len(paths)} videos for a model of {c} channels (camera views); give one --video per view, in the "
            "order of the import"
        )
    return [list(paths)]


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


@dataclass(frozen=True)
class VideoOptions:
    """How videos are read: ``crop`` (x, y, w, h) in source pixels before the resize, frames
    ``start`` to ``stop`` (exclusive), trials of ``trial_length``, ``frame_rate`` where the video
    declares none, ``allow_short``: encode a video that decodes fewer frames than it declares."""

    trial_length: int = 100
    crop: Crop | None = None
    start: int = 0
    stop: int | None = None
    frame_rate: float | None = None
    allow_short: bool = False


def open_video_session(model: PsvaeModel, videos: Sequence[Path], options: VideoOptions) -> SessionFrames:
    """A session of videos (one per view), streamed at the model's frame size (nothing decoded yet)."""
    infos = [probe_video(v) for v in videos]
    crop = options.crop
    for info in infos:
        h, w = info.source_shape
        if crop is not None and (crop[0] + crop[2] > w or crop[1] + crop[3] > h):
            raise DataError(f"{info.path}: --crop {','.join(map(str, crop))} (x,y,w,h) leaves its {w} x {h} frames")
    shapes = [(crop[3], crop[2]) if crop else i.source_shape for i in infos]
    declared = min(i.declared_frames for i in infos)
    if declared:
        declared = max(0, min(options.stop or declared, declared) - options.start)
    rate, origin = infos[0].frame_rate, "video"
    if not np.isfinite(rate):
        rate, origin = (options.frame_rate, "--frame-rate") if options.frame_rate else (float("nan"), None)
    half = model.n_labels // 2  # all x labels, then all y
    offset = np.where(np.arange(model.n_labels) < half, crop[0], crop[1]) if crop else None
    size = model.frame_shape[1]
    return SessionFrames(
        name=infos[0].path.stem,
        paths=tuple(i.path for i in infos),
        frames=None,
        trial_starts=np.zeros(1, np.int64),
        frame_rate=rate,
        source_size=_label_sizes(model, shapes),
        label_offset=None if offset is None else offset.astype(np.float64),
        first_frame=options.start,
        declared_frames=declared,
        trial_length=options.trial_length,
        geometry={
            "source_size": [list(i.source_shape) for i in infos], "crop": list(crop) if crop else None,
            "resize": [size, size], "frames": [options.start, options.stop], "frame_rate": rate,
            "frame_rate_from": origin, **_start_time(infos[0].path, infos[0].creation_time),
        },
        reader=lambda: _stacked(infos, size, crop, options.start, options.stop),
    )  # fmt: skip


def _stacked(
    infos: Sequence[VideoInfo], size: int, crop: Crop | None, start: int, stop: int | None
) -> Iterator[np.ndarray]:
    """(n, C, size, size) chunks of the views decoded side by side; views of unequal length refused."""
    streams = [iter_video(i.path, size, crop, start, stop) for i in infos]
    done = 0
    for chunks in zip_longest(*streams):
        lengths = [0 if c is None else len(c) for c in chunks]
        if len(set(lengths)) > 1:
            totals = [done + n + sum(len(c) for c in rest) for n, rest in zip(lengths, streams)]
            listed = ", ".join(f"{i.path} has {n}" for i, n in zip(infos, totals))
            raise DataError(f"the views differ in length ({listed} frames); give videos of one session cut alike")
        done += lengths[0]
        yield np.stack(chunks, axis=1)
