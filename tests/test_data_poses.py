"""Pose files: DeepLabCut / Lightning Pose CSV and .h5, SLEAP analysis HDF5, format detection."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np
import pytest

from psvae_opt.data.poses import POSE_FORMATS, detect_format, read_poses
from psvae_opt.errors import DataError
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
    path: Path, xy: np.ndarray, occupancy: np.ndarray, nodes: Sequence[str], standard: bool = False
) -> Path:
    """A SLEAP analysis file. ``xy``: (frames, tracks, nodes, 2); ``occupancy``: (frames, tracks).

    SLEAP's export builds (frames, nodes, 2, tracks) and (tracks, frames) arrays and writes their
    transposes for MATLAB; sleap-io's "standard" preset writes (frames, tracks, nodes, xy) with
    the axis names in a ``dims`` attribute.
    """
    with h5py.File(path, "w") as f:
        if standard:
            f.create_dataset("tracks", data=xy).attrs["dims"] = json.dumps(["frame", "track", "node", "xy"])
            f.create_dataset("track_occupancy", data=occupancy.astype(np.uint8)).attrs["dims"] = json.dumps(
                ["frame", "track"]
            )
        else:
            locations = np.transpose(xy, (0, 2, 3, 1))  # (frames, nodes, 2, tracks)
            f.create_dataset("tracks", data=np.transpose(locations), compression="gzip")
            f.create_dataset("track_occupancy", data=np.transpose(occupancy.T.astype(np.uint8)), compression="gzip")
            f.create_dataset("point_scores", data=np.transpose(np.ones(xy.shape[:3]).transpose(0, 2, 1)))
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
    path = write_sleap_analysis(
        tmp_path / "labels.v001.analysis.h5", xy, occupancy, ["head", "thorax", "abdomen"], standard
    )
    with h5py.File(path) as f:
        assert f["tracks"].shape == ((6, 2, 3, 2) if standard else (2, 2, 3, 6))
    poses = read_poses(path, track=1)
    assert poses.format == "sleap-analysis" and poses.keypoints == ("head", "thorax", "abdomen")
    assert poses.likelihood is None and poses.n_frames == 6
    expected = xy[:, 1].copy()
    expected[4] = np.nan
    np.testing.assert_array_equal(poses.xy, expected)
    np.testing.assert_array_equal(read_poses(path, track=0).xy, xy[:, 0])
    with pytest.raises(DataError, match=r"--track 5 but the file has 2 track\(s\); choose --track 0..1"):
        read_poses(path, track=5)


def test_format_is_detected_from_content_not_name(tmp_path: Path):
    csv_named_h5 = write_dlc_csv(tmp_path / "preds.h5", ["a"], np.ones((2, 3)))
    h5_named_csv = write_dlc_table(tmp_path / "preds.csv", "df_with_missing", dlc_columns("s", ["a"]), np.ones((2, 3)))
    assert detect_format(csv_named_h5) == "dlc-csv" and detect_format(h5_named_csv) == "dlc-h5"
    assert set(POSE_FORMATS) == {"dlc-csv", "dlc-h5", "sleap-analysis"}


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
