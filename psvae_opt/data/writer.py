"""Writing BehaveNet's HDF5 layout: one session file, atomically, to a path checked first."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from psvae_opt.errors import DataError


def check_writable(path: str | Path, flag: str = "") -> None:
    """Refuse an output path that cannot be written, before any slow work (``flag``: how the CLI names it)."""
    path = Path(path)
    what = f"{flag} {path}" if flag else str(path)
    if path.is_dir():
        raise DataError(f"{what} is a folder; give the path of the .h5 file to write, e.g. {path / 'session.h5'}")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:  # the first folder that exists holds the new ones
        folder = folder.parent
    if not folder.is_dir():
        raise DataError(f"{what}: {folder} is a file, not a folder; choose an output path in a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise DataError(f"{what}: no permission to write in {folder}; choose a folder you can write to")


def write_session(
    path: str | Path,
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    *,
    masks: Sequence[np.ndarray] | None = None,
    labels_sc: Sequence[np.ndarray] | None = None,
    factors: Sequence[np.ndarray] | None = None,
    factor_names: Sequence[str] = (),
    factor_labeled: Sequence[bool] = (),
    label_names: Sequence[str] = (),
    attrs: Mapping[str, Any] | None = None,
) -> Path:
    """Write one session, one dataset per trial, atomically (a temporary file is renamed).

    Args:
        images: per trial, (T, C, H, W) uint8 frames.
        labels: per trial, (T, L) z-scored labels (masked entries are written as 0).
        masks: per trial, (T, L) 1 = valid, 0 = missing; omitted when None.
        labels_sc, factors: optional per-trial (T, L) and (T, F) arrays.
    """
    path = Path(path)
    check_writable(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_groups(tmp, images, labels, masks, labels_sc, factors, factor_names, factor_labeled, label_names, attrs)
        os.replace(tmp, path)
    except OSError as exc:  # a full disk, a folder removed meanwhile: what HDF5 or the OS says
        raise DataError(f"{path}: cannot be written ({exc}); check the disk space and the folder") from None
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _write_groups(
    tmp: Path,
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    masks: Sequence[np.ndarray] | None,
    labels_sc: Sequence[np.ndarray] | None,
    factors: Sequence[np.ndarray] | None,
    factor_names: Sequence[str],
    factor_labeled: Sequence[bool],
    label_names: Sequence[str],
    attrs: Mapping[str, Any] | None,
) -> None:
    """The groups and attributes of ``write_session``, into the file ``tmp``."""
    with h5py.File(tmp, "w") as f:
        groups = {"images": images, "labels": labels}
        if masks is not None:
            groups["labels_masks"] = masks
        if labels_sc is not None:
            groups["labels_sc"] = labels_sc
        if factors is not None:
            groups["factors"] = factors
        for group, arrays in groups.items():
            g = f.create_group(group)
            for i, arr in enumerate(arrays):
                arr = np.asarray(arr)
                if group == "labels" and masks is not None:
                    arr = np.where(np.asarray(masks[i]) > 0, arr, 0.0)
                dtype = np.uint8 if group == "images" else np.float32
                g.create_dataset(f"trial_{i:04d}", data=arr.astype(dtype, copy=False))
        if factors is not None:
            f["factors"].attrs["names"] = list(factor_names)
            f["factors"].attrs["labeled"] = np.asarray(factor_labeled, dtype=np.int8)
        if label_names:
            f.attrs["label_names"] = list(label_names)
        for key, value in (attrs or {}).items():
            f.attrs[key] = value
