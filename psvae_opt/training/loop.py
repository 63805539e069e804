"""Training and evaluation of one PS-VAE (docs/design.md, "Training and metrics").

``fit`` is the training loop, and it reads top to bottom in one function: the process-wide
settings (global seed, cuDNN flags) set once, the run set up (:func:`~psvae_opt.training.run_state.new_run`,
its state plain data) and resumed from ``last.pt`` (:mod:`~psvae_opt.training.checkpoints`);
then per batch: fetch the batch, forward pass and loss (one route, compiled under
``train.compile``), backward, optimizer step; per epoch: evaluate, write the metrics rows,
save the checkpoints; at the end the latents and the summary (:mod:`~psvae_opt.training.run_end`).
It is the only place where ``backward()`` and ``step()`` happen in a run (the benchmarks time
the same lines as :func:`~psvae_opt.training.steps.train_step`). It knows the model only through
its interface (``forward``, ``encode``, ``decode``, ``predict_labels``) and writes a run folder:

- ``config.toml``   the resolved study configuration (when given);
- ``metrics.csv``   one row per epoch and split with every metric of :data:`METRIC_NAMES`;
- ``best.pt``       the best checkpoint (lowest validation loss once annealing is complete),
                    loadable with ``torch.load(..., weights_only=True)``;
- ``last.pt``       the resume checkpoint: at most every ``train.checkpoint_seconds`` (with
                    ``best.pt``), at the end, and at once on a stop, mid-epoch too (its batch);
- ``latents.npz``   latent means and log-variances of every frame from the best checkpoint;
- ``summary.json``  train/val/test metrics of the best checkpoint;
- ``events.out.tfevents.*``  the per-epoch metrics for TensorBoard (:mod:`psvae_opt.training.event_log`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from psvae_opt.config import LossConfig, ModelConfig, TrainConfig
from psvae_opt.data import Session
from psvae_opt.errors import ConfigError, TrainingError
from psvae_opt.training import checkpoints
from psvae_opt.training.event_log import EventLog
from psvae_opt.training.run_end import FitResult, finish_run
from psvae_opt.training.run_folder import METRIC_NAMES, OwnerCheck, append_rows, write_text_atomic
from psvae_opt.training.run_state import end_epoch, evaluate_frames, new_run

log = logging.getLogger(__name__)


def fit(
    model_cfg: ModelConfig,
    loss_cfg: LossConfig,
    train_cfg: TrainConfig,
    session: Session,
    split_frames: dict[str, np.ndarray],
    run_dir: str | Path,
    *,
    config_text: str | None = None,
    progress: bool = True,
    on_epoch: Callable[[int, dict[str, dict[str, float]]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    owner_check: OwnerCheck | None = None,
) -> FitResult:
    """Train one PS-VAE and write its run folder; resumes from ``last.pt`` when present.

    Returns the best checkpoint's metrics of every split, and its latents and summary (also
    written as ``latents.npz`` and ``summary.json``).

    Args:
        split_frames: split name -> frame indices ("train" and "val" required).
        on_epoch: called after each epoch with (epoch, {split: metrics}).
        should_stop: polled before every batch, after every epoch and during the end-of-run
            evaluation; True saves ``last.pt`` (mid-epoch: at that batch) and stops the run with
            :class:`KeyboardInterrupt`.
        owner_check: called before every write to the run folder; it raises when this attempt
            no longer owns the folder (a worker's trial was taken over while it was paused).
    """
    # process-wide settings, once: the global seed (posterior samples) and cuDNN's choices
    torch.manual_seed(train_cfg.model_seed)
    torch.backends.cudnn.deterministic = train_cfg.deterministic
    torch.backends.cudnn.benchmark = train_cfg.autotune
    run_dir = Path(run_dir)
    t = new_run(model_cfg, loss_cfg, train_cfg, session, split_frames, run_dir, owner_check or (lambda: None))
    if checkpoints.resume(t):  # the folder is checked to hold this very run before anything is written
        log.info("%s: resuming at epoch %d of %d", run_dir, t.epoch, train_cfg.max_epochs)
    resumed_from = t.epoch
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        if config_text is not None:
            write_text_atomic(run_dir / "config.toml", config_text, t.check)
        events = EventLog(run_dir, METRIC_NAMES)
        if resumed_from:
            events.rewrite(run_dir / "metrics.csv")
    except OSError as exc:
        raise ConfigError(
            f"cannot write the run folder {run_dir} ({exc.strerror or exc}); choose another one"
        ) from None
    start = time.perf_counter()
    bar = progress_bar(train_cfg.max_epochs, t.epoch, run_dir.name, progress)
    train_idx, size = t.data.splits["train"], train_cfg.batch_size
    n_batches = len(train_idx) // size  # drop the last partial batch: TC needs full ones
    stopped_early = t.patience_spent()  # a resumed run that had stopped early stays stopped
    while t.epoch < train_cfg.max_epochs and not stopped_early:
        epoch = t.epoch
        t.model.train()
        t.epoch_gen = t.batch_gen.get_state()
        perm = torch.randperm(len(train_idx), generator=t.batch_gen).to(t.device)
        total = torch.full((), t.partial_loss, device=t.device)
        for b in range(t.batch, n_batches):
            if should_stop is not None and should_stop():  # last.pt resumes at this batch
                t.batch, t.partial_loss = b, float(total)
                bar.close()
                checkpoints.save(t)
                raise KeyboardInterrupt(f"stopped during epoch {epoch}; {run_dir / 'last.pt'} resumes it")
            x, y, mask = t.data.batch(train_idx[perm[b * size : (b + 1) * size]], train_cfg.channels_last)
            loss = t.forward_loss(t.network, x, y, mask, epoch).loss  # forward pass and loss
            t.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            t.optimizer.step()
            total += loss.detach()  # summed on the device: no synchronisation per step
        t.batch, t.partial_loss, t.epoch_gen = 0, 0.0, t.batch_gen.get_state()
        train_loss = float(total) / max(n_batches, 1)
        if not np.isfinite(train_loss):
            raise TrainingError(
                f"the training loss became {train_loss} at epoch {epoch} (alpha={loss_cfg.alpha}, "
                f"beta={loss_cfg.beta}, lr={train_cfg.learning_rate}); lower train.learning_rate "
                "or check the labels for extreme values"
            )
        rows = {"train": evaluate_frames(t, t.train_rows_idx)[0], "val": evaluate_frames(t, t.data.splits["val"])[0]}
        t.check()  # a paused attempt that lost its trial writes nothing, not even an event
        events.add_epoch(epoch, rows)
        if not np.isfinite(rows["val"]["loss"]):
            raise TrainingError(
                f"the validation loss became {rows['val']['loss']} at epoch {epoch} while the training loss "
                f"was finite (alpha={loss_cfg.alpha}, beta={loss_cfg.beta}); check the validation trials' "
                "frames and labels, or lower train.learning_rate"
            )
        append_rows(run_dir / "metrics.csv", ({"epoch": epoch, "split": s, **m} for s, m in rows.items()), t.check)
        end_epoch(t, rows["val"]["loss"])
        checkpoints.save_if_due(t)
        stopped_early = t.patience_spent()
        bar.update(1)
        bar.set_postfix(val_loss=f"{rows['val']['loss']:.1f}", label_r2=f"{rows['val']['label_r2']:.3f}")
        if on_epoch is not None:
            on_epoch(epoch, rows)
        if should_stop is not None and should_stop():
            bar.close()
            checkpoints.save(t)
            raise KeyboardInterrupt(f"stopped after epoch {epoch}; {run_dir / 'last.pt'} resumes it")
    bar.close()
    if t.unsaved:
        checkpoints.save(t)  # the finished run's last state: a rerun of it only evaluates
    return finish_run(t, session, time.perf_counter() - start, resumed_from, should_stop)


class _NoBar:
    def update(self, n: int) -> None: ...

    def set_postfix(self, **values: str) -> None: ...

    def close(self) -> None: ...


def progress_bar(total: int, initial: int, desc: str, show: bool):
    """tqdm's bar of the epochs (the only thing the trainer shows), or a silent stand-in when
    none is shown: a run without progress needs no tqdm (the GPU check on a bare node)."""
    if not show:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="epoch")
