"""Writers of an encoded session, one per format that downstream tools read (:data:`FORMATS`).

- ``npz``, ``csv`` and ``dlc`` (a DeepLabCut-style keypoints CSV): :mod:`psvae_opt.inference.tables`;
- ``behavenet``: a folder ``NAME.behavenet/`` with BehaveNet's ``NAME_latents.pkl`` and
  ``meta_tags.pkl`` (see :mod:`psvae_opt.inference.behavenet`: BehaveNet's own split in
  ``trials``, readable by numpy 1.17 to 2.x);
- ``nwb``: ``TimeSeries`` in the ``behavior`` processing module (``psvae_latents``,
  ``psvae_latent_variances``, ``psvae_labels_z``, ``psvae_labels_px`` and
  ``psvae_reconstruction_error``) with the frames' timestamps, appended to a copy of the
  session's NWB file (``--nwb-source``) or in a new one; the provenance in each series' ``comments``.

Every session also gets ``NAME.provenance.json`` (:mod:`psvae_opt.inference.provenance`).

With ``--nwb-source``, frame times come from the file's ``ImageSeries`` (its ``timestamps``, or its
``starting_time`` and ``rate``), for every format: :func:`nwb_times`.
"""

from __future__ import annotations

import datetime
import shutil
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from psvae_opt.errors import DataError, require_extra
from psvae_opt.inference import tables
from psvae_opt.inference.behavenet import write_behavenet_folder
from psvae_opt.inference.encode import Encoding
from psvae_opt.inference.model import PsvaeModel
from psvae_opt.inference.sources import SessionFrames

NWB_SERIES = (
    "psvae_latents", "psvae_latent_variances", "psvae_labels_z", "psvae_labels_px", "psvae_reconstruction_error"
)  # fmt: skip


@dataclass(frozen=True)
class Target:
    """Where and what one writer writes: the folder, the session, its encoding, the model, options."""

    folder: Path
    session: SessionFrames
    encoding: Encoding
    model: PsvaeModel
    provenance: dict
    record: str  # the provenance as JSON
    nwb_source: Path | None = None
    final_folder: Path | None = None


def write_npz(t: Target) -> Path:
    return tables.write_npz(t.folder, t.session, t.encoding, t.model, t.record)


def write_csv(t: Target) -> Path:
    return tables.write_csv(t.folder, t.session, t.encoding, t.model, t.record)


def write_dlc(t: Target) -> Path:
    return tables.write_dlc(t.folder, t.session, t.encoding, t.model, t.record)


def write_behavenet(t: Target) -> Path:
    return write_behavenet_folder(
        t.folder, t.session.name, t.encoding.mean, t.session.trial_starts, t.model.info, t.model.frame_shape,
        t.provenance, t.final_folder,
    )  # fmt: skip


def _read_nwb(path: Path):
    from pynwb import NWBHDF5IO

    try:
        return NWBHDF5IO(str(path), "r")
    except Exception as exc:  # pynwb and h5py raise many kinds for a file that is not NWB
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path}: cannot be read as NWB ({reason[:160]}); give the session's .nwb file") from None


def nwb_times(source: Path, first: int, n: int, whole: bool) -> tuple[np.ndarray, str] | None:
    """(n,) times of frames ``first`` .. ``first + n`` from the NWB file's video (an
    ``ImageSeries`` in acquisition): its timestamps, or ``starting_time + frame / rate``; and
    where they came from. None when no ImageSeries has timing. Timestamps of another number of
    frames than the input's (``whole``: the input runs to its end, so exactly ``first + n``) are
    refused naming both counts: they belong to another video or another cut of it."""
    io = _read_nwb(source)
    try:
        try:
            acquisition = io.read().acquisition
        except Exception as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DataError(f"{source}: cannot be read as NWB ({reason[:160]}); give the session's .nwb file") from None
        stamped = []
        for name, obj in acquisition.items():
            if type(obj).__name__ != "ImageSeries":
                continue
            stamps = getattr(obj, "timestamps", None)
            if stamps is not None:
                count = len(stamps)
                if count == first + n or (not whole and count >= first + n):
                    return np.asarray(stamps[first : first + n], np.float64), f"NWB ImageSeries {name} timestamps"
                stamped.append(f"{name} has {count}")
            elif getattr(obj, "rate", None):
                start = float(getattr(obj, "starting_time", None) or 0.0)
                times = start + (first + np.arange(n, dtype=np.float64)) / float(obj.rate)
                return times, f"NWB ImageSeries {name} starting_time + rate"
        if stamped:
            raise DataError(
                f"{source}: its video's timestamps ({', '.join(stamped)}) do not fit the input's {first + n} frames; "
                "give the NWB file of this session's video"
            )
        return None
    finally:
        io.close()


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
    series.append((NWB_SERIES[4], e.recon_error, "a.u.", f"pixel MSE of each frame's reconstruction by {where}"))
    stamps = timestamps
    for name, data, unit, description in series:
        behavior.add(
            TimeSeries(name=name, data=data, unit=unit, timestamps=stamps, description=description, comments=t.record)
        )
        stamps = behavior[NWB_SERIES[0]]  # the others link to the first one's timestamps


