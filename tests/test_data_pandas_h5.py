"""pandas-HDF5 DataFrames (DeepLabCut's .h5 files) read without pandas or PyTables.

Files written by pandas itself (a test dependency, with PyTables) are read back in every layout:
fixed and table formats, compressed or not, one animal or several. The writers below lay files
out as ``DataFrame.to_hdf`` does through PyTables (checked against
files written by pandas 3.0 with PyTables 3.11): MultiIndex levels sorted with integer codes in
the ``fixed`` format; a compound ``table`` dataset with protocol-0 pickled column lists in the
``table`` format.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from psvae_opt.data.pandas_h5 import read_frame
from psvae_opt.data.pose_files import read_poses
from psvae_opt.errors import DataError

DLC_NAMES = ("scorer", "bodyparts", "coords")


def dlc_columns(scorer: str, keypoints: Sequence[str], coords: Sequence[str] = ("x", "y", "likelihood")) -> list[tuple]:
    return [(scorer, k, c) for k in keypoints for c in coords]


def _pyt(obj: object) -> np.bytes_:
    """A Python object as PyTables stores it in an attribute: a protocol-0 pickle, ASCII string."""
    return np.bytes_(pickle.dumps(obj, protocol=0))


def _set_text(node: h5py.HLObject, name: str, text: str) -> None:
    """A Python str as PyTables stores it: a fixed-length UTF-8 string (ASCII marks bytes)."""
    raw = text.encode()
    node.attrs.create(name, np.array(raw, dtype=f"S{len(raw)}"), dtype=h5py.string_dtype("utf-8", len(raw)))


def _write_multi(group: h5py.Group, prefix: str, tuples: Sequence[tuple], names: Sequence[str | None]) -> None:
    """A MultiIndex as pandas' fixed format stores it: sorted levels plus per-entry codes."""
    _set_text(group, f"{prefix}_variety", "multi")
    group.attrs[f"{prefix}_nlevels"] = np.int64(len(names))
    for j, name in enumerate(names):
        values = [t[j] for t in tuples]
        levels = sorted(set(values))
        level = group.create_dataset(f"{prefix}_level{j}", data=np.array([v.encode() for v in levels]))
        _set_text(level, "kind", "string")
        if name is None:
            level.attrs["name"] = _pyt(None)
        else:
            _set_text(level, "name", name)
        group.create_dataset(f"{prefix}_label{j}", data=np.array([levels.index(v) for v in values], dtype=np.int8))


def write_dlc_fixed(
    path: Path, key: str, columns: Sequence[tuple], values: np.ndarray, index: Sequence | None = None
) -> Path:
    """``df.to_hdf(path, key=key)`` (format "fixed", DeepLabCut's CollectedData_*.h5)."""
    with h5py.File(path, "w") as f:
        f.attrs["PYTABLES_FORMAT_VERSION"] = np.bytes_(b"2.1")
        g = f.create_group(key)
        for name, value in (("pandas_type", "frame"), ("encoding", "UTF-8"), ("errors", "strict")):
            _set_text(g, name, value)
        g.attrs["ndim"], g.attrs["nblocks"] = np.int64(2), np.int64(1)
        for prefix in ("axis0", "block0_items"):
            _write_multi(
                g,
                prefix,
                columns,
                DLC_NAMES[-len(columns[0]) :]
                if len(columns[0]) <= 3
                else ("scorer", "individuals", "bodyparts", "coords"),
            )
        if index is not None and isinstance(index[0], tuple):
            _write_multi(g, "axis1", index, [None] * len(index[0]))
        else:
            _set_text(g, "axis1_variety", "regular")
            axis1 = g.create_dataset(
                "axis1", data=np.arange(len(values)) if index is None else np.array([i.encode() for i in index])
            )
            _set_text(axis1, "kind", "integer" if index is None else "string")
            axis1.attrs["name"] = _pyt(None)
        # pandas keeps a block as (columns, rows) and writes it transposed: (rows, columns) on disk
        g.create_dataset("block0_values", data=np.asarray(values, dtype=np.float64)).attrs["transposed"] = np.uint8(1)
    return path


