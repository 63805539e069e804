"""Real data in: videos and pose files (or hand-labeled stills) to BehaveNet's HDF5 layout.

Labels are written as BehaveNet does: K keypoints give 2K labels, all x then all y, in the
pixels of the stored (resized) frames (``labels_sc``), z-scored per label over its valid
entries (``labels``), with ``labels_masks`` 0 where a point is missing (NaN) or below the
likelihood threshold; masked labels are stored as 0 and masked ``labels_sc`` keep their
coordinate (NaN where the pose file has none). File attributes map predictions back to pixels:

    labels_sc = labels * label_stds + label_means                (stored-frame pixels)
    x_source  = (x_sc + 0.5) * W_source / size - 0.5             (``source_frame_size`` = H, W)

Every check runs before anything is written, and ``write_session`` writes through a
temporary file, so a refused import leaves no file behind.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from psvae_opt.data.layout import write_session
from psvae_opt.data.poses import Poses, read_poses
from psvae_opt.data.video import Clip, read_image, read_video, scale_points
from psvae_opt.errors import ConfigError, DataError

MIN_SIZE = 5  # the 5x5 convolution kernel of the encoder


@dataclass(frozen=True)
class ImportSummary:
    """What an import wrote (for the CLI's report)."""

    path: Path
    n_frames: int
    n_trials: int
    frame_shape: tuple[int, int, int]
    label_names: tuple[str, ...]
    masked_fraction: float
    frame_rate: float | None
    dropped: str = ""


def _check_flags(size: int, trial_length: int, threshold: float, out: str | Path) -> None:
    if Path(out).is_dir():
        raise ConfigError(
            f"--out {out} is a folder; give the path of the .h5 file to write, e.g. {Path(out) / 'session.h5'}"
        )
    if size < MIN_SIZE:
        raise ConfigError(f"--size {size}: frames must be at least {MIN_SIZE} pixels (use 64 or 128)")
    if trial_length < 1:
        raise ConfigError(f"--trial-length {trial_length}: must be >= 1 frame")
    if not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"--likelihood-threshold {threshold}: must be between 0 and 1")


def _poses(labels: str | Path, keypoints: Sequence[str] | None, track: int) -> Poses:
    poses = read_poses(labels, track=track)
    return poses.select(list(keypoints)) if keypoints else poses


