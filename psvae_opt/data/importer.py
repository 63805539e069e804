"""Real data in: videos and pose files (or hand-labeled stills) to BehaveNet's HDF5 layout.

Labels are written as BehaveNet does: K keypoints give 2K labels, all x then all y, in the
pixels of the stored (resized) frames (``labels_sc``), z-scored per label over its valid
entries (``labels``), with ``labels_masks`` 0 where a point is missing (NaN) or below the
likelihood threshold; masked labels are stored as 0 and masked ``labels_sc`` keep their
coordinate (NaN where the pose file has none).

Camera views: C videos of one session are stacked as channels. One labels file serves all of
them, its coordinates in the pixels of the first video (a mirror setup: one camera, one file);
or each video has its own labels file (``--labels`` once per ``--video``, in the same order),
each in the pixels of its own video. Then keypoint k of view v is named ``{k}_{v}``, the view
name being the video's file stem unless given (``view_names``), and the labels are all x then
all y over the keypoints of every view, view by view.

File attributes map predictions back to each source video's pixels: for label l,

    labels_sc = labels * label_stds + label_means                     (stored-frame pixels)
    x_source  = (x_sc + 0.5) * W_l / size - 0.5                       (H_l, W_l = label_source_size[l])

(y likewise with H_l). ``source_frame_size`` is the (H, W) of the first video, as before.
Every check runs before anything is written, and ``write_session`` writes through a temporary
file, so a refused import leaves no file behind.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from psvae_opt.data.pose_files import read_poses
from psvae_opt.data.poses import Poses
from psvae_opt.data.video import Clip, read_image, read_video, scale_points
from psvae_opt.data.views import combine, fit_lengths, read_labels, view_names_for
from psvae_opt.data.writer import check_writable, write_session
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
    padded: str = ""


def _check_flags(size: int, trial_length: int, threshold: float, out: str | Path) -> None:
    check_writable(out, "--out")
    if size < MIN_SIZE:
        raise ConfigError(f"--size {size}: frames must be at least {MIN_SIZE} pixels (use 64 or 128)")
    if trial_length < 1:
        raise ConfigError(f"--trial-length {trial_length}: must be >= 1 frame")
    if not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"--likelihood-threshold {threshold}: must be between 0 and 1")


def label_arrays(
    poses: Poses, source_shape: tuple[int, int] | np.ndarray, size: int, threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Scaled, masked and z-scored labels of K keypoints.

    Args:
        source_shape: (H, W) of the frames the coordinates are in, or (K, 2): one per keypoint.

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
    source_hw: np.ndarray,
    size: int,
    threshold: float,
    trial_length: int,
    attrs: dict[str, Any],
) -> ImportSummary:
    """Write the session; ``source_hw`` (K, 2) is the source (H, W) of each keypoint's coordinates."""
    labels, masks, labels_sc, means, stds = label_arrays(poses, source_hw, size, threshold)
    names = label_names(poses.keypoints)
    attrs = {
        "source": "psvae-opt data import",
        "labels_file": poses.path.name,
        "labels_files": [poses.path.name],
        "labels_format": poses.format,
        "labels_formats": [poses.format],
        "keypoint_names": list(poses.keypoints),
        "label_means": means,
        "label_stds": stds,
        "source_frame_size": np.asarray(source_hw[0], dtype=np.int64),
        "label_source_size": np.concatenate([source_hw, source_hw]).astype(np.int64),  # (2K, 2): x labels, y labels
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
    labels: str | Path | Sequence[str | Path],
    out: str | Path,
    *,
    size: int = 128,
    trial_length: int = 100,
    likelihood_threshold: float = 0.9,
    keypoints: Sequence[str] | None = None,
    truncate: bool = False,
    track: int = 0,
    pose_estimation: str | None = None,
    view_names: Sequence[str] | None = None,
) -> ImportSummary:
    """Import one session: C videos (camera views, stacked as channels) and their pose files.

    ``labels`` is one pose file (coordinates in the pixels of the first video) or one per
    video. With ``truncate``, a video and labels of different lengths keep their common first
    frames; labels of a file that stops at its last pose (SLEAP, NWB) are padded as missing.
    """
    _check_flags(size, trial_length, likelihood_threshold, out)
    files = [labels] if isinstance(labels, str | Path) else list(labels)
    if not videos:
        raise ConfigError("--video: give at least one video")
    if len(files) not in (1, len(videos)):
        raise ConfigError(
            f"--labels given {len(files)} times for {len(videos)} --video; give one labels file for all views "
            "or one per --video, in the same order"
        )
    views = view_names_for(videos, view_names, named=len(files) > 1)
    per_view = read_labels(files, videos, views, keypoints, track, pose_estimation)
    clips = [read_video(v, size) for v in videos]
    images, per_view, dropped, padded = fit_lengths(_stack_views(clips), per_view, clips, truncate)
    poses = combine(per_view)
    # each view's keypoints are in its own video's pixels; one file for all views, in the first's
    shapes = [c.source_shape for c in clips] if len(per_view) > 1 else [clips[0].source_shape]
    hw = {k: shape for p, shape in zip(per_view, shapes) for k in p.keypoints}
    if keypoints and len(per_view) > 1:
        poses = poses.select(list(keypoints))
    attrs = {
        "video_files": [c.path.name for c in clips],
        "view_names": views,
        "view_frame_sizes": np.array([c.source_shape for c in clips], dtype=np.int64),
        "frame_rate": clips[0].frame_rate,
        "likelihood_threshold": likelihood_threshold,
        "labels_files": [p.path.name for p in per_view],
        "labels_formats": [p.format for p in per_view],
        "source_frame_size": np.array(clips[0].source_shape, dtype=np.int64),
    }
    source_hw = np.array([hw[k] for k in poses.keypoints], dtype=np.float64)
    summary = _write(out, images, poses, source_hw, size, likelihood_threshold, trial_length, attrs)
    return replace(summary, dropped=dropped, padded=padded)


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
    poses = read_poses(labels)
    poses = poses.select(list(keypoints)) if keypoints else poses
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
    source_hw = np.tile(np.array(next(iter(shapes)), dtype=np.float64), (len(poses.keypoints), 1))
    return _write(out, images, poses, source_hw, size, 0.0, trial_length, attrs)
