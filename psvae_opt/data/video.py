"""Frames in: decode a video (FFmpeg through PyAV) or read still images, to grayscale, resized.

Resizing and label scaling share one geometry, the pixel-centre convention: pixel i covers
[i - 0.5, i + 0.5], so a coordinate x in a frame W pixels wide maps to

    x_new = (x + 0.5) * W_new / W - 0.5

in a frame W_new wide (and y likewise with the heights). Frames are resized to
``size`` x ``size``, each axis scaled on its own, as BehaveNet's and Lightning Pose's
pipelines do: the network wants square inputs of a fixed size, and the labels are scaled by the
same per-axis factors, so nothing is lost but the aspect ratio of the picture.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from psvae_opt.errors import DataError

if TYPE_CHECKING:  # PyAV and torch: imported where frames are decoded or resized
    import av

CHUNK = 64  # frames resized at once: bounds memory for long videos, keeps torch efficient


@dataclass(frozen=True)
class Clip:
    """One decoded video (one camera view).

    Attributes:
        path: the video file.
        frames: (T, size, size) uint8 grayscale frames.
        frame_rate: frames per second of the video stream.
        source_shape: (H, W) of the frames in the file.
    """

    path: Path
    frames: np.ndarray
    frame_rate: float
    source_shape: tuple[int, int]

    @property
    def n_frames(self) -> int:
        return int(self.frames.shape[0])


def resize_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """Resize (N, H, W) uint8 frames to (N, size, size) uint8.

    Bilinear with antialiasing (a triangle filter widened by the scale factor when shrinking),
    sampled at pixel centres (``align_corners=False``), the convention of ``scale_points``.
    """
    if frames.shape[1:] == (size, size):
        return frames.copy()
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(frames, dtype=np.float32)).unsqueeze(1)  # (N, 1, H, W), a copy
    y = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return y.squeeze(1).round_().clamp_(0, 255).to(torch.uint8).numpy()


def scale_points(xy: np.ndarray, source_shape: tuple[int, int] | np.ndarray, size: int) -> np.ndarray:
    """Map (..., 2) pixel coordinates (x, y) of (H, W) frames into ``size`` x ``size`` frames.

    ``source_shape`` is one (H, W), or an (..., 2) array of them that broadcasts with ``xy``
    (e.g. (K, 2): each keypoint in the frames of its own camera view).
    """
    hw = np.asarray(source_shape, dtype=np.float64)
    return (xy + 0.5) * (size / hw[..., ::-1]) - 0.5


def unscale_points(xy: np.ndarray, source_shape: tuple[int, int] | np.ndarray, size: int) -> np.ndarray:
    """The inverse of ``scale_points``: stored-frame pixels back to source pixels."""
    hw = np.asarray(source_shape, dtype=np.float64)
    return (xy + 0.5) * (hw[..., ::-1] / size) - 0.5


def _open(path: Path) -> av.container.InputContainer:
    import av

    if not path.is_file():
        raise DataError(f"{path}: video not found; check --video")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as exc:
        raise DataError(
            f"{path}: cannot be read as a video ({exc}); give an MP4 or AVI file FFmpeg can decode"
        ) from None
    if not container.streams.video:
        container.close()
        raise DataError(f"{path}: holds no video stream; give the camera's video file")
    return container


def read_video(path: str | Path, size: int) -> Clip:
    """Decode every frame of a video to grayscale, resized to ``size`` x ``size``.

    Frames are converted by FFmpeg ("gray": the luma plane, expanded from TV range), then
    resized in chunks of ``CHUNK`` so that a long video never sits in memory at full size.
    """
    import av
    from tqdm import tqdm

    path = Path(path)
    container = _open(path)
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"  # frame-parallel decoding: several times faster for H.264
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    chunks, pending, shape = [], [], None
    bar = tqdm(total=stream.frames or None, desc=f"decoding {path.name}", unit="frame", disable=None, leave=False)
    try:
        for frame in container.decode(stream):
            pending.append(frame.to_ndarray(format="gray"))
            if shape is not None and pending[-1].shape != shape:
                raise DataError(f"{path}: the frame size changes mid-video; re-encode it at one size")
            shape = pending[-1].shape
            if len(pending) == CHUNK:
                chunks.append(resize_frames(np.stack(pending), size))
                bar.update(len(pending))
                pending = []
    except av.FFmpegError as exc:
        done = sum(map(len, chunks)) + len(pending)
        raise DataError(f"{path}: decoding failed after {done} frames ({exc}); re-encode the video") from None
    finally:
        bar.close()
        container.close()
    if pending:
        chunks.append(resize_frames(np.stack(pending), size))
    if not chunks:
        raise DataError(f"{path}: the video has no frames; give a video with at least one frame")
    return Clip(path, np.concatenate(chunks), float(rate) if rate else float("nan"), tuple(shape))  # type: ignore[arg-type]


def read_image(path: Path, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """One still image as (size, size) uint8 grayscale, and its source (H, W)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            gray = np.asarray(img.convert("L"))
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path}: cannot be read as an image ({exc}); give PNG or JPEG frames") from None
    return resize_frames(gray[None], size)[0], (int(gray.shape[0]), int(gray.shape[1]))
