"""The notebook API of a bundle: ``psvae_opt.load_model(DIR)`` returns a :class:`PsvaeModel`.

Frames go in as uint8, as they are stored (``images`` of the HDF5 layout), and are scaled to
[0, 1] exactly as training scales them, so a bundle encodes its own training frames to the
latents of the run folder. Latents are ``[z_s | z_u]``: one supervised dimension per label,
then the unsupervised ones.

Predicted labels come in the model's z-scored units or in pixels of the source video: the
label map gives z-scored labels, the training session's ``label_means``/``label_stds`` give
pixels of the stored frames, and the pixel-centre convention of the import
(:mod:`psvae_opt.data.video`) maps those back to the video each label came from.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from psvae_opt.config import Config
from psvae_opt.errors import ConfigError, DataError
from psvae_opt.inference.bundle import load_network
from psvae_opt.model.network import PSVAE
from psvae_opt.training.trained import decode as decode_latents

BATCH = 256  # frames per forward pass: small enough for any GPU, large enough to keep it busy


class PsvaeModel:
    """A PS-VAE loaded from a bundle.

    Attributes:
        network: the PS-VAE (eval mode); info: the bundle's ``bundle.json``; config: its configuration.
        frame_shape: (C, H, W) of the frames it takes; label_names: (L,); dim_names: (K,) the
            latent dimensions, the label names then ``z_u0``, ``z_u1``, ...
    """

    def __init__(self, network: PSVAE, info: dict[str, Any], config: Config, folder: Path | None = None) -> None:
        self.network, self.info, self.config, self.folder = network, info, config, folder
        self.frame_shape: tuple[int, int, int] = tuple(int(s) for s in info["frame_shape"])  # type: ignore[assignment]
        self.label_names: tuple[str, ...] = tuple(info["label_names"])
        self.n_labels, self.n_unsup = network.n_labels, network.n_unsup
        self.dim_names = self.label_names + tuple(f"z_u{i}" for i in range(self.n_unsup))
        self.device = next(network.parameters()).device

    @property
    def n_latents(self) -> int:
        return self.n_labels + self.n_unsup

    def __repr__(self) -> str:
        c, h, w = self.frame_shape
        return f"PsvaeModel({self.folder}: {c}x{h}x{w} frames, {self.n_labels} labels, {self.n_unsup} unsupervised)"

    # -- frames and latents ------------------------------------------------------------------

    def as_batch(self, frames: np.ndarray) -> np.ndarray:
        """uint8 frames of any batch shape -> (N, C, H, W): (N, C, H, W), one (C, H, W) frame,
        and for one-channel models also (N, H, W) or one (H, W) frame. Anything else is refused
        in one line naming both shapes."""
        frames = np.asarray(frames)
        if frames.dtype != np.uint8:
            raise DataError(f"frames of dtype {frames.dtype}: give uint8 frames (0..255), as the session files store")
        c = self.frame_shape[0]
        if frames.ndim == 3 and (c == 1 and frames.shape[1:] == self.frame_shape[1:]):
            frames = frames[:, None]
        elif frames.ndim == 3 or (frames.ndim == 2 and c == 1):
            frames = frames.reshape(1, *(frames.shape if frames.ndim == 3 else (1, *frames.shape)))
        if frames.ndim != 4 or tuple(frames.shape[1:]) != self.frame_shape:
            got = "x".join(map(str, frames.shape[1:] if frames.ndim == 4 else frames.shape))
            want = "x".join(map(str, self.frame_shape))
            raise DataError(f"frames of shape {got} (C x H x W), but the model takes {want}; give frames of its size")
        return frames

    @torch.no_grad()
    def encode(
        self, frames: np.ndarray, *, variance: bool = False, batch_size: int = BATCH, progress: bool = False
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Latent means (N, K) float32 of uint8 frames (see :meth:`as_batch`); with
        ``variance`` also the posterior variances (N, K)."""
        batch = self.as_batch(frames)
        means, variances = [], []
        starts = range(0, len(batch), batch_size)
        for a in tqdm(starts, desc="encoding", unit="batch", disable=not progress, leave=False):
            x = torch.from_numpy(batch[a : a + batch_size]).to(self.device).float().div_(255.0)
            mu, logvar = self.network.encode(x)
            means.append(mu.float().cpu())
            variances.append(logvar.float().exp().cpu())
        mean = torch.cat(means).numpy() if means else np.zeros((0, self.n_latents), np.float32)
        if not variance:
            return mean
        return mean, (torch.cat(variances).numpy() if variances else np.zeros_like(mean))

    def _latents(self, latents: np.ndarray) -> np.ndarray:
        z = np.asarray(latents, dtype=np.float32)
        z = z[None] if z.ndim == 1 else z
        if z.ndim != 2 or z.shape[1] != self.n_latents:
            raise DataError(f"latents of shape {z.shape}: give (N, {self.n_latents}) latents, [z_s | z_u]")
        return z

    def decode(self, latents: np.ndarray, batch_size: int = BATCH) -> np.ndarray:
        """(N, K) latents -> (N, C, H, W) float32 frames in [0, 1]."""
        return decode_latents(self.network, self._latents(latents), batch_size)

    def reconstruct(self, frames: np.ndarray, batch_size: int = BATCH) -> np.ndarray:
        """uint8 frames -> their reconstructions from the latent means, uint8 (N, C, H, W)."""
        out = self.decode(self.encode(frames, batch_size=batch_size), batch_size)
        return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)

    # -- labels --------------------------------------------------------------------------------

    @property
    def has_pixels(self) -> bool:
        """Whether the bundle knows the label scaling (the training file had label_means/stds)."""
        return self.info.get("label_means") is not None and self.info.get("label_stds") is not None

    def label_source_size(self) -> np.ndarray:
        """(L, 2) (H, W) of the video each label's pixels are in (the stored frame's when not imported)."""
        size = self.info.get("label_source_size")
        if size is None:
            return np.tile(np.array(self.frame_shape[1:], np.float64), (self.n_labels, 1))
        return np.asarray(size, np.float64).reshape(self.n_labels, 2)

    def labels_to_pixels(self, labels_z: np.ndarray, source_size: np.ndarray | None = None) -> np.ndarray:
        """(N, L) z-scored labels -> pixels of the source videos.

        Args:
            source_size: (L, 2) (H, W) per label, replacing the bundle's (a new video of another size).
        """
        if not self.has_pixels:
            raise DataError(
                f"{self.folder}: the training file had no label_means/label_stds, so the bundle cannot "
                "give labels in pixels; use pixels=False"
            )
        stored = labels_z * np.asarray(self.info["label_stds"]) + np.asarray(self.info["label_means"])
        hw = self.label_source_size() if source_size is None else np.asarray(source_size, np.float64)
        _, h, w = self.frame_shape
        half = self.n_labels // 2  # BehaveNet's order: all x, then all y
        source = np.where(np.arange(self.n_labels) < half, hw[:, 1], hw[:, 0])  # W for x labels, H for y
        stored_size = np.where(np.arange(self.n_labels) < half, w, h)
        return ((stored + 0.5) * source / stored_size - 0.5).astype(np.float32)

    def predict_labels(
        self, latents: np.ndarray, pixels: bool = True, source_size: np.ndarray | None = None
    ) -> np.ndarray:
        """(N, K) latents (or (N, L) supervised ones) -> (N, L) predicted labels, in source-video
        pixels (``pixels=True``) or the model's z-scored units."""
        z = np.asarray(latents, dtype=np.float32)
        z = z[None] if z.ndim == 1 else z
        if z.ndim != 2 or z.shape[1] not in (self.n_labels, self.n_latents):
            raise DataError(f"latents of shape {z.shape}: give (N, {self.n_latents}) latents or (N, {self.n_labels})")
        scale = self.network.label_scale.detach().cpu().numpy()
        bias = self.network.label_bias.detach().cpu().numpy()
        labels_z = (z[:, : self.n_labels] * scale + bias).astype(np.float32)
        return self.labels_to_pixels(labels_z, source_size) if pixels else labels_z

    # -- traversals ------------------------------------------------------------------------------

    def dim_index(self, dim: int | str) -> int:
        if isinstance(dim, str):
            if dim not in self.dim_names:
                raise ConfigError(f"dimension {dim!r}: the model's are {', '.join(self.dim_names)}")
            return self.dim_names.index(dim)
        if not 0 <= int(dim) < self.n_latents:
            raise ConfigError(f"dimension {dim}: give 0..{self.n_latents - 1} or a name of {', '.join(self.dim_names)}")
        return int(dim)

    def traversal_range(self, dim: int | str) -> tuple[float, float]:
        """The sweep of the bundle's traversals for one dimension (from its training frames)."""
        k = self.dim_index(dim)
        lower, upper = self.info.get("traversal_lower"), self.info.get("traversal_upper")
        if lower is None or upper is None:
            return -2.0, 2.0  # the prior's central 95%
        return float(lower[k]), float(upper[k])

    def traverse(self, frame: np.ndarray, dim: int | str, values: Sequence[float] | None = None) -> np.ndarray:
        """Frames decoded from ``frame``'s latent means with dimension ``dim`` set to each value.

        Args:
            frame: one uint8 frame (C, H, W) (or (H, W) for one channel).
            dim: index or name of the dimension (``paw_front_x``, ``z_u0`` ...).
            values: the latent values; default 7 steps over :meth:`traversal_range`.

        Returns:
            (S, C, H, W) float32 frames in [0, 1].
        """
        k = self.dim_index(dim)
        base = self.encode(np.asarray(frame))
        if len(base) != 1:
            raise DataError(f"traverse takes one frame, got {len(base)}; give frames[i]")
        if values is None:
            values = np.linspace(*self.traversal_range(k), 7)
        z = np.repeat(base, len(values), axis=0)
        z[:, k] = np.asarray(values, np.float32)
        return self.decode(z)


def load_model(folder: str | Path, device: str | torch.device = "cpu") -> PsvaeModel:
    """The model of a bundle folder written by ``psvae-opt model export``, on ``device``."""
    network, info, config = load_network(folder, device)
    return PsvaeModel(network, info, config, Path(folder))