def write_dlc_table(path: Path, key: str, columns: Sequence[tuple], values: np.ndarray) -> Path:
    """``df.to_hdf(path, key=key, format="table")`` (DeepLabCut's prediction files)."""
    values = np.asarray(values, dtype=np.float64)
    with h5py.File(path, "w") as f:
        f.attrs["PYTABLES_FORMAT_VERSION"] = np.bytes_(b"2.1")
        g = f.create_group(key)
        for name, value in (
            ("pandas_type", "frame_table"),
            ("table_type", "appendable_frame"),
            ("encoding", "UTF-8"),
            ("pandas_version", "0.15.2"),
        ):
            _set_text(g, name, value)
        g.attrs["index_cols"] = _pyt([(0, "index")])
        g.attrs["values_cols"] = _pyt(["values_block_0"])
        g.attrs["non_index_axes"] = _pyt([(1, list(columns))])
        g.attrs["data_columns"] = _pyt([])
        g.attrs["levels"] = np.int64(1)
        names = list(DLC_NAMES) if len(columns[0]) == 3 else ["scorer", "individuals", "bodyparts", "coords"]
        g.attrs["info"] = _pyt({1: {"names": names, "type": "MultiIndex"}, "index": {}, "values_block_0": {}})
        dtype = np.dtype([("index", "<i8"), ("values_block_0", "<f8", (values.shape[1],))])
        rows = np.zeros(len(values), dtype)
        rows["index"], rows["values_block_0"] = np.arange(len(values)), values
        t = g.create_dataset("table", data=rows)
        t.attrs["NROWS"] = np.int64(len(values))
        for name, value in (("CLASS", "TABLE"), ("index_kind", "integer"), ("values_block_0_dtype", "float64")):
            _set_text(t, name, value)
        t.attrs["values_block_0_kind"] = _pyt(list(columns))
        t.attrs["values_block_0_meta"] = _pyt(None)
    return path


@pytest.fixture
def table():
    columns = dlc_columns("DLC_resnet50_mouseJan1shuffle1_1000", ["nose", "tail"])
    values = np.arange(5 * 6, dtype=np.float64).reshape(5, 6)
    values[2, 0] = np.nan
    return columns, values


@pytest.mark.parametrize("writer", [write_dlc_fixed, write_dlc_table])
def test_both_layouts_give_the_columns_and_values(tmp_path: Path, table, writer):
    columns, values = table
    frame = read_frame(writer(tmp_path / "p.h5", "df_with_missing", columns, values))
    assert frame.columns == tuple(columns)  # coords sorted as levels (likelihood, x, y) come back in column order
    np.testing.assert_array_equal(frame.values, values)  # NaN in place
    assert frame.index == ("0", "1", "2", "3", "4")


def test_a_multiindex_of_image_paths_is_joined(tmp_path: Path):
    columns = dlc_columns("rick", ["nose", "tail"], ("x", "y"))
    index = [("labeled-data", "vid", "img07.png"), ("labeled-data", "vid", "img02.png")]
    frame = read_frame(write_dlc_fixed(tmp_path / "c.h5", "keypoints", columns, np.ones((2, 4)), index))
    assert frame.index == ("labeled-data/vid/img07.png", "labeled-data/vid/img02.png")


def test_a_pickled_global_is_refused_not_run(tmp_path: Path):
    columns, values = dlc_columns("s", ["nose"]), np.ones((2, 3))
    path = write_dlc_table(tmp_path / "evil.h5", "df_with_missing", columns, values)
    marker = tmp_path / "ran"
    with h5py.File(path, "a") as f:
        payload = pickle.dumps(_Exploit(str(marker)), protocol=0)
        f["df_with_missing/table"].attrs["values_block_0_kind"] = np.bytes_(payload)
    with pytest.raises(DataError, match=r"cannot be read \(refusing to load"):
        read_frame(path)
    assert not marker.exists()


