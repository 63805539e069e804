"""The demo dataset: a rendered, behaviour-like video with known generative factors.

A head-fixed "mouse" seen from the side (and, as a second view, from below): a body, a head,
a jaw, two limbs ending in bright paws. Six independent factors follow smooth random
trajectories; the paw positions are the pose labels, the jaw opening and the chest
expansion change the image but are not labelled. This is what the PS-VAE is built for: the
supervised latents should track the paws and the unsupervised ones should find the jaw and
the chest, each in its own dimension. The scene is drawn so that they can: no paw ever covers
the jaw, and the jaw changes the image much more than the chest does, so that the two
unsupervised directions are not interchangeable. All factors are written to the ``factors``
group with their names.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from psvae_opt.data.writer import check_writable, write_session
from psvae_opt.errors import ConfigError

FACTOR_NAMES = ("paw_front_x", "paw_hind_x", "paw_front_y", "paw_hind_y", "jaw", "chest")
LABEL_NAMES = FACTOR_NAMES[:4]  # all x coordinates, then all y coordinates
# Range of each factor in frame units (x right, y down, 0..1), and its smoothing (frames).
RANGES = {
    "paw_front_x": (0.35, 0.53),  # right of the open jaw: a paw never covers it
    "paw_hind_x": (0.62, 0.86),
    "paw_front_y": (0.62, 0.82),
    "paw_hind_y": (0.62, 0.82),
    "jaw": (0.0, 1.0),
    "chest": (0.0, 1.0),
}
SMOOTHING = {"paw_front_x": 4, "paw_hind_x": 4, "paw_front_y": 3, "paw_hind_y": 3, "jaw": 3, "chest": 7}
FRAME_RATE = 30.0
SIZES = (32, 64, 128, 192, 256)


def smooth_trajectories(n_frames: int, rng: np.random.Generator) -> np.ndarray:
    """Independent smooth random trajectories, one column per factor, in frame units.

    Returns:
        (n_frames, 6) float64, columns in :data:`FACTOR_NAMES` order.
    """
    columns = []
    for name in FACTOR_NAMES:
        sigma = SMOOTHING[name]
        t = np.arange(-4 * sigma, 4 * sigma + 1)
        kernel = np.exp(-0.5 * (t / sigma) ** 2)
        noise = rng.standard_normal(n_frames + len(t) - 1)
        smooth = np.convolve(noise, kernel / np.sqrt((kernel**2).sum()), mode="valid")
        unit = 0.5 * (np.tanh(0.9 * smooth) + 1.0)  # in (0, 1), spread over the range
        low, high = RANGES[name]
        columns.append(low + (high - low) * unit)
    return np.stack(columns, axis=1)


def _ellipse(x, y, cx, cy, ax, ay, px):
    """Coverage (0..1) of an ellipse, anti-aliased over about one pixel."""
    r = np.sqrt(((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2)
    return np.clip(0.5 - (r - 1.0) * np.minimum(ax, ay) / px, 0.0, 1.0)


def _capsule(x, y, x0, y0, x1, y1, half_width, px):
    """Coverage of a thick segment from (x0, y0) to (x1, y1)."""
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((x - x0) * dx + (y - y0) * dy) / (dx**2 + dy**2 + 1e-12), 0.0, 1.0)
    dist = np.hypot(x - (x0 + t * dx), y - (y0 + t * dy))
    return np.clip(0.5 - (dist - half_width) / px, 0.0, 1.0)


def _paint(image: np.ndarray, coverage: np.ndarray, intensity: float) -> np.ndarray:
    return image * (1.0 - coverage) + intensity * coverage


def _side_view(f: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, px: float) -> np.ndarray:
    img = np.full(np.broadcast_shapes(x.shape, f["jaw"].shape), 0.08)
    img = _paint(img, (y > 0.87).astype(float), 0.25)  # the wheel under the animal
    chest, jaw = f["chest"], f["jaw"]
    img = _paint(img, _ellipse(x, y, 0.56, 0.46, 0.26, 0.08 + 0.12 * chest, px), 0.36 + 0.24 * chest)
    img = _paint(img, _ellipse(x, y, 0.27, 0.40, 0.11, 0.09, px), 0.55)
    # the jaw changes the image two to four times as much as the chest per unit of its spread: two
    # factors of similar effect leave the VAE free to rotate its two unsupervised latents
    img = _paint(img, _ellipse(x, y, 0.18, 0.47 + 0.08 * jaw, 0.08 + 0.06 * jaw, 0.02 + 0.11 * jaw, px), 0.95)
    img = _paint(img, _ellipse(x, y, 0.25, 0.37, 0.016, 0.016, px), 0.05)  # the eye
    for limb, (sx, sy) in (("front", (0.42, 0.52)), ("hind", (0.70, 0.52))):
        paw_x, paw_y = f[f"paw_{limb}_x"], f[f"paw_{limb}_y"]
        img = _paint(img, _capsule(x, y, sx, sy, paw_x, paw_y, 0.02, px), 0.62)
        img = _paint(img, _ellipse(x, y, paw_x, paw_y, 0.035, 0.035, px), 0.95)
    return img


def _bottom_view(f: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, px: float) -> np.ndarray:
    img = np.full(np.broadcast_shapes(x.shape, f["jaw"].shape), 0.08)
    chest, jaw = f["chest"], f["jaw"]
    img = _paint(img, _ellipse(x, y, 0.56, 0.5, 0.26, 0.07 + 0.1 * chest, px), 0.32 + 0.24 * chest)
    img = _paint(img, _ellipse(x, y, 0.27, 0.5, 0.1, 0.08, px), 0.5)
    img = _paint(img, _ellipse(x, y, 0.2, 0.5, 0.04 + 0.06 * jaw, 0.03 + 0.05 * jaw, px), 0.95)
    for limb, side in (("front", 0.3), ("hind", 0.7)):
        height = (f[f"paw_{limb}_y"] - 0.62) / 0.2  # lower paws are nearer the camera
        radius = 0.028 + 0.015 * height
        img = _paint(img, _ellipse(x, y, f[f"paw_{limb}_x"], side, radius, radius, px), 0.95)
    return img


def render_frames(
    trajectories: np.ndarray, size: int, views: int, rng: np.random.Generator, noise: float = 0.02
) -> np.ndarray:
    """Render frames from factor values.

    Args:
        trajectories: (T, 6) factors in frame units, :data:`FACTOR_NAMES` order.
        size: frame height and width in pixels.
        views: 1 (side view) or 2 (side view and view from below, stacked as channels).

    Returns:
        (T, views, size, size) uint8 frames.
    """
    centers = (np.arange(size) + 0.5) / size
    x, y = centers[None, None, :], centers[None, :, None]
    out = np.empty((len(trajectories), views, size, size), np.uint8)
    for start in range(0, len(trajectories), 256):
        chunk = trajectories[start : start + 256]
        f = {name: chunk[:, i, None, None] for i, name in enumerate(FACTOR_NAMES)}
        renders = [_side_view, _bottom_view][:views]
        for v, render in enumerate(renders):
            img = render(f, x, y, 1.0 / size)
            img = img + noise * rng.standard_normal(img.shape)
            out[start : start + len(chunk), v] = np.clip(np.rint(img * 255), 0, 255)
    return out


def synth_session(
    path: str | Path, size: int = 64, trials: int = 40, frames: int = 100, views: int = 1, seed: int = 0
) -> Path:
    """Write a demo session: ``trials`` trials of ``frames`` frames, labels z-scored."""
    if size not in SIZES:
        raise ConfigError(f"--size {size}: choose one of {', '.join(map(str, SIZES))}")
    if views not in (1, 2):
        raise ConfigError(f"--views {views}: choose 1 (side view) or 2 (side and bottom views)")
    if trials < 1 or frames < 1:
        raise ConfigError(f"--trials {trials} --frames {frames}: both must be >= 1")
    check_writable(path)  # before the rendering, which takes a while
    rng = np.random.default_rng(seed)
    traj = smooth_trajectories(trials * frames, rng)
    images = render_frames(traj, size, views, rng)
    labels_sc = traj[:, :4] * size - 0.5  # pixel-centre coordinates of the paws
    means, stds = labels_sc.mean(axis=0), labels_sc.std(axis=0)
    labels = (labels_sc - means) / stds
    cut = lambda a: [a[i * frames : (i + 1) * frames] for i in range(trials)]  # noqa: E731
    return write_session(
        path,
        cut(images),
        cut(labels),
        labels_sc=cut(labels_sc),
        factors=cut(traj),
        factor_names=FACTOR_NAMES,
        factor_labeled=[name in LABEL_NAMES for name in FACTOR_NAMES],
        label_names=LABEL_NAMES,
        attrs={
            "source": "psvae-opt data synth",
            "frame_rate": FRAME_RATE,
            "seed": seed,
            "label_means": means,
            "label_stds": stds,
        },
    )
