"""Training and evaluation of one PS-VAE (docs/design.md, "Training and metrics").

``fit`` is the only place where ``backward()`` and ``step()`` happen. It knows the model only
through its interface (``forward``, ``encode``, ``decode``, ``predict_labels``) and writes a
run folder:

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

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from psvae_opt.config import LossConfig, ModelConfig, TrainConfig
from psvae_opt.data import Session
from psvae_opt.errors import ConfigError, DataError, TrainingError
from psvae_opt.model import metrics
from psvae_opt.model.losses import LossTerms, first_full_weight_epoch, psvae_loss
from psvae_opt.model.network import PSVAE, ModelOutput
from psvae_opt.training.devices import DeviceData, autocast, resolve_device, resolve_precision, to_device
from psvae_opt.training.event_log import EventLog
from psvae_opt.training.run_folder import (
    METRIC_NAMES,
    SESSION_DTYPE,
    SPLIT_CODES,
    OwnerCheck,
    append_rows,
    remove_leftovers,
    save_atomic,
    truncate_rows,
    write_atomic,
    write_text_atomic,
)
from psvae_opt.training.step import make_forward_loss

log = logging.getLogger(__name__)

TRAIN_ROW_FRAMES = 512  # per-epoch training rows: a fixed subset (the final summary uses every frame)


@dataclass(frozen=True)
class FitResult:
    """What a finished run reports."""

    run_dir: Path
    best_epoch: int
    epochs_run: int
    annealing_complete: bool
    metrics: dict[str, dict[str, float]]
    resumed_from: int = 0  # the epoch a resumed run started at (0: a fresh run)


def build_model(model_cfg: ModelConfig, frame_shape, n_labels: int, seed: int) -> PSVAE:
    """The PS-VAE a study file describes."""
    return PSVAE(
        frame_shape,
        n_labels,
        model_cfg.n_unsup,
        channels=model_cfg.channels,
        kernel_size=model_cfg.kernel_size,
        strides=model_cfg.strides,
        batch_norm=model_cfg.batch_norm,
        seed=seed,
    )


def build_optimizer(model: torch.nn.Module, learning_rate: float, weight_decay: float = 0.0) -> torch.optim.Adam:
    """Adam with AMSGrad (BehaveNet's optimiser), the fused kernel: one pass over all
    parameters instead of a dozen (42 -> 8 ms a step for the 8.7 M-parameter model on 2 CPU cores)."""
    return torch.optim.Adam(model.parameters(), lr=learning_rate, weight_decay=weight_decay, amsgrad=True, fused=True)


def _batches(n: int, size: int) -> list[tuple[int, int]]:
    """Near-equal consecutive batches covering n items, none larger than ``size``."""
    edges = np.linspace(0, n, -(-n // size) + 1).round().astype(int).tolist()
    return list(zip(edges[:-1], edges[1:]))


@torch.no_grad()
def evaluate(
    model: PSVAE,
    data: DeviceData,
    idx: Tensor,
    loss_cfg: LossConfig,
    *,
    epoch: float,
    batch_size: int = 1024,
    channels_last: bool = False,
    seed: int = 0,
) -> tuple[dict[str, float], np.ndarray, np.ndarray, np.ndarray]:
    """Every metric of :data:`METRIC_NAMES` on the frames ``idx``, in fp32 whatever the training
    precision: metrics and latents (which MIG and traversals read) keep their digits, and a
    forward pass costs little next to training.

    The loss terms use one posterior sample per frame (drawn from a generator seeded with
    ``seed``, so evaluation is repeatable); pixel and label errors use the latent means.
    The aggregate posterior of ICMI/TC/DWKL is over the ``len(idx)`` evaluated frames; when
    they take several batches, each batch is a random draw from all of them (a seeded
    permutation), as the minibatch estimator assumes: consecutive frames of one trial have
    overlapping posteriors and would inflate TC and DWKL.

    Returns:
        (metrics, mu (N, K) latent means, y_hat (N, L) label predictions, logvar (N, K) latent
        log-variances), arrays on the CPU.
    """
    model.eval()
    device = data.frames.device
    gen = torch.Generator(device=device).manual_seed(seed)
    n = len(idx)
    batches = _batches(n, batch_size)
    order = torch.arange(n, device=idx.device)
    if len(batches) > 1:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).to(idx.device)
    sums = dict.fromkeys(LossTerms._fields + ("pixel_mse",), 0.0)
    mus, y_hats, logvars = [], [], []
    for a, b in batches:
        x, y, mask = data.batch(idx[order[a:b]], channels_last)
        mu, logvar = model.encode(x)
        eps = torch.randn(mu.shape, generator=gen, device=device, dtype=mu.dtype)
        z = mu + torch.exp(0.5 * logvar) * eps
        x_sample, x_mean = model.decode(z), model.decode(mu)
        y_hat = model.predict_labels(mu[:, : model.n_labels])
        out = ModelOutput(x_sample, y_hat, mu, logvar, z)
        terms = psvae_loss(
            x,
            y,
            mask,
            out,
            alpha=loss_cfg.alpha,
            beta=loss_cfg.beta,
            epoch=epoch,
            anneal_epochs=loss_cfg.anneal_epochs,
            n_frames=n,
            estimator=loss_cfg.kl_estimator,
        )
        for key, value in zip(LossTerms._fields, terms):
            sums[key] += float(value) * (b - a)
        sums["pixel_mse"] += metrics.pixel_mse(x, x_mean) * (b - a)
        mus.append(mu.cpu())
        y_hats.append(y_hat.cpu())
        logvars.append(logvar.cpu())
    back = torch.argsort(order).cpu()  # rows in the order of idx again
    mu_all, y_hat_all = torch.cat(mus)[back].numpy(), torch.cat(y_hats)[back].numpy()
    logvar_all = torch.cat(logvars)[back].numpy()
    y_np, m_np = data.labels[idx].cpu().numpy(), data.masks[idx].cpu().numpy()
    result = {k: sums[k] / n for k in ("loss", "kl_s", "icmi", "tc", "dwkl", "pixel_mse")}
    result["label_mse"] = metrics.label_mse(y_np, y_hat_all, m_np)
    result["label_r2"] = metrics.label_r2(y_np, y_hat_all, m_np)
    result["zu_corr"] = metrics.zu_corr(mu_all[:, model.n_labels :])
    return result, mu_all, y_hat_all, logvar_all


def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    x: Tensor,
    y: Tensor,
    mask: Tensor,
    loss_cfg: LossConfig,
    *,
    epoch: float,
    n_frames: int,
    precision: str = "fp32",
    forward: Callable[[torch.nn.Module, Tensor, Tensor, Tensor, float], LossTerms] | None = None,
) -> Tensor:
    """One optimizer step on a minibatch; returns the (detached) loss.

    Args:
        x: (B, C, H, W) frames in [0, 1]; y, mask: (B, L) labels and validity.
        n_frames: training frames N of the aggregate-posterior estimate.
        forward: the forward pass and loss as one (compiled) function,
            :func:`psvae_opt.training.step.make_forward_loss`; None: this eager code.
    """
    if forward is not None:
        # a copy: a CUDA graph's output is overwritten by its next replay
        return _step(optimizer, forward(model, x, y, mask, epoch).loss).clone()
    with autocast(x.device, precision):
        out = model(x)
    terms = psvae_loss(
        x,
        y,
        mask,
        out,
        alpha=loss_cfg.alpha,
        beta=loss_cfg.beta,
        epoch=epoch,
        anneal_epochs=loss_cfg.anneal_epochs,
        n_frames=n_frames,
        estimator=loss_cfg.kl_estimator,
    )
    return _step(optimizer, terms.loss)


def _step(optimizer: torch.optim.Optimizer, loss: Tensor) -> Tensor:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


class _Trainer:
    """State of one run; ``fit`` drives it."""

    def __init__(self, model_cfg, loss_cfg, train_cfg, session, split_frames, run_dir, check: OwnerCheck):
        self.loss_cfg, self.cfg, self.run_dir = loss_cfg, train_cfg, Path(run_dir)
        self.check = check  # before every write: does this attempt still own the run folder?
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
            mode = train_cfg.compile_mode
            self.forward = make_forward_loss(loss_cfg, n_train, self.precision, mode)
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

    def state(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch,
            "best_loss": float(self.best_loss),
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
            "batch_gen": self.epoch_gen,
            "batch": self.batch,
            "partial_loss": self.partial_loss,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else torch.zeros(0),
            "fingerprint": self.fingerprint,
        }

    def resume(self) -> bool:
        path = self.run_dir / "last.pt"
        if self.run_dir.is_dir():
            self.check()
            remove_leftovers(self.run_dir)  # temporary files of killed attempts
        if not path.exists():
            return False
        state = load_state(path, self.device)
        self._check_same_run(state.get("fingerprint"))
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch, self.best_loss = int(state["epoch"]), float(state["best_loss"])
        self.best_epoch, self.bad_epochs = int(state["best_epoch"]), int(state["bad_epochs"])
        self.batch_gen.set_state(state["batch_gen"].cpu())
        self.batch, self.partial_loss = int(state.get("batch", 0)), float(state.get("partial_loss", 0.0))
        self.epoch_gen = self.batch_gen.get_state()
        torch.set_rng_state(state["torch_rng"].cpu())
        if self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"].cpu(), self.device)
        truncate_rows(self.run_dir / "metrics.csv", self.epoch - 1, self.check)
        return True

    def _check_same_run(self, stored: str | None) -> None:
        """Refuse to resume a run of another model, loss, optimisation or data."""
        if stored is None or stored == self.fingerprint:
            return
        old, new = json.loads(stored), json.loads(self.fingerprint)
        differ = [
            f"{section}.{key}"
            for section in new
            for key in sorted(set(old.get(section, {})) | set(new[section]))
            if old.get(section, {}).get(key) != new[section].get(key)
        ]
        raise TrainingError(
            f"{self.run_dir} holds a run of another configuration ({', '.join(differ)} differ); "
            "give a new --out folder, or remove that one to start again"
        )

    def train_epoch(self, should_stop: Callable[[], bool] | None = None) -> float:
        """One pass over the training frames in random minibatches; returns the mean loss.

        ``should_stop`` is polled before every batch; when it says stop, the epoch's position is
        saved in ``last.pt`` (a resume goes on from that batch) and :class:`KeyboardInterrupt` raised.
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
                self.save()
                raise KeyboardInterrupt(f"stopped during epoch {self.epoch}; {self.run_dir / 'last.pt'} resumes it")
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

    def end_epoch(self, val_loss: float) -> bool:
        """Keep the best checkpoint; returns True when early stopping says stop."""
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
        if time.monotonic() - self.saved_at >= self.cfg.checkpoint_seconds:
            self.save()
        return self.patience_spent()

    def save(self) -> None:
        """Write the pending best checkpoint, then ``last.pt`` (in that order: ``last.pt`` never
        names a best epoch that ``best.pt`` does not hold)."""
        if self.pending_best is not None:
            save_atomic(self.pending_best, self.run_dir / "best.pt", self.check)
            self.pending_best = None
        save_atomic(self.state(), self.run_dir / "last.pt", self.check)
        self.saved_at, self.unsaved = time.monotonic(), False

    def patience_spent(self) -> bool:
        """Early stopping: ``patience`` annealed epochs in a row without a better validation loss."""
        return 0 < self.cfg.patience <= self.bad_epochs


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

    Args:
        split_frames: split name -> frame indices ("train" and "val" required).
        on_epoch: called after each epoch with (epoch, {split: metrics}).
        should_stop: polled before every batch and after every epoch; True stops the run
            with :class:`KeyboardInterrupt`, leaving ``last.pt`` at the last finished epoch.
        owner_check: called before every write to the run folder; it raises when this attempt
            no longer owns the folder (a worker's trial was taken over while it was paused).
    """
    from tqdm import tqdm  # the progress bar is the only thing the trainer shows

    run_dir = Path(run_dir)
    t = _Trainer(model_cfg, loss_cfg, train_cfg, session, split_frames, run_dir, owner_check or (lambda: None))
    if t.resume():  # the folder is checked to hold this very run before anything is written
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
    bar = tqdm(total=train_cfg.max_epochs, initial=t.epoch, desc=run_dir.name, unit="epoch", disable=not progress)
    stopped_early = t.patience_spent()  # a resumed run that had stopped early stays stopped
    while t.epoch < train_cfg.max_epochs and not stopped_early:
        epoch = t.epoch
        t.train_epoch(should_stop)
        rows = {"train": t.evaluate(t.train_rows_idx)[0], "val": t.evaluate(t.data.splits["val"])[0]}
        t.check()  # a paused attempt that lost its trial writes nothing, not even an event
        events.add_epoch(epoch, rows)
        if not np.isfinite(rows["val"]["loss"]):
            raise TrainingError(
                f"the validation loss became {rows['val']['loss']} at epoch {epoch} while the training loss "
                f"was finite (alpha={loss_cfg.alpha}, beta={loss_cfg.beta}); check the validation trials' "
                "frames and labels, or lower train.learning_rate"
            )
        append_rows(run_dir / "metrics.csv", ({"epoch": epoch, "split": s, **m} for s, m in rows.items()), t.check)
        stopped_early = t.end_epoch(rows["val"]["loss"])
        bar.update(1)
        bar.set_postfix(val_loss=f"{rows['val']['loss']:.1f}", label_r2=f"{rows['val']['label_r2']:.3f}")
        if on_epoch is not None:
            on_epoch(epoch, rows)
        if should_stop is not None and should_stop():
            bar.close()
            t.save()
            raise KeyboardInterrupt(f"stopped after epoch {epoch}; {run_dir / 'last.pt'} resumes it")
    bar.close()
    if t.unsaved:
        t.save()  # the finished run's last state: a rerun of it only evaluates
    return _finish(t, session, time.perf_counter() - start, resumed_from, should_stop)


def _finish(
    t: _Trainer, session: Session, seconds: float, resumed_from: int, should_stop: Callable[[], bool] | None = None
) -> FitResult:
    """Reload the best checkpoint, evaluate every split, write latents and the summary.

    ``should_stop`` is polled before each evaluation: a stop here (a preemption's grace time
    is short) ends the run with :class:`KeyboardInterrupt` at once; ``last.pt`` already holds
    the finished training, so its next attempt only evaluates.

    With several sessions the summary adds ``per_session`` (session name -> split -> metrics,
    each split's frames of that session evaluated alone; a split with fewer than 2 frames
    of a session is left out), and ``latents.npz`` always holds each frame's session index.
    """
    best = load_state(t.run_dir / "best.pt", t.device)
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
        summary_metrics[split], mu_s, y_s, lv_s = t.evaluate(idx, epoch=final_epoch)
        where = idx.cpu().numpy()
        mu[where], y_hat[where], logvar[where], split_of[where] = mu_s, y_s, lv_s, code
        for s, name in enumerate(session.session_names if session.n_sessions > 1 else ()):
            mine = np.flatnonzero(frame_sessions[where] == s)
            if len(mine) >= 2:
                own = idx[torch.from_numpy(mine).to(idx.device)]
                per_session.setdefault(name, {})[split] = t.evaluate(own, epoch=final_epoch)[0]
    rest = np.flatnonzero(split_of < 0)  # frames in no split (gap trials) still get latents
    if len(rest):
        _, mu[rest], y_hat[rest], logvar[rest] = t.evaluate(torch.from_numpy(rest).to(t.device), epoch=final_epoch)
    arrays = {"mu": mu, "logvar": logvar, "y_hat": y_hat, "split": split_of, "session": frame_sessions}
    write_atomic(t.run_dir / "latents.npz", lambda fh: np.savez(fh, **arrays, n_labels=t.model.n_labels), t.check)
    result = FitResult(
        run_dir=t.run_dir,
        best_epoch=int(best["epoch"]),
        epochs_run=t.epoch,
        annealing_complete=t.annealed(int(best["epoch"])),
        metrics=summary_metrics,
        resumed_from=resumed_from,
    )
    summary = {**asdict(result), "run_dir": str(t.run_dir), "seconds": seconds, "device": str(t.device)}
    if per_session:
        summary["per_session"] = per_session
    write_text_atomic(t.run_dir / "summary.json", json.dumps(summary, indent=2), t.check)
    return result


def load_checkpoint(run_dir: str | Path, model_cfg: ModelConfig, frame_shape, n_labels: int, device="cpu") -> PSVAE:
    """The best model of a run folder, in eval mode."""
    path = Path(run_dir) / "best.pt"
    if not path.exists():
        raise DataError(f"{run_dir}: no best.pt; the run has not finished an epoch (or the folder is wrong)")
    model = build_model(model_cfg, frame_shape, n_labels, seed=0)
    state = load_state(path, device)
    try:
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError) as exc:
        raise DataError(
            f"{path} does not hold a model of this configuration ({str(exc).strip().splitlines()[0]}); "
            "report on the trial's own run folder"
        ) from None
    return model.to(device).eval()


def load_state(path: Path, device: torch.device | str) -> dict:
    """A checkpoint's dictionary; a one-line error when the file cannot be read."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise DataError(f"{path}: no such checkpoint") from None
    except Exception as exc:  # torch raises many kinds for a damaged file
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path}: cannot load the checkpoint ({reason[:200]}); the file is damaged") from None
    if not isinstance(state, dict) or "model" not in state:
        raise DataError(f"{path}: not a psvae-opt checkpoint (no model state)")
    return state
