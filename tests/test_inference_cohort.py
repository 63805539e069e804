"""`encode` on a lab's inputs: cohorts with failures, truncated videos, NWB timing, crops and frame
ranges, the keypoints CSV, streamed reconstructions and progress lines."""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest

from psvae_opt.data import synth_session
from psvae_opt.data.video import iter_video, read_video
from psvae_opt.inference.model import load_model
from tests.conftest import one_line_error
from tests.test_inference import make_bundle


@pytest.fixture(scope="module")
def h5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synth_session(tmp_path_factory.mktemp("data") / "new.h5", size=32, trials=6, frames=15, seed=4)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, h5: Path) -> Path:
    return make_bundle(tmp_path_factory.mktemp("bundle") / "model", h5)


def write_video(path: Path, frames: np.ndarray, fps: int = 25) -> Path:
    """(T, H, W) uint8 gray frames as a lossless H.264 MP4, its index (moov) first: a file cut
    short still opens and declares every frame."""
    with av.open(str(path), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=fps, options={"qp": "0"})
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv444p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="gray").reformat(format="yuv444p")))
        container.mux(stream.encode())
    return path


def _snapshot(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir() if p.name != "encode-failures.tsv"}


def test_a_cohort_with_a_broken_session_keeps_going_and_skips_what_exists(tmp_path: Path, model_dir: Path, cli):
    folder = tmp_path / "cohort"
    for day in (1, 3):
        synth_session(folder / f"day{day}.h5", size=32, trials=2, frames=5, seed=day)
    (folder / "day2.h5").write_bytes(b"not an HDF5 file")
    out = tmp_path / "out"
    line = one_line_error(cli("encode", "--model", model_dir, "--out", out, folder, "--no-progress"))
    assert "day2.h5" in line and not out.exists()  # without --keep-going: refused up front, nothing written
    result = cli("encode", "--model", model_dir, "--out", out, folder, "--keep-going", "--no-progress")
    assert result.code != 0
    assert sorted(p.name for p in out.iterdir()) == [
        "day1.npz", "day1.provenance.json", "day3.npz", "day3.provenance.json", "encode-failures.tsv",
    ]  # fmt: skip
    failures = (out / "encode-failures.tsv").read_text().splitlines()
    assert failures[0] == "session\tsources\terror" and len(failures) == 2
    assert failures[1].startswith(f"day2\t{folder / 'day2.h5'}\t")
    assert "failed: day2:" in result.out and "1 of 3 session(s) failed" in result.err
    before = _snapshot(out)
    again = cli(
        "encode", "--model", model_dir, "--out", out, folder, "--keep-going", "--skip-existing", "--no-progress"
    )
    assert again.code != 0 and "2 skipped" in again.out
    assert _snapshot(out) == before  # nothing new, nothing rewritten
    assert (out / "encode-failures.tsv").read_text().splitlines() == failures  # this run's failure, the same
    with np.load(out / "day3.npz") as f:
        assert f["mean"].shape == (10, 6)


def test_a_session_failing_midway_leaves_the_finished_ones(tmp_path: Path, model_dir: Path, cli):
    rng = np.random.default_rng(0)
    good = write_video(tmp_path / "a_good.mp4", rng.integers(0, 255, (20, 32, 32), dtype=np.uint8))
    cut = write_video(tmp_path / "b_cut.mp4", rng.integers(0, 255, (300, 32, 32), dtype=np.uint8))
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    out = tmp_path / "out"
    line = one_line_error(cli("encode", "--model", model_dir, "--out", out, "--video", good, "--video", cut,
                              "--format", "npz,csv", "--no-progress"))  # fmt: skip
    assert "b_cut.mp4: decoded" in line and "declares 300" in line and "--allow-short" in line
    assert sorted(p.name for p in out.iterdir()) == ["a_good.csv", "a_good.npz", "a_good.provenance.json"]
    assert not list(tmp_path.glob(".out.*"))  # no staging left behind


