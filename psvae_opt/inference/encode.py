"""A session through the model, streamed: latents, predicted labels, a reconstruction error per
frame and, where the data has them, scores.

Frames pass through the encoder and decoder in batches as they are decoded from the video (or
sliced from the session file), so memory does not grow with the session's length: what is kept
per frame is K means and variances, L labels and one error; reconstructions, when asked for,
are spooled to a file (:class:`RawFrames`) as they are made.

The reconstruction error of a frame is its pixel MSE (frames in [0, 1], the decoder's output
from the latent means), the ``pixel_mse`` of training, so it compares directly with the
bundle's validation ``pixel_mse``: a frame far above it is one the model does not explain.

Scores on new data are the two questions a lab asks of a model on a session it never saw:
do the supervised latents still track the labels (label R^2, in pixels of the stored frames
when the file has them, so that each session's own z-scoring does not matter), and do the
unsupervised latents still carry the unlabelled factors (each unlabelled factor's best |r| with
an unsupervised latent, as the search's ``factor_r_*``; synthetic data only)?
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from psvae_opt.errors import DataError
from psvae_opt.inference.model import PsvaeModel
from psvae_opt.inference.sources import SessionFrames, with_length
from psvae_opt.model import metrics
from psvae_opt.training.devices import autocast


@dataclass(frozen=True)
class RawFrames:
    """uint8 frames spooled to ``path``, C order, of ``shape`` (T, C, H, W)."""

    path: Path
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Encoding:
    """What the model says about every frame of a session.

    Attributes:
        mean, variance: (T, K) posterior means and variances, ``[z_s | z_u]``.
        labels_z: (T, L) predicted labels in the model's z-scored units.
        labels_px: (T, L) in pixels of the source video (None when the bundle cannot tell).
        recon_error: (T,) pixel MSE of each frame's reconstruction from its latent means.
        reconstructions: (T, C, H, W) uint8 from the latent means, when asked for (spooled).
        scores: ``label_r2`` and ``factor_r_<name>`` where the session has labels / factors.
        movie: (N, C, H, W) uint8 frames and reconstructions of the ``movie`` range, when asked for.
    """

    mean: np.ndarray
    variance: np.ndarray
    labels_z: np.ndarray
    labels_px: np.ndarray | None
    recon_error: np.ndarray
    reconstructions: RawFrames | None = None
    scores: dict[str, float] = field(default_factory=dict)
    movie: tuple[np.ndarray, np.ndarray] | None = None


class Progress:
    """A tqdm bar on a terminal, a plain line every ``every`` seconds otherwise (a log), or nothing."""

    def __init__(self, name: str, total: int, mode: str = "auto", every: float = 10.0) -> None:
        self.name, self.total, self.done, self.every = name, total, 0, every
        self.start = self.last = time.monotonic()
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "lines"
        self.mode = mode
        self.bar = None
        if mode == "bar":
            from tqdm import tqdm

            self.bar = tqdm(total=total or None, desc=f"encoding {name}", unit="frame", leave=False)

    def update(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.mode == "lines" and time.monotonic() - self.last >= self.every:
            self.last = time.monotonic()
            rate = self.done / max(self.last - self.start, 1e-9)
            of = f"/{self.total}" if self.total else ""
            print(f"{self.name}: {self.done}{of} frames encoded, {rate:.0f} frames/s", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def batches(chunks: Iterator[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """Regroup (n, C, H, W) chunks into batches of ``size`` frames (the last one shorter)."""
    pending: list[np.ndarray] = []
    held = 0
    for chunk in chunks:
        pending.append(chunk)
        held += len(chunk)
        while held >= size:
            joined = np.concatenate(pending) if len(pending) > 1 else pending[0]
            yield joined[:size]
            pending, held = ([joined[size:]] if held > size else []), held - size
    if held:
        yield np.concatenate(pending) if len(pending) > 1 else pending[0]


def check_length(session: SessionFrames, n: int, allow_short: bool, warn: Callable[[str], None]) -> None:
    """Refuse a video that decodes to another number of frames than it declares (``--allow-short``: warn)."""
    if n == 0:
        raise DataError(f"{session.paths[0]}: no frames to encode; give a video with frames (or another --frames)")
    declared = session.declared_frames
    if session.frames is not None or not declared or n == declared:
        return
    words = f"{session.paths[0]}: decoded {n} frames but the video declares {declared} for the range encoded"
    if not allow_short:
        raise DataError(f"{words}; it may be truncated: re-encode it, or give --allow-short to encode the {n}")
    warn(f"{words}; encoded the {n} (--allow-short)")


@torch.no_grad()
def encode_session(
    model: PsvaeModel,
    session: SessionFrames,
    *,
    batch_size: int = 256,
    recon_file: Path | None = None,
    precision: str = "fp32",
    progress: str = "off",
    allow_short: bool = False,
    warn: Callable[[str], None] = lambda line: None,
    movie: tuple[int, int] | None = None,
) -> tuple[SessionFrames, Encoding]:
    """Stream every frame of ``session`` through the model in batches of ``batch_size``.

    Returns the session (for a video, with its length and trials now known) and its encoding.
    ``recon_file``: spool reconstructions there; ``precision``: "bf16" autocasts (GPU);
    ``movie``: keep frames ``[a, b)`` (of those encoded) and their reconstructions.
    """
    net, device = model.network, model.device
    means, variances, errors, kept = [], [], [], []
    sink = recon_file.open("wb") if recon_file is not None else None
    bar = Progress(session.name, session.declared_frames or session.n_frames * (session.frames is not None), progress)
    n = 0
    try:
        with autocast(device, precision):
            for batch in batches(session.chunks(batch_size), batch_size):
                x = torch.from_numpy(np.ascontiguousarray(batch)).to(device).float().div_(255.0)
                mu, logvar = net.encode(x)
                x_hat = net.decode(mu.float()).float()
                errors.append(((x - x_hat) ** 2).mean(dim=(1, 2, 3)).cpu())
                means.append(mu.float().cpu())
                variances.append(logvar.float().exp().cpu())
                if sink is not None or movie is not None:
                    recon = x_hat.mul(255.0).round_().clamp_(0, 255).to(torch.uint8).cpu().numpy()
                    if sink is not None:
                        sink.write(recon.tobytes())
                    if movie is not None and n < movie[1] and n + len(batch) > movie[0]:
                        a, b = max(movie[0] - n, 0), min(movie[1] - n, len(batch))
                        kept.append((batch[a:b].copy(), recon[a:b]))
                n += len(batch)
                bar.update(len(batch))
    finally:
        bar.close()
        if sink is not None:
            sink.close()
    check_length(session, n, allow_short, warn)
    if session.frames is None:
        counted = {"frames_decoded": n, "frames_declared": session.declared_frames or None}
        session = replace(with_length(session, n), geometry={**session.geometry, **counted})
    mean = torch.cat(means).numpy()
    labels_z = model.predict_labels(mean, pixels=False)
    labels_px = None
    if model.has_pixels:
        labels_px = model.labels_to_pixels(labels_z, session.source_size)
        if session.label_offset is not None:
            labels_px = (labels_px + session.label_offset).astype(np.float32)
    recon = RawFrames(recon_file, (n, *model.frame_shape)) if recon_file is not None else None
    clip = None
    if kept:
        clip = (np.concatenate([k[0] for k in kept]), np.concatenate([k[1] for k in kept]))
    encoding = Encoding(
        mean, torch.cat(variances).numpy(), labels_z, labels_px, torch.cat(errors).numpy(), recon,
        session_scores(model, session, mean, labels_z), clip,
    )  # fmt: skip
    return session, encoding


def session_scores(
    model: PsvaeModel, session: SessionFrames, mean: np.ndarray, labels_z: np.ndarray
) -> dict[str, float]:
    """Label R^2 and each unlabelled factor's best |r| with an unsupervised latent (where known)."""
    scores: dict[str, float] = {}
    if session.labels is not None and session.masks is not None and session.masks.any():
        if session.labels_sc is not None and model.has_pixels:
            # stored-frame pixels on both sides: the new file's own z-scoring does not enter
            stored = labels_z * np.asarray(model.info["label_stds"]) + np.asarray(model.info["label_means"])
            truth = np.nan_to_num(session.labels_sc)
            scores["label_r2"] = metrics.label_r2(truth, stored, session.masks)
        else:
            scores["label_r2"] = metrics.label_r2(session.labels, labels_z, session.masks)
    z_u = mean[:, model.n_labels :]
    if session.factors is not None and z_u.shape[1]:
        r = metrics.correlations(z_u, session.factors)
        for i, name in enumerate(session.factor_names):
            if not (session.factor_labeled[i] if i < len(session.factor_labeled) else False):
                scores[f"factor_r_{name}"] = float(np.abs(r[:, i]).max())
    return scores
