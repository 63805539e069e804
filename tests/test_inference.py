"""Model bundles and encoding new data: the API, the formats read back by their own libraries, refusals.

Bundles here are written from an untrained network (no training needed to test what a bundle
does with frames); the round trip of a trained, exported model is in test_inference_export.py.
"""

from __future__ import annotations

import csv
import json
import pickle
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest
import torch

from psvae_opt.config import dump_config, load_config
from psvae_opt.data import load_session, split_trials, synth_session
from psvae_opt.data.video import read_video, scale_points
from psvae_opt.errors import DataError
from psvae_opt.inference import bundle
from psvae_opt.inference.model import load_model
from psvae_opt.training.steps import build_model
from tests.conftest import TINY_MODEL, one_line_error


def make_bundle(folder: Path, h5: Path, **info) -> Path:
    """A bundle of an untrained tiny network for the session file ``h5`` (its labels, its split)."""
    session = load_session(h5)
    cfg = load_config(None, [f"data.path={h5}", "data.split=3;1;1;0", *TINY_MODEL])
    network = build_model(cfg.model, session.frame_shape, session.n_labels, seed=3)

    def fill(staging: Path) -> dict:
        bundle.save_weights(network, staging)
        (staging / bundle.CONFIG).write_text(dump_config(cfg))
        return {
            "frame_shape": list(session.frame_shape),
            "label_names": list(session.label_names),
            "n_unsup": cfg.model.n_unsup,
            "label_means": np.asarray(session.attrs["label_means"]).tolist(),
            "label_stds": np.asarray(session.attrs["label_stds"]).tolist(),
            "split": {"counts": [3, 1, 1, 0], "data_seed": 0, "mode": "blocked"},
            "study": "tiny-stage2",
            "trial": 0,
            **info,
        }

    return bundle.write_bundle(folder, fill)


@pytest.fixture(scope="module")
def h5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synth_session(tmp_path_factory.mktemp("data") / "new.h5", size=32, trials=6, frames=15, seed=4)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, h5: Path) -> Path:
    return make_bundle(tmp_path_factory.mktemp("bundle") / "model", h5)


