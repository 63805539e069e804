"""The end of a run: the best checkpoint reloaded, every split evaluated, ``latents.npz`` and
``summary.json`` written (formats: :mod:`psvae_opt.training.run_folder`), and the same
latents and summary handed back in the :class:`FitResult`, so that a caller (the objective)
need not read the files again."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from psvae_opt.data import Session
from psvae_opt.training import checkpoints
from psvae_opt.training.run_folder import SESSION_DTYPE, SPLIT_CODES, write_atomic, write_text_atomic
from psvae_opt.training.run_state import RunState, evaluate_frames

RECORDED = ("run_dir", "best_epoch", "epochs_run", "annealing_complete", "metrics", "resumed_from")


@dataclass(frozen=True)
class FitResult:
    """What a finished run reports.

    Attributes:
        latents: the arrays of ``latents.npz`` (``mu``, ``logvar`` (T, K), ``y_hat`` (T, L),
            ``split``, ``session`` (T,), ``n_labels``); empty where a result was built by hand.
        summary: the content of ``summary.json``; empty likewise.
    """

    run_dir: Path
    best_epoch: int
    epochs_run: int
    annealing_complete: bool
    metrics: dict[str, dict[str, float]]
    resumed_from: int = 0  # the epoch a resumed run started at (0: a fresh run)
    latents: dict[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)
    summary: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def record(self) -> dict[str, Any]:
        """The fields ``summary.json`` opens with, as plain JSON values."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name in RECORDED}
        return {**values, "run_dir": str(self.run_dir)}


def finish_run(
    t: RunState, session: Session, seconds: float, resumed_from: int, should_stop: Callable[[], bool] | None = None
) -> FitResult:
    """Reload the best checkpoint, evaluate every split, write latents and the summary.

    ``should_stop`` is polled before each evaluation: a stop here (a preemption's grace time
    is short) ends the run with :class:`KeyboardInterrupt` at once; ``last.pt`` already holds
    the finished training, so its next attempt only evaluates.

    With several sessions the summary adds ``per_session`` (session name -> split -> metrics,
    each split's frames of that session evaluated alone; a split with fewer than 2 frames
    of a session is left out), and ``latents.npz`` always holds each frame's session index.
    """
    best = checkpoints.load_state(t.run_dir / "best.pt", t.device)
    t.model.load_state_dict(best["model"])
    final_epoch = max(t.epoch - 1, int(best["epoch"]))
    summary_metrics, n_frames = {}, len(t.data.frames)
    mu = np.zeros((n_frames, t.model.n_latents), np.float32)
    logvar = np.zeros((n_frames, t.model.n_latents), np.float32)
    y_hat = np.zeros((n_frames, t.model.n_labels), np.float32)
    split_of = np.full(n_frames, -1, np.int8)
    frame_sessions = session.frame_sessions.astype(SESSION_DTYPE)
    per_session: dict[str, dict[str, dict[str, float]]] = {}
    for split, code in SPLIT_CODES.items():
        idx = t.data.splits.get(split)
        if idx is None or len(idx) < 2:
            continue
        if should_stop is not None and should_stop():
            raise KeyboardInterrupt(f"stopped during the end-of-run evaluation of {t.run_dir}; a rerun only evaluates")
        summary_metrics[split], mu_s, y_s, lv_s = evaluate_frames(t, idx, epoch=final_epoch)
        where = idx.cpu().numpy()
        mu[where], y_hat[where], logvar[where], split_of[where] = mu_s, y_s, lv_s, code
        for s, name in enumerate(session.session_names if session.n_sessions > 1 else ()):
            mine = np.flatnonzero(frame_sessions[where] == s)
            if len(mine) >= 2:
                own = idx[torch.from_numpy(mine).to(idx.device)]
                per_session.setdefault(name, {})[split] = evaluate_frames(t, own, epoch=final_epoch)[0]
    rest = np.flatnonzero(split_of < 0)  # frames in no split (gap trials) still get latents
    if len(rest):
        _, mu[rest], y_hat[rest], logvar[rest] = evaluate_frames(
            t, torch.from_numpy(rest).to(t.device), epoch=final_epoch
        )
    latents = {
        "mu": mu,
        "logvar": logvar,
        "y_hat": y_hat,
        "split": split_of,
        "session": frame_sessions,
        "n_labels": np.asarray(t.model.n_labels),
    }
    write_atomic(t.run_dir / "latents.npz", lambda fh: np.savez(fh, **latents), t.check)
    result = FitResult(
        run_dir=t.run_dir,
        best_epoch=int(best["epoch"]),
        epochs_run=t.epoch,
        annealing_complete=t.annealed(int(best["epoch"])),
        metrics=summary_metrics,
        resumed_from=resumed_from,
    )
    summary = {**result.record(), "seconds": seconds, "device": str(t.device)}
    if per_session:
        summary["per_session"] = per_session
    write_text_atomic(t.run_dir / "summary.json", json.dumps(summary, indent=2), t.check)
    return replace(result, latents=latents, summary=summary)
