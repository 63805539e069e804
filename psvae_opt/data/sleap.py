"""SLEAP's files: the analysis HDF5 export (read with h5py) and ``.slp`` labels (read with sleap-io).

- Analysis HDF5: ``tracks`` (tracks, 2, nodes, frames) as written for MATLAB (or in the order
  its ``dims`` attribute names), ``node_names``, ``track_occupancy`` (frames, tracks) and, when
  present, ``point_scores`` (tracks, nodes, frames) in the same order as ``tracks`` less its
  ``xy`` axis. Points of unoccupied frames and NaN points are missing. A point that has a
  position but no score (NaN) belongs to a user-labelled instance and counts as score 1.
- ``.slp``: frame ``frame_idx`` of the video holds the instances SLEAP predicted (or a user
  labelled) there; frames without an instance of the chosen animal are missing. Per-point scores
  of predicted instances are the likelihood; user-labelled instances count as score 1, since a
  person placed them, and win over a prediction of the same animal on the same frame, as in
  SLEAP's own exports.

Both files stop at the last frame with a pose when the video's length is not recorded, so their
poses are ``open_end``: the video's later frames have no pose.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from psvae_opt.data.poses import PoseOptions, Poses, is_hdf5, pick_index
from psvae_opt.errors import DataError, require_extra

SLEAP_DIMS = ("track", "xy", "node", "frame")  # the order SLEAP's MATLAB-style export stores


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# -- analysis HDF5 -------------------------------------------------------------------------------


def is_analysis(path: Path) -> bool:
    if not is_hdf5(path):
        return False
    with h5py.File(path, "r") as f:
        return all(isinstance(f.get(k), h5py.Dataset) for k in ("tracks", "node_names", "track_occupancy"))


def _dims(dataset: h5py.Dataset, default: tuple[str, ...]) -> tuple[str, ...]:
    raw = dataset.attrs.get("dims")
    if raw is None:
        return default
    try:
        return tuple(json.loads(_text(raw)))
    except (ValueError, TypeError):
        return ()  # refused by the caller, which names the expected layout


def _point_scores(f: h5py.File, path: Path, dims: tuple[str, ...], shape: tuple[int, ...]) -> np.ndarray | None:
    """(frames, tracks, nodes) scores, or None when the file has none."""
    if "point_scores" not in f:
        return None
    node = f["point_scores"]
    order = _dims(node, tuple(d for d in dims if d != "xy")) if isinstance(node, h5py.Dataset) else ()
    want = ("frame", "track", "node")
    if sorted(order) != sorted(want) or node.ndim != 3 or node.dtype.kind not in "fiu":
        raise DataError(
            f"{path}: `point_scores` is not a numeric (tracks, nodes, frames) array; export the analysis file again"
        )
    scores = np.transpose(node[()], [order.index(d) for d in want]).astype(np.float64)
    if scores.shape != shape:
        raise DataError(
            f"{path}: `point_scores` {scores.shape} (frames, tracks, nodes) does not match `tracks` {shape}; "
            "export the analysis file again"
        )
    return scores


def read_analysis(path: Path, options: PoseOptions) -> Poses:
    with h5py.File(path, "r") as f:
        tracks, occ = f["tracks"], f["track_occupancy"]
        dims = _dims(tracks, SLEAP_DIMS)
        if sorted(dims) != sorted(SLEAP_DIMS) or tracks.ndim != 4 or tracks.dtype.kind not in "fiu":
            raise DataError(
                f"{path}: `tracks` is {tracks.dtype} of shape {tracks.shape}, "
                "expected numbers of shape (tracks, 2, nodes, frames)"
            )
        xy = np.transpose(tracks[()], [dims.index(d) for d in ("frame", "track", "node", "xy")]).astype(np.float64)
        names = [_text(n) for n in f["node_names"][()]]
        occupied = np.asarray(occ[()])
        if _dims(occ, ("frame", "track")) == ("track", "frame"):
            occupied = occupied.T
        track_names = [_text(n) for n in f["track_names"][()]] if isinstance(f.get("track_names"), h5py.Dataset) else []
        scores = _point_scores(f, path, dims, xy.shape[:3]) if xy.shape[3] == 2 else None
    n_frames, n_tracks, n_nodes, n_xy = xy.shape
    if n_xy != 2 or n_nodes != len(names) or occupied.shape != (n_frames, n_tracks):
        raise DataError(
            f"{path}: `tracks` {xy.shape} (frames, tracks, nodes, xy), `node_names` ({len(names)}) "
            f"and `track_occupancy` {occupied.shape} do not agree; export the analysis file again"
        )
    if len(track_names) != n_tracks:
        track_names = []
    track = pick_index(path, options.track, track_names or [str(i) for i in range(n_tracks)])
    points = xy[:, track].copy()  # (T, K, 2)
    gone = occupied[:, track] == 0
    points[gone] = np.nan  # an unoccupied frame has no instance of this animal
    likelihood = None
    if scores is not None:
        likelihood = scores[:, track].copy()
        user = np.isnan(likelihood) & np.isfinite(points).all(axis=-1)
        likelihood[user] = 1.0  # a position without a score: a user-labelled point
        likelihood[~np.isfinite(points).all(axis=-1)] = np.nan  # no point, no score
    rows = tuple(str(i) for i in range(n_frames))
    return Poses(path, "sleap-analysis", tuple(names), points, likelihood, rows, open_end=True)


# -- .slp ------------------------------------------------------------------------------------------


def is_slp(path: Path) -> bool:
    if not is_hdf5(path):
        return False
    with h5py.File(path, "r") as f:
        has = all(k in f for k in ("metadata", "frames", "instances", "points", "pred_points"))
        return has and "format_id" in f["metadata"].attrs


def _pick_video(path: Path, labels: Any, video_name: str | None) -> Any:
    videos = list(labels.videos)
    if len(videos) == 1:
        return videos[0]
    names = [Path(v.filename if isinstance(v.filename, str) else v.filename[0]).name for v in videos]
    if video_name in names and names.count(video_name) == 1:
        return videos[names.index(video_name)]
    raise DataError(
        f"{path}: holds poses of {len(videos)} videos ({', '.join(names) or 'none'}); give the video of the same "
        "file name with --video, or export one video's predictions"
    )


def _instance(frame: Any, track: Any, predicted: type) -> Any:
    """The instance of ``track`` (None: the file's one animal) on a labeled frame, or None."""

    def track_of(inst: Any) -> Any:
        source = getattr(inst, "from_predicted", None)  # a user's correction of a prediction keeps its track
        return inst.track if inst.track is not None or source is None else source.track

    found = [i for i in frame.instances if track is None or track_of(i) is track]
    users = [i for i in found if not isinstance(i, predicted)]
    if users:
        return users[0]
    # several untracked predictions on one frame: the best-scoring one is the animal
    return max(found, key=lambda i: i.score if i.score is not None else -np.inf, default=None)


def read_slp(path: Path, options: PoseOptions) -> Poses:
    require_extra(f"{path}: reading sleap-slp files", "poses", ("sleap_io",))
    import sleap_io

    try:
        labels = sleap_io.load_slp(str(path), open_videos=False)
    except (OSError, KeyError, ValueError, TypeError, IndexError, AttributeError) as exc:
        raise DataError(f"{path}: cannot be read as a SLEAP .slp file ({exc}); save it again from SLEAP") from None
    if len(labels.skeletons) != 1:
        raise DataError(
            f"{path}: has {len(labels.skeletons)} skeletons; psvae-opt needs one set of keypoints, "
            "so save the predictions of one skeleton"
        )
    video = _pick_video(path, labels, options.video)
    frames = labels.find(video)
    if labels.tracks:
        track = labels.tracks[pick_index(path, options.track, [t.name for t in labels.tracks])]
    elif options.track != 0:
        raise DataError(f"{path}: --track {options.track} but the file has no tracks (one animal); use --track 0")
    else:
        track = None
    nodes = tuple(labels.skeletons[0].node_names)
    last = max((lf.frame_idx for lf in frames), default=-1)
    n_frames = max(len(video), last + 1)  # the video's length when the file recorded it
    if n_frames == 0:
        raise DataError(f"{path}: holds no labeled frames for {video.filename}; give a predictions file")
    xy = np.full((n_frames, len(nodes), 2), np.nan)
    score = np.full((n_frames, len(nodes)), np.nan)
    for lf in frames:
        inst = _instance(lf, track, sleap_io.PredictedInstance)
        if inst is None:
            continue
        xy[lf.frame_idx] = inst.numpy()  # invisible points are NaN
        is_predicted = isinstance(inst, sleap_io.PredictedInstance)
        score[lf.frame_idx] = inst.numpy(scores=True)[:, 2] if is_predicted else 1.0  # a user's point: score 1
    score[~np.isfinite(xy).all(axis=-1)] = np.nan  # no point, no score
    rows = tuple(str(i) for i in range(n_frames))
    return Poses(path, "sleap-slp", nodes, xy, score, rows, open_end=len(video) == 0)