def write_video(path: Path, frames: np.ndarray, fps: int = 25) -> Path:
    """(T, H, W) uint8 gray frames as a lossless H.264 MP4."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"qp": "0"})
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv444p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="gray").reformat(format="yuv444p")))
        container.mux(stream.encode())
    return path


# -- the Python API ------------------------------------------------------------------------------


def test_load_model_is_a_lazy_attribute_of_the_package():
    import subprocess
    import sys

    code = (
        "import sys, psvae_opt; assert 'torch' not in sys.modules; psvae_opt.load_model; print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "True"  # torch arrives with load_model, not with the package


def test_encode_takes_any_batch_and_equals_the_network_on_frames_scaled_as_in_training(model_dir: Path, h5: Path):
    model = load_model(model_dir)
    frames = load_session(h5).images  # (T, 1, 32, 32)
    mean, variance = model.encode(frames, variance=True, batch_size=7)
    with torch.no_grad():
        mu, logvar = model.network.encode(torch.from_numpy(frames).float() / 255.0)
    assert mean.shape == (90, 6) and np.allclose(mean, mu.numpy(), atol=1e-6)
    assert np.allclose(variance, logvar.exp().numpy(), rtol=1e-5)
    assert np.allclose(model.encode(frames[:, 0]), mean, atol=1e-6)  # (N, H, W) for one channel
    assert np.allclose(model.encode(frames[5]), mean[5:6], atol=1e-6)  # one (C, H, W) frame
    assert np.allclose(model.encode(frames[5, 0]), mean[5:6], atol=1e-6)  # one (H, W) frame
    with pytest.raises(DataError, match="uint8"):
        model.encode(frames.astype(np.float32))
    with pytest.raises(DataError, match=r"shape 1x16x16 .* takes 1x32x32"):
        model.encode(frames[:, :, :16, :16])


def test_decode_predict_and_traverse(model_dir: Path, h5: Path):
    model = load_model(model_dir)
    frame = load_session(h5).images[10]
    z = model.encode(frame)
    recon = model.decode(z)
    assert recon.shape == (1, 1, 32, 32) and 0.0 <= recon.min() and recon.max() <= 1.0
    scale, bias = model.network.label_scale.detach().numpy(), model.network.label_bias.detach().numpy()
    assert np.allclose(model.predict_labels(z, pixels=False), z[:, :4] * scale + bias, atol=1e-6)
    sweep = model.traverse(frame, "z_u1", [-1.0, 0.0, 2.0])
    expected = np.repeat(z, 3, axis=0)
    expected[:, 5] = [-1.0, 0.0, 2.0]
    assert sweep.shape == (3, 1, 32, 32) and np.allclose(sweep, model.decode(expected), atol=1e-6)
    assert np.allclose(model.traverse(frame, 5, [2.0])[0], sweep[2], atol=1e-6)
    assert model.traverse(frame, "paw_front_x").shape == (7, 1, 32, 32)


def test_predicted_pixels_undo_the_import_scaling_per_label(tmp_path: Path, h5: Path):
    """A model trained on 300 x 400 video resized to 32: pixels go back through the import's geometry."""
    hw = np.array([[300, 400]] * 4, np.float64)  # (H, W) of each label's video
    means, stds = np.array([10.0, 20.0, 12.0, 15.0]), np.array([2.0, 3.0, 1.5, 2.5])
    model = load_model(
        make_bundle(
            tmp_path / "m", h5, label_source_size=hw.tolist(), label_means=means.tolist(), label_stds=stds.tolist()
        )
    )
    source = np.array([[[55.0, 120.0], [301.5, 7.25]]])  # (1, K=2, 2): x, y of two keypoints in video pixels
    stored = scale_points(source, (300, 400), 32)
    labels_sc = np.concatenate([stored[..., 0], stored[..., 1]], axis=1)  # all x, then all y
    z = (labels_sc - means) / stds
    got = model.labels_to_pixels(z)
    assert np.allclose(got, [[55.0, 301.5, 120.0, 7.25]], atol=1e-3)


# -- formats, each read back with its own library -----------------------------------------------


@pytest.fixture(scope="module")
def encoded(tmp_path_factory: pytest.TempPathFactory, model_dir: Path, h5: Path) -> Path:
    from psvae_opt.cli import main

    out = tmp_path_factory.mktemp("enc") / "out"
    args = ["encode", "--model", model_dir, "--out", out, h5, "--format", "npz,csv,behavenet,nwb", "--reconstructions"]
    assert main([str(a) for a in [*args, "--no-progress"]]) == 0
    return out


