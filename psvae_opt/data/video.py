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

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from psvae_opt.errors import ConfigError, DataError

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


@dataclass(frozen=True)
class VideoInfo:
    """A video's header: path, frames it declares (0 when it declares none), frames per second
    (NaN when unknown), (H, W) of its frames, and its ``creation_time`` tag (None when absent)."""

    path: Path
    declared_frames: int
    frame_rate: float
    source_shape: tuple[int, int]
    creation_time: str | None = None


def probe_video(path: str | Path) -> VideoInfo:
    """Read a video's header (nothing is decoded): refuses a file FFmpeg cannot open."""
    path = Path(path)
    container = _open(path)
    try:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        shape = (int(stream.codec_context.height), int(stream.codec_context.width))
        created = container.metadata.get("creation_time") or stream.metadata.get("creation_time")
        return VideoInfo(path, int(stream.frames or 0), float(rate) if rate else float("nan"), shape, created)
    finally:
        container.close()


Crop = tuple[int, int, int, int]  # x, y, width, height in source pixels


def iter_video(
    path: str | Path, size: int, crop: Crop | None = None, start: int = 0, stop: int | None = None
) -> Iterator[np.ndarray]:
    """Decode frames ``start`` to ``stop`` (exclusive; None: to the end) of a video to grayscale,
    cropped to ``crop`` (x, y, w, h) first, and resized to ``size`` x ``size``.

    Yields (n, size, size) uint8 chunks of at most ``CHUNK`` frames: memory does not grow with
    the video's length. Frames before ``start`` are decoded and dropped (exact on any codec).
    """
    import av

    path = Path(path)
    container = _open(path)
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"  # frame-parallel decoding: several times faster for H.264
    pending, shape, index = [], None, -1
    try:
        for frame in container.decode(stream):
            index += 1
            if stop is not None and index >= stop:
                break
            if index < start:
                continue
            gray = frame.to_ndarray(format="gray")
            if shape is not None and gray.shape != shape:
                raise DataError(f"{path}: the frame size changes mid-video; re-encode it at one size")
            shape = gray.shape
            if crop is not None:
                x, y, w, h = crop
                gray = gray[y : y + h, x : x + w]
            pending.append(gray)
            if len(pending) == CHUNK:
                yield resize_frames(np.stack(pending), size)
                pending = []
    except av.FFmpegError as exc:
        raise DataError(f"{path}: decoding failed after {index} frames ({exc}); re-encode the video") from None
    finally:
        container.close()
    if pending:
        yield resize_frames(np.stack(pending), size)


def read_video(path: str | Path, size: int) -> Clip:
    """Decode every frame of a video to grayscale, resized to ``size`` x ``size``.

    Frames are converted by FFmpeg ("gray": the luma plane, expanded from TV range), then
    resized in chunks of ``CHUNK`` (:func:`iter_video`), so a video never sits in memory at full size.
    """
    from tqdm import tqdm  # here, not at the top: training and the GPU check import this package without it

    info = probe_video(path)
    bar = tqdm(
        total=info.declared_frames or None, desc=f"decoding {info.path.name}", unit="frame", disable=None, leave=False
    )
    chunks = []
    try:
        for chunk in iter_video(info.path, size):
            chunks.append(chunk)
            bar.update(len(chunk))
    finally:
        bar.close()
    if not chunks:
        raise DataError(f"{info.path}: the video has no frames; give a video with at least one frame")
    return Clip(info.path, np.concatenate(chunks), info.frame_rate, info.source_shape)


def read_image(path: Path, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """One still image as (size, size) uint8 grayscale, and its source (H, W)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            gray = np.asarray(img.convert("L"))
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path}: cannot be read as an image ({exc}); give PNG or JPEG frames") from None
    return resize_frames(gray[None], size)[0], (int(gray.shape[0]), int(gray.shape[1]))


def write_mp4(frames: np.ndarray, path: str | Path, fps: float = 30) -> Path:
    """Write (T, H, W, 3) RGB or (T, H, W) gray uint8 frames (H, W even) as H.264 MP4 (yuv420p)
    with PyAV; returns the path. The traversal movies and ``encode --movie`` both write with it."""
    import av

    height, width = frames.shape[1:3]
    if height % 2 or width % 2:
        raise ConfigError(f"movie frames of {height}x{width}: H.264 with yuv420p needs even sizes")
    source = "rgb24" if frames.ndim == 4 else "gray"
    path = Path(path)
    with av.open(str(path), mode="w", options={"movflags": "+faststart"}) as container:
        stream = container.add_stream("libx264", rate=int(round(fps)))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "20", "preset": "veryfast"}
        for frame in frames:
            video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format=source)
            container.mux(stream.encode(video_frame.reformat(format="yuv420p")))
        container.mux(stream.encode())
    return path
