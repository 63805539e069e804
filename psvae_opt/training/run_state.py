"""The state of one training run and what it does within an epoch: a pass over the training
frames, the evaluation of a set of frames, the early-stopping bookkeeping at the epoch's end."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from psvae_opt.config import LossConfig, ModelConfig, TrainConfig
from psvae_opt.data import Session
from psvae_opt.errors import ConfigError, TrainingError
from psvae_opt.model.losses import first_full_weight_epoch
from psvae_opt.training.devices import resolve_device, resolve_precision, to_device
from psvae_opt.training.run_folder import OwnerCheck
from psvae_opt.training.steps import build_model, build_optimizer, evaluate, make_forward_loss, train_step

TRAIN_ROW_FRAMES = 512  # per-epoch training rows: a fixed subset (the final summary uses every frame)


class RunState:
    """The state of one run (model, optimiser, data on the device, early-stopping counters);
    :func:`psvae_opt.training.loop.fit` drives it and :mod:`psvae_opt.training.checkpoints`
    saves and restores it.

    ``check`` is called before every write to the run folder: it raises when this attempt no
    longer owns the folder (a worker's trial taken over while the worker was paused)."""

    def __init__(
        self,
        model_cfg: ModelConfig,
        loss_cfg: LossConfig,
        train_cfg: TrainConfig,
        session: Session,
        split_frames: dict[str, np.ndarray],
        run_dir: str | Path,
        check: OwnerCheck = lambda: None,
    ) -> None:
        self.loss_cfg, self.cfg, self.run_dir = loss_cfg, train_cfg, Path(run_dir)
        self.check = check
        self.device = resolve_device(train_cfg.device)
        self.precision = resolve_precision(train_cfg.precision, self.device)
        torch.backends.cudnn.deterministic = train_cfg.deterministic
        torch.backends.cudnn.benchmark = train_cfg.autotune
        self.data = to_device(session, split_frames, self.device)
        self.model = build_model(model_cfg, session.frame_shape, session.n_labels, train_cfg.model_seed)
        self.channels_last = train_cfg.channels_last
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        self.model.to(self.device, memory_format=memory_format)
        self.optimizer = build_optimizer(self.model, train_cfg.learning_rate, train_cfg.weight_decay)
        self.batch_gen = torch.Generator().manual_seed(train_cfg.model_seed)
        n_train = len(self.data.splits["train"])
        if n_train < train_cfg.batch_size:
            raise ConfigError(
                f"train.batch_size = {train_cfg.batch_size} exceeds the {n_train} training frames; "
                "lower train.batch_size"
            )
        self.forward = None  # eager: train_step's own code; compiled: model and loss together
        if train_cfg.compile:
            self.forward = make_forward_loss(loss_cfg, n_train, self.precision, train_cfg.compile_mode)
        pick = np.random.default_rng(train_cfg.model_seed).permutation(n_train)[:TRAIN_ROW_FRAMES]
        self.train_rows_idx = self.data.splits["train"][torch.from_numpy(np.sort(pick)).to(self.device)]
        self.epoch, self.best_loss, self.best_epoch, self.bad_epochs = 0, float("inf"), -1, 0
        # mid-epoch position: the batch to start at, the batch generator before the epoch's
        # permutation, the loss summed so far (saved on a stop, so that a resume is exact)
        self.batch, self.epoch_gen, self.partial_loss = 0, self.batch_gen.get_state(), 0.0
        self.pending_best: dict | None = None  # best.pt's contents, not yet written
        self.saved_at, self.unsaved = time.monotonic(), False
        self.fingerprint = json.dumps(
            {
                "model": asdict(model_cfg),
                "loss": asdict(loss_cfg),
                "train": {
                    k: getattr(train_cfg, k) for k in ("batch_size", "learning_rate", "weight_decay", "model_seed")
                },
                "data": {
                    "frames": len(self.data.frames),
                    "frame_shape": list(session.frame_shape),
                    "labels": list(session.label_names),
                    **{k: len(v) for k, v in self.data.splits.items()},
                },
            },
            sort_keys=True,
        )
        torch.manual_seed(train_cfg.model_seed)

    def train_epoch(self, should_stop: Callable[[], bool] | None = None) -> float | None:
        """One pass over the training frames in random minibatches; returns the mean loss.

        ``should_stop`` is polled before every batch; when it says stop, the epoch's position
        (batch, generator, loss so far) is kept for ``last.pt`` and None returned: the caller
        saves, and a resume goes on from that batch.
        """
        self.model.train()
        train_idx = self.data.splits["train"]
        size = self.cfg.batch_size
        self.epoch_gen = self.batch_gen.get_state()
        perm = torch.randperm(len(train_idx), generator=self.batch_gen).to(self.device)
        total = torch.full((), self.partial_loss, device=self.device)
        n_batches = len(train_idx) // size  # drop the last partial batch: TC needs full ones
        for b in range(self.batch, n_batches):
            if should_stop is not None and should_stop():
                self.batch, self.partial_loss = b, float(total)
                return None
            batch = self.data.batch(train_idx[perm[b * size : (b + 1) * size]], self.channels_last)
            total += train_step(
                self.model,
                self.optimizer,
                *batch,
                self.loss_cfg,
                epoch=self.epoch,
                n_frames=len(train_idx),
                precision=self.precision,
                forward=self.forward,
            )
        self.batch, self.partial_loss, self.epoch_gen = 0, 0.0, self.batch_gen.get_state()
        mean = float(total) / max(n_batches, 1)
        if not np.isfinite(mean):
            raise TrainingError(
                f"the training loss became {mean} at epoch {self.epoch} (alpha={self.loss_cfg.alpha}, "
                f"beta={self.loss_cfg.beta}, lr={self.cfg.learning_rate}); lower train.learning_rate "
                "or check the labels for extreme values"
            )
        return mean

    def evaluate(
        self, idx: Tensor, epoch: float | None = None
    ) -> tuple[dict[str, float], np.ndarray, np.ndarray, np.ndarray]:
        return evaluate(
            self.model,
            self.data,
            idx,
            self.loss_cfg,
            epoch=self.epoch if epoch is None else epoch,
            batch_size=self.cfg.eval_batch_size,
            channels_last=self.channels_last,
            seed=self.cfg.model_seed,
        )

    def annealed(self, epoch: int) -> bool:
        return epoch >= first_full_weight_epoch(self.loss_cfg.anneal_epochs)

    def end_epoch(self, val_loss: float) -> None:
        """Count the finished epoch for early stopping and move to the next one; the best epoch
        so far has its model copied, to become ``best.pt`` at the next save."""
        improved = self.annealed(self.epoch) and val_loss < self.best_loss
        if improved or (self.best_epoch < 0 and self.epoch == self.cfg.max_epochs - 1):
            # Before annealing ends no epoch qualifies; the last one is kept as a fallback.
            self.best_loss = val_loss if improved else self.best_loss
            self.best_epoch, self.bad_epochs = self.epoch, 0
            model = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            self.pending_best = {"model": model, "epoch": self.epoch}
        elif self.annealed(self.epoch):
            self.bad_epochs += 1
        self.epoch, self.unsaved = self.epoch + 1, True

    def patience_spent(self) -> bool:
        """Early stopping: ``patience`` annealed epochs in a row without a better validation loss."""
        return 0 < self.cfg.patience <= self.bad_epochs