def test_npz_holds_means_variances_labels_and_reconstructions(encoded: Path, model_dir: Path, h5: Path):
    model, frames = load_model(model_dir), load_session(h5).images
    with np.load(encoded / "new.npz") as f:
        mean, variance = model.encode(frames, variance=True)
        assert np.allclose(f["mean"], mean, atol=1e-6) and np.allclose(f["variance"], variance, rtol=1e-5)
        assert np.allclose(f["labels_z"], model.predict_labels(mean, pixels=False), atol=1e-6)
        assert np.allclose(f["labels_px"], model.predict_labels(mean), atol=1e-4)
        assert f["reconstructions"].dtype == np.uint8 and f["reconstructions"].shape == frames.shape
        assert f["dim_names"].tolist() == [*model.label_names, "z_u0", "z_u1"]
        assert f["trial"].tolist() == np.repeat(np.arange(6), 15).tolist()
        assert np.allclose(f["time"], np.arange(90) / 30.0)  # the synthetic session's 30 frames per second
        # the quality signal: each frame's pixel MSE against its reconstruction from the latent means
        error = ((frames / 255.0 - model.decode(mean)) ** 2).mean(axis=(1, 2, 3))
        assert np.allclose(f["recon_error"], error, rtol=1e-4, atol=1e-7)
        ref = np.median(error)  # the untrained bundle records no validation pixel MSE: the session's median
        assert np.allclose(f["confidence"], np.minimum(1.0, ref / error), rtol=1e-4)
        assert (f["confidence"] == 1.0).sum() >= 45  # half the frames at or below the median
        record = json.loads(str(f["provenance"]))
        info = json.loads((model_dir / "bundle.json").read_text())
        assert (
            record["bundle"]["weights_sha256"] == info["weights_sha256"]
            and len(record["bundle"]["weights_sha256"]) == 64
        )
        assert (record["bundle"]["study"], record["bundle"]["trial"]) == ("tiny-stage2", 0)
        assert record["sources"][0]["path"] == str(h5.resolve()) and record["sources"][0][
            "sha256"
        ] == bundle.file_sha256(h5)
        assert record["options"]["format"] == "npz,csv,behavenet,nwb" and record["psvae_opt_version"]
        assert record["geometry"]["frame_rate"] == 30.0 and record["geometry"]["time_from"] == "frame / frame rate"
    assert json.loads((encoded / "new.provenance.json").read_text())["bundle"] == record["bundle"]


def test_csv_has_a_frame_index_and_every_value(encoded: Path, model_dir: Path):
    table = pd.read_csv(encoded / "new.csv", index_col="frame")
    with np.load(encoded / "new.npz") as f:
        assert table.index.tolist() == list(range(90))
        assert np.allclose(table[[f"mean_{d}" for d in f["dim_names"]]].to_numpy(), f["mean"], atol=1e-6)
        assert np.allclose(table[[f"{n}_px" for n in f["label_names"]]].to_numpy(), f["labels_px"], atol=1e-4)
        assert table["trial_frame"].tolist()[14:17] == [14, 0, 1]
    with (encoded / "new.csv").open(newline="") as fh:
        header = next(csv.reader(fh))
    assert header[:7] == ["frame", "trial", "trial_frame", "time", "recon_error", "confidence", "mean_paw_front_x"]
    with np.load(encoded / "new.npz") as f:
        assert np.allclose(table["recon_error"], f["recon_error"], rtol=1e-6)


class OldNumpyUnpickler(pickle.Unpickler):
    """Loads as numpy 1.17 to 1.25 would: numpy's old module names resolve, ``numpy._core`` (numpy
    2's path, unknown before 1.26) fails, and nothing outside numpy and builtins is trusted."""

    OLD = {"numpy", "numpy.core.multiarray", "numpy.core.numeric"}

    def find_class(self, module: str, name: str):
        if module.startswith("numpy._core"):
            raise pickle.UnpicklingError(f"{module}.{name}: numpy < 1.26 has no numpy._core")
        if module in self.OLD:
            return getattr(np if module == "numpy" else np._core.multiarray, name)
        if module == "builtins" and name in {"bytearray", "bytes", "float", "int", "bool", "str", "dict", "list"}:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name}: not a numpy or builtin name")


def load_old(path: Path):
    with path.open("rb") as fh:
        return OldNumpyUnpickler(fh).load()


def behavenet_split(n_trials: int, seed: int, train: int, val: int, test: int, gap: int) -> dict[str, list[int]]:
    """BehaveNet's documented split, written here from its rules: blocks of train | gap | val | gap |
    test | gap trials; the grid starts at ``np.random.randint(0, leftover)`` after
    ``np.random.seed(seed)`` (no draw and 0 without leftover); trials off the grid are unused."""
    block = train + val + test + 3 * gap
    n_blocks = n_trials // block
    leftover = n_trials - n_blocks * block
    offset = int(np.random.RandomState(seed).randint(0, leftover)) if leftover > 0 else 0
    out: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for b in range(n_blocks):
        first = offset + b * block
        out["train"] += range(first, first + train)
        out["val"] += range(first + train + gap, first + train + gap + val)
        out["test"] += range(first + train + 2 * gap + val, first + train + 2 * gap + val + test)
    return out


