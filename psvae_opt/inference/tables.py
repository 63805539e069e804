"""The per-frame tables of an encoded session: npz, CSV and a DeepLabCut-style keypoints CSV.

- ``npz``: NumPy arrays ``mean``, ``variance`` (T, K), ``labels_z``, ``labels_px`` (T, L),
  ``recon_error``, ``confidence``, ``frame``, ``trial``, ``trial_frame``, ``time`` (T,),
  ``dim_names``, ``label_names``, ``provenance`` (a JSON string) and, when asked,
  ``reconstructions`` (T, C, H, W) uint8 (streamed into the file, never held whole);
- ``csv``: one row per frame: ``frame``, ``trial``, ``trial_frame``, ``time``, ``recon_error``,
  ``confidence``, then ``mean_DIM``, ``var_DIM``, ``LABEL_z``, ``LABEL_px``;
- ``dlc``: ``NAME.keypoints.csv`` as DeepLabCut and Lightning Pose write predictions: three
  header rows (``scorer``, ``bodyparts``, ``coords``), then per frame ``x``, ``y``,
  ``likelihood`` of each keypoint in source-video pixels (pandas:
  ``read_csv(path, header=[0, 1, 2], index_col=0)``).

``frame`` is the frame's index in the source (``--frames START:END`` shifts it), ``time`` its
time in seconds (the NWB source's, else frame / frame rate).

**Confidence** (the ``likelihood`` column of ``dlc``) comes from the reconstruction error:
``confidence = min(1, ref / recon_error)``, where ``ref`` is the bundle's validation pixel MSE
(the model's typical error on frames it did not train on; the session's median error when the
bundle has none). A frame reconstructed as well as validation frames scores 1, one with twice
that error 0.5, ten times 0.1. It is one value per frame, shared by its keypoints: the PS-VAE's
labels come from the same latents as the reconstruction, so a frame the model does not explain
is one whose predicted keypoints are not to be trusted either.
"""

from __future__ import annotations

import csv
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from psvae_opt.errors import DataError
from psvae_opt.inference.encode import Encoding, RawFrames
from psvae_opt.inference.model import PsvaeModel
from psvae_opt.inference.sources import SessionFrames

BLOCK = 1 << 22  # bytes copied at a time from spooled reconstructions
ROWS = 4096  # CSV rows converted at a time


def frame_table(session: SessionFrames) -> dict[str, np.ndarray]:
    """(T,) source frame index, trial index, frame within the trial, and time in seconds."""
    n = session.n_frames
    trial = np.repeat(np.arange(session.n_trials), np.diff(session.trial_starts))
    return {
        "frame": session.first_frame + np.arange(n),
        "trial": trial,
        "trial_frame": np.arange(n) - session.trial_starts[trial],
        "time": session.times,
    }


def reference_error(info: dict[str, Any], errors: np.ndarray) -> float:
    """The error a confidence of 1 stands for: the bundle's validation pixel MSE, else the median."""
    val = ((info.get("metrics") or {}).get("val") or {}).get("pixel_mse")
    if val is not None and np.isfinite(val) and val > 0:
        return float(val)
    return float(np.median(errors)) if len(errors) else 1.0


def confidence(info: dict[str, Any], errors: np.ndarray) -> np.ndarray:
    """(T,) min(1, ref / error) in [0, 1] (see the module docstring)."""
    ref = reference_error(info, errors)
    return np.minimum(1.0, ref / np.maximum(errors, 1e-12)).astype(np.float32)


def _write_member(zf: zipfile.ZipFile, name: str, array: np.ndarray) -> None:
    with zf.open(f"{name}.npy", "w", force_zip64=True) as fh:
        np.lib.format.write_array(fh, np.asanyarray(array), allow_pickle=False)


