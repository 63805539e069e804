"""The state of one training run as plain data (:class:`RunState`), how it is set up
(:func:`new_run`), and the small pieces of bookkeeping :func:`psvae_opt.training.loop.fit`
calls between its steps: the evaluation of a set of frames and early stopping at an epoch's end.
:mod:`psvae_opt.training.checkpoints` saves and restores it."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from psvae_opt.config import LossConfig, ModelConfig, TrainConfig
from psvae_opt.data import Session
from psvae_opt.errors import ConfigError
from psvae_opt.model.losses import LossTerms, first_full_weight_epoch
from psvae_opt.model.network import PSVAE, ModelOutput
from psvae_opt.training.bf16_weights import Bf16Weights
from psvae_opt.training.devices import DeviceData, resolve_device, resolve_precision, to_device
from psvae_opt.training.run_folder import OwnerCheck
from psvae_opt.training.steps import build_model, build_training, evaluate, make_forward_loss

TRAIN_ROW_FRAMES = 512  # per-epoch training rows: a fixed subset (the final summary uses every frame)

ForwardLoss = Callable[[torch.nn.Module, Tensor, Tensor, Tensor, float], LossTerms]


@dataclass
class RunState:
    """Everything one run holds: its settings, model, optimiser, data on the device, where it
    is (epoch, batch) and its early-stopping counters.

    ``forward_loss(network, x, y, mask, epoch)`` is the forward pass and loss of a training
    batch, the one route to the loss (compiled under ``train.compile``, the same function eager
    otherwise). ``network`` is the model, or under eager bf16 the model on bf16 copies of its
    weights, which the optimizer (:class:`~psvae_opt.training.bf16_weights.Bf16Weights`) keeps.
    ``check`` is called before every write to the run folder: it raises when this
    attempt no longer owns the folder (a worker's trial taken over while the worker was paused)."""

    loss_cfg: LossConfig
    cfg: TrainConfig
    run_dir: Path
    check: OwnerCheck
    device: torch.device
    precision: str
    data: DeviceData
    model: PSVAE
    optimizer: torch.optim.Optimizer | Bf16Weights
    network: Callable[[Tensor], ModelOutput]  # the model as a training step calls it
    forward_loss: ForwardLoss
    train_rows_idx: Tensor  # the fixed training frames of the per-epoch training rows
    fingerprint: str  # what a resumed run must match: model, loss, optimisation, data
    batch_gen: torch.Generator = field(default_factory=torch.Generator)
    epoch: int = 0
    best_loss: float = float("inf")
    best_epoch: int = -1
    bad_epochs: int = 0
    # mid-epoch position: the batch to start at, the batch generator before the epoch's
    # permutation, the loss summed so far (saved on a stop, so that a resume is exact)
    batch: int = 0
    epoch_gen: Tensor | None = None
    partial_loss: float = 0.0
    pending_best: dict | None = None  # best.pt's contents, not yet written
    saved_at: float = field(default_factory=time.monotonic)
    unsaved: bool = False

    def annealed(self, epoch: int) -> bool:
        return epoch >= first_full_weight_epoch(self.loss_cfg.anneal_epochs)

    def patience_spent(self) -> bool:
        """Early stopping: ``patience`` annealed epochs in a row without a better validation loss."""
        return 0 < self.cfg.patience <= self.bad_epochs


def new_run(
    model_cfg: ModelConfig,
    loss_cfg: LossConfig,
    train_cfg: TrainConfig,
    session: Session,
    split_frames: dict[str, np.ndarray],
    run_dir: str | Path,
    check: OwnerCheck = lambda: None,
) -> RunState:
    """A fresh run: the device and precision resolved, the data copied there once, the model
    and optimiser built. Process-wide settings (seed, cuDNN flags) are the caller's (``fit``)."""
    device = resolve_device(train_cfg.device)
    precision = resolve_precision(train_cfg.precision, device)
    data = to_device(session, split_frames, device)
    model = build_model(model_cfg, session.frame_shape, session.n_labels, train_cfg.model_seed)
    memory_format = torch.channels_last if train_cfg.channels_last else torch.contiguous_format
    model.to(device, memory_format=memory_format)
    n_train = len(data.splits["train"])
    if n_train < train_cfg.batch_size:
        raise ConfigError(
            f"train.batch_size = {train_cfg.batch_size} exceeds the {n_train} training frames; lower train.batch_size"
        )
    mode = train_cfg.compile_mode if train_cfg.compile else None
    optimizer, network = build_training(model, train_cfg.learning_rate, train_cfg.weight_decay, precision, mode)
    pick = np.random.default_rng(train_cfg.model_seed).permutation(n_train)[:TRAIN_ROW_FRAMES]
    fingerprint = {
        "model": asdict(model_cfg),
        "loss": asdict(loss_cfg),
        "train": {k: getattr(train_cfg, k) for k in ("batch_size", "learning_rate", "weight_decay", "model_seed")},
        "data": {
            "frames": len(data.frames),
            "frame_shape": list(session.frame_shape),
            "labels": list(session.label_names),
            **{k: len(v) for k, v in data.splits.items()},
        },
    }
    batch_gen = torch.Generator().manual_seed(train_cfg.model_seed)
    return RunState(
        loss_cfg=loss_cfg,
        cfg=train_cfg,
        run_dir=Path(run_dir),
        check=check,
        device=device,
        precision=precision,
        data=data,
        model=model,
        optimizer=optimizer,
        network=network,
        forward_loss=make_forward_loss(loss_cfg, n_train, precision, mode),
        train_rows_idx=data.splits["train"][torch.from_numpy(np.sort(pick)).to(device)],
        fingerprint=json.dumps(fingerprint, sort_keys=True),
        batch_gen=batch_gen,
        epoch_gen=batch_gen.get_state(),
    )


def evaluate_frames(
    t: RunState, idx: Tensor, epoch: float | None = None
) -> tuple[dict[str, float], np.ndarray, np.ndarray, np.ndarray]:
    """:func:`~psvae_opt.training.steps.evaluate` of the run's model on the frames ``idx``
    (annealing weights of ``epoch``, default the current one)."""
    return evaluate(
        t.model,
        t.data,
        idx,
        t.loss_cfg,
        epoch=t.epoch if epoch is None else epoch,
        batch_size=t.cfg.eval_batch_size,
        channels_last=t.cfg.channels_last,
        seed=t.cfg.model_seed,
    )


def end_epoch(t: RunState, val_loss: float) -> None:
    """Count the finished epoch for early stopping and move to the next one; the best epoch
    so far has its model copied, to become ``best.pt`` at the next save."""
    improved = t.annealed(t.epoch) and val_loss < t.best_loss
    if improved or (t.best_epoch < 0 and t.epoch == t.cfg.max_epochs - 1):
        # Before annealing ends no epoch qualifies; the last one is kept as a fallback.
        t.best_loss = val_loss if improved else t.best_loss
        t.best_epoch, t.bad_epochs = t.epoch, 0
        model = {k: v.detach().clone() for k, v in t.model.state_dict().items()}
        t.pending_best = {"model": model, "epoch": t.epoch}
    elif t.annealed(t.epoch):
        t.bad_epochs += 1
    t.epoch, t.unsaved = t.epoch + 1, True
