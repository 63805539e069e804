"""Writers of an encoded session, one per format that downstream tools read (:data:`FORMATS`).

- ``npz``: NumPy arrays ``mean``, ``variance`` (T, K), ``labels_z``, ``labels_px`` (T, L), ``frame``,
  ``trial``, ``trial_frame``, ``time`` (T,), ``dim_names``, ``label_names`` and, when asked,
  ``reconstructions`` (T, C, H, W) uint8;
- ``csv``: one row per frame: ``frame``, ``trial``, ``trial_frame``, ``time``, then ``mean_DIM``,
  ``var_DIM``, ``LABEL_z``, ``LABEL_px`` (pandas, R or a spreadsheet read it);
- ``behavenet``: a folder ``NAME.behavenet/`` with BehaveNet's ``NAME_latents.pkl`` and
  ``meta_tags.pkl`` (see :mod:`psvae_opt.inference.behavenet`: BehaveNet's own split in
  ``trials``, readable by numpy 1.17 to 2.x);
- ``nwb``: ``TimeSeries`` in the ``behavior`` processing module (``psvae_latents``,
  ``psvae_latent_variances``, ``psvae_labels_z`` and ``psvae_labels_px``) with the frames'
  timestamps, appended to a copy of the session's NWB file or in a new one.
"""

from __future__ import annotations

import csv
import datetime
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from psvae_opt.errors import DataError
from psvae_opt.inference.behavenet import write_behavenet_folder
from psvae_opt.inference.encode import Encoding, encode_session
from psvae_opt.inference.model import PsvaeModel
from psvae_opt.inference.provenance import provenance
from psvae_opt.inference.sources import SessionFrames

NWB_SERIES = ("psvae_latents", "psvae_latent_variances", "psvae_labels_z", "psvae_labels_px")


@dataclass(frozen=True)
class Target:
    """Where and what one writer writes: the folder, the session, its encoding, the model, options."""

    folder: Path
    session: SessionFrames
    encoding: Encoding
    model: PsvaeModel
    nwb_source: Path | None = None
    provenance: dict = field(default_factory=dict)
    final_folder: Path | None = None


def frame_table(session: SessionFrames) -> dict[str, np.ndarray]:
    """(T,) frame index, trial index, frame within the trial, and time in seconds."""
    n = session.n_frames
    trial = np.repeat(np.arange(session.n_trials), np.diff(session.trial_starts))
    return {
        "frame": np.arange(n),
        "trial": trial,
        "trial_frame": np.arange(n) - session.trial_starts[trial],
        "time": session.times,
    }


def write_npz(t: Target) -> Path:
    e, m = t.encoding, t.model
    arrays = {
        **frame_table(t.session),
        "mean": e.mean,
        "variance": e.variance,
        "labels_z": e.labels_z,
        "dim_names": np.array(m.dim_names),
        "label_names": np.array(m.label_names),
        "n_labels": np.int64(m.n_labels),
    }
    if e.labels_px is not None:
        arrays["labels_px"] = e.labels_px
    if e.reconstructions is not None:
        arrays["reconstructions"] = e.reconstructions
    path = t.folder / f"{t.session.name}.npz"
    np.savez(path, **arrays)
    return path


def write_csv(t: Target) -> Path:
    e, m = t.encoding, t.model
    columns = frame_table(t.session)
    blocks = [
        ("mean_{}", m.dim_names, e.mean),
        ("var_{}", m.dim_names, e.variance),
        ("{}_z", m.label_names, e.labels_z),
    ]
    if e.labels_px is not None:
        blocks.append(("{}_px", m.label_names, e.labels_px))
    for pattern, names, values in blocks:
        columns.update({pattern.format(n): values[:, i] for i, n in enumerate(names)})
    path = t.folder / f"{t.session.name}.csv"
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        # repr of a float32 converted to Python float keeps every digit it has
        for row in zip(*(c.tolist() for c in columns.values())):
            writer.writerow(row)
    return path


def write_behavenet(t: Target) -> Path:
    return write_behavenet_folder(
        t.folder, t.session.name, t.encoding.mean, t.session.trial_starts, t.model.info, t.model.frame_shape,
        t.provenance, t.final_folder,
    )  # fmt: skip


def _timestamps(session: SessionFrames, nwb) -> np.ndarray:
    """The video's timestamps: an ImageSeries of the NWB file with one per frame, else frame / rate."""
    for obj in getattr(nwb, "acquisition", {}).values() if nwb is not None else ():
        stamps = getattr(obj, "timestamps", None)
        if type(obj).__name__ == "ImageSeries" and stamps is not None and len(stamps) == session.n_frames:
            return np.asarray(stamps[:], np.float64)
    times = session.times
    if not np.isfinite(times).all():
        raise DataError(f"{session.paths[0]}: no frame rate, so NWB timestamps are unknown; give --frame-rate FPS")
    return times