def test_a_truncated_video_is_refused_or_encoded_with_a_warning(tmp_path: Path, model_dir: Path, cli):
    rng = np.random.default_rng(1)
    video = write_video(tmp_path / "cam.mp4", rng.integers(0, 255, (300, 40, 48), dtype=np.uint8))
    video.write_bytes(video.read_bytes()[: video.stat().st_size // 2])
    decoded = sum(len(c) for c in iter_video(video, 32))
    assert 100 < decoded < 300
    line = one_line_error(cli("encode", "--model", model_dir, "--out", tmp_path / "out", "--video", video))
    assert f"decoded {decoded} frames but the video declares 300" in line
    assert not (tmp_path / "out").exists()
    result = cli("encode", "--model", model_dir, "--out", tmp_path / "out", "--video", video, "--allow-short")
    assert result.code == 0, result.err
    warning = [ln for ln in result.err.splitlines() if "warning" in ln]
    assert len(warning) == 1 and f"decoded {decoded} frames" in warning[0] and "declares 300" in warning[0]
    assert "48x40 resized to 32x32, no crop, frames 0:, 25 fps (video)" in result.out
    with np.load(tmp_path / "out" / "cam.npz") as f:
        assert f["mean"].shape == (decoded, 6)
        geometry = json.loads(str(f["provenance"]))["geometry"]
    assert (geometry["frames_decoded"], geometry["frames_declared"]) == (decoded, 300)
    assert geometry["source_size"] == [[40, 48]] and geometry["resize"] == [32, 32]


def test_crop_and_frame_range_encode_what_they_name(tmp_path: Path, model_dir: Path, cli):
    rng = np.random.default_rng(2)
    frames = rng.integers(0, 255, (30, 60, 80), dtype=np.uint8)
    video = write_video(tmp_path / "cam.mp4", frames)
    out = tmp_path / "out"
    result = cli("encode", "--model", model_dir, "--out", out, "--video", video, "--crop", "10,5,40,36",
                 "--frames", "7:19", "--trial-length", "5", "--format", "npz,dlc", "--no-progress")  # fmt: skip
    assert result.code == 0, result.err
    assert "crop x,y,w,h 10,5,40,36, frames 7:19" in result.out
    model = load_model(model_dir)
    whole = np.concatenate(list(iter_video(video, 32, (10, 5, 40, 36))))  # every frame, cropped then resized
    assert whole.shape == (30, 32, 32)
    with np.load(out / "cam.npz") as f:
        assert f["frame"].tolist() == list(range(7, 19)) and f["trial"].tolist() == [0] * 5 + [1] * 5 + [2] * 2
        assert np.allclose(f["time"], np.arange(7, 19) / 25.0)
        assert np.allclose(f["mean"], model.encode(whole[7:19]), atol=1e-6)
        # labels in the full video's pixels: the crop's 40 x 36 scaling, then its offset (x + 10, y + 5)
        crop_px = model.predict_labels(f["mean"], source_size=np.array([[36, 40]] * 4))
        assert np.allclose(f["labels_px"], crop_px + np.array([10, 10, 5, 5]), atol=1e-4)
        labels_px, conf = f["labels_px"], f["confidence"]
    table = pd.read_csv(out / "cam.keypoints.csv", header=[0, 1, 2], index_col=0)
    assert table.columns.get_level_values(1).unique().tolist() == ["paw_front", "paw_hind"]
    assert table.columns.get_level_values(2).tolist() == ["x", "y", "likelihood"] * 2
    assert table.columns.get_level_values(0)[0] == "psvae-opt_tiny-stage2_trial0"
    assert table.index.tolist() == list(range(7, 19))
    assert np.allclose(table.xs("paw_hind", axis=1, level=1).to_numpy(), np.c_[labels_px[:, 1], labels_px[:, 3], conf])
    assert ((0 < conf) & (conf <= 1)).all()
    line = one_line_error(cli("encode", "--model", model_dir, "--out", tmp_path / "o2", "--video", video,
                              "--crop", "50,0,40,10"))  # fmt: skip
    assert "leaves its 80 x 60 frames" in line
    assert "START:END" in one_line_error(cli("encode", "--model", model_dir, "--out", tmp_path / "o2", "--video",
                                             video, "--frames", "9:3"))  # fmt: skip


def test_an_nwb_source_with_start_time_and_rate_times_every_output(tmp_path: Path, model_dir: Path, h5: Path, cli):
    from pynwb import NWBHDF5IO, NWBFile
    from pynwb.image import ImageSeries

    source = tmp_path / "session.nwb"
    nwb = NWBFile("a session", "id-2", datetime.datetime(2024, 5, 1, tzinfo=datetime.UTC))
    series = ImageSeries(name="video", data=np.zeros((90, 4, 4), np.uint8), starting_time=12.5, rate=29.5, unit="n.a.")
    nwb.add_acquisition(series)
    with NWBHDF5IO(str(source), "w") as io:
        io.write(nwb)
    out = tmp_path / "out"
    result = cli("encode", "--model", model_dir, "--out", out, h5, "--format", "nwb,npz", "--nwb-source", source)
    assert result.code == 0, result.err
    expected = 12.5 + np.arange(90) / 29.5  # not the session file's own 30 fps from 0
    with np.load(out / "new.npz") as f:
        assert np.allclose(f["time"], expected)
        assert json.loads(str(f["provenance"]))["geometry"]["time_from"] == "NWB ImageSeries video starting_time + rate"
    with NWBHDF5IO(str(out / "new.nwb"), "r") as io:
        behavior = io.read().processing["behavior"]
        assert np.allclose(behavior["psvae_latents"].timestamps[:], expected)
        record = json.loads(behavior["psvae_latents"].comments)
        assert (
            record["bundle"]["weights_sha256"] == json.loads((model_dir / "bundle.json").read_text())["weights_sha256"]
        )
        assert behavior["psvae_reconstruction_error"].data.shape == (90,)
    other = tmp_path / "other.nwb"  # timestamps of a 100-frame video: another recording or another cut
    nwb = NWBFile("another session", "id-3", datetime.datetime(2024, 5, 1, tzinfo=datetime.UTC))
    nwb.add_acquisition(ImageSeries(name="cam", external_file=["cam.mp4"], format="external",
                                    timestamps=np.arange(100) / 30.0, unit="n.a."))  # fmt: skip
    with NWBHDF5IO(str(other), "w") as io:
        io.write(nwb)
    line = one_line_error(cli("encode", "--model", model_dir, "--out", tmp_path / "o2", h5, "--format", "nwb",
                              "--nwb-source", other))  # fmt: skip
    assert "timestamps (cam has 100) do not fit the input's 90 frames" in line and not (tmp_path / "o2").exists()


def test_reconstructions_are_streamed_into_the_npz(tmp_path: Path, model_dir: Path, h5: Path, cli):
    from psvae_opt.data import load_session

    result = cli("encode", "--model", model_dir, "--out", tmp_path / "out", h5, "--reconstructions",
                 "--batch-size", "7", "--no-progress")  # fmt: skip
    assert result.code == 0, result.err
    frames = load_session(h5).images
    with np.load(tmp_path / "out" / "new.npz") as f:
        assert np.array_equal(f["reconstructions"], load_model(model_dir).reconstruct(frames))
    assert sorted(os.listdir(tmp_path / "out")) == ["new.npz", "new.provenance.json"]  # the spool is gone


def test_progress_is_plain_lines_in_a_log(capsys):
    from psvae_opt.inference.encode import Progress

    bar = Progress("cam", 300, "lines", every=0.0)
    bar.update(100)
    bar.update(200)
    bar.close()
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("cam: 100/300 frames encoded, ") and lines[1].startswith("cam: 300/300 frames")


def test_a_video_read_whole_equals_its_stream(tmp_path: Path):
    frames = np.random.default_rng(3).integers(0, 255, (70, 40, 48), dtype=np.uint8)
    video = write_video(tmp_path / "v.mp4", frames)
    assert np.array_equal(read_video(video, 32).frames, np.concatenate(list(iter_video(video, 32))))
    assert np.array_equal(np.concatenate(list(iter_video(video, 32, start=60))), read_video(video, 32).frames[60:])


def test_a_movie_shows_chosen_frames_beside_their_reconstructions(tmp_path: Path, model_dir: Path, h5: Path, cli):
    from psvae_opt.data import load_session
    from psvae_opt.inference.movie import side_by_side

    out = tmp_path / "out"
    result = cli("encode", "--model", model_dir, "--out", out, h5, "--movie", "10:40", "--batch-size", "16",
                 "--no-progress")  # fmt: skip
    assert result.code == 0, result.err
    frames = load_session(h5).images[10:40]
    recons = load_model(model_dir).reconstruct(frames)
    expected = side_by_side(frames, recons)  # 32 x 32 views scaled by 8: 256 x 512
    assert expected.shape == (30, 256, 512)
    assert np.array_equal(expected[0, :8, 256:264], np.full((8, 8), recons[0, 0, 0, 0]))
    with av.open(str(out / "new.recon.mp4")) as container:
        movie = np.stack([f.to_ndarray(format="gray") for f in container.decode(video=0)])
    assert movie.shape == (30, 256, 512)
    assert np.abs(movie.astype(int) - expected).mean() < 3  # H.264 at crf 18: close, not exact
    line = one_line_error(cli("encode", "--model", model_dir, "--out", tmp_path / "o2", h5, "--movie", "200:300"))
    assert "no frame of new there (it has 0:90)" in line and not (tmp_path / "o2").exists()
    assert "at most 10000" in one_line_error(cli("encode", "--model", model_dir, "--out", tmp_path / "o2", h5,
                                                 "--movie", "0:20000"))  # fmt: skip


def test_the_memory_benchmark_reports_rate_and_peak_per_length(tmp_path: Path, capsys: pytest.CaptureFixture):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import encode_memory

    args = ["--lengths", "20,40", "--width", "64", "--height", "48", "--size", "32", "--channels", "[4, 8, 8, 8, 8]"]
    assert encode_memory.main([*args, "--json", "--workdir", str(tmp_path)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["frames"] for r in rows] == [20, 40] and all(r["frames_per_s"] > 0 and r["peak_mb"] > 50 for r in rows)
    with np.load(tmp_path / "out_40" / "video_40.npz") as f:
        assert f["mean"].shape[0] == 40


def test_a_new_nwb_starts_when_the_video_was_recorded(tmp_path: Path, model_dir: Path, cli):
    from pynwb import NWBHDF5IO

    video = tmp_path / "cam.mp4"
    with av.open(str(video), "w") as container:
        container.metadata["creation_time"] = "2024-05-01T10:30:00.000000Z"
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(10):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32), 10 * i, np.uint8), format="gray")
            container.mux(stream.encode(frame.reformat(format="yuv420p")))
        container.mux(stream.encode())
    result = cli("encode", "--model", model_dir, "--out", tmp_path / "out", "--video", video, "--format", "nwb")
    assert result.code == 0, result.err
    with NWBHDF5IO(str(tmp_path / "out" / "cam.nwb"), "r") as io:
        nwb = io.read()
        assert nwb.session_start_time == datetime.datetime(2024, 5, 1, 10, 30, tzinfo=datetime.UTC)
        geometry = json.loads(nwb.processing["behavior"]["psvae_latents"].comments)["geometry"]
    assert geometry["session_start_time_from"] == "video creation_time tag"


def test_bf16_autocast_encodes_close_to_fp32_and_says_so(tmp_path: Path, model_dir: Path, h5: Path, cli):
    """The --gpu path's bf16 autocast, run on the CPU: latents stay fp32 and near the fp32 ones."""
    for precision in ("fp32", "bf16"):
        result = cli("encode", "--model", model_dir, "--out", tmp_path / precision, h5, "--precision", precision)
        assert result.code == 0, result.err
    with np.load(tmp_path / "fp32" / "new.npz") as a, np.load(tmp_path / "bf16" / "new.npz") as b:
        assert b["mean"].dtype == np.float32 and np.abs(a["mean"] - b["mean"]).max() < 0.05
        assert not np.array_equal(a["mean"], b["mean"])  # bf16 did run
        assert json.loads(str(b["provenance"]))["options"]["precision"] == "bf16"
        assert json.loads(str(a["provenance"]))["options"]["device"] == "cpu"
    result = cli("encode", "--model", model_dir, "--out", tmp_path / "auto", h5)  # the CPU's auto is fp32
    with np.load(tmp_path / "auto" / "new.npz") as f:
        assert json.loads(str(f["provenance"]))["options"]["precision"] == "fp32"