class _Exploit:
    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def test_a_file_without_a_dataframe_is_refused(tmp_path: Path):
    path = tmp_path / "plain.h5"
    with h5py.File(path, "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(DataError, match="no pandas DataFrame in this HDF5 file"):
        read_frame(path)


def test_column_names_and_block_width_must_agree(tmp_path: Path):
    columns, values = dlc_columns("s", ["nose", "tail"]), np.ones((2, 6))
    path = write_dlc_table(tmp_path / "bad.h5", "df_with_missing", columns, values)
    with h5py.File(path, "a") as f:
        f["df_with_missing/table"].attrs["values_block_0_kind"] = _pyt(columns[:4])
    with pytest.raises(DataError, match="values_block_0 has 6 columns but 4 names"):
        read_frame(path)


# -- files written by pandas itself (PyTables), as DeepLabCut writes them -------------------------


def pandas_frame(multi_animal: bool, rng: np.random.Generator) -> pd.DataFrame:
    """A DeepLabCut prediction table: 7 frames, (scorer, [individuals,] bodyparts, coords) columns."""
    animals = ["mouse1", "mouse2"] if multi_animal else [None]
    columns = [
        ("DLC_resnet50", a, k, c) if multi_animal else ("DLC_resnet50", k, c)
        for a in animals
        for k in ("snout", "tailbase")
        for c in ("x", "y", "likelihood")
    ]
    names = ["scorer", "individuals", "bodyparts", "coords"] if multi_animal else list(DLC_NAMES)
    values = rng.uniform(0, 400, (7, len(columns)))
    values[2, 1] = np.nan
    return pd.DataFrame(values, columns=pd.MultiIndex.from_tuples(columns, names=names))


COMPRESSION = [None, ("zlib", 9), ("blosc", 5), ("blosc:lz4", 3), ("bzip2", 1)]


@pytest.mark.parametrize("compression", COMPRESSION, ids=lambda c: "plain" if c is None else c[0])
@pytest.mark.parametrize("fmt", ["fixed", "table"])
@pytest.mark.parametrize("multi_animal", [False, True], ids=["single", "multi"])
def test_files_written_by_pandas_read_back(tmp_path: Path, compression, fmt: str, multi_animal: bool):
    df = pandas_frame(multi_animal, np.random.default_rng(0))
    path = tmp_path / "videoDLC_resnet50.h5"
    extra = {} if compression is None else {"complib": compression[0], "complevel": compression[1]}
    df.to_hdf(path, key="df_with_missing", format=fmt, mode="w", **extra)
    frame = read_frame(path)
    assert frame.columns == tuple(df.columns) and frame.index == tuple(str(i) for i in range(7))
    np.testing.assert_array_equal(frame.values, df.to_numpy())
    poses = read_poses(path, track=1 if multi_animal else 0)
    animal = df.xs("mouse2", axis=1, level="individuals") if multi_animal else df
    assert poses.format == "dlc-h5" and poses.keypoints == ("snout", "tailbase")
    np.testing.assert_array_equal(poses.xy[..., 0], animal.xs("x", axis=1, level="coords").to_numpy())
    np.testing.assert_array_equal(poses.likelihood, animal.xs("likelihood", axis=1, level="coords").to_numpy())


@pytest.mark.parametrize("fmt", ["fixed", "table"])
def test_hand_labels_written_by_pandas_keep_their_image_paths(tmp_path: Path, fmt: str):
    columns = pd.MultiIndex.from_product([["me"], ["nose", "tail"], ["x", "y"]], names=list(DLC_NAMES))
    if fmt == "fixed":  # DeepLabCut's CollectedData: a 3-level index of image paths
        index = pd.MultiIndex.from_tuples([("labeled-data", "vid1", "img003.png"), ("labeled-data", "vid1", "i9.png")])
    else:  # the table format takes a flat index only
        index = pd.Index(["labeled-data/vid1/img003.png", "labeled-data/vid1/i9.png"])
    df = pd.DataFrame([[1.5, 2.5, np.nan, np.nan], [3, 4, 5, 6]], index=index, columns=columns)
    df.to_hdf(tmp_path / "CollectedData_me.h5", key="keypoints", mode="w", format=fmt)
    poses = read_poses(tmp_path / "CollectedData_me.h5")
    assert poses.row_names == ("labeled-data/vid1/img003.png", "labeled-data/vid1/i9.png")
    np.testing.assert_array_equal(poses.xy[1], [[3, 4], [5, 6]])
    assert np.isnan(poses.xy[0, 1]).all() and poses.likelihood is None
