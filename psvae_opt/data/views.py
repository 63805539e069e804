"""Camera views of one session and their labels files: names, one pose table, one length.

With one labels file per video, keypoint k of view v is named ``{k}_{v}`` (the view name is the
video's file stem unless given), so that the views' keypoints stay apart in one label table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from psvae_opt.data.pose_files import check_readable, read_poses
from psvae_opt.data.poses import Poses
from psvae_opt.data.video import Clip
from psvae_opt.errors import ConfigError, DataError


def view_names_for(videos: Sequence[str | Path], names: Sequence[str] | None, named: bool) -> list[str]:
    """One name per camera view: the given ones, else the videos' file stems; ``named``: they name keypoints."""
    if names is not None and len(names) != len(videos):
        raise ConfigError(f"--view-names: {len(names)} names for {len(videos)} videos; give one per --video")
    views = list(names) if names is not None else [Path(v).stem for v in videos]
    repeated = sorted({v for v in views if views.count(v) > 1})
    if repeated and (named or names is not None):
        raise ConfigError(
            f"two views are named {repeated[0]!r}; name them apart with --view-names a,b,... (one per --video)"
        )
    if any(not v.strip() for v in views):
        raise ConfigError("--view-names: a view name is empty; give one name per --video")
    return views


def read_labels(
    labels: Sequence[str | Path],
    videos: Sequence[str | Path],
    views: Sequence[str],
    keypoints: Sequence[str] | None,
    track: int,
    pose_estimation: str | None,
) -> list[Poses]:
    """Each labels file's poses; with one file per view, keypoints renamed ``{k}_{view}``."""
    check_readable(labels)  # every file's libraries before the first is read
    if len(labels) == 1:
        poses = read_poses(labels[0], track, pose_estimation=pose_estimation, video=Path(videos[0]).name)
        return [poses.select(list(keypoints)) if keypoints else poses]
    out = []
    for file, video, view in zip(labels, videos, views):
        poses = read_poses(file, track, pose_estimation=pose_estimation, video=Path(video).name)
        out.append(replace(poses, keypoints=tuple(f"{k}_{view}" for k in poses.keypoints)))
    known = [k for p in out for k in p.keypoints]
    unknown = [k for k in keypoints or () if k not in known]
    if unknown:  # checked now, before the videos are decoded
        raise DataError(
            f"no keypoint {', '.join(map(repr, unknown))} in the labels files (they have: {', '.join(known)}); "
            "fix --keypoints (with one labels file per view, keypoint k of view v is named k_v)"
        )
    return out


def combine(views: Sequence[Poses]) -> Poses:
    """The keypoints of every view side by side (views of equal length)."""
    if len(views) == 1:
        return views[0]
    liks = [p.likelihood if p.likelihood is not None else np.ones(p.xy.shape[:2]) for p in views]
    likelihood = np.concatenate(liks, axis=1) if any(p.likelihood is not None for p in views) else None
    keypoints = tuple(k for p in views for k in p.keypoints)
    xy = np.concatenate([p.xy for p in views], axis=1)
    return replace(views[0], keypoints=keypoints, xy=xy, likelihood=likelihood, open_end=False)


def fit_lengths(
    images: np.ndarray, views: list[Poses], clips: Sequence[Clip], truncate: bool
) -> tuple[np.ndarray, list[Poses], str, str]:
    """Video and labels cut (``truncate``) or padded (open-ended pose files) to one length."""
    n_video = len(images)
    short = [p.open_end and p.n_frames < n_video for p in views]
    note = ""
    if any(short):
        note = ", ".join(f"{p.path.name} ends at frame {p.n_frames - 1}" for p, s in zip(views, short) if s)
        note += f"; the video's later frames (of {n_video}) have no pose and are masked"
        views = [p.pad(n_video) if s else p for p, s in zip(views, short)]
    dropped = ""
    for i, poses in enumerate(views):
        if poses.n_frames != n_video and not truncate:
            clip = clips[i] if len(views) > 1 else clips[0]
            n = min(n_video, poses.n_frames)
            raise DataError(
                f"{clip.path}: the video has {n_video} frames but {poses.path} has {poses.n_frames} rows of labels; "
                f"give the labels of this video, or --truncate to keep the first {n} of both"
            )
    n = min([n_video] + [p.n_frames for p in views])
    if any(p.n_frames != n_video for p in views):
        counts = ", ".join(str(p.n_frames) for p in views)
        dropped = f"kept the first {n} frames (video {n_video}, labels {counts})"
        images, views = images[:n], [p.first(n) for p in views]
    return images, views, dropped, note
