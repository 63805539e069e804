"""pandas DataFrames stored with ``DataFrame.to_hdf`` (PyTables), read with h5py alone.

DeepLabCut saves its pose tables this way (``df.to_hdf(path, key="df_with_missing",
format="table")`` for predictions, the default ``fixed`` format with key ``keypoints`` for
hand labels), so reading them needs neither pandas nor PyTables. Each frame is one HDF5
group whose ``pandas_type`` attribute names its layout:

- ``frame`` (fixed): per block of same-dtype columns, ``block{i}_values`` (rows, cols) and its
  column names, either ``block{i}_items`` (a flat index) or, for a MultiIndex,
  ``block{i}_items_level{j}`` (the distinct values of level j) with ``block{i}_items_label{j}``
  (one integer code per column). The row index is ``axis1`` or ``axis1_level{j}`` /
  ``axis1_label{j}`` the same way.
- ``frame_table`` (table): one compound dataset ``table`` with a field ``index`` and a field
  ``values_block_{i}`` of shape (cols_i,) per block; the block's column names are a pickled
  list (protocol 0) in the table's ``values_block_{i}_kind`` attribute.

Pickled attributes are read by an unpickler that refuses every global, so a crafted file
cannot run code: a list of tuples of strings is all that is accepted.

PyTables compresses with zlib (built into HDF5) or with its own filters (``complib`` blosc,
blosc2, bzip2, lzo); h5py decodes the latter with hdf5plugin (in the ``poses`` extra), imported
only when a file needs it.
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from psvae_opt.errors import DataError

PANDAS_TYPES = ("frame", "frame_table")


@dataclass(frozen=True)
class Frame:
    """The numeric columns of one stored DataFrame.

    Attributes:
        columns: one tuple of level values per column (1-tuples for a flat index).
        values: (rows, cols) float64.
        index: one text row name per row ("/"-joined levels of a MultiIndex).
    """

    columns: tuple[tuple[str, ...], ...]
    values: np.ndarray
    index: tuple[str, ...]


class _NoGlobals(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        # only plain containers of strings and numbers are legitimate column names
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _unpickle(raw: Any) -> Any:
    data = raw.tobytes() if isinstance(raw, np.ndarray | np.void) else bytes(raw)
    return _NoGlobals(io.BytesIO(data), encoding="utf-8").load()


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes | np.bytes_) else str(value)


def frame_keys(f: h5py.File) -> list[str]:
    """Names of the groups that hold a pandas DataFrame, in file order."""
    keys = []
    for name, node in f.items():
        kind = node.attrs.get("pandas_type") if isinstance(node, h5py.Group) else None
        if kind is not None and _text(kind) in PANDAS_TYPES:
            keys.append(name)
    return keys


def _fixed_labels(group: h5py.Group, prefix: str, n: int) -> list[tuple[str, ...]]:
    """Names along one axis of a fixed-format frame: a flat or a multi-level index."""
    if prefix in group:
        return [(_text(v),) for v in group[prefix][()]]
    levels = []
    j = 0
    while f"{prefix}_level{j}" in group:
        values = [_text(v) for v in group[f"{prefix}_level{j}"][()]]
        codes = np.asarray(group[f"{prefix}_label{j}"][()], dtype=np.int64)
        levels.append(["" if c < 0 else values[c] for c in codes])  # code -1 is a missing value
        j += 1
    if not levels:
        return [(str(i),) for i in range(n)]
    return list(zip(*levels))


def _read_fixed(group: h5py.Group) -> Frame:
    blocks, columns = [], []
    i = 0
    while f"block{i}_values" in group:
        values = group[f"block{i}_values"]
        # object (text) blocks are pickled arrays; pose tables keep numbers only, so skip them
        if isinstance(values, h5py.Dataset) and values.dtype.kind in "fiub" and values.ndim == 2:
            blocks.append(np.asarray(values[()], dtype=np.float64))
            columns += _fixed_labels(group, f"block{i}_items", values.shape[1])
        i += 1
    n_rows = blocks[0].shape[0] if blocks else 0
    index = ["/".join(parts) for parts in _fixed_labels(group, "axis1", n_rows)]
    values = np.concatenate(blocks, axis=1) if blocks else np.zeros((n_rows, 0))
    return Frame(tuple(columns), values, tuple(index))


def _read_table(group: h5py.Group) -> Frame:
    table = group["table"]
    data = table[()]
    blocks, columns = [], []
    i = 0
    while f"values_block_{i}" in (table.dtype.names or ()):
        block = data[f"values_block_{i}"].reshape(len(data), -1)
        if block.dtype.kind in "fiub":
            names = _unpickle(table.attrs[f"values_block_{i}_kind"])
            if len(names) != block.shape[1]:
                raise ValueError(f"values_block_{i} has {block.shape[1]} columns but {len(names)} names")
            blocks.append(block.astype(np.float64))
            columns += [tuple(_text(p) for p in n) if isinstance(n, tuple) else (_text(n),) for n in names]
        i += 1
    index = [_text(v) for v in data["index"]] if "index" in (table.dtype.names or ()) else []
    values = np.concatenate(blocks, axis=1) if blocks else np.zeros((len(data), 0))
    return Frame(tuple(columns), values, tuple(index or (str(r) for r in range(len(data)))))


def _missing_filters(group: h5py.Group) -> list[str]:
    """Names of the compression filters of the group's datasets that h5py cannot decode."""
    missing = []

    def visit(_: str, node: object) -> None:
        if isinstance(node, h5py.Dataset):
            plist = node.id.get_create_plist()
            for i in range(plist.get_nfilters()):
                code, _flags, _values, name = plist.get_filter(i)
                if not h5py.h5z.filter_avail(code):
                    missing.append(f"{name.decode(errors='replace') or 'filter'} ({code})")

    group.visititems(visit)
    return sorted(set(missing))


def _check_filters(path: Path, group: h5py.Group) -> None:
    """Load hdf5plugin when a dataset needs a filter HDF5 lacks; refuse when it is not installed."""
    if not _missing_filters(group):
        return
    try:
        import hdf5plugin  # noqa: F401  (registers blosc, blosc2, bzip2, lz4, zstd with HDF5)
    except ImportError:
        pass
    missing = _missing_filters(group)
    if missing:
        raise DataError(
            f"{path}: the DataFrame is compressed with {', '.join(missing)}, which needs the poses extra to "
            "decode: pip install 'psvae-opt[poses]', or save it with complib='zlib' or as CSV"
        )


def read_frame(path: Path) -> Frame:
    """Read the file's (first) DataFrame.

    Raises:
        DataError: the file holds no DataFrame, or one this reader cannot parse.
    """
    with h5py.File(path, "r") as f:
        keys = frame_keys(f)
        if not keys:
            raise DataError(
                f"{path}: no pandas DataFrame in this HDF5 file; give the .h5 file DeepLabCut wrote (or its CSV)"
            )
        group = f[keys[0]]
        kind = _text(group.attrs["pandas_type"])
        _check_filters(path, group)
        try:
            frame = _read_fixed(group) if kind == "frame" else _read_table(group)
        except (KeyError, ValueError, TypeError, IndexError, pickle.UnpicklingError, EOFError) as exc:
            raise DataError(
                f"{path}: the DataFrame {group.name} ({kind} format) cannot be read ({exc}); "
                "save it again with DataFrame.to_hdf or export the CSV"
            ) from None
    if not frame.columns:
        raise DataError(f"{path}: the DataFrame {keys[0]} has no numeric columns; give a pose table")
    return frame
