"""Checkpoints of a run folder: ``last.pt`` (everything a resumed run needs, down to the batch
of a stopped epoch), ``best.pt`` (the best model and its epoch) and reading them back, for a
resumed run (:func:`load_state`; a finished run's network: :mod:`psvae_opt.training.trained`). Both are loadable with
``torch.load(..., weights_only=True)``. They are written together (:func:`save`) at most every
``train.checkpoint_seconds`` (:func:`save_if_due`), at the end of training and on a stop."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from psvae_opt.errors import DataError, TrainingError, first_line
from psvae_opt.training.run_folder import remove_leftovers, save_atomic, truncate_rows
from psvae_opt.training.run_state import RunState


def training_state(t: RunState) -> dict:
    """Everything ``last.pt`` holds: model, optimiser, counters, random states, the run's fingerprint."""
    return {
        "model": t.model.state_dict(),
        "optimizer": t.optimizer.state_dict(),
        "epoch": t.epoch,
        "best_loss": float(t.best_loss),
        "best_epoch": t.best_epoch,
        "bad_epochs": t.bad_epochs,
        "batch_gen": t.epoch_gen,
        "batch": t.batch,
        "partial_loss": t.partial_loss,
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state(t.device) if t.device.type == "cuda" else torch.zeros(0),
        "fingerprint": t.fingerprint,
    }


def save(t: RunState) -> None:
    """Write the pending best checkpoint, then ``last.pt`` (in that order: ``last.pt`` never
    names a best epoch that ``best.pt`` does not hold)."""
    if t.pending_best is not None:
        save_atomic(t.pending_best, t.run_dir / "best.pt", t.check)
        t.pending_best = None
    save_atomic(training_state(t), t.run_dir / "last.pt", t.check)
    t.saved_at, t.unsaved = time.monotonic(), False


def save_if_due(t: RunState) -> None:
    """:func:`save` when ``train.checkpoint_seconds`` have passed since the last one."""
    if time.monotonic() - t.saved_at >= t.cfg.checkpoint_seconds:
        save(t)


def resume(t: RunState) -> bool:
    """Restore ``t`` from the run folder's ``last.pt``; False when there is none (a fresh run).

    Metrics rows of epochs after the checkpoint are dropped: the resumed run redoes them, and
    temporary files of killed attempts are removed.
    """
    path = t.run_dir / "last.pt"
    if t.run_dir.is_dir():
        t.check()
        remove_leftovers(t.run_dir)
    if not path.exists():
        return False
    state = load_state(path, t.device)
    check_same_run(state.get("fingerprint"), t.fingerprint, t.run_dir)
    t.model.load_state_dict(state["model"])
    t.optimizer.load_state_dict(state["optimizer"])
    t.epoch, t.best_loss = int(state["epoch"]), float(state["best_loss"])
    t.best_epoch, t.bad_epochs = int(state["best_epoch"]), int(state["bad_epochs"])
    t.batch_gen.set_state(state["batch_gen"].cpu())
    t.batch, t.partial_loss = int(state.get("batch", 0)), float(state.get("partial_loss", 0.0))
    t.epoch_gen = t.batch_gen.get_state()
    torch.set_rng_state(state["torch_rng"].cpu())
    if t.device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda_rng"].cpu(), t.device)
    truncate_rows(t.run_dir / "metrics.csv", t.epoch - 1, t.check)
    return True


def check_same_run(stored: str | None, fingerprint: str, run_dir: Path) -> None:
    """Refuse to resume a run of another model, loss, optimisation or data."""
    if stored is None or stored == fingerprint:
        return
    old, new = json.loads(stored), json.loads(fingerprint)
    differ = [
        f"{section}.{key}"
        for section in new
        for key in sorted(set(old.get(section, {})) | set(new[section]))
        if old.get(section, {}).get(key) != new[section].get(key)
    ]
    raise TrainingError(
        f"{run_dir} holds a run of another configuration ({', '.join(differ)} differ); "
        "give a new --out folder, or remove that one to start again"
    )


def load_state(path: Path, device: torch.device | str) -> dict:
    """A checkpoint's dictionary; a one-line error when the file cannot be read."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise DataError(f"{path}: no such checkpoint") from None
    except Exception as exc:  # torch raises many kinds for a damaged file
        raise DataError(f"{path}: cannot load the checkpoint ({first_line(exc)[:200]}); the file is damaged") from None
    if not isinstance(state, dict) or "model" not in state:
        raise DataError(f"{path}: not a psvae-opt checkpoint (no model state)")
    return state
