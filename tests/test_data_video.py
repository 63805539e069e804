"""Video decoding, resizing and the label geometry that goes with it."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from psvae_opt.data.video import read_image, read_video, resize_frames, scale_points, unscale_points
from psvae_opt.errors import DataError


def write_video(path: Path, frames: np.ndarray, fps: int = 30, codec: str = "ffv1") -> Path:
    """(T, H, W) uint8 gray frames, or (T, H, W, 3) RGB, as a video (ffv1 is lossless)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=Fraction(fps))
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "gray" if frames.ndim == 3 else "yuv420p"
        for arr in frames:
            frame = av.VideoFrame.from_ndarray(arr, format="gray" if frames.ndim == 3 else "rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def moving_frames(n: int = 12, h: int = 40, w: int = 48, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w), dtype=np.uint8)


def blob(h: int, w: int, x: float, y: float, sigma: float = 6.0) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.rint(255 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))).astype(np.uint8)


def centroid(img: np.ndarray) -> np.ndarray:
    yy, xx = np.mgrid[0 : img.shape[0], 0 : img.shape[1]]
    m = img.astype(np.float64)
    return np.array([(xx * m).sum() / m.sum(), (yy * m).sum() / m.sum()])


@pytest.mark.parametrize("size", [64, 128])
def test_a_point_and_its_label_move_together_through_the_resize(size: int):
    # a blob at a known pixel of a 406 x 396 (H x W) frame, like the mirror-mouse videos
    for x, y in [(78.5, 123.5), (306.2, 100.8), (200.0, 300.0)]:
        small = resize_frames(blob(406, 396, x, y)[None], size)[0]
        np.testing.assert_allclose(centroid(small), scale_points(np.array([x, y]), (406, 396), size), atol=0.05)


def test_pixel_centre_convention_maps_frame_edges_to_frame_edges():
    edges = np.array([[-0.5, -0.5], [395.5, 405.5]])  # outer edges of a 396 (W) x 406 (H) frame
    np.testing.assert_allclose(scale_points(edges, (406, 396), 64), [[-0.5, -0.5], [63.5, 63.5]])
    xy = np.random.default_rng(0).uniform(0, 400, (50, 8, 2))
    np.testing.assert_allclose(unscale_points(scale_points(xy, (406, 396), 128), (406, 396), 128), xy)
    # each axis has its own factor: x by 128/396, y by 128/406
    np.testing.assert_allclose(
        scale_points(np.array([99.5, 99.5]), (406, 396), 128), [100 * 128 / 396 - 0.5, 100 * 128 / 406 - 0.5]
    )


def test_resizing_keeps_flat_grey_and_dtype():
    frames = np.full((3, 406, 396), 137, np.uint8)
    out = resize_frames(frames, 64)
    assert out.shape == (3, 64, 64) and out.dtype == np.uint8
    assert (out == 137).all()


def test_read_video_decodes_every_frame_exactly(tmp_path: Path):
    frames = moving_frames()
    clip = read_video(write_video(tmp_path / "v.avi", frames, fps=25), 16)
    assert clip.n_frames == 12 and clip.frame_rate == 25.0 and clip.source_shape == (40, 48)
    np.testing.assert_array_equal(clip.frames, resize_frames(frames, 16))  # lossless codec: only the resize


def test_a_long_video_is_resized_in_chunks_without_seams(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import psvae_opt.data.video as video

    monkeypatch.setattr(video, "CHUNK", 5)  # 12 frames: chunks of 5, 5 and 2
    frames = moving_frames(seed=1)
    clip = read_video(write_video(tmp_path / "v.avi", frames), 20)
    np.testing.assert_array_equal(clip.frames, resize_frames(frames, 20))


def test_a_colour_video_becomes_its_luma(tmp_path: Path):
    rgb = np.zeros((4, 32, 32, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 50
    clip = read_video(write_video(tmp_path / "c.mp4", rgb, codec="mpeg4"), 32)
    luma = 0.299 * 200 + 0.587 * 100 + 0.114 * 50  # ITU-R BT.601, what FFmpeg's gray conversion gives
    assert abs(float(clip.frames.mean()) - luma) < 3


def test_real_video_metadata():
    path = Path(__file__).resolve().parents[2] / "shared" / "data" / "mirror-mouse-eks" / "180607_004.mp4"
    if not path.exists():
        pytest.skip("the shared data is not checked out beside the repository")
    with av.open(str(path)) as c:  # what read_video relies on, without decoding 1000 frames here
        s = c.streams.video[0]
        assert (s.frames, float(s.average_rate), s.codec_context.height, s.codec_context.width) == (
            1000,
            250.0,
            406,
            396,
        )


def test_unreadable_and_missing_videos_are_refused(tmp_path: Path):
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video")
    with pytest.raises(DataError, match=r"notes.mp4: cannot be read as a video .*give an MP4 or AVI file"):
        read_video(bad, 64)
    with pytest.raises(DataError, match=r"gone.mp4: video not found"):
        read_video(tmp_path / "gone.mp4", 64)


def test_read_image_makes_grey_frames(tmp_path: Path):
    rgb = np.zeros((30, 20, 3), np.uint8)
    rgb[..., 1] = 200
    Image.fromarray(rgb).save(tmp_path / "g.png")
    frame, shape = read_image(tmp_path / "g.png", 8)
    assert shape == (30, 20) and frame.shape == (8, 8)
    assert abs(int(frame[4, 4]) - round(0.587 * 200)) <= 1
    (tmp_path / "x.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"x.png: cannot be read as an image"):
        read_image(tmp_path / "x.png", 8)