def test_behavenet_files_read_back_as_behavenet_reads_them(encoded: Path, model_dir: Path):
    """BehaveNet's generator reads ``d = pickle.load(f)``, then ``d['latents'][i].astype('float32')`` for
    each trial ``i`` of ``d['trials'][dtype]``; its ARHMM and decoder scripts read ``meta_tags.pkl``
    (the model's hparams) from the folder of the latents file."""
    folder = encoded / "new.behavenet"
    assert sorted(p.name for p in folder.iterdir()) == ["meta_tags.pkl", "new_latents.pkl"]
    d = load_old(folder / "new_latents.pkl")  # numpy 1.17's names only: numpy._core would fail
    assert b"numpy._core" not in (folder / "new_latents.pkl").read_bytes()
    assert b"numpy._core" not in (folder / "meta_tags.pkl").read_bytes()
    with np.load(encoded / "new.npz") as f:
        mean = f["mean"]
    assert isinstance(d["latents"], list) and len(d["latents"]) == 6
    for i, trial in enumerate(d["latents"]):
        assert trial.astype("float32").shape == (15, 6) and trial.flags.writeable
        assert np.array_equal(trial, mean[15 * i : 15 * (i + 1)])
    # BehaveNet's split of 6 trials with the study's '3;1;1;0' and data seed 0: one block of 5 at
    # offset randint(0, 1) = 0, trial 5 unused (the study's blocked split would train on it)
    expected = behavenet_split(6, 0, 3, 1, 1, 0)
    assert expected == {"train": [0, 1, 2], "val": [3], "test": [4]}
    for dtype in ("train", "val", "test"):
        assert d["trials"][dtype].tolist() == expected[dtype]
        batch = [d["latents"][i].astype("float32") for i in d["trials"][dtype]]
        assert all(np.isfinite(x).all() for x in batch)
    tags = load_old(folder / "meta_tags.pkl")
    assert tags["model_class"] == "ps-vae" and tags["n_ae_latents"] == 6 and tags["n_labels"] == 4
    assert tags["trial_splits"] == "3;1;1;0" and tags["rng_seed_data"] == 0 and tags["training_completed"] is True
    assert (tags["y_pixels"], tags["x_pixels"], tags["n_input_channels"]) == (32, 32, 1)
    assert Path(tags["ae_latents_file"]) == folder / "new_latents.pkl"
    assert tags["psvae_opt_trials"]["train"] == split_trials(6, (3, 1, 1, 0), 0)["train"].tolist()
    assert (
        tags["psvae_opt"]["bundle"]["weights_sha256"]
        == json.loads((model_dir / "bundle.json").read_text())["weights_sha256"]
    )


@pytest.mark.parametrize(
    "n_trials, seed, counts", [(23, 0, (8, 1, 1, 0)), (40, 7, (5, 1, 1, 1)), (61, 3, (8, 1, 1, 0))]
)
def test_behavenet_trials_follow_behavenets_rules(n_trials: int, seed: int, counts):
    from psvae_opt.inference.behavenet import behavenet_trials

    got = behavenet_trials({"split": {"counts": list(counts), "data_seed": seed, "mode": "blocked"}}, n_trials)
    assert {k: v.tolist() for k, v in got.items()} == behavenet_split(n_trials, seed, *counts)


def test_the_portable_pickle_round_trips_arrays_and_numpy_scalars(tmp_path: Path):
    from psvae_opt.inference.behavenet import dump

    value = {"a": np.arange(12, dtype=np.float32).reshape(3, 4)[:, ::2], "b": np.int64(3), "c": np.float32(0.5),
             "d": [np.zeros((0, 2)), np.array([True, False])]}  # fmt: skip
    dump(value, tmp_path / "x.pkl")
    back = load_old(tmp_path / "x.pkl")
    assert np.array_equal(back["a"], value["a"]) and back["a"].dtype == np.float32
    assert type(back["b"]) is int and back["b"] == 3 and type(back["c"]) is float and back["c"] == 0.5
    assert back["d"][0].shape == (0, 2) and back["d"][1].tolist() == [True, False]


