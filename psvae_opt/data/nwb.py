"""NWB files with ndx-pose ``PoseEstimation`` containers (DLC2NWB, SLEAP's NWB export, DANDI).

One ``PoseEstimation`` holds one animal seen by one camera: a ``PoseEstimationSeries`` per
keypoint, (T, 2) positions in pixels with a ``confidence`` per row (the likelihood). A file with
several containers (animals, cameras, trackers) needs ``--pose-estimation NAME``.

Rows are put on video frames by their times, in this order of rules:

1. The container links its ``source_video`` (an ``ImageSeries``): a row belongs to the frame
   whose time is nearest (timestamps), or to frame ``round((t - starting_time) * rate)``.
2. Every series has the same times (DLC2NWB writes one row per video frame, with the video's
   own, possibly uneven, frame times): row i is frame i.
3. Otherwise, and always for SLEAP's export (``source_software`` SLEAP), which leaves out each
   keypoint's missing frames, even leading ones, the times sit on a grid of frames that starts
   at time 0 (the first frame, as SLEAP writes them): frame ``round(t * rate)``, with the
   series' own ``rate``, else the smallest step between times.

A row off the frame grid (by more than a quarter frame) or two rows on one frame are refused.
Files whose length is unknown after these rules are ``open_end``: frames after the last row
have no pose.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from psvae_opt.data.poses import PoseOptions, Poses, is_hdf5
from psvae_opt.errors import DataError, require_extra

PIXEL_UNITS = ("pixels", "pixel", "px")
OFF_GRID = 0.25  # of a frame


def _attr(node: Any, key: str) -> str:
    value = node.attrs.get(key, "")
    return value.decode() if isinstance(value, bytes) else str(value)


def is_nwb(path: Path) -> bool:
    if not is_hdf5(path):
        return False
    with h5py.File(path, "r") as f:
        if _attr(f, "neurodata_type") != "NWBFile":
            return False
        found = f.visititems(lambda _, node: True if _attr(node, "neurodata_type") == "PoseEstimation" else None)
        return bool(found)


def _pick(path: Path, containers: dict[str, Any], name: str | None) -> Any:
    if not containers:
        raise DataError(f"{path}: an NWB file without ndx-pose PoseEstimation data; give a pose file")
    short = {}
    for qualified, pe in containers.items():
        short.setdefault(pe.name, []).append(qualified)
    listed = ", ".join(q if len(short[containers[q].name]) > 1 else containers[q].name for q in containers)
    if name is None:
        if len(containers) == 1:
            return next(iter(containers.values()))
        raise DataError(
            f"{path}: holds {len(containers)} PoseEstimation containers ({listed}); choose one with --pose-estimation"
        )
    if name in containers:
        return containers[name]
    if len(short.get(name, [])) == 1:
        return containers[short[name][0]]
    raise DataError(f"{path}: no single PoseEstimation named {name!r} (it has: {listed}); fix --pose-estimation")


def _times(series: Any) -> np.ndarray:
    """(T,) times of a TimeSeries's rows, in seconds."""
    if series.timestamps is not None:
        return np.asarray(series.timestamps[:], dtype=np.float64)
    n = len(series.data) if series.data is not None else 0
    return (series.starting_time or 0.0) + np.arange(n) / series.rate


def _on_grid(path: Path, name: str, position: np.ndarray) -> np.ndarray:
    """Frame indices from fractional frame positions, refused when off the grid."""
    frames = np.rint(position).astype(np.int64)
    if len(position) and (np.abs(position - frames).max() > OFF_GRID or frames.min() < 0):
        raise DataError(
            f"{path}: the times of series {name} do not fall on video frames; link the source video "
            "(PoseEstimation.source_video) or write one row per frame"
        )
    return frames


def _video_frames(path: Path, pe: Any, names: list[str], times: list[np.ndarray]) -> tuple[list, int | None]:
    """Each series' frame indices, and the number of frames when it is known (rules 1-3)."""
    video = getattr(pe, "source_video", None)
    if video is not None and video.timestamps is not None:
        clock = np.asarray(video.timestamps[:], dtype=np.float64)
        step = np.median(np.diff(clock)) if len(clock) > 1 else 1.0
        frames = []
        for name, t in zip(names, times):
            nearest = np.zeros(len(t), np.int64)
            if len(clock) > 1:
                idx = np.clip(np.searchsorted(clock, t), 1, len(clock) - 1)
                nearest = np.where(np.abs(clock[idx - 1] - t) <= np.abs(clock[idx] - t), idx - 1, idx)
            frames.append(_on_grid(path, name, nearest + (t - clock[nearest]) / step))
        return frames, len(clock)
    if video is not None and video.rate:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an unknown length is no problem here
            n = video.num_samples
        start = video.starting_time or 0.0
        return [_on_grid(path, s, (t - start) * video.rate) for s, t in zip(names, times)], n or None
    sleap = str(getattr(pe, "source_software", "") or "").upper() == "SLEAP"
    if not sleap and all(len(t) == len(times[0]) and np.array_equal(t, times[0]) for t in times):
        return [np.arange(len(t)) for t in times], len(times[0])
    rates = {float(pe.pose_estimation_series[s].rate) for s in names if pe.pose_estimation_series[s].rate}
    if len(rates) > 1:
        raise DataError(f"{path}: the series have different rates ({sorted(rates)} Hz); give one rate to all")
    if rates:
        rate = rates.pop()
    else:
        steps = np.diff(np.unique(np.concatenate(times)))
        rate = 1.0 / steps[steps > 0].min() if (steps > 0).any() else 1.0
    return [_on_grid(path, s, t * rate) for s, t in zip(names, times)], None


