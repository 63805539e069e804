"""The demo dataset: a rendered, behaviour-like video with known generative factors.

A head-fixed "mouse" seen from the side (and, as a second view, from below): a body, a head,
a jaw, two limbs ending in bright paws. Six factors follow smooth random trajectories; the
paw positions are the pose labels, the jaw opening and the chest expansion change the image
but are not labelled. This is what the PS-VAE is built for: the supervised latents should
track the paws and the unsupervised ones should find the jaw and the chest, each in its own
dimension. All factors are written to the ``factors`` group with their names.

Scenes (:data:`SCENES`, ``data synth --scene``) vary what makes that hard:

- ``demo``: independent factors; no paw ever covers the jaw, and the jaw changes the image
  two to four times as much as the chest, so that the two unsupervised directions are not
  interchangeable (the easy case: agreement across seeds is then disentanglement);
- ``three_unlabelled``: the hind paw's height is not labelled, a third unsupervised factor;
- ``correlated``: jaw and chest move together (r about 0.5), as real behaviours do;
- ``equal_effect``: jaw and chest change the image equally (:func:`image_effect`: mean
  absolute pixel change per SD of the factor; the body is evenly shaded and its range is
  narrower), so a rotated code is nearly as good a fit as the axis-aligned one;
- ``distractor``: the demo under a slowly drifting light (factor ``light``, a gain on the whole
  frame), which moves every pixel but is no behaviour; it is uncorrelated with every other
  factor (orthogonalised over the session).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from psvae_opt.data.writer import check_writable, write_session
from psvae_opt.errors import ConfigError

FACTOR_NAMES = ("paw_front_x", "paw_hind_x", "paw_front_y", "paw_hind_y", "jaw", "chest")
LABEL_NAMES = FACTOR_NAMES[:4]  # all x coordinates, then all y coordinates
DISTRACTOR = "light"  # the distractor scene's extra factor: a gain on the whole frame
# Range of each factor in frame units (x right, y down, 0..1), and its smoothing (frames).
RANGES = {
    "paw_front_x": (0.35, 0.53),  # right of the open jaw: a paw never covers it
    "paw_hind_x": (0.62, 0.86),
    "paw_front_y": (0.62, 0.82),
    "paw_hind_y": (0.62, 0.82),
    "jaw": (0.0, 1.0),
    "chest": (0.0, 1.0),
    DISTRACTOR: (0.7, 1.1),
}
SMOOTHING = {
    "paw_front_x": 4,
    "paw_hind_x": 4,
    "paw_front_y": 3,
    "paw_hind_y": 3,
    "jaw": 3,
    "chest": 7,
    DISTRACTOR: 25,  # a slow drift
}
FRAME_RATE = 30.0
SIZES = (32, 64, 128, 192, 256)


@dataclass(frozen=True)
class Scene:
    """What a scene changes in the demo: labels left out, a jaw-chest correlation, ranges, a distractor."""

    description: str
    unlabelled: tuple[str, ...] = ()  # paw coordinates that are not labels
    jaw_chest_r: float = 0.0  # correlation of the jaw's and the chest's trajectories before squashing
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)  # factor ranges that differ
    distractor: bool = False
    chest_shade: float | None = None  # a fixed intensity of the body (default: it brightens as the chest fills)
    hind_scale: float = 1.0  # size of the hind paw and the width of its limb, times the demo's

    @property
    def factor_names(self) -> tuple[str, ...]:
        return (*FACTOR_NAMES, DISTRACTOR) if self.distractor else FACTOR_NAMES

    @property
    def label_names(self) -> tuple[str, ...]:
        return tuple(n for n in LABEL_NAMES if n not in self.unlabelled)

    @property
    def behaviour(self) -> tuple[str, ...]:
        """The unlabelled factors that are behaviour: what the unsupervised latents should find."""
        return tuple(n for n in FACTOR_NAMES if n not in self.label_names)

    def range(self, name: str) -> tuple[float, float]:
        return self.ranges.get(name, RANGES[name])


SCENES = {
    "demo": Scene("paws labelled; jaw and chest independent, the jaw 2-4x the chest's image effect"),
    "three_unlabelled": Scene(  # a hind paw twice the demo's: at its size the models left its height out
        "the demo with the hind paw's height unlabelled", unlabelled=("paw_hind_y",), hind_scale=2.0
    ),
    "correlated": Scene("the demo with jaw and chest correlated (r about 0.5)", jaw_chest_r=0.53),
    "equal_effect": Scene(  # the body evenly shaded, its range narrowed: equal mean |pixel change| per SD
        "jaw and chest of equal image effect per SD", ranges={"chest": (0.15, 0.85)}, chest_shade=0.8
    ),
    "distractor": Scene("the demo under a slowly drifting light, no behaviour", distractor=True),
}


def get_scene(name: str) -> Scene:
    """The scene of that name; a one-line error listing the scenes otherwise."""
    if name not in SCENES:
        raise ConfigError(f"--scene {name}: no such scene; choose one of {', '.join(SCENES)}")
    return SCENES[name]


def _squash(smooth: np.ndarray, low: float, high: float) -> np.ndarray:
    return low + (high - low) * 0.5 * (np.tanh(0.9 * smooth) + 1.0)  # in (low, high), spread over it


def smooth_trajectories(n_frames: int, rng: np.random.Generator, scene: str = "demo") -> np.ndarray:
    """Smooth random trajectories, one column per factor of the scene, in frame units.

    Returns:
        (n_frames, F) float64, columns in the scene's ``factor_names`` order (:data:`FACTOR_NAMES`,
        then :data:`DISTRACTOR` where the scene has it).
    """
    sc = get_scene(scene)
    smooth = {}
    for name in sc.factor_names:
        sigma = SMOOTHING[name]
        t = np.arange(-4 * sigma, 4 * sigma + 1)
        kernel = np.exp(-0.5 * (t / sigma) ** 2)
        noise = rng.standard_normal(n_frames + len(t) - 1)
        smooth[name] = np.convolve(noise, kernel / np.sqrt((kernel**2).sum()), mode="valid")  # unit variance
    r = sc.jaw_chest_r
    smooth["chest"] = r * smooth["jaw"] + np.sqrt(1.0 - r**2) * smooth["chest"]
    columns = [_squash(smooth[n], *sc.range(n)) for n in FACTOR_NAMES]
    if sc.distractor:  # no correlation with any factor over the session: the residual of a least-squares fit
        others = np.column_stack([np.ones(n_frames), *columns])
        light = smooth[DISTRACTOR] - others @ np.linalg.lstsq(others, smooth[DISTRACTOR], rcond=None)[0]
        low, high = sc.range(DISTRACTOR)
        spread = light.max() - light.min()
        columns.append(low + (high - low) * (light - light.min()) / (spread if spread > 0 else 1.0))
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


def _body_shade(f: dict[str, np.ndarray], base: float, sc: Scene) -> np.ndarray | float:
    return base + 0.24 * f["chest"] if sc.chest_shade is None else sc.chest_shade


def _limb_scale(limb: str, sc: Scene) -> float:
    return sc.hind_scale if limb == "hind" else 1.0


def _side_view(f: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, px: float, sc: Scene) -> np.ndarray:
    img = np.full(np.broadcast_shapes(x.shape, f["jaw"].shape), 0.08)
    img = _paint(img, (y > 0.87).astype(float), 0.25)  # the wheel under the animal
    chest, jaw = f["chest"], f["jaw"]
    img = _paint(img, _ellipse(x, y, 0.56, 0.46, 0.26, 0.08 + 0.12 * chest, px), _body_shade(f, 0.36, sc))
    img = _paint(img, _ellipse(x, y, 0.27, 0.40, 0.11, 0.09, px), 0.55)
    # the jaw changes the image two to four times as much as the chest per unit of its spread: two
    # factors of similar effect leave the VAE free to rotate its two unsupervised latents
    img = _paint(img, _ellipse(x, y, 0.18, 0.47 + 0.08 * jaw, 0.08 + 0.06 * jaw, 0.02 + 0.11 * jaw, px), 0.95)
    img = _paint(img, _ellipse(x, y, 0.25, 0.37, 0.016, 0.016, px), 0.05)  # the eye
    for limb, (sx, sy) in (("front", (0.42, 0.52)), ("hind", (0.70, 0.52))):
        paw_x, paw_y = f[f"paw_{limb}_x"], f[f"paw_{limb}_y"]
        scale = _limb_scale(limb, sc)
        img = _paint(img, _capsule(x, y, sx, sy, paw_x, paw_y, 0.02 * scale, px), 0.62)
        img = _paint(img, _ellipse(x, y, paw_x, paw_y, 0.035 * scale, 0.035 * scale, px), 0.95)
    return img


def _bottom_view(f: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, px: float, sc: Scene) -> np.ndarray:
    img = np.full(np.broadcast_shapes(x.shape, f["jaw"].shape), 0.08)
    chest, jaw = f["chest"], f["jaw"]
    img = _paint(img, _ellipse(x, y, 0.56, 0.5, 0.26, 0.07 + 0.1 * chest, px), _body_shade(f, 0.32, sc))
    img = _paint(img, _ellipse(x, y, 0.27, 0.5, 0.1, 0.08, px), 0.5)
    img = _paint(img, _ellipse(x, y, 0.2, 0.5, 0.04 + 0.06 * jaw, 0.03 + 0.05 * jaw, px), 0.95)
    for limb, side in (("front", 0.3), ("hind", 0.7)):
        height = (f[f"paw_{limb}_y"] - 0.62) / 0.2  # lower paws are nearer the camera
        radius = (0.028 + 0.015 * height) * _limb_scale(limb, sc)
        img = _paint(img, _ellipse(x, y, f[f"paw_{limb}_x"], side, radius, radius, px), 0.95)
    return img


def render_frames(
    trajectories: np.ndarray,
    size: int,
    views: int,
    rng: np.random.Generator,
    noise: float = 0.02,
    scene: str = "demo",
) -> np.ndarray:
    """Render frames from factor values.

    Args:
        trajectories: (T, F) factors in frame units, the scene's ``factor_names`` order
            (:data:`DISTRACTOR`, where the scene has it, is a gain on the whole frame).
        size: frame height and width in pixels.
        views: 1 (side view) or 2 (side view and view from below, stacked as channels).

    Returns:
        (T, views, size, size) uint8 frames.
    """
    sc = get_scene(scene)
    names = sc.factor_names
    centers = (np.arange(size) + 0.5) / size
    x, y = centers[None, None, :], centers[None, :, None]
    out = np.empty((len(trajectories), views, size, size), np.uint8)
    for start in range(0, len(trajectories), 256):
        chunk = trajectories[start : start + 256]
        f = {name: chunk[:, i, None, None] for i, name in enumerate(names)}
        renders = [_side_view, _bottom_view][:views]
        for v, render in enumerate(renders):
            img = render(f, x, y, 1.0 / size, sc) * f.get(DISTRACTOR, 1.0)
            img = img + noise * rng.standard_normal(img.shape)
            out[start : start + len(chunk), v] = np.clip(np.rint(img * 255), 0, 255)
    return out


def image_effect(trajectories: np.ndarray, column: int, size: int = 64, scene: str = "demo") -> float:
    """How much a factor changes the image: the mean absolute pixel change (0..1 intensity) per
    SD of the factor, between frames rendered without noise at its mean -/+ half its SD, the
    other factors as in ``trajectories`` (T, F), averaged over pixels and frames."""
    low, high = trajectories.copy(), trajectories.copy()
    mean, sd = trajectories[:, column].mean(), trajectories[:, column].std()
    low[:, column], high[:, column] = mean - sd / 2, mean + sd / 2
    rng = np.random.default_rng(0)
    a, b = (render_frames(t, size, 1, rng, noise=0.0, scene=scene).astype(float) / 255 for t in (low, high))
    return float(np.abs(b - a).mean())


def synth_session(
    path: str | Path,
    size: int = 64,
    trials: int = 40,
    frames: int = 100,
    views: int = 1,
    seed: int = 0,
    scene: str = "demo",
) -> Path:
    """Write a session of a scene: ``trials`` trials of ``frames`` frames, labels z-scored."""
    sc = get_scene(scene)
    if size not in SIZES:
        raise ConfigError(f"--size {size}: choose one of {', '.join(map(str, SIZES))}")
    if views not in (1, 2):
        raise ConfigError(f"--views {views}: choose 1 (side view) or 2 (side and bottom views)")
    if trials < 1 or frames < 1:
        raise ConfigError(f"--trials {trials} --frames {frames}: both must be >= 1")
    check_writable(path)  # before the rendering, which takes a while
    rng = np.random.default_rng(seed)
    traj = smooth_trajectories(trials * frames, rng, scene)
    images = render_frames(traj, size, views, rng, scene=scene)
    labels_sc = traj[:, [FACTOR_NAMES.index(n) for n in sc.label_names]] * size - 0.5  # pixel centres of the paws
    means, stds = labels_sc.mean(axis=0), labels_sc.std(axis=0)
    labels = (labels_sc - means) / stds
    cut = lambda a: [a[i * frames : (i + 1) * frames] for i in range(trials)]  # noqa: E731
    return write_session(
        path,
        cut(images),
        cut(labels),
        labels_sc=cut(labels_sc),
        factors=cut(traj),
        factor_names=sc.factor_names,
        factor_labeled=[name in sc.label_names for name in sc.factor_names],
        label_names=sc.label_names,
        attrs={
            "source": "psvae-opt data synth",
            "scene": scene,
            "frame_rate": FRAME_RATE,
            "seed": seed,
            "label_means": means,
            "label_stds": stds,
        },
    )