def test_nwb_holds_time_series_in_the_behavior_module(encoded: Path):
    from pynwb import NWBHDF5IO

    with np.load(encoded / "new.npz") as f, NWBHDF5IO(str(encoded / "new.nwb"), "r") as io:
        behavior = io.read().processing["behavior"]
        latents = behavior["psvae_latents"]
        assert np.allclose(latents.data[:], f["mean"]) and latents.timestamps[:].tolist() == pytest.approx(
            (np.arange(90) / 30.0).tolist()
        )
        assert (
            np.allclose(behavior["psvae_labels_px"].data[:], f["labels_px"])
            and behavior["psvae_labels_px"].unit == "pixels"
        )
        assert np.allclose(behavior["psvae_latent_variances"].data[:], f["variance"])


def test_nwb_appends_to_a_copy_of_the_sessions_file_with_the_videos_timestamps(
    tmp_path: Path, model_dir: Path, h5: Path, cli
):
    import datetime

    from pynwb import NWBHDF5IO, NWBFile
    from pynwb.image import ImageSeries

    source = tmp_path / "session.nwb"
    stamps = 100.0 + np.cumsum(np.full(90, 0.034))  # a camera at about 29.4 fps, from t = 100 s
    nwb = NWBFile("a session", "id-1", datetime.datetime(2024, 5, 1, tzinfo=datetime.UTC))
    nwb.add_acquisition(
        ImageSeries(name="video", external_file=["cam.mp4"], format="external", timestamps=stamps, unit="n.a.")
    )
    with NWBHDF5IO(str(source), "w") as io:
        io.write(nwb)
    before = source.read_bytes()
    result = cli(
        "encode", "--model", model_dir, "--out", tmp_path / "out", h5, "--format", "nwb", "--nwb-source", source
    )
    assert result.code == 0, result.err
    assert source.read_bytes() == before  # the session's own file is left alone
    with NWBHDF5IO(str(tmp_path / "out" / "new.nwb"), "r") as io:
        copy = io.read()
        assert copy.identifier == "id-1" and "video" in copy.acquisition
        assert np.allclose(copy.processing["behavior"]["psvae_latents"].timestamps[:], stamps)


# -- videos ----------------------------------------------------------------------------------------


def test_a_video_is_resized_and_converted_as_the_import_does(tmp_path: Path, model_dir: Path, h5: Path, cli):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (12, 40, 48), dtype=np.uint8)  # 40 x 48: resized to 32 x 32
    video = write_video(tmp_path / "cam.mp4", frames)
    result = cli("encode", "--model", model_dir, "--out", tmp_path / "out", "--video", video, "--trial-length", "5")
    assert result.code == 0, result.err
    model = load_model(model_dir)
    imported = read_video(video, 32).frames  # the import's reader
    with np.load(tmp_path / "out" / "cam.npz") as f:
        assert np.allclose(f["mean"], model.encode(imported), atol=1e-6)
        assert f["trial"].tolist() == [0] * 5 + [1] * 5 + [2] * 2
        assert np.allclose(f["time"], np.arange(12) / 25.0)
        # labels back in this video's pixels: x labels scaled by 48 / 32, y labels by 40 / 32
        expected = model.predict_labels(f["mean"], source_size=np.array([[40, 48]] * 4))
        assert np.allclose(f["labels_px"], expected, atol=1e-4)


# -- refusals: one line, nothing written ---------------------------------------------------------


