"""Latent traversals: ranges at the stated percentiles, sweeps, grids, movies and their MP4."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from psvae_opt.config import Config, dump_config
from psvae_opt.data import load_session, split_frames, synth_session
from psvae_opt.errors import ConfigError
from psvae_opt.model.network import PSVAE
from psvae_opt.reports import traversals as tv
from psvae_opt.training.loop import fit
from psvae_opt.training.run_folder import load_latents
from psvae_opt.training.trained import dim_names, load_run, traversal_ranges


@pytest.fixture(scope="module")
def model() -> PSVAE:
    torch.manual_seed(0)
    return PSVAE((1, 32, 32), n_labels=2, n_unsup=2, channels=(4, 8, 8, 8, 8), seed=0).eval()


def test_supervised_ranges_predict_the_5th_and_95th_label_percentiles_unsupervised_the_15th_85th():
    rng = np.random.default_rng(0)
    mu = rng.standard_normal((500, 5)) * [1, 2, 3, 0.5, 4]
    labels = rng.standard_normal((500, 2)) * [1.0, 3.0] + [0.5, -1.0]
    masks = np.ones((500, 2))
    masks[:100, 0] = 0
    labels[:100, 0] = 50.0  # masked entries (stored as anything) must not move the percentile
    scale, bias = np.array([2.0, -0.5]), np.array([0.3, 1.0])
    lower, upper = traversal_ranges(mu, labels, masks, scale, bias)
    for k in range(2):
        valid = masks[:, k] > 0
        assert scale[k] * lower[k] + bias[k] == pytest.approx(np.percentile(labels[valid, k], 5))
        assert scale[k] * upper[k] + bias[k] == pytest.approx(np.percentile(labels[valid, k], 95))
    assert lower[1] > upper[1]  # d < 0: label order kept, latent order flipped
    for k in (2, 3, 4):
        assert (lower[k], upper[k]) == pytest.approx(tuple(np.percentile(mu[:, k], [15, 85])))


def test_a_supervised_dim_without_a_label_map_falls_back_to_its_own_percentiles():
    rng = np.random.default_rng(1)
    mu, labels = rng.standard_normal((200, 3)), rng.standard_normal((200, 2))
    masks = np.ones((200, 2))
    masks[:, 1] = 0  # no valid label
    lower, upper = traversal_ranges(mu, labels, masks, np.array([0.0, 1.0]), np.zeros(2))
    for k in (0, 1):
        assert (lower[k], upper[k]) == pytest.approx(tuple(np.percentile(mu[:, k], [5, 95])))


def test_each_sweep_moves_only_its_own_dim_from_lower_to_upper():
    base, lower, upper = np.array([0.1, 0.2, 0.3]), np.array([-1.0, -2.0, -3.0]), np.array([1.0, 2.0, 3.0])
    z = tv.sweep_latents(base, lower, upper, np.linspace(0, 1, 5))
    assert z.shape == (3, 5, 3)
    for k in range(3):
        assert z[k, :, k].tolist() == pytest.approx(np.linspace(lower[k], upper[k], 5).tolist())
        others = [j for j in range(3) if j != k]
        assert np.all(z[k][:, others] == base[others])
    phase = tv.sweep_phase(4)
    assert phase.tolist() == pytest.approx([0, 1 / 3, 2 / 3, 1, 2 / 3, 1 / 3, 0])  # lower -> upper -> lower


def test_the_traversal_grid_holds_decoded_sweeps_and_their_difference_from_the_base(model: PSVAE):
    base = np.array([0.5, -0.5, 0.2, 0.1], np.float32)
    lower, upper = -np.ones(4), np.ones(4)
    grid = tv.traversal_grid(model, base, np.zeros((1, 32, 32)), lower, upper, dim_names(["a", "b"], 2), n_steps=3)
    assert grid.names == ("a", "b", "z_u0", "z_u1")
    assert grid.values.tolist() == [[-1.0, 0.0, 1.0]] * 4
    assert grid.frames.shape == (4, 3, 1, 32, 32)
    with torch.no_grad():
        expected = model.decode(torch.tensor([[0.5, -0.5, 1.0, 0.1]])).numpy()[0]
        base_frame = model.decode(torch.from_numpy(base[None])).numpy()[0]
    assert np.allclose(grid.frames[2, 2], expected, atol=1e-6)
    assert np.allclose(grid.base, base_frame, atol=1e-6)
    assert np.allclose(grid.diffs, grid.frames - base_frame, atol=1e-6)
    image = tv.grid_image(grid, scale=2)
    assert image.size == (tv.LABEL_WIDTH + 2 * 66 + 8 + 3 * 66 + 8 + 3 * 66, tv.TITLE_HEIGHT + 4 * 66)
    titled = tv.grid_image(grid, scale=2, title="mouse_b: trial_0001, frame 2")
    assert titled.size == (image.size[0], image.size[1] + tv.TITLE_HEIGHT)  # a strip of its own for the title
    corner = np.asarray(image)[: tv.TITLE_HEIGHT, : tv.LABEL_WIDTH]
    title_corner = np.asarray(titled)[: tv.TITLE_HEIGHT, : tv.LABEL_WIDTH]
    assert (corner == 255).all() and (title_corner < 128).any()  # the title is written above the row labels
    # below the strip, the titled image is the untitled one
    assert (np.asarray(titled)[2 * tv.TITLE_HEIGHT :] == np.asarray(image)[tv.TITLE_HEIGHT :]).all()


def test_the_movie_has_every_base_sweep_and_blank_frames_between(model: PSVAE):
    bases = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    lower, upper = -np.ones(4), 2 * np.ones(4)
    frames = tv.movie_frames(model, bases, lower, upper, ["a", "b", "z_u0", "z_u1"], n_steps=5, n_blank=4, scale=2)
    per_base = 2 * 5 - 1
    assert frames.shape == (3 * per_base + 2 * 4, 2 * (tv.TITLE_HEIGHT + 64), 2 * 64, 3)  # 2 x 2 panels
    assert not frames[per_base : per_base + 4].any() and frames[per_base + 4].any()  # blank, then the next base
    # second base, top of the upward sweep (phase 1): panel 3 (row 1, col 1) shows dim 3 at its upper end
    z = bases[1].copy()
    z[3] = 2.0
    with torch.no_grad():
        expected = model.decode(torch.from_numpy(z[None])).numpy()[0, 0]
    t = per_base + 4 + 4
    y0 = 2 * tv.TITLE_HEIGHT + 64
    panel = frames[t, y0 : y0 + 64, 64:128, 0].astype(float)
    assert np.abs(panel - np.repeat(np.repeat(expected * 255, 2, 0), 2, 1)).max() <= 1.0


def test_a_captioned_movie_names_each_base_frame_above_its_panels(model: PSVAE):
    bases = np.random.default_rng(1).standard_normal((2, 4)).astype(np.float32)
    lower, upper, names = -np.ones(4), np.ones(4), ["a", "b", "z_u0", "z_u1"]
    plain = tv.movie_frames(model, bases, lower, upper, names, n_steps=3, n_blank=2, scale=2)
    captions = ["base 1/2: mouse_a: trial_0003, frame 0", "base 2/2: mouse_b: trial_0001, frame 4"]
    shown = tv.movie_frames(model, bases, lower, upper, names, n_steps=3, n_blank=2, scale=2, captions=captions)
    assert shown.shape == (plain.shape[0], plain.shape[1] + tv.TITLE_HEIGHT, *plain.shape[2:])
    per_base = 2 * 3 - 1
    strips = shown[:, : tv.TITLE_HEIGHT]
    assert (strips[:per_base] == strips[0]).all() and strips[0].any()  # one caption through a base's sweep
    assert not (strips[per_base + 2] == strips[0]).all()  # the next base has its own
    assert not strips[per_base : per_base + 2].any()  # blank frames stay black
    assert (shown[:, tv.TITLE_HEIGHT :] == plain).all()  # the panels, moved down by the strip


def test_frame_origin_names_the_session_trial_and_frame(tmp_path: Path):
    a = synth_session(tmp_path / "mouse_a.h5", size=32, trials=3, frames=4, seed=1)
    b = synth_session(tmp_path / "mouse_b.h5", size=32, trials=2, frames=5, seed=2)
    both = load_session([a, b])
    assert tv.frame_origin(both, 12 + 5 + 2) == "mouse_b: trial_0001, frame 2 (data frame 19)"
    assert tv.frame_origin(both, 0) == "mouse_a: trial_0000, frame 0 (data frame 0)"
    assert tv.frame_origin(load_session(b), 9) == "mouse_b: trial_0001, frame 4 (data frame 9)"


def test_movie_sizes_are_even_for_yuv420p():
    cols, rows, height, width = tv.movie_layout(3, (33, 35), 1)
    assert (cols, rows) == (2, 2) and height % 2 == 0 and width % 2 == 0
    assert (height, width) == (2 * (tv.TITLE_HEIGHT + 33), 70)


def test_write_mp4_writes_h264_with_every_frame(tmp_path: Path):
    frames = np.zeros((25, 48, 64, 3), np.uint8)
    frames[:, :, :, 0] = np.arange(25)[:, None, None] * 10
    path = tv.write_mp4(frames, tmp_path / "m.mp4", fps=10)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        assert stream.codec_context.name == "h264" and (stream.width, stream.height) == (64, 48)
    assert len(decoded) == 25
    assert [int(round(d[:, :, 0].mean() / 10)) for d in decoded] == list(range(25))  # in order
    with pytest.raises(ConfigError, match="even sizes"):
        tv.write_mp4(np.zeros((2, 5, 8, 3), np.uint8), tmp_path / "odd.mp4")


@pytest.mark.slow
def test_a_trained_run_gives_ranges_from_its_training_frames_and_writes_png_and_mp4(
    tiny_config: Config, tmp_path: Path
):
    session = load_session(tiny_config.data.path)
    frames = split_frames(session, tiny_config.data.split_counts, tiny_config.data.data_seed)
    fit(
        tiny_config.model,
        tiny_config.loss,
        tiny_config.train,
        session,
        frames,
        tmp_path / "run",
        config_text=dump_config(tiny_config),
        progress=False,
    )
    run = load_run(tmp_path / "run", session)
    train = run.split == 0
    assert train.sum() == len(frames["train"])
    n_labels = session.n_labels
    assert run.names == tuple(session.label_names) + ("z_u0", "z_u1")
    for j in range(2):
        assert (run.lower[n_labels + j], run.upper[n_labels + j]) == pytest.approx(
            tuple(np.percentile(run.mu[train, n_labels + j], [15, 85]))
        )
    d, b = run.model.label_scale.detach().numpy(), run.model.label_bias.detach().numpy()
    assert d * run.lower[:n_labels] + b == pytest.approx(np.percentile(session.labels[train], 5, axis=0), rel=1e-4)
    bases = tv.default_base_frames(run.split, 3)
    assert len(bases) == 3 and all(run.split[f] == 1 for f in bases)
    png = tv.write_traversal_png(run, session, tmp_path / "t.png", n_steps=4)
    # the base frame's origin, then the column heads, then one row per dim shown 128 px tall
    assert Image.open(png).size[1] == 2 * tv.TITLE_HEIGHT + 6 * (4 * 32 + 2)
    mp4 = tv.write_traversal_movie(run, session, tmp_path / "t.mp4", frames=bases[:2], n_steps=6, n_blank=3)
    with av.open(str(mp4)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 2 * 11 + 3
        assert container.streams.video[0].height == tv.TITLE_HEIGHT + 2 * (tv.TITLE_HEIGHT + 128)  # caption strip
    with pytest.raises(ConfigError, match="base frames"):
        tv.write_traversal_png(run, session, tmp_path / "x.png", frame=session.n_frames)
    # a run folder of an older version (no session array) is one session
    latents = dict(np.load(tmp_path / "run" / "latents.npz"))
    assert latents["session"].dtype == np.int16 and not latents["session"].any()
    np.savez(tmp_path / "run" / "latents.npz", **{k: v for k, v in latents.items() if k != "session"})
    assert load_latents(tmp_path / "run")["session"].tolist() == [0] * session.n_frames
    np.testing.assert_array_equal(load_run(tmp_path / "run", session).mu, run.mu)
    # data whose frames belong to other sessions than the run's are refused
    halves = dataclasses.replace(
        session,
        paths=(session.path, session.path.with_name("other.h5")),
        session_names=("tiny", "other"),
        trial_sessions=np.repeat([0, 1], session.n_trials // 2),
    )
    with pytest.raises(ConfigError, match="holds latents of other sessions than .*tiny.h5, .*other.h5"):
        load_run(tmp_path / "run", halves)


def test_an_unfinished_run_is_refused_in_one_line(tiny_config: Config, tmp_path: Path):
    from psvae_opt.errors import DataError

    session = load_session(tiny_config.data.path)
    run_dir = tmp_path / "unfinished"
    run_dir.mkdir()
    (run_dir / "config.toml").write_text(dump_config(tiny_config))
    with pytest.raises(DataError, match="no best.pt; the run has not finished an epoch"):
        load_run(run_dir, session)
    model = PSVAE(session.frame_shape, session.n_labels, tiny_config.model.n_unsup, channels=tiny_config.model.channels)
    torch.save({"model": model.state_dict(), "epoch": 0}, run_dir / "best.pt")
    with pytest.raises(DataError, match="no latents.npz; the run has not finished"):
        load_run(run_dir, session)
