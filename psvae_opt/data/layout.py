"""BehaveNet's HDF5 layout: read, validate and write one session (DESIGN section 1).

A session file holds groups ``images`` (uint8, (T, C, H, W) per trial), ``labels``
(float, (T, L), z-scored, masked entries 0) and optionally ``labels_masks``, ``labels_sc``
and psvae-opt's own ``factors`` (ground-truth generative factors of synthetic data). Each
group has one dataset per trial, ``trial_0000``, ``trial_0001``, ...

Every check here raises :class:`DataError` with the file, the dataset and the fix named.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from psvae_opt.errors import DataError

REQUIRED_GROUPS = ("images", "labels")
HOW_TO_MAKE = "write it with `psvae-opt data import` or `psvae-opt data synth`"


@dataclass(frozen=True, eq=False)
class Session:
    """One session held in memory, all trials concatenated along the frame axis.

    Attributes:
        path: the HDF5 file it was read from.
        images: (T, C, H, W) uint8 frames.
        labels: (T, L) float32 z-scored labels, 0 where masked.
        masks: (T, L) float32, 1 = valid label entry, 0 = missing.
        trial_names: dataset names of the trials, in order.
        trial_starts: (n_trials + 1,) frame offsets; trial i is frames
            ``trial_starts[i]:trial_starts[i + 1]``.
        label_names: one name per label column.
        factors: (T, F) float32 ground-truth factors, or None.
        factor_names: one name per factor column.
        factor_labeled: per factor, whether it is also a label.
        labels_sc: (T, L) float32 labels in pixels of the stored frames, or None.
        attrs: file-level attributes.
    """

    path: Path
    images: np.ndarray
    labels: np.ndarray
    masks: np.ndarray
    trial_names: tuple[str, ...]
    trial_starts: np.ndarray
    label_names: tuple[str, ...]
    factors: np.ndarray | None = None
    factor_names: tuple[str, ...] = ()
    factor_labeled: tuple[bool, ...] = ()
    labels_sc: np.ndarray | None = None
    attrs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        return int(self.images.shape[0])

    @property
    def n_trials(self) -> int:
        return len(self.trial_names)

    @property
    def n_labels(self) -> int:
        return int(self.labels.shape[1])

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.images.shape[1:])  # type: ignore[return-value]

    @property
    def masked_fraction(self) -> float:
        return float(1.0 - self.masks.mean()) if self.masks.size else 0.0


def _trial_key(name: str) -> tuple[int, str]:
    match = re.search(r"(\d+)$", name)
    return (int(match.group(1)) if match else -1, name)


def _as_text_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (bytes, str)):
        value = [value]
    return [v.decode() if isinstance(v, bytes) else str(v) for v in np.asarray(value).ravel()]


def _open(path: Path) -> h5py.File:
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


def _read_optional(f: h5py.File, group: str, names: Sequence[str], starts: np.ndarray) -> Any:
    """An optional per-trial group (factors, labels_sc); None when absent or not of that form."""
    if group not in f or not isinstance(f[group], h5py.Group):
        return None
    if not all(n in f[group] and _numeric_dataset(f[group][n]) for n in names):
        return None
    parts = [np.asarray(f[group][n][()], dtype=np.float32) for n in names]
    if any(p.ndim != 2 or p.shape[0] != int(b - a) for p, a, b in zip(parts, starts, starts[1:])):
        return None
    return np.concatenate(parts, axis=0)


def load_session(path: str | Path) -> Session:
    """Read and validate a BehaveNet-layout HDF5 file; every frame is read once, here."""
    path = Path(path)
    with _open(path) as f:
        names = _trial_names(f, path)
        frame_shape = None
        lengths = []
        for name in names:
            frame_shape = _check_trial(f, path, name, frame_shape)
            lengths.append(f["images"][name].shape[0])
        starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        if starts[-1] == 0:
            raise DataError(f"{path}: every trial is empty (0 frames); {HOW_TO_MAKE}")
        n_labels = {f["labels"][n].shape[1] for n in names}
        if len(n_labels) != 1 or 0 in n_labels:
            raise DataError(
                f"{path}: labels have {sorted(n_labels)} columns across trials; "
                "every trial needs the same number (>= 1) of labels"
            )
        images = np.empty((int(starts[-1]), *frame_shape), np.uint8)
        labels = np.empty((int(starts[-1]), n_labels.pop()), np.float32)
        masks = np.empty_like(labels)
        for name, a, b in zip(names, starts, starts[1:]):
            if b > a:
                f["images"][name].read_direct(images, dest_sel=np.s_[a:b])
            lab = np.asarray(f["labels"][name][()], dtype=np.float32)
            masks[a:b] = _read_masks(f, path, name, lab)
            labels[a:b] = np.where(masks[a:b] > 0, lab, 0.0)
        attrs = {k: f.attrs[k] for k in f.attrs}
        label_names = _as_text_list(attrs.get("label_names"))
        if len(label_names) != labels.shape[1]:
            label_names = [f"label_{i}" for i in range(labels.shape[1])]
        factors = _read_optional(f, "factors", names, starts)
        factor_names = _as_text_list(f["factors"].attrs.get("names")) if factors is not None else []
        if factors is not None and len(factor_names) != factors.shape[1]:
            factor_names = [f"factor_{i}" for i in range(factors.shape[1])]
        labeled = f["factors"].attrs.get("labeled") if factors is not None else None
        factor_labeled = (
            tuple(bool(v) for v in np.asarray(labeled).ravel())
            if labeled is not None and len(np.asarray(labeled).ravel()) == len(factor_names)
            else tuple(False for _ in factor_names)
        )
        labels_sc = _read_optional(f, "labels_sc", names, starts)
    return Session(
        path=path,
        images=images,
        labels=labels,
        masks=masks,
        trial_names=tuple(names),
        trial_starts=starts,
        label_names=tuple(label_names),
        factors=factors,
        factor_names=tuple(factor_names),
        factor_labeled=factor_labeled,
        labels_sc=labels_sc,
        attrs=attrs,
    )


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
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
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
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