def _add_series(nwb, t: Target, timestamps: np.ndarray) -> None:
    from pynwb import TimeSeries

    behavior = nwb.processing.get("behavior") or nwb.create_processing_module("behavior", "behavioural data")
    taken = [name for name in NWB_SERIES if name in behavior.data_interfaces]
    if taken:
        raise DataError(f"{t.nwb_source}: its behavior module already holds {', '.join(taken)}; give the original file")
    e, m = t.encoding, t.model
    dims, labels = ", ".join(m.dim_names), ", ".join(m.label_names)
    where = f"PS-VAE bundle {m.folder} (study {m.info.get('study')}, trial {m.info.get('trial')})"
    series = [
        (NWB_SERIES[0], e.mean, "a.u.", f"posterior means of the latents ({dims}) of {where}"),
        (NWB_SERIES[1], e.variance, "a.u.", f"posterior variances of the latents ({dims}) of {where}"),
        (NWB_SERIES[2], e.labels_z, "z-score", f"labels ({labels}) predicted by {where}, z-scored"),
    ]
    if e.labels_px is not None:
        series.append((NWB_SERIES[3], e.labels_px, "pixels", f"labels ({labels}) predicted by {where}, video pixels"))
    stamps = timestamps
    for name, data, unit, description in series:
        behavior.add(TimeSeries(name=name, data=data, unit=unit, timestamps=stamps, description=description))
        stamps = behavior[NWB_SERIES[0]]  # the others link to the first one's timestamps


def write_nwb(t: Target) -> Path:
    from pynwb import NWBHDF5IO, NWBFile

    path = t.folder / f"{t.session.name}.nwb"
    if t.nwb_source is not None:
        shutil.copyfile(t.nwb_source, path)
        try:
            with NWBHDF5IO(str(path), "a") as io:
                nwb = io.read()
                _add_series(nwb, t, _timestamps(t.session, nwb))
                io.write(nwb)
        except DataError:
            raise
        except Exception as exc:  # pynwb and h5py raise many kinds for a file that is not NWB
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DataError(
                f"{t.nwb_source}: cannot be read as NWB ({reason[:160]}); give the session's .nwb file"
            ) from None
        return path
    source = t.session.paths[0]
    start = datetime.datetime.fromtimestamp(source.stat().st_mtime, datetime.UTC)  # the recording's file time
    nwb = NWBFile(
        session_description=f"PS-VAE latents of {t.session.name}",
        identifier=str(uuid.uuid4()),
        session_start_time=start,
    )
    _add_series(nwb, t, _timestamps(t.session, None))
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    return path


FORMATS: dict[str, Callable[[Target], Path]] = {
    "npz": write_npz,
    "csv": write_csv,
    "behavenet": write_behavenet,
    "nwb": write_nwb,
}


def parse_formats(text: str) -> list[str]:
    """``npz,csv`` -> the format names, each known."""
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in FORMATS]
    if unknown or not names:
        raise DataError(f"--format {text!r}: choose among {', '.join(FORMATS)} (comma-separated)")
    return list(dict.fromkeys(names))


def check_out(out: Path) -> None:
    """Refuse an ``--out`` that is a file, before anything is decoded."""
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} is a file; give a folder for the encoded sessions")


def write_sessions(
    model: PsvaeModel,
    sessions: Iterable[SessionFrames],
    out: str | Path,
    formats: Sequence[str],
    *,
    batch_size: int = 256,
    reconstructions: bool = False,
    nwb_source: Path | None = None,
    progress: bool = False,
    on_session: Callable[[SessionFrames, Encoding, list[Path]], None] | None = None,
    options: dict | None = None,
) -> list[Path]:
    """Encode every session and write each format; returns the files written in ``out``.

    Everything goes to a staging folder beside ``out`` first and is moved into ``out`` only once
    every session is done: a refused session (a damaged file, an unreadable video, a frame rate
    NWB lacks) leaves ``out`` as it was. Files of the same names in ``out`` are replaced.
    """
    out = Path(out)
    check_out(out)
    try:
        staging = out.parent / f".{out.name}.staging-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    except OSError as exc:
        raise DataError(f"--out {out}: cannot write there ({exc.strerror or exc}); choose another folder") from None
    try:
        for session in sessions:
            encoding = encode_session(
                model, session, batch_size=batch_size, reconstructions=reconstructions, progress=progress
            )
            record = provenance(model.info, model.folder, session.paths, {}, options or {})
            target = Target(staging, session, encoding, model, nwb_source, record, out)
            paths = [FORMATS[name](target) for name in formats]
            if on_session is not None:
                on_session(session, encoding, [out / p.name for p in paths])
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for path in sorted(staging.iterdir()):
            if path.is_dir() and (out / path.name).is_dir():
                shutil.rmtree(out / path.name)
            os.replace(path, out / path.name)
            written.append(out / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return written
