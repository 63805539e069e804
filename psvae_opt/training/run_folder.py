"""The files of a run folder and their formats (written by the trainer, read by reports).

- ``metrics.csv``: one row per epoch and split, columns :data:`CSV_COLUMNS`;
- ``best.pt`` / ``last.pt``: checkpoints, written atomically (a kill never leaves half a file);
- ``latents.npz``: ``mu``, ``logvar`` and ``y_hat`` of every frame, ``split``, each frame's
  :data:`SPLIT_CODES` code (-1 for frames in no split), and ``session``, each frame's session
  index (int16; files written before sessions existed lack it and read as all zeros);
- ``summary.json``: the best checkpoint's metrics of every split and, with several sessions,
  ``per_session``: session name -> split -> metrics.

Every file is written whole (:func:`write_atomic`: a private temporary name, fsync, rename), so a
kill never leaves half a file and two attempts never share a temporary file.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

import numpy as np

from psvae_opt.data.splits import SPLITS
from psvae_opt.errors import ConfigError, DataError, StorageError

METRIC_NAMES = ("loss", "pixel_mse", "label_mse", "label_r2", "kl_s", "icmi", "tc", "dwkl", "zu_corr")
CSV_COLUMNS = ("epoch", "split", *METRIC_NAMES)
SPLIT_CODES = {name: code for code, name in enumerate(SPLITS)}  # latents.npz "split" values
SESSION_DTYPE = np.int16  # latents.npz "session" values: a study has far fewer than 32767 sessions


OwnerCheck = Callable[[], None]  # raises when this attempt no longer owns its run folder
TMP_SUFFIX = ".tmp"  # every temporary file of a run folder ends so: a resumed run removes them


def confined(root: str | Path, path: str | Path, what: str) -> Path:
    """``path`` resolved, refused in one line unless it lies inside ``root`` (resolved): paths
    built from a study database or a study file never lead a worker to write elsewhere."""
    root, resolved = Path(root).resolve(), Path(path).resolve()
    if not resolved.is_relative_to(root):
        raise StorageError(
            f"{what} {str(path)!r} leads outside {root}; the study database or file holds a bad path: "
            "fix it, or start a new study with --set study.name=NEW"
        )
    return resolved


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # a name too long to look up: it does not exist
        return False


def check_runs_dir(runs_dir: str | Path, key: str = "study.runs_dir") -> Path:
    """Refuse in one line a runs folder that cannot hold run folders: a file, a path through a
    file, or a name longer than the file system allows; returns it resolved."""
    path = Path(runs_dir).expanduser().absolute()
    existing = next(p for p in (path, *path.parents) if _exists(p))
    limit = os.pathconf(existing if existing.is_dir() else existing.parent, "PC_NAME_MAX")
    too_long = [part for part in path.parts if len(part.encode()) > limit]
    if too_long:
        raise ConfigError(
            f"{key} = {str(runs_dir)[:80]!r}...: a folder name of {len(too_long[0].encode())} bytes "
            f"exceeds the file system's {limit}; choose a shorter one"
        )
    if not existing.is_dir():
        raise ConfigError(f"{key} = {str(runs_dir)!r}: {existing} is a file, not a folder; choose a folder")
    return path.resolve()


def _no_check() -> None:
    return None


def write_atomic(path: Path, write: Callable[[BinaryIO], None], check: OwnerCheck = _no_check) -> None:
    """Write ``path`` all at once: ``write`` fills a temporary file of a name no other process
    uses, which is flushed to disk and then renamed over ``path`` (docs/design.md, "Faults").

    A kill at any moment leaves the old file or the new one, never half of one; two processes
    writing the same folder never share a temporary file. ``check`` runs after the data is on
    disk and just before the rename, so an attempt that lost its trial meanwhile (a worker
    paused past its heartbeat) raises there instead of replacing the new owner's file.
    """
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        check()
        os.replace(tmp, path)
    except FileNotFoundError:
        # the new owner of the folder removed our temporary file as a leftover: we lost the run
        check()
        raise
    finally:
        tmp.unlink(missing_ok=True)


def remove_leftovers(run_dir: Path) -> list[Path]:
    """Remove the temporary files of killed attempts (and of older versions' ``*.pt.tmp``)."""
    removed = []
    for leftover in run_dir.glob(f"*{TMP_SUFFIX}"):
        leftover.unlink(missing_ok=True)
        removed.append(leftover)
    return removed


def save_atomic(obj: dict, path: Path, check: OwnerCheck = _no_check) -> None:
    import torch  # here, so that reading a run folder's metrics and latents needs no torch

    write_atomic(path, lambda fh: torch.save(obj, fh), check)


def write_text_atomic(path: Path, text: str, check: OwnerCheck = _no_check) -> None:
    write_atomic(path, lambda fh: fh.write(text.encode()), check)


def _read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _write_rows(path: Path, rows: Iterable[dict], check: OwnerCheck) -> None:
    def write(fh: BinaryIO) -> None:
        text = io.TextIOWrapper(fh, newline="", encoding="utf-8")
        writer = csv.DictWriter(text, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows({k: row[k] for k in CSV_COLUMNS} for row in rows)
        text.flush()
        text.detach()  # the caller closes the file

    write_atomic(path, write, check)


def append_rows(path: Path, rows: Iterable[dict], check: OwnerCheck = _no_check) -> None:
    """Add rows to ``metrics.csv`` by rewriting it atomically (a run has a few hundred rows)."""
    _write_rows(path, [*_read_rows(path), *rows], check)


def truncate_rows(path: Path, last_epoch: int, check: OwnerCheck = _no_check) -> None:
    """Drop metrics rows of epochs after ``last_epoch`` (a resumed run redoes them).

    The file is replaced atomically: a kill during the rewrite keeps every epoch's row.
    """
    if not path.exists():
        return
    _write_rows(path, [r for r in _read_rows(path) if int(r["epoch"]) <= last_epoch], check)


def load_latents(run_dir: str | Path) -> dict[str, np.ndarray]:
    """The arrays of a run's ``latents.npz``; a one-line error when the run has not finished.

    ``session`` is (T,) int16; a file of an older version without it reads as one session (zeros).
    """
    path = Path(run_dir) / "latents.npz"
    if not path.exists():
        raise DataError(f"{run_dir}: no latents.npz; the run has not finished (or the folder is wrong)")
    with np.load(path) as latents:
        arrays = dict(latents)
    if "session" not in arrays:
        arrays["session"] = np.zeros(len(arrays["mu"]), SESSION_DTYPE)
    return arrays


def unsupervised_latents(latents: dict[str, np.ndarray], split: str) -> np.ndarray:
    """The unsupervised latent means (frames of ``split``, D) of a run's ``latents.npz`` arrays."""
    n_labels = int(latents["n_labels"])
    return latents["mu"][latents["split"] == SPLIT_CODES[split]][:, n_labels:]


def read_summary(run_dir: str | Path) -> dict:
    """A finished run's ``summary.json``; a one-line error when there is none."""
    path = Path(run_dir) / "summary.json"
    if not path.exists():
        raise DataError(f"{run_dir}: no summary.json; the run has not finished (or the folder is wrong)")
    return json.loads(path.read_text())


def read_metrics(run_dir: str | Path) -> list[dict[str, float | str]]:
    """Rows of a run's ``metrics.csv`` with numbers parsed."""
    with (Path(run_dir) / "metrics.csv").open(newline="") as fh:
        return [
            {k: (v if k == "split" else (int(v) if k == "epoch" else float(v))) for k, v in row.items()}
            for row in csv.DictReader(fh)
        ]
