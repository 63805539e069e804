"""BehaveNet's HDF5 layout: read and validate one session file.

A session file holds groups ``images`` (uint8, (T, C, H, W) per trial), ``labels``
(float, (T, L), z-scored, masked entries 0) and optionally ``labels_masks``, ``labels_sc``
and psvae-opt's own ``factors`` (ground-truth generative factors of synthetic data). Each
group has one dataset per trial, ``trial_0000``, ``trial_0001``, ...

Every check here raises :class:`DataError` with the file, the dataset and the fix named.
Reading goes in two steps, ``inspect_file`` (shapes and names, no frames) then ``read_file``
(frames into arrays the caller allocates), so that ``sessions.load_session`` can check several
files against each other before reading any frame, and read them without a second copy.
``writer.write_session`` writes the layout.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from psvae_opt.errors import DataError

REQUIRED_GROUPS = ("images", "labels")
HOW_TO_MAKE = "write it with `psvae-opt data import` or `psvae-opt data synth`"


def _trial_key(name: str) -> tuple[int, str]:
    match = re.search(r"(\d+)$", name)
    return (int(match.group(1)) if match else -1, name)


def _as_text_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (bytes, str)):
        value = [value]
    return [v.decode() if isinstance(v, bytes) else str(v) for v in np.asarray(value).ravel()]


def open_file(path: Path) -> h5py.File:
    if not path.exists():
        raise DataError(f"{path}: file not found; check the path ({HOW_TO_MAKE})")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file (0 bytes); {HOW_TO_MAKE}")
    if not h5py.is_hdf5(path):
        raise DataError(f"{path}: not an HDF5 file; give a BehaveNet-layout .h5 file ({HOW_TO_MAKE})")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise DataError(f"{path}: cannot be opened as HDF5 ({exc}); {HOW_TO_MAKE}") from None


def _trial_names(f: h5py.File, path: Path) -> list[str]:
    if len(f.keys()) == 0:
        raise DataError(f"{path}: empty file (no groups); {HOW_TO_MAKE}")
    for group in REQUIRED_GROUPS:
        if group not in f or not isinstance(f[group], h5py.Group):
            raise DataError(
                f"{path}: no `{group}` group; the file needs groups `images` and `labels` "
                f"with one dataset per trial (trial_0000, ...); {HOW_TO_MAKE}"
            )
    images, labels = set(f["images"].keys()), set(f["labels"].keys())
    if images != labels:
        only_i = ", ".join(sorted(images - labels)[:3]) or "none"
        only_l = ", ".join(sorted(labels - images)[:3]) or "none"
        raise DataError(
            f"{path}: the trials of `images` and `labels` differ (only in images: {only_i}; "
            f"only in labels: {only_l}); give every trial one dataset in each group"
        )
    if not images:
        raise DataError(f"{path}: `images` holds no trials; {HOW_TO_MAKE}")
    return sorted(images, key=_trial_key)


def _numeric_dataset(node: Any) -> bool:
    """Whether an HDF5 node is a dataset of numbers (or booleans), not a group, text or complex."""
    return isinstance(node, h5py.Dataset) and node.dtype.kind in "fiub"


def _check_trial(f: h5py.File, path: Path, name: str, frame_shape: tuple | None) -> tuple:
    img, lab = f["images"][name], f["labels"][name]
    for group, node in (("images", img), ("labels", lab)):
        if not isinstance(node, h5py.Dataset):
            raise DataError(f"{path}: {group}/{name} is a group, not a dataset; store each trial as one array")
    if img.ndim >= 1 and img.shape[0] == 0:
        raise DataError(
            f"{path}: images/{name} has 0 frames, and an empty trial breaks training when the split makes it "
            "a validation or test trial; delete the trial from every group (images, labels, ...) or import again"
        )
    if img.ndim != 4:
        raise DataError(
            f"{path}: images/{name} has shape {img.shape}, expected 4 dimensions (T, C, H, W); "
            "add a channel axis (C = number of camera views)"
        )
    if img.dtype != np.uint8:
        raise DataError(
            f"{path}: images/{name} is {img.dtype}, expected uint8 (T, C, H, W); store frames as 0-255 integers"
        )
    if min(img.shape[1:]) < 1:
        raise DataError(
            f"{path}: images/{name} has frames of shape {img.shape[1:]}; (C, H, W) must all be "
            "at least 1 (C = number of camera views)"
        )
    if frame_shape is not None and img.shape[1:] != frame_shape:
        raise DataError(
            f"{path}: images/{name} has frames of shape {img.shape[1:]} but earlier trials "
            f"have {frame_shape}; resize every trial to one frame shape"
        )
    if lab.ndim != 2:
        raise DataError(
            f"{path}: labels/{name} has shape {lab.shape}, expected (T, L); store one row of L label values per frame"
        )
    if not _numeric_dataset(lab):
        raise DataError(f"{path}: labels/{name} is {lab.dtype}, expected floating-point labels")
    if img.shape[0] != lab.shape[0]:
        raise DataError(
            f"{path}: images/{name} has {img.shape[0]} frames but labels/{name} has "
            f"{lab.shape[0]}; cut both to the same length"
        )
    return img.shape[1:]


def _read_masks(f: h5py.File, path: Path, name: str, labels: np.ndarray) -> np.ndarray:
    if "labels_masks" not in f:
        bad = ~np.isfinite(labels)
        if bad.any():
            raise DataError(
                f"{path}: labels/{name} has {int(bad.sum())} NaN or inf values and the file "
                "has no `labels_masks` group; store missing entries as 0 and add "
                "`labels_masks` with 0 there (psvae-opt data import does this)"
            )
        return np.ones(labels.shape, np.float32)
    if not isinstance(f["labels_masks"], h5py.Group):
        raise DataError(f"{path}: labels_masks is a dataset, not a group; store one mask dataset per trial in it")
    if name not in f["labels_masks"] or not _numeric_dataset(f["labels_masks"][name]):
        raise DataError(f"{path}: labels_masks has no numeric dataset {name}; add one 0/1 mask per trial")
    masks = np.asarray(f["labels_masks"][name][()], dtype=np.float32)
    if masks.shape != labels.shape:
        raise DataError(
            f"{path}: labels_masks/{name} has shape {masks.shape} but labels/{name} has "
            f"{labels.shape}; give one mask entry per label entry"
        )
    if not np.isin(masks, (0.0, 1.0)).all():
        raise DataError(f"{path}: labels_masks/{name} holds values other than 0 and 1")
    bad = ~np.isfinite(labels) & (masks > 0)
    if bad.any():
        raise DataError(
            f"{path}: labels/{name} has {int(bad.sum())} NaN or inf values where "
            f"labels_masks/{name} is 1; set the mask to 0 at missing entries"
        )
    return masks


def _read_optional(
    f: h5py.File, group: str, names: Sequence[str], starts: np.ndarray, shapes_only: bool = False
) -> Any:
    """An optional per-trial group (factors, labels_sc); None when absent or not of that form.

    With ``shapes_only``, whether the group is present and of that form (no data is read).
    """
    if group not in f or not isinstance(f[group], h5py.Group):
        return None
    if not all(n in f[group] and _numeric_dataset(f[group][n]) for n in names):
        return None
    nodes = [f[group][n] for n in names]
    if any(d.ndim != 2 or d.shape[0] != int(b - a) for d, a, b in zip(nodes, starts, starts[1:])):
        return None
    if len({d.shape[1] for d in nodes}) != 1:
        return None
    if shapes_only:
        return True
    return np.concatenate([np.asarray(d[()], dtype=np.float32) for d in nodes], axis=0)


@dataclass(frozen=True)
class FileInfo:
    """What ``inspect_file`` learns of one session file without reading its frames.

    Attributes:
        trial_names: dataset names of the trials, in order.
        trial_starts: (n_trials + 1,) frame offsets within the file.
        frame_shape: (C, H, W).
        label_names: one name per label column (``label_i`` when the file names none).
        factor_names: names of the ``factors`` columns, None when the file has none.
        attrs: file-level attributes.
    """

    path: Path
    trial_names: tuple[str, ...]
    trial_starts: np.ndarray
    frame_shape: tuple[int, int, int]
    label_names: tuple[str, ...]
    factor_names: tuple[str, ...] | None
    attrs: Mapping[str, Any]

    @property
    def n_frames(self) -> int:
        return int(self.trial_starts[-1])


def inspect_file(f: h5py.File, path: Path) -> FileInfo:
    """Validate a file's layout and shapes, reading no frames."""
    names = _trial_names(f, path)
    frame_shape = None
    lengths = []
    for name in names:
        frame_shape = _check_trial(f, path, name, frame_shape)
        lengths.append(f["images"][name].shape[0])
    starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    n_labels = {f["labels"][n].shape[1] for n in names}
    if len(n_labels) != 1 or 0 in n_labels:
        raise DataError(
            f"{path}: labels have {sorted(n_labels)} columns across trials; "
            "every trial needs the same number (>= 1) of labels"
        )
    n_label = n_labels.pop()
    attrs = {k: f.attrs[k] for k in f.attrs}
    label_names = _as_text_list(attrs.get("label_names"))
    if len(label_names) != n_label:
        label_names = [f"label_{i}" for i in range(n_label)]
    factor_names = None
    if _read_optional(f, "factors", names, starts, shapes_only=True):
        factor_names = _as_text_list(f["factors"].attrs.get("names"))
        n_factors = f["factors"][names[0]].shape[1]
        if len(factor_names) != n_factors:
            factor_names = [f"factor_{i}" for i in range(n_factors)]
        factor_names = tuple(factor_names)
    shape = tuple(int(v) for v in frame_shape)  # type: ignore[union-attr]
    return FileInfo(path, tuple(names), starts, shape, tuple(label_names), factor_names, attrs)  # type: ignore[arg-type]


