"""A side-by-side movie of chosen frames and their reconstructions (``encode --movie START:END``).

Each movie frame shows the frame as the model saw it (after crop and resize) on the left and its
reconstruction from the latent means on the right, camera views stacked top to bottom, scaled
up by a whole factor to at least ``MIN_HEIGHT`` pixels, at the session's frame rate: what the
model keeps and what it loses, next to the ``recon_error`` of the same frames.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from psvae_opt.data.video import write_mp4

MOVIE = "{}.recon.mp4"
MAX_FRAMES = 10_000  # both sides held in memory: 64 x 64 frames take 80 MB at this many
MIN_HEIGHT = 256


def side_by_side(frames: np.ndarray, recons: np.ndarray) -> np.ndarray:
    """(N, C, H, W) uint8 frames and reconstructions -> (N, H', W') uint8 gray movie frames:
    views stacked vertically, original | reconstruction, scaled by a whole factor, even sizes."""
    n, c, h, w = frames.shape
    pair = np.concatenate([frames, recons], axis=3)  # (N, C, H, 2W)
    tall = pair.reshape(n, c * h, 2 * w)
    scale = max(1, -(-MIN_HEIGHT // (c * h)))
    big = tall.repeat(scale, axis=1).repeat(scale, axis=2)
    pad_h, pad_w = big.shape[1] % 2, big.shape[2] % 2  # H.264 in yuv420p wants even sizes
    return np.pad(big, ((0, 0), (0, pad_h), (0, pad_w)))


def write_movie(path: Path, frames: np.ndarray, recons: np.ndarray, fps: float) -> Path:
    """Write the side-by-side movie as H.264 MP4 (``fps`` NaN or 0: 30)."""
    rate = fps if fps and fps == fps and fps > 0 else 30
    return write_mp4(side_by_side(frames, recons), path, rate)