def _keypoint_names(pe: Any) -> list[str]:
    """Series names, in the order of the skeleton's nodes when it names them all."""
    names = list(pe.pose_estimation_series)
    skeleton = getattr(pe, "skeleton", None)
    nodes = [str(n) for n in skeleton.nodes[:]] if skeleton is not None else []
    return nodes if sorted(nodes) == sorted(names) else names


def _series_arrays(path: Path, series: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """(T, 2) pixel positions and (T,) confidence (or None) of one series."""
    data = np.asarray(series.data[:], dtype=np.float64)
    if data.ndim != 2 or data.shape[1] not in (2, 3):
        raise DataError(f"{path}: series {series.name} has data of shape {data.shape}; expected (T, 2) positions")
    if data.shape[1] == 3:
        raise DataError(
            f"{path}: series {series.name} holds 3-D positions; give the 2-D PoseEstimation of one camera view"
        )
    if str(series.unit).lower() not in PIXEL_UNITS:
        raise DataError(f"{path}: series {series.name} is in {series.unit!r}, not pixels; give poses in video pixels")
    data = data * (series.conversion or 1.0) + (getattr(series, "offset", 0.0) or 0.0)
    if series.confidence is None:
        return data, None
    confidence = np.asarray(series.confidence[:], dtype=np.float64)
    if confidence.shape != (len(data),):
        raise DataError(f"{path}: series {series.name} has {len(confidence)} confidences for {len(data)} rows")
    return data, confidence


def _read_container(path: Path, pe: Any) -> tuple[list[str], list, list, int | None]:
    """Keypoint names, per-series (positions, confidence), frame indices and the known length."""
    names = _keypoint_names(pe)
    if not names:
        raise DataError(f"{path}: PoseEstimation {pe.name} holds no series; give a pose file with keypoints")
    arrays = [_series_arrays(path, pe.pose_estimation_series[n]) for n in names]
    times = [_times(pe.pose_estimation_series[n]) for n in names]
    for name, (data, _), t in zip(names, arrays, times):
        if len(t) != len(data):
            raise DataError(f"{path}: series {name} has {len(data)} rows but {len(t)} times")
    frames, n_known = _video_frames(path, pe, names, times)
    return names, arrays, frames, n_known


def read_nwb(path: Path, options: PoseOptions) -> Poses:
    require_extra(f"{path}: reading nwb files", "poses", ("pynwb", "ndx_pose"))
    import ndx_pose  # registers PoseEstimation with pynwb
    from pynwb import NWBHDF5IO

    if options.track != 0:
        raise DataError(
            f"{path}: --track {options.track}: an NWB file keeps each animal in its own PoseEstimation; "
            "choose it with --pose-estimation"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cached-namespace notices of the library
        try:
            io = NWBHDF5IO(str(path), "r")
            nwbfile = io.read()
        except (OSError, KeyError, ValueError, TypeError) as exc:
            raise DataError(f"{path}: cannot be read as an NWB file ({exc}); write it again with pynwb") from None
        try:
            found = [o for o in nwbfile.objects.values() if isinstance(o, ndx_pose.PoseEstimation)]
            containers = {f"{pe.parent.name}/{pe.name}" if pe.parent else pe.name: pe for pe in found}
            containers = dict(sorted(containers.items()))
            names, arrays, frames, n_known = _read_container(path, _pick(path, containers, options.pose_estimation))
        finally:
            io.close()
    last = max((int(f.max()) for f in frames if len(f)), default=-1)
    n_frames = max(n_known or 0, last + 1)
    if n_frames == 0:
        raise DataError(f"{path}: the PoseEstimation's series hold no rows; give a pose file with poses")
    xy = np.full((n_frames, len(names), 2), np.nan)
    likelihood = np.full((n_frames, len(names)), np.nan)
    for k, (name, (data, confidence), idx) in enumerate(zip(names, arrays, frames)):
        if len(np.unique(idx)) != len(idx):
            raise DataError(f"{path}: series {name} has two rows on one video frame; give one row per frame")
        xy[idx, k] = data
        # a series without confidence keeps its points (they are never below the threshold)
        likelihood[idx, k] = confidence if confidence is not None else 1.0
    if all(c is None for _, c in arrays):
        likelihood = None
    rows = tuple(str(i) for i in range(n_frames))
    return Poses(path, "nwb", tuple(names), xy, likelihood, rows, open_end=n_known is None)