def read_file(
    f: h5py.File, info: FileInfo, images: np.ndarray, labels: np.ndarray, masks: np.ndarray
) -> tuple[np.ndarray | None, tuple[bool, ...], np.ndarray | None]:
    """Read an inspected file's frames, labels and masks into the given (info.n_frames, ...) arrays.

    Returns:
        factors: (T, F) float32 or None; factor_labeled: per factor; labels_sc: (T, L) float32 or None.
    """
    names, starts, path = info.trial_names, info.trial_starts, info.path
    for name, a, b in zip(names, starts, starts[1:]):
        f["images"][name].read_direct(images, dest_sel=np.s_[a:b])
        lab = np.asarray(f["labels"][name][()], dtype=np.float32)
        masks[a:b] = _read_masks(f, path, name, lab)
        labels[a:b] = np.where(masks[a:b] > 0, lab, 0.0)
    factors = _read_optional(f, "factors", names, starts) if info.factor_names is not None else None
    labeled = f["factors"].attrs.get("labeled") if factors is not None else None
    n_factors = len(info.factor_names or ())
    factor_labeled = (
        tuple(bool(v) for v in np.asarray(labeled).ravel())
        if labeled is not None and len(np.asarray(labeled).ravel()) == n_factors
        else tuple(False for _ in range(n_factors))
    )
    return factors, factor_labeled, _read_optional(f, "labels_sc", names, starts)
