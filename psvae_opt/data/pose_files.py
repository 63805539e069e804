"""Pose files of the common trackers, read into one array layout.

Formats (``POSE_FORMATS``, detected from the file's content, never from its name):

- ``dlc-csv``: DeepLabCut and Lightning Pose CSV files: header rows ``scorer``, (``individuals``,)
  ``bodyparts``, ``coords`` (``x``, ``y``, ``likelihood``; hand labels have no likelihood), then
  one row per frame; the leading index column(s) hold the frame number or the image path.
- ``dlc-h5``: the same table as DeepLabCut's pandas-HDF5 ``.h5`` file (see ``pandas_h5``).
- ``sleap-analysis``: SLEAP's analysis HDF5 export (see ``sleap``), with its point scores.
- ``sleap-slp``: SLEAP's ``.slp`` labels and predictions, read with sleap-io (``poses`` extra).
- ``nwb``: NWB files with ndx-pose ``PoseEstimation`` data, read with pynwb (``poses`` extra).

Multi-animal files (DeepLabCut's ``individuals`` level, SLEAP tracks) give one animal, chosen
by ``track``; NWB files keep one animal per ``PoseEstimation``, chosen by name.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from psvae_opt.data.nwb import is_nwb, read_nwb
from psvae_opt.data.pandas_h5 import frame_keys, read_frame
from psvae_opt.data.poses import PoseOptions, Poses, is_hdf5
from psvae_opt.data.sleap import is_analysis, is_slp, read_analysis, read_slp
from psvae_opt.errors import DataError, require_extra

COORDS = ("x", "y", "likelihood")


@dataclass(frozen=True)
class PoseFormat:
    """One pose-file format: what it is, how to recognise it, how to read it."""

    description: str
    detect: Callable[[Path], bool]
    read: Callable[[Path, PoseOptions], Poses]
    needs: tuple[str, ...] = ()  # modules of the ``poses`` extra its reader imports


# -- tables of (level values) columns: the DeepLabCut layout, from CSV or HDF5 ---------------


def _pick_track(path: Path, columns: list[tuple[str, ...]], track: int) -> list[bool]:
    """Which columns belong to animal ``track`` (every column when there is one animal)."""
    multi = len(columns[0]) >= 4  # scorer, individuals, bodyparts, coords
    animals = list(dict.fromkeys(c[-3] for c in columns)) if multi else ["one animal"]
    if not 0 <= track < len(animals):
        raise DataError(
            f"{path}: --track {track} but the file has {len(animals)} animal(s) "
            f"({', '.join(animals)}); choose --track 0..{len(animals) - 1}"
        )
    return [c[-3] == animals[track] for c in columns] if multi else [True] * len(columns)


def poses_from_table(
    path: Path, fmt: str, columns: list[tuple[str, ...]], values: np.ndarray, rows: Sequence[str], track: int
) -> Poses:
    """Poses from DeepLabCut's columns: (scorer, [individual,] bodypart, coord) per column.

    Args:
        columns: one level tuple per column of ``values``.
        values: (T, n_columns) float64; NaN = missing.
    """
    unknown = [c for c in columns if c[-1] and c[-1] not in COORDS]
    if unknown:
        (*_, part, coord), n = unknown[0], len(unknown)
        more = f" (and {n - 1} more)" if n > 1 else ""
        raise DataError(
            f"{path}: the `coords` header names a column {coord!r} (of {part}){more}, which is not one of "
            f"{', '.join(COORDS)}; rename it (DeepLabCut writes `likelihood`) or drop the column"
        )
    keep = _pick_track(path, columns, track)
    cols = [(c[-2], c[-1], j) for j, (c, k) in enumerate(zip(columns, keep)) if k and c[-1] in COORDS]
    keypoints = tuple(dict.fromkeys(part for part, _, _ in cols))
    if not keypoints:
        raise DataError(f"{path}: no x/y columns in the `coords` header; give a DeepLabCut-style pose table")
    where = {(part, coord): j for part, coord, j in cols}
    for part in keypoints:
        if (part, "x") not in where or (part, "y") not in where:
            raise DataError(f"{path}: keypoint {part} lacks an x or a y column; give both coordinates")
    x = values[:, [where[(p, "x")] for p in keypoints]]
    y = values[:, [where[(p, "y")] for p in keypoints]]
    xy = np.stack([x, y], axis=-1)  # (T, K, 2)
    has_lik = all((p, "likelihood") in where for p in keypoints)
    lik = values[:, [where[(p, "likelihood")] for p in keypoints]] if has_lik else None
    return Poses(path, fmt, keypoints, xy, lik, tuple(rows))


def _head_rows(path: Path, n: int = 4) -> list[list[str]]:
    """The first ``n`` CSV rows ([] when unreadable); a byte-order mark (a CSV saved by Excel)
    is dropped, and a character cut at the end of the 64 KiB read does not matter."""
    try:
        with path.open("rb") as fh:
            head = fh.read(1 << 16)
        if b"\0" in head:  # binary (HDF5 and the like)
            return []
        return list(csv.reader(head.decode("utf-8-sig", errors="ignore").splitlines()[:n]))
    except (csv.Error, OSError):
        return []


def _is_dlc_csv(path: Path) -> bool:
    rows = _head_rows(path)
    firsts = [r[0].strip() if r else "" for r in rows]
    return bool(firsts) and firsts[0] == "scorer" and "coords" in firsts


def _float(cell: str) -> float:
    return float(cell) if cell.strip() else np.nan


def _read_dlc_csv(path: Path, options: PoseOptions) -> Poses:
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start}); save the pose table as UTF-8 CSV") from None
    n_head = next(i for i, r in enumerate(rows) if r and r[0].strip() == "coords") + 1
    header = rows[:n_head]
    coords = header[-1]
    if any(len(h) < len(coords) for h in header):
        raise DataError(f"{path}: the header rows have fewer cells than the `coords` row; repair the file")
    # hand labels of newer DeepLabCut versions have 3 index columns (labeled-data, video, image)
    n_index = next((j for j, c in enumerate(coords) if c.strip() in COORDS), len(coords))
    columns = [tuple(h[j].strip() for h in header) for j in range(n_index, len(coords))]
    if not columns:
        raise DataError(f"{path}: the `coords` header row names no x, y or likelihood column")
    values, names = [], []
    for line, row in enumerate(rows[n_head:], start=n_head + 1):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(coords):
            raise DataError(
                f"{path}: line {line} has {len(row)} cells but the header has {len(coords)}; repair the file"
            )
        try:
            values.append([_float(c) for c in row[n_index:]])
        except ValueError:
            raise DataError(f"{path}: line {line} holds a value that is not a number; repair the file") from None
        names.append("/".join(c.strip() for c in row[:n_index] if c.strip()))
    if not values:
        raise DataError(f"{path}: the pose table has a header but no rows")
    table = np.array(values, dtype=np.float64)
    return poses_from_table(path, "dlc-csv", columns, table, names, options.track)


def _is_dlc_h5(path: Path) -> bool:
    if not is_hdf5(path):
        return False
    with h5py.File(path, "r") as f:
        return bool(frame_keys(f))


def _read_dlc_h5(path: Path, options: PoseOptions) -> Poses:
    frame = read_frame(path)
    if len(frame.columns[0]) < 3:
        raise DataError(
            f"{path}: the DataFrame has {len(frame.columns[0])} column level(s); DeepLabCut's have "
            "scorer, [individuals,] bodyparts, coords"
        )
    return poses_from_table(path, "dlc-h5", list(frame.columns), frame.values, frame.index, options.track)


POSE_FORMATS: dict[str, PoseFormat] = {
    "dlc-csv": PoseFormat(
        "DeepLabCut / Lightning Pose CSV (header rows scorer, bodyparts, coords)", _is_dlc_csv, _read_dlc_csv
    ),
    "dlc-h5": PoseFormat("DeepLabCut .h5 (pandas HDF5, fixed or table format)", _is_dlc_h5, _read_dlc_h5),
    "sleap-analysis": PoseFormat(
        "SLEAP analysis HDF5 (tracks, node_names, track_occupancy)", is_analysis, read_analysis
    ),
    "sleap-slp": PoseFormat("SLEAP .slp labels or predictions", is_slp, read_slp, ("sleap_io",)),
    "nwb": PoseFormat("NWB with ndx-pose PoseEstimation", is_nwb, read_nwb, ("pynwb", "ndx_pose")),
}


def detect_format(path: str | Path) -> str:
    """The key of the first format in ``POSE_FORMATS`` that recognises the file's content."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: labels file not found; check --labels")
    for name, fmt in POSE_FORMATS.items():
        if fmt.detect(path):
            return name
    known = "; ".join(f.description for f in POSE_FORMATS.values())
    raise DataError(f"{path}: not a pose file of a known format (known: {known}); export the labels in one of them")


def check_readable(paths: Sequence[str | Path]) -> None:
    """Refuse, before any file is read, a pose file whose format needs a library of the
    ``poses`` extra that is not installed (one line naming the extra)."""
    for path in paths:
        _require_libraries(Path(path), detect_format(path))


def _require_libraries(path: Path, name: str) -> None:
    if POSE_FORMATS[name].needs:
        require_extra(f"{path}: reading {name} files", "poses", POSE_FORMATS[name].needs)


def read_poses(
    path: str | Path, track: int = 0, *, pose_estimation: str | None = None, video: str | None = None
) -> Poses:
    """Read a pose file of any format in ``POSE_FORMATS``.

    Args:
        track: the animal of a multi-animal file.
        pose_estimation: the name of one ``PoseEstimation`` of an NWB file.
        video: the file name of the video whose poses to read (a ``.slp`` of several videos).
    """
    path = Path(path)
    options = PoseOptions(track, pose_estimation, video)
    name = detect_format(path)
    _require_libraries(path, name)
    return POSE_FORMATS[name].read(path, options)
