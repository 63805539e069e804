"""The demo dataset: known, independent factors; labels that are the paw positions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from psvae_opt.data import load_session, synth_session
from psvae_opt.data.synth import FACTOR_NAMES, LABEL_NAMES
from psvae_opt.errors import ConfigError
from tests.conftest import one_line_error


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory):
    return load_session(synth_session(tmp_path_factory.mktemp("s") / "d.h5", size=64, trials=20, frames=100, seed=3))


def test_layout_sizes_and_names(demo):
    assert demo.images.shape == (2000, 1, 64, 64) and demo.images.dtype == np.uint8
    assert demo.n_trials == 20 and demo.label_names == LABEL_NAMES
    assert demo.factor_names == FACTOR_NAMES and demo.factors.shape == (2000, 6)
    assert demo.factor_labeled == (True, True, True, True, False, False)
    assert demo.attrs["source"] == "psvae-opt data synth"


def test_labels_are_zscored_pixel_coordinates_of_the_paw_factors(demo):
    np.testing.assert_allclose(demo.labels.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(demo.labels.std(0), 1, atol=1e-4)
    np.testing.assert_allclose(demo.labels_sc, demo.factors[:, :4] * 64 - 0.5, rtol=1e-5)
    means, stds = demo.attrs["label_means"], demo.attrs["label_stds"]
    np.testing.assert_allclose(demo.labels * stds + means, demo.labels_sc, atol=1e-3)


def test_each_labelled_paw_is_the_bright_spot_at_its_coordinates(demo):
    for t in (0, 500, 1999):
        for x_col, y_col in ((0, 2), (1, 3)):
            x, y = np.rint(demo.labels_sc[t, [x_col, y_col]]).astype(int)
            assert demo.images[t, 0, y, x] > 200  # paws are painted at 0.95 of full scale


def test_factors_are_independent_and_cover_their_ranges(demo):
    corr = np.corrcoef(demo.factors.T)
    off_diagonal = np.abs(corr[~np.eye(6, dtype=bool)])
    assert off_diagonal.max() < 0.2
    jaw, chest = demo.factors[:, 4], demo.factors[:, 5]
    assert jaw.min() < 0.2 and jaw.max() > 0.8 and chest.min() < 0.2 and chest.max() > 0.8


def test_the_unlabelled_factors_change_the_image(tmp_path: Path):
    from psvae_opt.data.synth import render_frames

    base = np.array([[0.4, 0.7, 0.7, 0.7, 0.5, 0.5]])
    rng = lambda: np.random.default_rng(0)  # noqa: E731
    for col in (4, 5):  # jaw, chest
        moved = base.copy()
        moved[0, col] = 1.0
        diff = np.abs(
            render_frames(moved, 64, 1, rng(), noise=0).astype(int) - render_frames(base, 64, 1, rng(), noise=0)
        )
        assert diff.sum() > 255 * 10  # at least ten pixels' worth of change


def test_two_views_and_seeds(tmp_path: Path):
    a = load_session(synth_session(tmp_path / "a.h5", size=64, trials=1, frames=10, views=2, seed=5))
    b = load_session(synth_session(tmp_path / "b.h5", size=64, trials=1, frames=10, views=2, seed=5))
    c = load_session(synth_session(tmp_path / "c.h5", size=64, trials=1, frames=10, views=2, seed=6))
    assert a.frame_shape == (2, 64, 64)
    np.testing.assert_array_equal(a.images, b.images)
    assert not np.array_equal(a.images, c.images)


@pytest.mark.parametrize(
    ("kwargs", "message"), [({"size": 50}, "--size 50"), ({"views": 3}, "--views 3"), ({"trials": 0}, "--trials 0")]
)
def test_bad_arguments_are_refused(tmp_path: Path, kwargs: dict, message: str):
    with pytest.raises(ConfigError, match=message):
        synth_session(tmp_path / "x.h5", **kwargs)


def test_cli_synth_then_check(tmp_path: Path, cli):
    out = tmp_path / "demo.h5"
    r = cli("data", "synth", out, "--size", "64", "--trials", "10", "--frames", "20", "--seed", "1")
    assert r.code == 0 and "10 trials x 20 frames" in r.out
    r = cli("data", "check", out)
    assert r.code == 0
    assert "trials        10 (20-20 frames each)" in r.out
    assert "frames        200" in r.out
    assert "frame shape   (1, 64, 64)" in r.out
    assert "labels        4: paw_front_x, paw_hind_x, paw_front_y, paw_hind_y" in r.out
    assert "masked        0.00%" in r.out


def _render(factors: np.ndarray) -> np.ndarray:
    from psvae_opt.data.synth import render_frames

    return render_frames(np.atleast_2d(factors), 64, 1, np.random.default_rng(0), noise=0).astype(float) / 255


def test_no_paw_or_limb_ever_covers_the_jaw():
    from psvae_opt.data.synth import RANGES

    rest = np.array([0.44, 0.74, 0.72, 0.72, 0.0, 0.5])
    opened = rest.copy()
    opened[4] = 1.0
    jaw_pixels = (_render(opened) != _render(rest))[0, 0]  # everything the jaw touches
    assert jaw_pixels.sum() > 150
    corners = np.array(
        np.meshgrid(*(RANGES[n] for n in ("paw_front_x", "paw_hind_x", "paw_front_y", "paw_hind_y")))
    ).reshape(4, -1)
    for jaw in (0.0, 0.5, 1.0):
        frames = np.concatenate([corners.T, np.tile([jaw, 0.5], (corners.shape[1], 1))], axis=1)
        reference = rest.copy()
        reference[4] = jaw
        moved = _render(frames)[:, 0] != _render(reference)[0, 0]
        assert not moved[:, jaw_pixels].any()  # the paws at every extreme leave the jaw alone


def test_the_jaw_changes_the_image_more_than_the_chest():
    # two unlabelled factors of similar effect would leave the VAE free to mix them
    from psvae_opt.data.synth import smooth_trajectories

    poses = smooth_trajectories(50, np.random.default_rng(4))

    def change(col: int) -> np.ndarray:
        low, high = poses.copy(), poses.copy()
        low[:, col], high[:, col] = 0.45, 0.55
        return ((_render(high) - _render(low)) ** 2).sum(axis=(1, 2, 3))

    jaw, chest = change(4), change(5)
    assert chest.min() > 1.0  # the chest does change the image
    assert (jaw / chest).min() > 2.0


@pytest.fixture(scope="module")
def scene_trajectories() -> dict[str, np.ndarray]:
    from psvae_opt.data.synth import SCENES, smooth_trajectories

    return {name: smooth_trajectories(3000, np.random.default_rng(11), name) for name in SCENES}


def test_every_scene_keeps_the_demo_draws_and_is_deterministic_per_seed(scene_trajectories):
    from psvae_opt.data.synth import SCENES, smooth_trajectories

    demo = scene_trajectories["demo"]
    for name in SCENES:
        again = smooth_trajectories(3000, np.random.default_rng(11), name)
        np.testing.assert_array_equal(again, scene_trajectories[name])
        assert not np.array_equal(smooth_trajectories(3000, np.random.default_rng(12), name), again)
    # the paws are the demo's in every scene; the jaw too, where its range is the demo's
    for name in ("three_unlabelled", "correlated", "equal_effect", "distractor"):
        np.testing.assert_array_equal(scene_trajectories[name][:, :5], demo[:, :5])
    np.testing.assert_array_equal(scene_trajectories["three_unlabelled"], demo)


def test_the_correlated_scene_moves_jaw_and_chest_together(scene_trajectories):
    for name, low, high in (("demo", -0.15, 0.15), ("correlated", 0.42, 0.58)):
        r = np.corrcoef(scene_trajectories[name][:, 4:6].T)[0, 1]
        assert low < r < high, (name, r)
    others = np.corrcoef(scene_trajectories["correlated"].T)[np.ix_([0, 1, 2, 3], [4, 5])]
    assert np.abs(others).max() < 0.2  # the paws stay independent of both
    from psvae_opt.data.synth import smooth_trajectories

    sessions = [smooth_trajectories(3000, np.random.default_rng(seed), "correlated")[:, 4:6] for seed in range(10)]
    assert np.mean([np.corrcoef(s.T)[0, 1] for s in sessions]) == pytest.approx(0.5, abs=0.04)


def test_the_equal_effect_scene_gives_jaw_and_chest_the_same_image_effect(scene_trajectories):
    from psvae_opt.data.synth import image_effect

    def ratio(name: str) -> float:
        poses = scene_trajectories[name][::3]  # 1,000 poses
        return image_effect(poses, 4, scene=name) / image_effect(poses, 5, scene=name)

    assert 0.85 < ratio("equal_effect") < 1.15  # mean |pixel change| per SD of each factor
    assert ratio("demo") < 0.8  # by this measure the demo's chest moves more pixels (by a little each)


def test_the_distractor_drifts_slowly_and_is_uncorrelated_with_every_factor(scene_trajectories):
    from psvae_opt.data.synth import SCENES, image_effect

    light = scene_trajectories["distractor"][:, 6]
    assert light.min() == pytest.approx(0.7) and light.max() == pytest.approx(1.1)
    r = np.corrcoef(scene_trajectories["distractor"].T)[6, :6]
    assert np.abs(r).max() < 1e-9  # orthogonal to the labels and the behaviour over the session
    lag1 = np.corrcoef(light[:-1], light[1:])[0, 1]
    assert lag1 > 0.99  # a drift, not a flicker
    assert image_effect(scene_trajectories["distractor"][:200], 6, scene="distractor") > 0.01
    assert SCENES["distractor"].behaviour == ("jaw", "chest")
    assert SCENES["three_unlabelled"].behaviour == ("paw_hind_y", "jaw", "chest")


def test_a_scene_session_names_its_factors_and_labels(tmp_path: Path):
    s = load_session(synth_session(tmp_path / "d.h5", size=32, trials=2, frames=20, seed=1, scene="distractor"))
    assert s.factor_names == (*FACTOR_NAMES, "light") and s.factor_labeled == (True,) * 4 + (False,) * 3
    assert s.attrs["scene"] == "distractor" and s.images.shape == (40, 1, 32, 32)
    t = load_session(synth_session(tmp_path / "t.h5", size=32, trials=2, frames=20, seed=1, scene="three_unlabelled"))
    assert t.label_names == ("paw_front_x", "paw_hind_x", "paw_front_y") and t.factor_labeled.count(False) == 3
    np.testing.assert_allclose(t.labels_sc, t.factors[:, [0, 1, 2]] * 32 - 0.5, rtol=1e-5)


def test_an_unknown_scene_is_refused_in_one_line_listing_the_scenes(tmp_path: Path, cli):
    with pytest.raises(ConfigError, match="--scene moon: no such scene; choose one of demo, three_unlabelled"):
        synth_session(tmp_path / "x.h5", scene="moon")
    line = one_line_error(cli("data", "synth", tmp_path / "x.h5", "--scene", "moon"))
    assert line.endswith("choose one of demo, three_unlabelled, correlated, equal_effect, distractor")
    assert not (tmp_path / "x.h5").exists()


def test_the_three_unlabelled_scene_draws_a_hind_paw_large_enough_to_be_learned(scene_trajectories):
    # at the demo's size its height changed the image by half as much as the jaw, and the models left it out
    from psvae_opt.data.synth import image_effect

    def ratio(name: str) -> float:
        poses = scene_trajectories[name][::6]
        return image_effect(poses, 3, scene=name) / image_effect(poses, 4, scene=name)

    assert ratio("demo") < 0.6 and 0.8 < ratio("three_unlabelled") < 1.1