def _timestamps(session: SessionFrames) -> np.ndarray:
    times = session.times
    if not np.isfinite(times).all():
        raise DataError(f"{session.paths[0]}: no frame rate, so NWB timestamps are unknown; give --frame-rate FPS")
    return times


def write_nwb(t: Target) -> Path:
    from pynwb import NWBHDF5IO, NWBFile

    path = t.folder / f"{t.session.name}.nwb"
    if t.nwb_source is not None:
        shutil.copyfile(t.nwb_source, path)
        try:
            with NWBHDF5IO(str(path), "a") as io:
                nwb = io.read()
                _add_series(nwb, t, _timestamps(t.session))
                io.write(nwb)
        except DataError:
            raise
        except Exception as exc:  # pynwb and h5py raise many kinds for a file that is not NWB
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DataError(
                f"{t.nwb_source}: cannot be read as NWB ({reason[:160]}); give the session's .nwb file"
            ) from None
        return path
    known = t.session.geometry.get("session_start_time")
    start = (
        datetime.datetime.fromisoformat(known)
        if known
        else datetime.datetime.fromtimestamp(t.session.paths[0].stat().st_mtime, datetime.UTC)
    )
    nwb = NWBFile(
        session_description=f"PS-VAE latents of {t.session.name}",
        identifier=str(uuid.uuid4()),
        session_start_time=start,
    )
    _add_series(nwb, t, _timestamps(t.session))
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    return path


# modules of an optional extra that a format's writer imports: (extra, modules)
FORMAT_NEEDS: dict[str, tuple[str, tuple[str, ...]]] = {"nwb": ("poses", ("pynwb",))}

FORMATS: dict[str, Callable[[Target], Path]] = {
    "npz": write_npz,
    "csv": write_csv,
    "dlc": write_dlc,
    "behavenet": write_behavenet,
    "nwb": write_nwb,
}
OUTPUTS = {"npz": "{}.npz", "csv": "{}.csv", "dlc": "{}.keypoints.csv", "behavenet": "{}.behavenet", "nwb": "{}.nwb"}
PROVENANCE = "{}.provenance.json"


def output_names(name: str, formats: list[str]) -> list[str]:
    """The files (and folders) a session of ``name`` gets in ``--out``."""
    return [OUTPUTS[f].format(name) for f in formats] + [PROVENANCE.format(name)]


def parse_formats(text: str) -> list[str]:
    """``npz,csv`` -> the format names, each known and with its libraries installed (checked
    here, before a model is loaded or a frame decoded)."""
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in FORMATS]
    if unknown or not names:
        raise DataError(f"--format {text!r}: choose among {', '.join(FORMATS)} (comma-separated)")
    require_libraries(names)
    return list(dict.fromkeys(names))


def require_libraries(formats: Sequence[str]) -> None:
    """Refuse in one line a format whose optional libraries are not installed."""
    for name in formats:
        if name in FORMAT_NEEDS:
            extra, modules = FORMAT_NEEDS[name]
            require_extra(f"{name} output", extra, modules)


def check_out(out: Path) -> None:
    """Refuse an ``--out`` that is a file, before anything is decoded."""
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} is a file; give a folder for the encoded sessions")