def _refused(cli, out: Path, *args) -> str:
    line = one_line_error(cli("encode", "--out", out, "--no-progress", *args))
    assert not out.exists(), "a refused encode wrote its --out folder"
    assert not list(out.parent.glob(f".{out.name}.staging-*"))
    return line


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: (d / "bundle.json").unlink(), "not a model bundle"),
        (lambda d: (d / "bundle.json").write_text("{not json"), "damaged"),
        (lambda d: (d / "weights.pt").write_bytes(b"\0" * 100), "not the weights this bundle was exported with"),
        (lambda d: (d / "config.toml").unlink(), "has no config.toml"),
        (lambda d: _set_info(d, version=99), "bundle version 99"),
        (lambda d: _set_info(d, label_names=["a", "b", "c", "d", "e"]), "weights of another model"),
    ],
    ids=["no-json", "bad-json", "replaced-weights", "no-config", "version", "other-model"],
)
def test_a_bad_bundle_is_refused_in_one_line(tmp_path: Path, h5: Path, cli, damage, message):
    folder = make_bundle(tmp_path / "m", h5)
    damage(folder)
    assert message in _refused(cli, tmp_path / "out", "--model", folder, h5)


def _set_info(folder: Path, **changes) -> None:
    info = json.loads((folder / "bundle.json").read_text())
    (folder / "bundle.json").write_text(json.dumps({**info, **changes}))


def test_missing_bundle_folder_is_refused(tmp_path: Path, h5: Path, cli):
    assert "no such bundle folder" in _refused(cli, tmp_path / "out", "--model", tmp_path / "nothing", h5)


def test_mismatched_frames_and_labels_are_refused_naming_both(tmp_path: Path, model_dir: Path, h5: Path, cli):
    big = synth_session(tmp_path / "big.h5", size=64, trials=2, frames=5, seed=1)
    line = _refused(cli, tmp_path / "out", "--model", model_dir, h5, big)  # the good file first: still nothing
    assert "1 x 64 x 64" in line and "1 x 32 x 32" in line and "big.h5" in line
    views = synth_session(tmp_path / "views.h5", size=32, trials=2, frames=5, views=2, seed=1)
    assert "2 x 32 x 32" in _refused(cli, tmp_path / "out", "--model", model_dir, views)
    other = make_bundle(tmp_path / "m2", h5, label_names=["a_x", "b_x", "a_y", "b_y"])
    line = _refused(cli, tmp_path / "out", "--model", other, h5)
    assert "paw_front_x" in line and "a_x" in line


def test_unreadable_videos_are_refused_and_nothing_is_written(tmp_path: Path, model_dir: Path, cli):
    good = write_video(tmp_path / "good.mp4", np.full((4, 32, 32), 100, np.uint8))
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    line = _refused(cli, tmp_path / "out", "--model", model_dir, "--video", good, "--video", bad)
    assert "bad.mp4: cannot be read as a video" in line
    assert "not found" in _refused(cli, tmp_path / "out", "--model", model_dir, "--video", tmp_path / "none.mp4")


def test_bad_options_are_refused(tmp_path: Path, model_dir: Path, h5: Path, cli):
    assert "choose among npz, csv, dlc, behavenet, nwb" in _refused(
        cli, tmp_path / "o", "--model", model_dir, h5, "--format", "xls"
    )
    assert "give session files (HDF5), videos or folders" in _refused(cli, tmp_path / "o", "--model", model_dir)
    (tmp_path / "file").write_text("")
    assert "is a file" in one_line_error(cli("encode", "--model", model_dir, "--out", tmp_path / "file", h5))


