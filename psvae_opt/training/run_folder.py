"""The files of a run folder and their formats (written by the trainer, read by reports).

- ``metrics.csv``: one row per epoch and split, columns :data:`CSV_COLUMNS`;
- ``best.pt`` / ``last.pt``: checkpoints, written atomically (a kill never leaves half a file);
- ``latents.npz``: ``mu``, ``logvar`` and ``y_hat`` of every frame, ``split``, each frame's
  :data:`SPLIT_CODES` code (-1 for frames in no split), and ``session``, each frame's session
  index (int16; files written before sessions existed lack it and read as all zeros);
- ``summary.json``: the best checkpoint's metrics of every split and, with several sessions,
  ``per_session``: session name -> split -> metrics.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from psvae_opt.data import SPLITS
from psvae_opt.errors import DataError

METRIC_NAMES = ("loss", "pixel_mse", "label_mse", "label_r2", "kl_s", "icmi", "tc", "dwkl", "zu_corr")
CSV_COLUMNS = ("epoch", "split", *METRIC_NAMES)
SPLIT_CODES = {name: code for code, name in enumerate(SPLITS)}  # latents.npz "split" values
SESSION_DTYPE = np.int16  # latents.npz "session" values: a study has far fewer than 32767 sessions


def save_atomic(obj: dict, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def append_rows(path: Path, rows: Iterable[dict]) -> None:
    new = not path.exists()
    with path.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        if new:
            writer.writeheader()
        writer.writerows({k: row[k] for k in CSV_COLUMNS} for row in rows)


def truncate_rows(path: Path, last_epoch: int) -> None:
    """Drop metrics rows of epochs after ``last_epoch`` (a resumed run redoes them)."""
    if not path.exists():
        return
    with path.open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if int(r["epoch"]) <= last_epoch]
    path.unlink()
    append_rows(path, rows)


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


def read_metrics(run_dir: str | Path) -> list[dict[str, float | str]]:
    """Rows of a run's ``metrics.csv`` with numbers parsed."""
    with (Path(run_dir) / "metrics.csv").open(newline="") as fh:
        return [
            {k: (v if k == "split" else (int(v) if k == "epoch" else float(v))) for k, v in row.items()}
            for row in csv.DictReader(fh)
        ]