def label_arrays(
    poses: Poses, source_shape: tuple[int, int], size: int, threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Scaled, masked and z-scored labels of K keypoints.

    Returns:
        labels: (T, 2K) z-scored over valid entries, 0 where masked.
        masks: (T, 2K) 1 = valid, 0 = missing or below ``threshold``.
        labels_sc: (T, 2K) stored-frame pixels (NaN where the pose file has no point).
        means, stds: (2K,) of ``labels_sc`` over valid entries.
    """
    xy = scale_points(poses.xy, source_shape, size)  # (T, K, 2)
    valid = np.isfinite(poses.xy).all(axis=-1)  # (T, K): x and y of a point go together
    if poses.likelihood is not None:
        valid &= np.nan_to_num(poses.likelihood, nan=-1.0) >= threshold
    labels_sc = np.concatenate([xy[..., 0], xy[..., 1]], axis=1)  # all x, then all y
    masks = np.concatenate([valid, valid], axis=1)
    n_valid = masks.sum(axis=0)
    safe = np.where(masks, labels_sc, 0.0)
    means = safe.sum(axis=0) / np.maximum(n_valid, 1)
    stds = np.sqrt((np.where(masks, labels_sc - means, 0.0) ** 2).sum(axis=0) / np.maximum(n_valid, 1))
    names = label_names(poses.keypoints)
    for k, name in enumerate(names):
        if n_valid[k] < 2 or stds[k] <= 1e-9:
            why = f"has {int(n_valid[k])} valid frames" if n_valid[k] < 2 else "is constant"
            by_likelihood = poses.likelihood is not None and threshold > 0
            where, hint = (
                (f" (likelihood threshold {threshold})", " or lower --likelihood-threshold")
                if by_likelihood
                else ("", "")
            )
            raise DataError(
                f"{poses.path}: label {name} {why}{where}; z-scoring needs it to vary, "
                f"so leave its keypoint out with --keypoints{hint}"
            )
    labels = np.where(masks, (labels_sc - means) / stds, 0.0)
    return labels, masks.astype(np.float32), labels_sc, means, stds


def label_names(keypoints: Sequence[str]) -> list[str]:
    """BehaveNet's label order: every keypoint's x, then every keypoint's y."""
    return [f"{k}_x" for k in keypoints] + [f"{k}_y" for k in keypoints]


def _cut(array: np.ndarray, length: int) -> list[np.ndarray]:
    """Consecutive trials of ``length`` frames; the last, shorter one is kept."""
    return [array[i : i + length] for i in range(0, len(array), length)]


def _write(
    out: str | Path,
    images: np.ndarray,
    poses: Poses,
    source_shape: tuple[int, int],
    size: int,
    threshold: float,
    trial_length: int,
    attrs: dict[str, Any],
) -> ImportSummary:
    labels, masks, labels_sc, means, stds = label_arrays(poses, source_shape, size, threshold)
    names = label_names(poses.keypoints)
    attrs = {
        "source": "psvae-opt data import",
        "labels_file": poses.path.name,
        "labels_format": poses.format,
        "keypoint_names": list(poses.keypoints),
        "label_means": means,
        "label_stds": stds,
        "source_frame_size": np.array(source_shape, dtype=np.int64),
        **attrs,
    }
    trials = _cut(images, trial_length)
    path = write_session(
        out,
        trials,
        _cut(labels, trial_length),
        masks=_cut(masks, trial_length),
        labels_sc=_cut(labels_sc, trial_length),
        label_names=names,
        attrs=attrs,
    )
    return ImportSummary(
        path,
        len(images),
        len(trials),
        tuple(images.shape[1:]),
        tuple(names),
        float(1.0 - masks.mean()),
        attrs.get("frame_rate"),
    )


def _stack_views(clips: Sequence[Clip]) -> np.ndarray:
    """(T, C, size, size) from C views of one session, which must have the same length."""
    if len({c.n_frames for c in clips}) > 1:  # views may share a file name in different folders
        names = [c.path.name for c in clips]
        listed = ", ".join(
            f"{c.path.name if names.count(c.path.name) == 1 else c.path} has {c.n_frames}" for c in clips
        )
        raise DataError(
            f"the views differ in length ({listed} frames); give videos of one session cut to the same frames"
        )
    return np.stack([c.frames for c in clips], axis=1)


def import_video(
    videos: Sequence[str | Path],
    labels: str | Path,
    out: str | Path,
    *,
    size: int = 128,
    trial_length: int = 100,
    likelihood_threshold: float = 0.9,
    keypoints: Sequence[str] | None = None,
    truncate: bool = False,
    track: int = 0,
) -> ImportSummary:
    """Import one session: C videos (camera views, stacked as channels) and a pose file.

    Label coordinates are taken to be in the pixels of the first video. With ``truncate``,
    a video and labels of different lengths keep their common first frames.
    """
    _check_flags(size, trial_length, likelihood_threshold, out)
    if not videos:
        raise ConfigError("--video: give at least one video")
    poses = _poses(labels, keypoints, track)
    clips = [read_video(v, size) for v in videos]
    images = _stack_views(clips)
    n_video, n_labels = len(images), poses.n_frames
    dropped = ""
    if n_video != n_labels:
        if not truncate:
            raise DataError(
                f"{clips[0].path}: the video has {n_video} frames but {poses.path} has {n_labels} rows of labels; "
                f"give the labels of this video, or --truncate to keep the first {min(n_video, n_labels)} of both"
            )
        n = min(n_video, n_labels)
        dropped = f"kept the first {n} frames (video {n_video}, labels {n_labels})"
        images, poses = images[:n], poses.first(n)
    attrs = {
        "video_files": [c.path.name for c in clips],
        "frame_rate": clips[0].frame_rate,
        "likelihood_threshold": likelihood_threshold,
    }
    summary = _write(out, images, poses, clips[0].source_shape, size, likelihood_threshold, trial_length, attrs)
    return replace(summary, dropped=dropped)


def _find_image(images_dir: Path, row_name: str, labels: Path) -> Path:
    """The file of a labeled frame, whose path in the labels is relative to the project folder."""
    parts = Path(row_name.replace("\\", "/")).parts
    for i in range(len(parts)):  # accept the project folder, labeled-data/ or the video's folder
        candidate = images_dir.joinpath(*parts[i:])
        if candidate.is_file():
            return candidate
    raise DataError(
        f"{labels}: image {row_name} is not under {images_dir}; give --images the DeepLabCut project "
        "folder (the one that holds labeled-data/)"
    )


def import_labeled(
    images_dir: str | Path,
    labels: str | Path,
    out: str | Path,
    *,
    size: int = 128,
    trial_length: int = 1,
    keypoints: Sequence[str] | None = None,
) -> ImportSummary:
    """Import hand-labeled still frames (DeepLabCut's CollectedData, image paths in the index).

    The frames are not consecutive in time, so the default trial holds one frame and the
    split may put any frame anywhere. Missing labels (empty cells) are masked.
    """
    _check_flags(size, trial_length, 0.0, out)
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise DataError(f"{images_dir}: not a folder; give --images the folder that holds labeled-data/")
    poses = _poses(labels, keypoints, 0)
    frames, shapes = [], {}
    for row in poses.row_names:
        path = _find_image(images_dir, row, poses.path)
        frame, shape = read_image(path, size)
        frames.append(frame)
        shapes.setdefault(shape, path.name)
    if len(shapes) > 1:
        listed = ", ".join(f"{h}x{w} ({name})" for (h, w), name in shapes.items())
        raise DataError(
            f"{images_dir}: the labeled frames differ in size ({listed}); import one camera's frames at a time"
        )
    attrs = {"image_files": list(poses.row_names)}
    images = np.stack(frames)[:, None]  # (T, 1, size, size)
    return _write(out, images, poses, next(iter(shapes)), size, 0.0, trial_length, attrs)