def test_the_model_card_says_how_each_stage_chose_its_model():
    from psvae_opt.inference.card import model_card

    info = {
        "frame_shape": [1, 32, 32], "study": "s-stage1", "stage": 1, "trial": 2, "n_labels": 2,
        "label_names": ["a_x", "a_y"], "n_unsup": 2, "alpha": 100.0, "beta": 1.0, "model_seed": 0, "data_seed": 0,
        "split": {"counts": [8, 1, 1, 0]},
        "data_fingerprint": {"files": [{"file": "/d/x.h5"}]}, "run_dir": "/r", "metrics": {"val": {"label_r2": 0.91}},
        "recommendation": {"trial": 2, "alpha": 100.0, "n_unsup": 2},
        "stage_table": [{"alpha": 100.0, "n_unsup": 2, "n_seeds": 3, "n_collapsed": 1, "train_zu_corr_mean": 0.1,
                         "train_zu_corr_low": 0.05, "train_zu_corr_high": 0.15, "val_pixel_mse_mean": 0.01,
                         "val_label_r2_mean": 0.9, "mig_mean": None}],
    }  # fmt: skip
    card = model_card(info)
    assert "alpha 100 with n_unsup 2 is the knee" in card and "| 100 | 2 | 3 | 1 | 0.1 [0.05, 0.15] |" in card
    assert "| val | - | - | 0.91 | - |" in card
    rec = {"trial": 4, "beta": 5.0, "seed": 1, "criterion": "udr", "score": 0.9, "zu_corr": 0.02, "mig": 0.7,
           "betas": [1.0, 5.0], "p_best": [0.01, 0.99], "n_seeds": 5, "resolved": True, "differs": True,
           "guide": {"trial": 2, "beta": 1.0, "seed": 0, "criterion": "zu_corr", "score": -0.01, "zu_corr": 0.01,
                     "mig": 0.3}}  # fmt: skip
    card = model_card({**info, "stage": 2, "trial": 4, "recommendation": rec, "stage_table": []})
    assert "- recommended beta = 5 by udr: P(best) 0.99 over 5 paired seed(s), resolved" in card
    assert "- recommended model: trial 4, seed 1 (udr score 0.900, zu_corr 0.020, MIG 0.700)" in card
    assert "- the guide's rule (zu_corr) chooses otherwise: beta 1, trial 2, seed 0 (zu_corr 0.010, MIG 0.300)" in card
    assert "chosen by hand" in model_card({**info, "trial": 7})


def test_globs_encode_every_session_and_views_take_one_video_each(tmp_path: Path, h5: Path, cli):
    folder = tmp_path / "sessions"
    for seed in (1, 2):
        synth_session(folder / f"day{seed}.h5", size=32, trials=2, frames=5, seed=seed)
    model_dir = make_bundle(tmp_path / "m", h5)
    result = cli("encode", "--model", model_dir, "--out", tmp_path / "out", f"{folder}/*.h5", "--format", "npz,csv")
    assert result.code == 0, result.err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        f"day{d}.{ext}" for d in (1, 2) for ext in ("csv", "npz", "provenance.json")
    ]
    assert "label R^2" in result.out and "jaw" in result.out and "chest" in result.out
    two_views = make_bundle(tmp_path / "m2", synth_session(tmp_path / "v.h5", size=32, trials=2, frames=5, views=2))
    video = write_video(tmp_path / "side.mp4", np.zeros((3, 32, 32), np.uint8))
    line = _refused(cli, tmp_path / "out2", "--model", two_views, "--video", video)
    assert "1 videos for a model of 2 channels" in line
    rng = np.random.default_rng(1)
    bottom = write_video(tmp_path / "bottom.mp4", rng.integers(0, 255, (3, 36, 30), dtype=np.uint8))
    video = write_video(tmp_path / "side.mp4", rng.integers(0, 255, (3, 32, 32), dtype=np.uint8))
    result = cli("encode", "--model", two_views, "--out", tmp_path / "out3", "--video", video, "--video", bottom)
    assert result.code == 0, result.err
    stacked = np.stack([read_video(video, 32).frames, read_video(bottom, 32).frames], axis=1)  # views as channels
    with np.load(tmp_path / "out3" / "side.npz") as f:
        assert np.allclose(f["mean"], load_model(two_views).encode(stacked), atol=1e-6)
