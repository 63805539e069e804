"""Pose files: DeepLabCut / Lightning Pose CSV and .h5, SLEAP analysis HDF5 and .slp, NWB, format detection.

Each format is written by its own writer library: sleap-io writes .slp files (and SLEAP's NWB
export), pynwb with ndx-pose writes NWB files as DLC2NWB lays them out, h5py writes analysis
files as SLEAP lays them out.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np
import pytest

from psvae_opt.data.pose_files import POSE_FORMATS, detect_format, read_poses
from psvae_opt.errors import DataError, MissingExtraError
from tests.test_data_pandas_h5 import dlc_columns, write_dlc_fixed, write_dlc_table

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
EKS_CSV = SHARED / "mirror-mouse-eks" / "180607_004.train_frames=75.rng=0.csv"
COLLECTED = SHARED / "mirror-mouse-example" / "CollectedData.csv"
needs_shared = pytest.mark.skipif(
    not SHARED.exists(), reason="the shared data is not checked out beside the repository"
)


def write_dlc_csv(
    path: Path,
    keypoints: Sequence[str],
    values: np.ndarray,
    *,
    scorer: str = "heatmap_tracker",
    coords: Sequence[str] = ("x", "y", "likelihood"),
    index: Sequence[str] | None = None,
    individuals: Sequence[str] | None = None,
) -> Path:
    """A DeepLabCut / Lightning Pose CSV: header rows, then (index, values...) per frame; NaN as empty."""
    columns = [(a, k, c) for a in (individuals or [""]) for k in keypoints for c in coords]
    rows = [["scorer"] + [scorer] * len(columns)]
    if individuals:
        rows.append(["individuals"] + [a for a, _, _ in columns])
    rows += [["bodyparts"] + [k for _, k, _ in columns], ["coords"] + [c for _, _, c in columns]]
    for i, row in enumerate(np.asarray(values)):
        rows.append([index[i] if index else str(i)] + ["" if np.isnan(v) else repr(float(v)) for v in row])
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    return path


def raw_csv(path: Path, n_head: int = 3) -> tuple[list[list[str]], np.ndarray]:
    """The header rows and the values of a CSV, parsed independently of the reader under test."""
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    values = np.array([[float(c) if c else np.nan for c in r[1:]] for r in rows[n_head:]])
    return rows[:n_head], values


@needs_shared
def test_lightning_pose_predictions_csv():
    poses = read_poses(EKS_CSV)
    header, values = raw_csv(EKS_CSV)
    assert poses.format == "dlc-csv" and poses.n_frames == 2000 and len(poses.keypoints) == 8
    assert poses.keypoints[0] == "paw1LH_top" and poses.keypoints[-1] == "paw4RH_bot"
    # column 3k is x, 3k+1 y, 3k+2 likelihood of keypoint k
    np.testing.assert_array_equal(poses.xy[:, :, 0], values[:, 0::3])
    np.testing.assert_array_equal(poses.xy[:, :, 1], values[:, 1::3])
    np.testing.assert_array_equal(poses.likelihood, values[:, 2::3])
    assert poses.xy[0, 0, 0] == pytest.approx(78.5473937988281) and poses.row_names[:2] == ("0", "1")


@needs_shared
def test_hand_labels_csv_keeps_image_paths_and_nans():
    poses = read_poses(COLLECTED)
    _, values = raw_csv(COLLECTED)
    assert poses.n_frames == 90 and len(poses.keypoints) == 17 and poses.likelihood is None
    assert poses.row_names[0] == "labeled-data/img01.png"
    assert np.isnan(poses.xy).mean() == pytest.approx(np.isnan(values).mean())
    assert np.isnan(poses.xy).sum() == np.isnan(values).sum() > 0
    assert poses.select(["obs_top"]).xy.shape == (90, 1, 2)


def test_new_deeplabcut_hand_labels_have_three_index_columns(tmp_path: Path):
    path = tmp_path / "CollectedData_me.csv"
    rows = [
        ["scorer", "", "", "me", "me", "me", "me"],
        ["bodyparts", "", "", "nose", "nose", "tail", "tail"],
        ["coords", "", "", "x", "y", "x", "y"],
        ["labeled-data", "vid1", "img003.png", "1.5", "2.5", "", ""],
        ["labeled-data", "vid1", "img009.png", "3", "4", "5", "6"],
    ]
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    poses = read_poses(path)
    assert poses.row_names == ("labeled-data/vid1/img003.png", "labeled-data/vid1/img009.png")
    np.testing.assert_array_equal(poses.xy[1], [[3, 4], [5, 6]])
    assert np.isnan(poses.xy[0, 1]).all() and poses.likelihood is None


def test_multi_animal_csv_gives_the_chosen_individual(tmp_path: Path):
    values = np.arange(2 * 2 * 2 * 3, dtype=float).reshape(2, 12)  # 2 frames, 2 animals x 2 keypoints x 3
    path = write_dlc_csv(tmp_path / "ma.csv", ["nose", "tail"], values, individuals=["mouse1", "mouse2"])
    poses = read_poses(path, track=1)
    np.testing.assert_array_equal(poses.xy[0], [[6, 7], [9, 10]])
    np.testing.assert_array_equal(poses.likelihood[1], [20, 23])
    with pytest.raises(DataError, match=r"--track 2 but the file has 2 animal\(s\) \(mouse1, mouse2\)"):
        read_poses(path, track=2)


@pytest.mark.parametrize("writer", [write_dlc_table, write_dlc_fixed])
def test_deeplabcut_h5_matches_its_csv(tmp_path: Path, writer):
    rng = np.random.default_rng(0)
    values = rng.uniform(0, 400, (7, 9))
    values[3, 4] = np.nan
    keypoints = ["snout", "ear", "tailbase"]
    h5 = writer(
        tmp_path / "videoDLC_resnet50_shuffle1_1000.h5", "df_with_missing", dlc_columns("DLC", keypoints), values
    )
    from_h5, from_csv = read_poses(h5), read_poses(write_dlc_csv(tmp_path / "same.csv", keypoints, values))
    assert from_h5.format == "dlc-h5" and from_h5.keypoints == tuple(keypoints)
    np.testing.assert_array_equal(from_h5.xy, from_csv.xy)
    np.testing.assert_array_equal(from_h5.likelihood, from_csv.likelihood)


def write_sleap_analysis(
    path: Path,
    xy: np.ndarray,
    occupancy: np.ndarray,
    nodes: Sequence[str],
    standard: bool = False,
    scores: np.ndarray | None = None,
) -> Path:
    """A SLEAP analysis file. ``xy``: (frames, tracks, nodes, 2); ``occupancy``: (frames, tracks);
    ``scores``: (frames, tracks, nodes) point scores (none written when None).

    SLEAP's export builds (frames, nodes, 2, tracks), (frames, nodes, tracks) and (tracks, frames)
    arrays and writes their transposes for MATLAB; sleap-io's "standard" preset writes (frames,
    tracks, nodes, xy) and (frames, tracks, nodes) with the axis names in a ``dims`` attribute.
    """
    with h5py.File(path, "w") as f:
        if standard:
            f.create_dataset("tracks", data=xy).attrs["dims"] = json.dumps(["frame", "track", "node", "xy"])
            f.create_dataset("track_occupancy", data=occupancy.astype(np.uint8)).attrs["dims"] = json.dumps(
                ["frame", "track"]
            )
            if scores is not None:
                f.create_dataset("point_scores", data=scores).attrs["dims"] = json.dumps(["frame", "track", "node"])
        else:
            locations = np.transpose(xy, (0, 2, 3, 1))  # (frames, nodes, 2, tracks)
            f.create_dataset("tracks", data=np.transpose(locations), compression="gzip")
            f.create_dataset("track_occupancy", data=np.transpose(occupancy.T.astype(np.uint8)), compression="gzip")
            if scores is not None:
                f.create_dataset("point_scores", data=np.transpose(np.transpose(scores, (0, 2, 1))))
        f["node_names"] = [n.encode() for n in nodes]
        f["track_names"] = [f"track_{i}".encode() for i in range(xy.shape[1])]
    return path


@pytest.mark.parametrize("standard", [False, True], ids=["matlab", "standard"])
def test_sleap_analysis_gives_one_track_with_missing_points(tmp_path: Path, standard: bool):
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 100, (6, 2, 3, 2))  # frames, tracks, nodes, xy
    xy[2, 1, 0] = np.nan  # a node not found
    occupancy = np.ones((6, 2), np.uint8)
    occupancy[4, 1] = 0  # track 1 absent from frame 4 (its coordinates are junk there)
    scores = rng.uniform(0.5, 1.0, (6, 2, 3))  # frames, tracks, nodes
    scores[1, 1, 2] = np.nan  # a user-labelled point: a position without a score
    path = write_sleap_analysis(
        tmp_path / "labels.v001.analysis.h5", xy, occupancy, ["head", "thorax", "abdomen"], standard, scores
    )
    with h5py.File(path) as f:
        assert f["tracks"].shape == ((6, 2, 3, 2) if standard else (2, 2, 3, 6))
        assert f["point_scores"].shape == ((6, 2, 3) if standard else (2, 3, 6))
    poses = read_poses(path, track=1)
    assert poses.format == "sleap-analysis" and poses.keypoints == ("head", "thorax", "abdomen")
    assert poses.n_frames == 6 and poses.open_end
    expected = xy[:, 1].copy()
    expected[4] = np.nan
    np.testing.assert_array_equal(poses.xy, expected)
    want = scores[:, 1].copy()
    want[1, 2] = 1.0  # the user's point counts as score 1
    want[np.isnan(expected).any(axis=-1)] = np.nan  # no point, no score (frame 4: no instance)
    np.testing.assert_array_equal(poses.likelihood, want)
    np.testing.assert_array_equal(read_poses(path, track=0).xy, xy[:, 0])
    np.testing.assert_array_equal(read_poses(path, track=0).likelihood, scores[:, 0])
    with pytest.raises(DataError, match=r"--track 5 but the file has 2 track\(s\) \(track_0, track_1\); choose"):
        read_poses(path, track=5)


def test_an_analysis_file_without_point_scores_masks_only_missing_points(tmp_path: Path):
    xy = np.random.default_rng(2).uniform(0, 50, (4, 1, 2, 2))
    poses = read_poses(write_sleap_analysis(tmp_path / "a.h5", xy, np.ones((4, 1)), ["a", "b"]))
    assert poses.likelihood is None and poses.n_frames == 4


def test_format_is_detected_from_content_not_name(tmp_path: Path):
    csv_named_h5 = write_dlc_csv(tmp_path / "preds.h5", ["a"], np.ones((2, 3)))
    h5_named_csv = write_dlc_table(tmp_path / "preds.csv", "df_with_missing", dlc_columns("s", ["a"]), np.ones((2, 3)))
    assert detect_format(csv_named_h5) == "dlc-csv" and detect_format(h5_named_csv) == "dlc-h5"
    assert set(POSE_FORMATS) == {"dlc-csv", "dlc-h5", "sleap-analysis", "sleap-slp", "nwb"}


@pytest.mark.parametrize("content", ["text", "binary", "hdf5"])
def test_a_file_of_no_known_format_is_refused(tmp_path: Path, content: str):
    path = tmp_path / "labels.csv"
    if content == "text":
        path.write_text("frame,x,y\n0,1,2\n")
    elif content == "binary":
        path.write_bytes(bytes(range(256)) * 10)
    else:
        with h5py.File(path, "w") as f:
            f["points"] = np.zeros((3, 2))
    with pytest.raises(
        DataError, match=r"labels.csv: not a pose file of a known format \(known: DeepLabCut / Lightning Pose CSV"
    ):
        read_poses(path)


def test_select_orders_keypoints_and_names_the_unknown(tmp_path: Path):
    values = np.arange(2 * 9, dtype=float).reshape(2, 9)
    poses = read_poses(write_dlc_csv(tmp_path / "p.csv", ["a", "b", "c"], values))
    picked = poses.select(["c", "a"])
    np.testing.assert_array_equal(picked.xy[0], [[6, 7], [0, 1]])
    np.testing.assert_array_equal(picked.likelihood[0], [8, 2])
    with pytest.raises(
        DataError, match=r"no keypoint 'nose', 'tail' in this file \(it has: a, b, c\); fix --keypoints"
    ):
        poses.select(["a", "nose", "tail"])


def test_ragged_and_non_numeric_rows_are_refused_with_the_line(tmp_path: Path):
    path = write_dlc_csv(tmp_path / "p.csv", ["a"], np.ones((3, 3)))
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:5] + ["1,2,3"] + lines[6:]) + "\n")
    with pytest.raises(DataError, match=r"line 6 has 3 cells but the header has 4"):
        read_poses(path)
    path.write_text("\n".join(lines[:5] + ["1,2,abc,0.9"] + lines[6:]) + "\n")
    with pytest.raises(DataError, match=r"line 6 holds a value that is not a number"):
        read_poses(path)


def test_csv_saved_with_a_byte_order_mark_or_long_non_ascii_paths(tmp_path: Path):
    """Excel writes a BOM before `scorer`; a UTF-8 character may straddle the 64 KiB header read."""
    values = np.arange(12, dtype=float).reshape(2, 6)
    plain = write_dlc_csv(tmp_path / "plain.csv", ["nose", "paw"], values)
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    assert detect_format(bom) == detect_format(plain)
    np.testing.assert_array_equal(read_poses(bom).xy, read_poses(plain).xy)
    rows = 2200  # ~110 KB of image paths with umlauts; padded until one "ä" crosses byte 65536
    for pad in range(4):
        long = write_dlc_csv(
            tmp_path / "umlaut.csv",
            ["nose", "paw"],
            np.ones((rows, 4)),
            coords=("x", "y"),
            index=["x" * pad + f"labeled-data/Mäüs_äöü_{i:05d}/img{i:05d}.png" for i in range(rows)],
        )
        try:
            long.read_bytes()[: 1 << 16].decode("utf-8")
        except UnicodeDecodeError:
            break
    else:
        raise AssertionError("no padding put a character across byte 65536")
    poses = read_poses(long)
    assert poses.n_frames == rows and poses.keypoints == ("nose", "paw")


def test_malformed_pose_files_are_refused_in_one_line(tmp_path: Path):
    plain = write_dlc_csv(tmp_path / "plain.csv", ["nose"], np.ones((2, 3)))
    rows = plain.read_text().splitlines()
    short_header = tmp_path / "short.csv"
    short_header.write_text("\n".join(["scorer,a"] + rows[1:]) + "\n")
    with pytest.raises(DataError, match="header rows have fewer cells than the `coords` row"):
        read_poses(short_header)
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes(plain.read_bytes().replace(b"heatmap_tracker", "Mäus".encode("latin-1")))
    with pytest.raises(DataError, match=r"not UTF-8 text \(byte \d+\); save the pose table as UTF-8 CSV"):
        read_poses(latin1)
    xy = np.ones((4, 1, 2, 2))
    bad_dims = write_sleap_analysis(tmp_path / "dims.h5", xy, np.ones((4, 1)), ["a", "b"], standard=True)
    with h5py.File(bad_dims, "a") as f:
        f["tracks"].attrs["dims"] = "not json"
    with pytest.raises(
        DataError, match=r"`tracks` is float64 of shape .*expected numbers of shape \(tracks, 2, nodes, frames\)"
    ):
        read_poses(bad_dims)
    text_tracks = write_sleap_analysis(tmp_path / "text.h5", xy, np.ones((4, 1)), ["a", "b"])
    with h5py.File(text_tracks, "a") as f:
        del f["tracks"]
        f["tracks"] = np.full((1, 2, 2, 4), b"x")
    with pytest.raises(DataError, match=r"`tracks` is \|S1 of shape \(1, 2, 2, 4\)"):
        read_poses(text_tracks)


def test_an_unknown_coords_column_is_refused_naming_it_and_the_known_ones(tmp_path: Path):
    values = np.ones((3, 3))
    path = write_dlc_csv(tmp_path / "p.csv", ["nose"], values, coords=("x", "y", "prob"))
    with pytest.raises(DataError, match=r"names a column 'prob' \(of nose\), which is not one of x, y, likelihood"):
        read_poses(path)
    h5 = write_dlc_table(tmp_path / "p.h5", "df_with_missing", dlc_columns("s", ["nose"], ("x", "y", "prob")), values)
    with pytest.raises(DataError, match=r"'prob' \(of nose\), which is not one of x, y, likelihood"):
        read_poses(h5)


# -- SLEAP .slp, written by sleap-io ----------------------------------------------------------------


def write_slp(
    path: Path,
    xy: np.ndarray,
    scores: np.ndarray,
    *,
    nodes: Sequence[str] = ("head", "tail"),
    tracks: Sequence[str] | None = ("a", "b"),
    users: dict[tuple[int, int], np.ndarray] | None = None,
    video: str = "video.mp4",
    video_length: int | None = None,
) -> Path:
    """A .slp file of predictions. ``xy``: (frames, animals, nodes, 2), an all-NaN instance is absent;
    ``scores``: (frames, animals, nodes) point scores; ``users``: (frame, animal) -> (nodes, 2) points
    of a user-labelled instance; ``tracks``: None for an untracked file (animals are then untracked
    instances, scored 1.0, 0.9, ... in that order)."""
    import sleap_io as sio

    skeleton = sio.Skeleton(list(nodes), name="mouse")
    track_objs = [sio.Track(n) for n in tracks] if tracks else []
    meta = {"shape": (video_length, 24, 32, 1)} if video_length else {}
    vid = sio.Video(filename=video, backend_metadata=meta, open_backend=False)
    frames = []
    for t in range(xy.shape[0]):
        instances = []
        for a in range(xy.shape[1]):
            track = track_objs[a] if track_objs else None
            if not np.isnan(xy[t, a]).all():
                instances.append(
                    sio.PredictedInstance.from_numpy(
                        xy[t, a], skeleton=skeleton, point_scores=scores[t, a], score=1.0 - 0.1 * a, track=track
                    )
                )
            if users and (t, a) in users:
                instances.append(sio.Instance.from_numpy(users[(t, a)], skeleton=skeleton, track=track))
        if instances:
            frames.append(sio.LabeledFrame(video=vid, frame_idx=t, instances=instances))
    labels = sio.Labels(labeled_frames=frames, videos=[vid], skeletons=[skeleton], tracks=track_objs)
    sio.save_slp(labels, str(path))
    return path


@pytest.fixture
def predictions() -> tuple[np.ndarray, np.ndarray]:
    """6 frames, 2 animals, 2 nodes: (x, y) and scores; animal 1 is absent from frame 2, nobody from frame 4."""
    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 30, (6, 2, 2, 2))
    scores = rng.uniform(0.2, 1.0, (6, 2, 2))
    xy[2, 1] = np.nan
    xy[4] = np.nan
    xy[5, 0, 1] = np.nan  # a node not found
    return xy, scores


def test_slp_gives_the_chosen_track_frame_by_frame_with_scores(tmp_path: Path, predictions):
    xy, scores = predictions
    user = np.array([[5.25, 6.5], [7.0, 8.0]])
    path = write_slp(tmp_path / "p.slp", xy, scores, users={(3, 1): user}, video_length=8)
    poses = read_poses(path, track=1)
    assert poses.format == "sleap-slp" and poses.keypoints == ("head", "tail")
    assert poses.n_frames == 8 and not poses.open_end  # the video's length is recorded in the file
    want_xy = np.full((8, 2, 2), np.nan)
    want_xy[:6] = xy[:, 1]
    want_xy[3] = user  # the user's instance wins over the prediction of the same animal
    np.testing.assert_array_equal(poses.xy, want_xy)
    want_score = np.full((8, 2), np.nan)
    want_score[:6] = scores[:, 1]
    want_score[3] = 1.0  # a user-labelled instance counts as score 1
    want_score[np.isnan(want_xy).any(axis=-1)] = np.nan  # no point, no score
    np.testing.assert_array_equal(poses.likelihood, want_score)
    first = read_poses(path, track=0)
    np.testing.assert_array_equal(first.xy[:6], xy[:, 0])
    assert np.isnan(first.likelihood[4]).all() and first.likelihood[5, 0] == scores[5, 0, 0]
    assert np.isnan(first.likelihood[5, 1])  # the node not found
    with pytest.raises(DataError, match=r"--track 2 but the file has 2 track\(s\) \(a, b\); choose --track 0..1"):
        read_poses(path, track=2)


def test_slp_without_the_video_length_ends_at_its_last_pose(tmp_path: Path, predictions):
    xy, scores = predictions
    poses = read_poses(write_slp(tmp_path / "p.slp", xy[:4], scores[:4]), track=0)
    assert poses.n_frames == 4 and poses.open_end
    assert poses.pad(6).n_frames == 6 and np.isnan(poses.pad(6).xy[4:]).all()


def test_untracked_slp_is_one_animal_the_best_scored_instance(tmp_path: Path, predictions):
    xy, scores = predictions
    path = write_slp(tmp_path / "u.slp", xy, scores, tracks=None)
    poses = read_poses(path)
    np.testing.assert_array_equal(poses.xy, xy[:, 0])  # instance 0 scores 1.0, instance 1 0.9
    with pytest.raises(DataError, match=r"--track 1 but the file has no tracks \(one animal\); use --track 0"):
        read_poses(path, track=1)


def test_a_slp_of_several_videos_gives_the_one_named_like_the_video(tmp_path: Path):
    import sleap_io as sio

    skeleton = sio.Skeleton(["head", "tail"], name="mouse")
    videos = [sio.Video(filename=f"/data/{n}.mp4", open_backend=False) for n in ("cam1", "cam2")]
    points = {v.filename: np.full((2, 2), 10.0 * i + 1) for i, v in enumerate(videos)}
    frames = [
        sio.LabeledFrame(
            video=v,
            frame_idx=0,
            instances=[sio.PredictedInstance.from_numpy(points[v.filename], skeleton=skeleton, point_scores=[1, 1])],
        )
        for v in videos
    ]
    path = tmp_path / "two.slp"
    sio.save_slp(sio.Labels(labeled_frames=frames, videos=videos, skeletons=[skeleton]), str(path))
    with pytest.raises(DataError, match=r"holds poses of 2 videos \(cam1.mp4, cam2.mp4\); give the video of the same"):
        read_poses(path)
    np.testing.assert_array_equal(read_poses(path, video="cam2.mp4").xy[0], points["/data/cam2.mp4"])


@pytest.mark.parametrize("preset", ["matlab", "standard"])
def test_sleap_io_analysis_export_reads_like_its_slp(tmp_path: Path, predictions, preset: str):
    import sleap_io as sio

    xy, scores = predictions
    slp = write_slp(tmp_path / "p.slp", xy, scores, users={(1, 0): np.array([[1.5, 2.5], [3.0, 4.0]])})
    analysis = tmp_path / "p.analysis.h5"
    sio.save_analysis_h5(sio.load_slp(str(slp), open_videos=False), str(analysis), preset=preset)
    assert detect_format(analysis) == "sleap-analysis"
    for track in (0, 1):
        a, b = read_poses(analysis, track=track), read_poses(slp, track=track)
        assert a.keypoints == b.keypoints and a.n_frames == b.n_frames == 6
        np.testing.assert_allclose(a.xy, b.xy)
        np.testing.assert_allclose(a.likelihood, b.likelihood)  # the user's points score 1 in both
    assert read_poses(analysis, track=0).likelihood[1].tolist() == [1.0, 1.0]


# -- NWB with ndx-pose, written by pynwb -------------------------------------------------------------


def _nwbfile():
    import datetime

    from pynwb import NWBFile

    start = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    return NWBFile(session_description="pose test", identifier="psvae-opt-test", session_start_time=start)


def write_pose_nwb(
    path: Path,
    containers: dict[str, tuple[np.ndarray, np.ndarray | None]],
    *,
    nodes: Sequence[str] = ("nose", "tail"),
    timestamps: np.ndarray | None = None,
    rate: float | None = None,
    starting_time: float = 0.0,
    source_software: str = "DeepLabCut",
    source_video: tuple[float, float, int] | np.ndarray | None = None,
) -> Path:
    """An NWB file as DLC2NWB writes it: per container (name -> (xy (T, K, 2), confidence (T, K))), one
    series per keypoint, the first holding the timestamps and the others linking to them; or regular
    times (``rate``, ``starting_time``); ``source_video`` (rate, starting_time, frames) or its frame
    timestamps links an external-file ImageSeries."""
    from ndx_pose import PoseEstimation, PoseEstimationSeries, Skeleton, Skeletons
    from pynwb import NWBHDF5IO
    from pynwb.image import ImageSeries

    nwbfile = _nwbfile()
    module = nwbfile.create_processing_module(name="behavior", description="poses")
    skeleton = Skeleton(name="mouse", nodes=list(nodes), edges=np.array([[0, 1]], dtype="uint8"))
    module.add(Skeletons(skeletons=[skeleton]))
    video = None
    if isinstance(source_video, np.ndarray):
        video = ImageSeries(name="video", external_file=["video.mp4"], starting_frame=[0], timestamps=source_video)
    elif source_video is not None:
        v_rate, v_start, n = source_video
        video = ImageSeries(
            name="video",
            external_file=["video.mp4"],
            starting_frame=[0],
            rate=v_rate,
            starting_time=v_start,
            num_samples=n,
        )
    if video is not None:
        nwbfile.add_acquisition(video)
    for name, (xy, confidence) in containers.items():
        series = []
        for k, node in enumerate(nodes):
            timing = dict(rate=rate, starting_time=starting_time) if rate else dict(timestamps=timestamps)
            if timestamps is not None and series:
                timing = dict(timestamps=series[0])  # DLC2NWB links every series to the first one's times
            series.append(
                PoseEstimationSeries(
                    name=node,
                    data=xy[:, k],
                    reference_frame="(0,0) is the top left corner of the frame",
                    confidence=None if confidence is None else confidence[:, k],
                    confidence_definition="Softmax output of the deep neural network.",
                    **timing,
                )
            )
        module.add(
            PoseEstimation(
                name=name,
                pose_estimation_series=series,
                description="2D keypoint coordinates",
                skeleton=skeleton,
                source_software=source_software,
                source_video=video,
            )
        )
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwbfile)
    return path


def _jittered_times(n: int, fps: float = 30.0) -> np.ndarray:
    return np.arange(n) / fps + np.random.default_rng(4).uniform(-0.004, 0.004, n) * (np.arange(n) > 0)


def test_nwb_as_dlc2nwb_writes_it_gives_one_row_per_frame(tmp_path: Path):
    rng = np.random.default_rng(5)
    xy, confidence = rng.uniform(0, 300, (9, 2, 2)), rng.uniform(0, 1, (9, 2))
    xy[3, 1] = np.nan
    path = write_pose_nwb(
        tmp_path / "dlc.nwb",
        {"PoseEstimation": (xy, confidence)},
        nodes=("tail", "nose"),
        timestamps=_jittered_times(9),
    )
    assert detect_format(path) == "nwb"
    poses = read_poses(path)
    assert poses.format == "nwb" and poses.keypoints == ("tail", "nose")  # the skeleton's order
    assert poses.n_frames == 9 and not poses.open_end
    np.testing.assert_array_equal(poses.xy, xy)
    np.testing.assert_array_equal(poses.likelihood, confidence)


def test_nwb_with_two_containers_needs_the_choice(tmp_path: Path):
    rng = np.random.default_rng(6)
    mice = {name: (rng.uniform(0, 99, (5, 2, 2)), rng.uniform(0, 1, (5, 2))) for name in ("mouse1", "mouse2")}
    path = write_pose_nwb(tmp_path / "two.nwb", mice, timestamps=np.arange(5) / 30)
    with pytest.raises(
        DataError, match=r"holds 2 PoseEstimation containers \(mouse1, mouse2\); choose one with --pose-estimation"
    ):
        read_poses(path)
    for name in ("mouse1", "mouse2", "behavior/mouse2"):
        poses = read_poses(path, pose_estimation=name)
        np.testing.assert_array_equal(poses.xy, mice[name.split("/")[-1]][0])
        np.testing.assert_array_equal(poses.likelihood, mice[name.split("/")[-1]][1])
    with pytest.raises(DataError, match=r"no single PoseEstimation named 'mouse3' \(it has: mouse1, mouse2\)"):
        read_poses(path, pose_estimation="mouse3")


def test_nwb_rows_go_to_the_frames_of_the_linked_video(tmp_path: Path):
    xy = np.arange(3 * 2 * 2, dtype=float).reshape(3, 2, 2)
    path = write_pose_nwb(
        tmp_path / "v.nwb",
        {"pe": (xy, None)},
        rate=50.0,
        starting_time=10.04,  # the third video frame
        source_video=(50.0, 10.0, 8),
    )
    poses = read_poses(path)
    assert poses.n_frames == 8 and not poses.open_end and poses.likelihood is None
    np.testing.assert_array_equal(poses.xy[2:5], xy)
    assert np.isnan(poses.xy[[0, 1, 5, 6, 7]]).all()
    clock = _jittered_times(7) + 100.0  # the video's own frame times
    path = write_pose_nwb(tmp_path / "t.nwb", {"pe": (xy, None)}, timestamps=clock[[1, 2, 5]], source_video=clock)
    poses = read_poses(path)
    assert poses.n_frames == 7 and not poses.open_end
    np.testing.assert_array_equal(poses.xy[[1, 2, 5]], xy)
    assert np.isnan(poses.xy[[0, 3, 4, 6]]).all()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # sleap-io's exporter uses older ndx-pose arguments
def test_sleaps_nwb_export_puts_rows_on_their_frames(tmp_path: Path, predictions):
    import sleap_io as sio

    xy, scores = predictions
    xy[2, 0, 1] = np.nan  # the tail of animal a missing on frame 2: SLEAP leaves that row out
    slp = write_slp(tmp_path / "p.slp", xy[:4], scores[:4])  # sleap-io exports frames 0.. without gaps only
    nwb = tmp_path / "sleap.nwb"
    sio.save_nwb(sio.load_slp(str(slp), open_videos=False), str(nwb))
    with pytest.raises(DataError, match=r"\(track=a, track=b\); choose one with --pose-estimation"):
        read_poses(nwb)
    for track, name in enumerate(("track=a", "track=b")):
        poses, want = read_poses(nwb, pose_estimation=name), read_poses(slp, track=track)
        assert poses.open_end and poses.keypoints == ("head", "tail")
        np.testing.assert_array_equal(poses.xy, want.xy[: poses.n_frames])
        np.testing.assert_allclose(poses.likelihood, want.likelihood[: poses.n_frames])
    assert np.isnan(read_poses(nwb, pose_estimation="track=a").xy[2, 1]).all()


@pytest.mark.parametrize(
    "module, writer",
    [("sleap_io", "slp"), ("pynwb", "nwb")],
)
def test_a_missing_extra_is_one_line_naming_the_pip_command(tmp_path: Path, monkeypatch, predictions, module, writer):
    xy, scores = predictions
    if writer == "slp":
        path = write_slp(tmp_path / "p.slp", xy, scores)
    else:
        path = write_pose_nwb(tmp_path / "p.nwb", {"pe": (xy[:, 0], None)}, timestamps=np.arange(6) / 30)
    monkeypatch.setitem(sys.modules, module, None)  # as if the extra were not installed
    assert detect_format(path) == ("sleap-slp" if writer == "slp" else "nwb")  # detection needs only h5py
    with pytest.raises(
        MissingExtraError,
        match=rf"needs the poses extra \({module} is not installed\): pip install 'psvae-opt\[poses\]'$",
    ):
        read_poses(path)


def test_the_base_install_reads_the_other_formats_without_the_extra(tmp_path: Path):
    """A fresh interpreter in which the optional libraries cannot be imported (sys.modules[name] = None)."""
    csv_path = write_dlc_csv(tmp_path / "p.csv", ["nose"], np.arange(6, dtype=float).reshape(2, 3))
    code = (
        "import sys\n"
        "for name in ('sleap_io', 'pynwb', 'ndx_pose', 'hdmf', 'hdf5plugin', 'pandas', 'tables'):\n"
        "    sys.modules[name] = None\n"
        "import psvae_opt.data, psvae_opt.cli\n"
        f"poses = psvae_opt.data.read_poses({str(csv_path)!r})\n"
        "print(poses.format, poses.xy.tolist())\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[0] == "dlc-csv [[[0.0, 1.0]], [[3.0, 4.0]]]"
