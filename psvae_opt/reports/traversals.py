"""Latent traversals (docs/design.md, "Diagnostics"): frames generated while latents move.

From a base frame's latent means each dimension is swept while the others stay put:
supervised dims over the 5th-95th percentile of their label, unsupervised dims over the
15th-85th percentile of their latent, both on training frames (``latents.npz``, split 0).

Supervised ranges are label percentiles mapped through the inverse of the model's label map,
z_k = (y_k - b_k) / d_k, so the sweep moves the *predicted* label exactly over the range the
label takes. Percentiles of z_s itself would sweep less whenever R^2 < 1: the label map is a
regression, its predictions are shrunk toward the mean, so d_k z_k spreads less than y_k.
For a supervised dim, ``lower``/``upper`` are the latents whose predicted label is the 5th/95th
percentile (with d_k < 0, lower > upper in latent units).

Images are written with Pillow (PNG) and movies with PyAV's own FFmpeg (H.264, yuv420p).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from psvae_opt.data import Session
from psvae_opt.data.video import write_mp4
from psvae_opt.errors import ConfigError
from psvae_opt.model.network import PSVAE
from psvae_opt.reports.choices import FPS, GRID_STEPS, MOVIE_BASES, MOVIE_STEPS
from psvae_opt.training.run_folder import SPLIT_CODES
from psvae_opt.training.trained import RunTraversals, decode

TITLE_HEIGHT = 14  # pixels of a panel's title strip
LABEL_WIDTH = 100  # pixels of the row labels of a traversal image


def sweep_latents(base: np.ndarray, lower: np.ndarray, upper: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """Latents of each dim swept alone: (K,) base, (S,) phase in [0, 1] -> (K, S, K).

    ``out[k, s]`` is ``base`` with dim k at ``lower[k] + phase[s] (upper[k] - lower[k])``.
    """
    k_dims = len(base)
    z = np.broadcast_to(base, (k_dims, len(phase), k_dims)).copy()
    for k in range(k_dims):
        z[k, :, k] = lower[k] + phase * (upper[k] - lower[k])
    return z


@dataclass(frozen=True)
class TraversalGrid:
    """A traversal from one base frame.

    Attributes:
        names: (K,) dimension names; values: (K, S) the swept dim's value at each step.
        frames: (K, S, C, H, W) generated frames; base: (C, H, W) the base frame decoded
            from its own latent means; original: (C, H, W) the base frame itself.
    """

    names: tuple[str, ...]
    values: np.ndarray
    frames: np.ndarray
    base: np.ndarray
    original: np.ndarray

    @property
    def diffs(self) -> np.ndarray:
        """(K, S, C, H, W) generated frames minus the decoded base frame."""
        return self.frames - self.base


def traversal_grid(
    model: PSVAE,
    base_mu: np.ndarray,
    original: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    names: Sequence[str],
    n_steps: int = GRID_STEPS,
) -> TraversalGrid:
    """Sweep every dim of ``base_mu`` (K,) in ``n_steps`` from lower to upper; ``original`` (C, H, W) in [0, 1]."""
    z = sweep_latents(base_mu, lower, upper, np.linspace(0.0, 1.0, n_steps))
    return TraversalGrid(
        names=tuple(names),
        values=z[np.arange(len(base_mu)), :, np.arange(len(base_mu))],
        frames=decode(model, z),
        base=decode(model, base_mu[None])[0],
        original=np.asarray(original, np.float32),
    )


def _tile(frame: np.ndarray) -> np.ndarray:
    """(C, H, W) -> (H, C W): camera views side by side."""
    return np.concatenate(list(frame), axis=1)


def _gray(img: np.ndarray, scale: int) -> np.ndarray:
    """(H, W) in [0, 1] -> (H s, W s, 3) uint8."""
    g = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8).repeat(scale, 0).repeat(scale, 1)
    return np.repeat(g[..., None], 3, axis=2)


def _diverging(diff: np.ndarray, limit: float, scale: int) -> np.ndarray:
    """(H, W) differences -> (H s, W s, 3) uint8: white at 0, red positive, blue negative."""
    d = np.clip(diff / max(limit, 1e-6), -1.0, 1.0)
    rgb = np.stack([1.0 - np.clip(-d, 0, 1), 1.0 - np.abs(d), 1.0 - np.clip(d, 0, 1)], axis=-1)
    return (rgb * 255.0 + 0.5).astype(np.uint8).repeat(scale, 0).repeat(scale, 1)


def auto_scale(frame_shape: Sequence[int]) -> int:
    """Pixel repetition that shows a (C, H, W) frame about 128 pixels tall."""
    return max(1, 128 // max(frame_shape[1], 1))


def grid_image(grid: TraversalGrid, scale: int | None = None, title: str = "") -> Image.Image:
    """Rows = dims; columns = input, its reconstruction, the sweep, then the sweep minus the reconstruction.

    Differences are coloured on each row's own scale (its largest |difference|, printed in
    the row label), so the faint changes of an unsupervised dim are not drowned by a paw's.
    A ``title`` (where the base frame comes from) gets a strip of its own above the column heads.
    """
    k_dims, n_steps = grid.values.shape
    tile_h, tile_w = _tile(grid.base).shape
    scale = scale or auto_scale(grid.base.shape)
    th, tw, gap = tile_h * scale, tile_w * scale, 8
    top = TITLE_HEIGHT * (2 if title else 1)
    diffs = grid.diffs  # a property that computes them
    limits = np.abs(diffs).reshape(k_dims, -1).max(1)  # per row: small changes stay visible
    sweep_x = LABEL_WIDTH + 2 * (tw + 2) + gap
    diff_x = sweep_x + n_steps * (tw + 2) + gap
    img = np.full((top + k_dims * (th + 2), diff_x + n_steps * (tw + 2), 3), 255, np.uint8)
    for k in range(k_dims):
        y = top + k * (th + 2)
        for s in range(n_steps):
            x0, x1 = sweep_x + s * (tw + 2), diff_x + s * (tw + 2)
            img[y : y + th, x0 : x0 + tw] = _gray(_tile(grid.frames[k, s]), scale)
            img[y : y + th, x1 : x1 + tw] = _diverging(_tile(diffs[k, s]), float(limits[k]), scale)
    y = top  # the input and its reconstruction, on the first row
    img[y : y + th, LABEL_WIDTH : LABEL_WIDTH + tw] = _gray(_tile(grid.original), scale)
    img[y : y + th, LABEL_WIDTH + tw + 2 : LABEL_WIDTH + 2 * tw + 2] = _gray(_tile(grid.base), scale)
    out = Image.fromarray(img)
    draw = ImageDraw.Draw(out)
    if title:
        draw.text((2, 1), title, fill=(0, 0, 0))
    heads = top - TITLE_HEIGHT + 1
    draw.text((LABEL_WIDTH, heads), "input, recon", fill=(0, 0, 0))
    draw.text((sweep_x, heads), "generated: lower -> upper", fill=(0, 0, 0))
    draw.text(
        (diff_x, heads), "minus recon (red +, blue -; white to full colour = 0 to the row's max |d|)", fill=(0, 0, 0)
    )
    for k, name in enumerate(grid.names):
        y = top + k * (th + 2) + th // 2 - 18
        draw.text((2, y), name, fill=(0, 0, 0))
        draw.text((2, y + 12), f"{grid.values[k, 0]:.2f} .. {grid.values[k, -1]:.2f}", fill=(90, 90, 90))
        draw.text((2, y + 24), f"max |d| {limits[k]:.2f}", fill=(90, 90, 90))
    return out


def sweep_phase(n_steps: int) -> np.ndarray:
    """(2 n_steps - 1,) phases of a movie sweep: 0 -> 1 -> 0 (lower -> upper -> lower)."""
    up = np.linspace(0.0, 1.0, n_steps)
    return np.concatenate([up, up[::-1][1:]])


def movie_layout(n_panels: int, tile_shape: tuple[int, int], scale: int) -> tuple[int, int, int, int]:
    """(columns, rows, frame height, frame width) of a movie, both sizes even (yuv420p needs them so)."""
    cols = max(1, math.ceil(math.sqrt(n_panels)))
    rows = math.ceil(n_panels / cols)
    height = rows * (TITLE_HEIGHT + tile_shape[0] * scale)
    width = cols * tile_shape[1] * scale
    return cols, rows, height + height % 2, width + width % 2


def movie_frames(
    model: PSVAE,
    bases: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    names: Sequence[str],
    n_steps: int = MOVIE_STEPS,
    n_blank: int = 10,
    scale: int | None = None,
    captions: Sequence[str] = (),
) -> np.ndarray:
    """Frames of a traversal movie: one panel per dim, all dims swept together, base after base.

    Args:
        bases: (B, K) latent means of the base frames.
        captions: (B,) where each base frame comes from, shown in a strip above the panels
            while its sweep plays (no strip when empty).

    Returns:
        (T, H, W, 3) uint8, T = B (2 n_steps - 1) + (B - 1) n_blank; blank frames are black.
    """
    k_dims = bases.shape[1]
    phase = sweep_phase(n_steps)
    scale = scale or auto_scale(model.frame_shape)
    tile_h, tile_w = _tile(np.zeros(model.frame_shape)).shape
    cols, _, height, width = movie_layout(k_dims, (tile_h, tile_w), scale)
    top = TITLE_HEIGHT if len(captions) else 0
    height += top
    template = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(template)
    origins = []
    for k, name in enumerate(names):
        r, c = divmod(k, cols)
        x, y = c * tile_w * scale, top + r * (TITLE_HEIGHT + tile_h * scale)
        draw.text((x + 2, y + 1), name, fill=(255, 255, 255))
        origins.append((y + TITLE_HEIGHT, x))
    out = []
    for b, base in enumerate(bases):
        if b:
            out.extend(np.zeros((n_blank, height, width, 3), np.uint8))
        captioned = template.copy()
        if len(captions):
            ImageDraw.Draw(captioned).text((2, 1), captions[b], fill=(255, 255, 0))
        template_arr = np.asarray(captioned)
        frames = decode(model, sweep_latents(base, lower, upper, phase))  # (K, S, C, H, W)
        for s in range(len(phase)):
            frame = template_arr.copy()
            for k, (y, x) in enumerate(origins):
                frame[y : y + tile_h * scale, x : x + tile_w * scale] = _gray(_tile(frames[k, s]), scale)
            out.append(frame)
    return np.stack(out)


# -- from a run folder (read by psvae_opt.training.trained.load_run) ------------------------------


def default_base_frames(split: np.ndarray, count: int, code: int = SPLIT_CODES["val"]) -> list[int]:
    """``count`` frames evenly spaced through the split ``code`` (training frames when it is empty)."""
    pool = np.flatnonzero(split == code)
    pool = pool if len(pool) else np.flatnonzero(split == SPLIT_CODES["train"])
    return [int(pool[i]) for i in np.linspace(0, len(pool) - 1, count + 2).round().astype(int)[1:-1]]


def frame_origin(session: Session, frame: int) -> str:
    """Where a frame of the (concatenated) data comes from: ``session: trial, frame i (data frame f)``."""
    trial = int(np.searchsorted(session.trial_starts, frame, side="right")) - 1
    name = session.session_names[session.trial_sessions[trial]]
    trial_name = session.trial_names[trial].removeprefix(f"{name}/")
    return f"{name}: {trial_name}, frame {frame - int(session.trial_starts[trial])} (data frame {frame})"


def _check_frames(frames: Sequence[int], n_frames: int, n_steps: int) -> None:
    if not frames or not all(0 <= f < n_frames for f in frames):
        raise ConfigError(f"base frames {list(frames)}: give frame indices between 0 and {n_frames - 1}")
    if n_steps < 2:
        raise ConfigError(f"--steps {n_steps}: a sweep needs at least 2 steps")


def write_traversal_png(
    run: RunTraversals, session: Session, path: str | Path, frame: int | None = None, n_steps: int = GRID_STEPS
) -> Path:
    """The traversal grid of one base frame (default: a validation frame) as PNG."""
    frame = default_base_frames(run.split, 1)[0] if frame is None else frame
    _check_frames([frame], session.n_frames, n_steps)
    grid = traversal_grid(
        run.model, run.mu[frame], session.images[frame] / 255.0, run.lower, run.upper, run.names, n_steps
    )
    grid_image(grid, title=f"base frame: {frame_origin(session, frame)}").save(path)
    return Path(path)


def write_traversal_movie(
    run: RunTraversals,
    session: Session,
    path: str | Path,
    frames: Sequence[int] | None = None,
    n_steps: int = MOVIE_STEPS,
    fps: int = FPS,
    n_blank: int = 10,
) -> Path:
    """The traversal movie of a few base frames (default: 3 validation frames) as MP4."""
    frames = default_base_frames(run.split, MOVIE_BASES) if frames is None else list(frames)
    _check_frames(frames, session.n_frames, n_steps)
    if fps < 1:
        raise ConfigError(f"--fps {fps}: give 1 or more frames per second")
    captions = [f"base {i + 1}/{len(frames)}: {frame_origin(session, f)}" for i, f in enumerate(frames)]
    bases = run.mu[frames]
    return write_mp4(
        movie_frames(run.model, bases, run.lower, run.upper, run.names, n_steps, n_blank, captions=captions), path, fps
    )
