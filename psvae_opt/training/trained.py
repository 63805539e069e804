"""A trained run read back: its best network (:func:`load_checkpoint`), latents decoded into
frames (:func:`decode`), and what traversals of it need (:func:`load_run`). Both ``reports``
and ``inference`` read trained networks through here (docs/design.md, "Packages").

Sweep ranges: from a base frame's latent means each dimension is swept while the others stay
put, supervised dims over the 5th-95th percentile of their label (mapped through the inverse of
the model's label map), unsupervised dims over the 15th-85th percentile of their latent, both on
training frames (``latents.npz``, split 0); :mod:`psvae_opt.reports.traversals` explains why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from psvae_opt.config import ModelConfig, load_config
from psvae_opt.data import Session
from psvae_opt.errors import ConfigError, DataError, first_line
from psvae_opt.model.network import PSVAE
from psvae_opt.training.checkpoints import load_state
from psvae_opt.training.run_folder import SPLIT_CODES, load_latents
from psvae_opt.training.steps import build_model

SUP_PERCENTILES = (5.0, 95.0)
UNSUP_PERCENTILES = (15.0, 85.0)


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
            f"{path} does not hold a model of this configuration ({first_line(exc)}); "
            "report on the trial's own run folder"
        ) from None
    return model.to(device).eval()


def dim_names(label_names: Sequence[str], n_unsup: int) -> tuple[str, ...]:
    """Names of the latent dims, supervised first: the label names, then ``z_u0``, ``z_u1`` ..."""
    return tuple(label_names) + tuple(f"z_u{i}" for i in range(n_unsup))


def traversal_ranges(
    mu: np.ndarray, labels: np.ndarray, masks: np.ndarray, label_scale: np.ndarray, label_bias: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper ends of each dimension's sweep.

    Args:
        mu: (N, K) latent means of the training frames, ``[z_s | z_u]``.
        labels, masks: (N, L) their labels and validity.
        label_scale, label_bias: (L,) the model's label map y = d z + b.

    Returns:
        (lower, upper), each (K,): supervised dims from the label percentiles through the
        inverse label map (the latent's own percentiles when d_k = 0 or no label is valid),
        unsupervised dims the 15th/85th percentile of the latent.
    """
    n_labels = labels.shape[1]
    lower, upper = np.percentile(mu, UNSUP_PERCENTILES, axis=0)
    for k in range(n_labels):
        valid = masks[:, k] > 0
        if valid.any() and abs(label_scale[k]) > 1e-8:
            y_lo, y_hi = np.percentile(labels[valid, k], SUP_PERCENTILES)
            lower[k], upper[k] = (y_lo - label_bias[k]) / label_scale[k], (y_hi - label_bias[k]) / label_scale[k]
        else:
            lower[k], upper[k] = np.percentile(mu[:, k], SUP_PERCENTILES)
    return lower, upper


@torch.no_grad()
def decode(model: PSVAE, z: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """(..., K) latents -> (..., C, H, W) float32 frames in [0, 1]."""
    device = next(model.parameters()).device
    flat = torch.as_tensor(np.ascontiguousarray(z).reshape(-1, z.shape[-1]), dtype=torch.float32)
    out = [model.decode(flat[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(flat), batch_size)]
    return torch.cat(out).numpy().reshape(*z.shape[:-1], *model.frame_shape)


@dataclass(frozen=True)
class RunTraversals:
    """What traversals of one run need: its model, latent means and sweep ranges.

    Attributes:
        mu: (T, K) latent means of every session frame; split: (T,) split codes.
        lower, upper: (K,) sweep ends (:func:`traversal_ranges`); names: (K,) dim names.
    """

    model: PSVAE
    mu: np.ndarray
    split: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    names: tuple[str, ...]


def load_run(run_dir: str | Path, session: Session, device: str | torch.device = "cpu") -> RunTraversals:
    """The best model of a run folder and the sweep ranges from its training frames."""
    run_dir = Path(run_dir)
    cfg = load_config(run_dir / "config.toml")
    model = load_checkpoint(run_dir, cfg.model, session.frame_shape, session.n_labels, device)
    latents = load_latents(run_dir)
    mu, split = latents["mu"], latents["split"]
    if len(mu) != session.n_frames:
        raise ConfigError(
            f"{run_dir} holds latents of {len(mu)} frames but {session.path} has {session.n_frames}; "
            "give its own data file"
        )
    if not np.array_equal(latents["session"], session.frame_sessions):
        raise ConfigError(
            f"{run_dir} holds latents of other sessions than {', '.join(map(str, session.paths))} "
            "(another order or other files); give the run's own data.path"
        )
    train = split == SPLIT_CODES["train"]
    lower, upper = traversal_ranges(
        mu[train],
        session.labels[train],
        session.masks[train],
        model.label_scale.detach().cpu().numpy(),
        model.label_bias.detach().cpu().numpy(),
    )
    return RunTraversals(model, mu, split, lower, upper, dim_names(session.label_names, model.n_unsup))