def _write_raw_member(zf: zipfile.ZipFile, name: str, raw: RawFrames) -> None:
    """A spooled (T, C, H, W) uint8 file as an .npy member, copied in blocks (flat memory)."""
    header = {"descr": "|u1", "fortran_order": False, "shape": tuple(raw.shape)}
    with zf.open(f"{name}.npy", "w", force_zip64=True) as fh, raw.path.open("rb") as src:
        np.lib.format.write_array_header_1_0(fh, header)
        for block in iter(lambda: src.read(BLOCK), b""):
            fh.write(block)


def write_npz(folder: Path, session: SessionFrames, e: Encoding, m: PsvaeModel, record: str) -> Path:
    arrays = {
        **frame_table(session),
        "mean": e.mean,
        "variance": e.variance,
        "labels_z": e.labels_z,
        "recon_error": e.recon_error,
        "confidence": confidence(m.info, e.recon_error),
        "dim_names": np.array(m.dim_names),
        "label_names": np.array(m.label_names),
        "n_labels": np.int64(m.n_labels),
        "provenance": np.array(record),
    }
    if e.labels_px is not None:
        arrays["labels_px"] = e.labels_px
    path = folder / f"{session.name}.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, array in arrays.items():
            _write_member(zf, name, array)
        if e.reconstructions is not None:
            _write_raw_member(zf, "reconstructions", e.reconstructions)
    return path


def _write_rows(path: Path, header_rows: list[list], columns: list[np.ndarray]) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerows(header_rows)
        # repr of a float32 converted to Python float keeps every digit it has; rows go out in
        # blocks, so the Python lists never hold a long session whole
        for a in range(0, len(columns[0]) if columns else 0, ROWS):
            writer.writerows(zip(*(c[a : a + ROWS].tolist() for c in columns)))


def write_csv(folder: Path, session: SessionFrames, e: Encoding, m: PsvaeModel, record: str) -> Path:
    columns = {
        **frame_table(session),
        "recon_error": e.recon_error,
        "confidence": confidence(m.info, e.recon_error),
    }
    blocks = [
        ("mean_{}", m.dim_names, e.mean),
        ("var_{}", m.dim_names, e.variance),
        ("{}_z", m.label_names, e.labels_z),
    ]
    if e.labels_px is not None:
        blocks.append(("{}_px", m.label_names, e.labels_px))
    for pattern, names, values in blocks:
        columns.update({pattern.format(n): values[:, i] for i, n in enumerate(names)})
    path = folder / f"{session.name}.csv"
    _write_rows(path, [list(columns)], list(columns.values()))
    return path


def keypoint_names(label_names: tuple[str, ...]) -> list[str]:
    """Body parts of labels in BehaveNet's order (all x, then all y): ``paw_x`` -> ``paw``."""
    half = len(label_names) // 2
    if len(label_names) % 2 or not half:
        raise DataError(f"labels {', '.join(label_names)}: not x/y pairs, so --format dlc has no keypoints to write")
    return [n[:-2] if n.endswith("_x") else n for n in label_names[:half]]


def check_dlc(m: PsvaeModel) -> None:
    """Refuse ``--format dlc`` before encoding when the bundle cannot give keypoints in pixels."""
    keypoint_names(m.label_names)
    if not m.has_pixels:
        raise DataError(f"{m.folder}: the training file had no label_means/label_stds: no pixels for --format dlc")


def write_dlc(folder: Path, session: SessionFrames, e: Encoding, m: PsvaeModel, record: str) -> Path:
    parts = keypoint_names(m.label_names)
    assert e.labels_px is not None
    half = len(parts)
    scorer = f"psvae-opt_{m.info.get('study')}_trial{m.info.get('trial')}"
    conf = confidence(m.info, e.recon_error)
    header = [
        ["scorer", *[scorer] * (3 * half)],
        ["bodyparts", *[p for p in parts for _ in range(3)]],
        ["coords", *["x", "y", "likelihood"] * half],
    ]
    columns = [frame_table(session)["frame"]]
    for k in range(half):
        columns += [e.labels_px[:, k], e.labels_px[:, half + k], conf]
    path = folder / f"{session.name}.keypoints.csv"
    _write_rows(path, header, columns)
    return path
