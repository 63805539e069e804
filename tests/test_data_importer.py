"""`psvae-opt data import` and `data import-labeled`: real data in, every malformed input refused."""

from __future__ import annotations

import contextlib
import csv
import io
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from psvae_opt.cli import main
from psvae_opt.data import load_session
from psvae_opt.data.importer import label_arrays
from psvae_opt.data.pose_files import read_poses
from psvae_opt.data.video import read_image, resize_frames, scale_points, unscale_points
from tests.conftest import one_line_error, run_cli_unprivileged
from tests.test_data_pose_files import write_dlc_csv, write_pose_nwb, write_slp
from tests.test_data_video import moving_frames, write_video

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
EKS = SHARED / "mirror-mouse-eks"
VIDEO, PREDICTIONS = EKS / "180607_004.mp4", EKS / "180607_004.train_frames=75.rng=0.csv"
EXAMPLE = SHARED / "mirror-mouse-example"
needs_shared = pytest.mark.skipif(
    not SHARED.exists(), reason="the shared data is not checked out beside the repository"
)


def csv_values(path: Path) -> np.ndarray:
    """(rows, columns) values of a pose CSV after its 3 header rows and index column (NaN = empty)."""
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))[3:]
    return np.array([[float(c) if c else np.nan for c in r[1:]] for r in rows])


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture(scope="module")
def eks64(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The mirror-mouse-eks session imported at 64x64 (first 1000 of 2000 label rows), and what it printed."""
    if not SHARED.exists():
        pytest.skip("the shared data is not checked out beside the repository")
    out = tmp_path_factory.mktemp("eks") / "eks64.h5"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(
            [
                "data",
                "import",
                "--video",
                str(VIDEO),
                "--labels",
                str(PREDICTIONS),
                "--out",
                str(out),
                "--size",
                "64",
                "--truncate",
            ]
        )
    assert code == 0
    return out, printed.getvalue()


# -- the real data ---------------------------------------------------------------------------


@needs_shared
def test_real_video_with_longer_labels_is_refused_with_both_counts(tmp_path: Path, cli):
    out = tmp_path / "eks.h5"
    line = one_line_error(
        cli("data", "import", "--video", VIDEO, "--labels", PREDICTIONS, "--out", out, "--size", "32")
    )
    assert "the video has 1000 frames but" in line and "has 2000 rows of labels" in line
    assert "--truncate to keep the first 1000 of both" in line
    assert leftovers(tmp_path) == []  # nothing written, no temporary file


@needs_shared
def test_real_import_passes_data_check(eks64, cli):
    out, printed = eks64
    assert (
        "1000 frames in 10 trials, 1x64x64" in printed
        and "kept the first 1000 frames (video 1000, labels 2000)" in printed
    )
    r = cli("data", "check", out)
    assert r.code == 0, r.err
    assert re.search(r"frames\s+1000\n", r.out) and re.search(r"labels\s+16: paw1LH_top_x, ", r.out)
    assert re.search(r"z-scored\s+yes", r.out)


@needs_shared
def test_real_import_masks_exactly_the_low_likelihood_points(eks64):
    s = load_session(eks64[0])
    likelihood = csv_values(PREDICTIONS)[:1000, 2::3]  # (1000, 8)
    assert s.n_frames == 1000 and s.n_labels == 16 and s.frame_shape == (1, 64, 64) and s.n_trials == 10
    low = likelihood < 0.9
    assert 0 < low.mean() < 0.05
    assert int((s.masks == 0).sum()) == 2 * int(low.sum())  # 52 of 8000 points: x and y of each
    assert s.masked_fraction == pytest.approx(low.mean(), abs=1e-6)  # 0.65 % (float32 mean)
    np.testing.assert_array_equal(s.masks, np.concatenate([~low, ~low], axis=1))  # x then y of each keypoint
    assert (s.labels[s.masks == 0] == 0).all()
    valid = s.masks > 0
    np.testing.assert_allclose(s.labels.mean(axis=0, where=valid), 0, atol=1e-5)  # z-scored over valid entries
    np.testing.assert_allclose(s.labels.std(axis=0, where=valid), 1, atol=1e-4)


@needs_shared
def test_real_labels_map_back_to_the_csv_pixels(eks64):
    s = load_session(eks64[0])
    values = csv_values(PREDICTIONS)[:1000]
    xy_csv = np.stack([values[:, 0::3], values[:, 1::3]], axis=-1)  # (1000, 8, 2)
    means, stds = np.asarray(s.attrs["label_means"]), np.asarray(s.attrs["label_stds"])
    valid = s.masks > 0
    np.testing.assert_allclose((s.labels * stds + means)[valid], s.labels_sc[valid], atol=1e-3)
    sc = np.stack([s.labels_sc[:, :8], s.labels_sc[:, 8:]], axis=-1)
    back = unscale_points(sc, tuple(s.attrs["source_frame_size"]), 64)
    np.testing.assert_allclose(back, xy_csv, atol=2e-3)  # float32 storage, far below a pixel
    assert tuple(s.attrs["source_frame_size"]) == (406, 396) and s.attrs["frame_rate"] == 250.0
    assert s.attrs["labels_file"] == PREDICTIONS.name and list(s.attrs["video_files"]) == ["180607_004.mp4"]
    assert s.attrs["labels_format"] == "dlc-csv" and s.attrs["likelihood_threshold"] == 0.9


@needs_shared
def test_real_labels_sit_on_the_paws_of_their_own_frame(eks64):
    # the paws are the brightest structures (data README): the labels of frame t must be brighter
    # on frame t than on its neighbours, so frames and labels are neither shifted nor flipped
    s = load_session(eks64[0])
    x = np.clip(np.rint(s.labels_sc[:, :8]).astype(int), 0, 63)
    y = np.clip(np.rint(s.labels_sc[:, 8:]).astype(int), 0, 63)
    t = np.arange(1, 999)
    under = {off: s.images[t[:, None] + off, 0, y[t], x[t]].mean() for off in (-1, 0, 1)}
    assert under[0] > under[-1] + 5 and under[0] > under[1] + 5
    assert under[0] > 3 * s.images.mean()


@needs_shared
def test_real_labeled_frames_import_with_nans_masked(tmp_path: Path, cli):
    out = tmp_path / "labeled.h5"
    r = cli(
        "data",
        "import-labeled",
        "--images",
        EXAMPLE,
        "--labels",
        EXAMPLE / "CollectedData.csv",
        "--out",
        out,
        "--size",
        "64",
    )
    assert r.code == 0, r.err
    s = load_session(out)
    values = csv_values(EXAMPLE / "CollectedData.csv")  # (90, 34): x, y per keypoint
    missing = np.isnan(values[:, 0::2]) | np.isnan(values[:, 1::2])
    assert s.n_frames == 90 and s.n_labels == 34 and s.n_trials == 90
    np.testing.assert_array_equal(s.masks, np.concatenate([~missing, ~missing], axis=1))
    assert s.masked_fraction == pytest.approx(np.isnan(values).mean())  # about 8.8 %, x and y missing together
    assert np.isnan(s.labels_sc[s.masks == 0]).all() and (s.labels[s.masks == 0] == 0).all()
    frame, shape = read_image(EXAMPLE / "labeled-data" / "img01.png", 64)
    np.testing.assert_array_equal(s.images[0, 0], frame)
    assert shape == (406, 396) and list(s.attrs["image_files"])[:2] == [
        "labeled-data/img01.png",
        "labeled-data/img02.png",
    ]
    sc = np.stack([s.labels_sc[:, :17], s.labels_sc[:, 17:]], axis=-1)
    np.testing.assert_allclose(
        unscale_points(sc, shape, 64), np.stack([values[:, 0::2], values[:, 1::2]], -1), atol=2e-3
    )
    assert cli("data", "check", out).code == 0


# -- small synthetic sessions ------------------------------------------------------------------


@pytest.fixture
def small(tmp_path: Path) -> dict:
    """A 23-frame 40x48 video with predictions for 2 keypoints."""
    rng = np.random.default_rng(0)
    values = np.column_stack(
        [
            rng.uniform(0, 48, 23),
            rng.uniform(0, 40, 23),
            np.full(23, 0.99),
            rng.uniform(0, 48, 23),
            rng.uniform(0, 40, 23),
            np.full(23, 0.99),
        ]
    )
    frames = moving_frames(23)
    return {
        "video": write_video(tmp_path / "side.avi", frames, fps=50),
        "frames": frames,
        "values": values,
        "labels": write_dlc_csv(tmp_path / "side.csv", ["nose", "paw"], values),
        "out": tmp_path / "out" / "s.h5",
    }


def _import(cli, small: dict, *extra: str):
    return cli(
        "data",
        "import",
        "--video",
        small["video"],
        "--labels",
        small["labels"],
        "--out",
        small["out"],
        "--size",
        "16",
        *extra,
    )


def test_trials_are_cut_with_the_last_short_one_kept(small: dict, cli):
    r = _import(cli, small, "--trial-length", "10")
    assert r.code == 0, r.err
    s = load_session(small["out"])
    assert np.diff(s.trial_starts).tolist() == [10, 10, 3] and s.trial_names[-1] == "trial_0002"
    np.testing.assert_array_equal(s.images[:, 0], resize_frames(small["frames"], 16))
    assert s.attrs["frame_rate"] == 50.0 and "23 frames in 3 trials, 1x16x16" in r.out


def test_two_views_are_stacked_as_channels(small: dict, tmp_path: Path, cli):
    bottom = moving_frames(23, 30, 30, seed=5)
    r = _import(cli, small, "--video", write_video(tmp_path / "bottom.avi", bottom))
    assert r.code == 0, r.err
    s = load_session(small["out"])
    assert s.frame_shape == (2, 16, 16)
    np.testing.assert_array_equal(s.images[:, 1], resize_frames(bottom, 16))
    assert list(s.attrs["video_files"]) == ["side.avi", "bottom.avi"]


def test_keypoints_flag_picks_and_orders(small: dict, cli):
    assert _import(cli, small, "--keypoints", "paw,nose").code == 0
    s = load_session(small["out"])
    assert s.label_names == ("paw_x", "nose_x", "paw_y", "nose_y")


def test_the_threshold_masks_below_it_and_statistics_ignore_masked_entries(tmp_path: Path):
    values = np.array(
        [[10.0, 20, 0.95], [12, 22, 0.9], [1e6, 1e6, 0.2], [14, np.nan, 0.99], [16, 26, np.nan], [18, 28, 1.0]]
    )
    poses = read_poses(write_dlc_csv(tmp_path / "p.csv", ["nose"], values))
    labels, masks, labels_sc, means, stds = label_arrays(poses, (64, 64), 64, 0.9)
    np.testing.assert_array_equal(masks[:, 0], [1, 1, 0, 0, 0, 1])  # 0.9 itself is kept; NaN point or likelihood masked
    kept = np.array([10.0, 12, 18])
    assert means[0] == pytest.approx(kept.mean()) and stds[0] == pytest.approx(kept.std())  # the 1e6 outlier is ignored
    assert labels[2, 0] == 0 and labels_sc[2, 0] == pytest.approx(1e6) and np.isnan(labels_sc[3, 1])


# -- every malformed input: one line, exit code 1, nothing written ------------------------------


def _expect_refusal(result, pattern: str, small: dict) -> None:
    line = one_line_error(result)
    assert result.code == 1
    assert re.search(pattern, line), line
    assert not small["out"].parent.exists() or leftovers(small["out"].parent) == []


def test_frame_count_mismatch_gives_both_counts_unless_truncated(small: dict, tmp_path: Path, cli):
    small["labels"] = write_dlc_csv(tmp_path / "long.csv", ["nose", "paw"], np.vstack([small["values"]] * 2))
    _expect_refusal(
        _import(cli, small), r"side.avi: the video has 23 frames but .*long.csv has 46 rows of labels", small
    )
    r = _import(cli, small, "--truncate")
    assert r.code == 0 and load_session(small["out"]).n_frames == 23
    small["video"] = write_video(tmp_path / "long.avi", moving_frames(50))
    assert _import(cli, small, "--truncate").code == 0 and load_session(small["out"]).n_frames == 46  # labels shorter


MALFORMED = {
    "unknown_keypoint": (
        ["--keypoints", "nose,tail"],
        r"no keypoint 'tail' in this file \(it has: nose, paw\); fix --keypoints",
    ),
    "track": (["--track", "1"], r"--track 1 but the file has 1 animal\(s\)"),
    "size": (["--size", "3"], r"--size 3: frames must be at least 5 pixels"),
    "threshold": (["--likelihood-threshold", "1.5"], r"--likelihood-threshold 1.5: must be between 0 and 1"),
    "trial_length": (["--trial-length", "0"], r"--trial-length 0: must be >= 1 frame"),
}


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_bad_flags_are_refused(small: dict, cli, kind: str):
    extra, pattern = MALFORMED[kind]
    _expect_refusal(_import(cli, small, *extra), pattern, small)


def test_a_labels_file_of_no_known_format_is_refused(small: dict, cli):
    small["labels"].write_text("frame,nose_x,nose_y\n0,1,2\n")
    _expect_refusal(
        _import(cli, small), r"side.csv: not a pose file of a known format \(known: .*SLEAP analysis HDF5", small
    )


def test_a_missing_labels_file_is_refused(small: dict, cli):
    small["labels"].unlink()
    _expect_refusal(_import(cli, small), r"side.csv: labels file not found; check --labels", small)


def test_an_unreadable_video_is_refused(small: dict, cli):
    small["video"].write_bytes(b"\x00" * 1000)
    _expect_refusal(_import(cli, small), r"side.avi: cannot be read as a video", small)


def test_views_of_different_lengths_are_refused(small: dict, tmp_path: Path, cli):
    short = write_video(tmp_path / "bottom.avi", moving_frames(20))
    _expect_refusal(
        _import(cli, small, "--video", short, "--truncate"),
        r"the views differ in length \(side.avi has 23, bottom.avi has 20 frames\)",
        small,
    )


def test_a_constant_label_cannot_be_z_scored(small: dict, cli):
    small["values"][:, 3] = 7.0
    write_dlc_csv(small["labels"], ["nose", "paw"], small["values"])
    _expect_refusal(_import(cli, small), r"label paw_x is constant .*leave its keypoint out with --keypoints", small)


def test_a_refused_import_leaves_an_existing_file_alone(small: dict, cli):
    small["out"].parent.mkdir()
    small["out"].write_bytes(b"previous")
    assert _import(cli, small, "--keypoints", "tail").code == 1
    assert small["out"].read_bytes() == b"previous" and leftovers(small["out"].parent) == ["s.h5"]


def test_labeled_frames_whose_image_is_missing_are_refused(tmp_path: Path, cli):
    (tmp_path / "labeled-data").mkdir()
    np.save(tmp_path / "unused.npy", np.zeros(1))
    labels = write_dlc_csv(
        tmp_path / "CollectedData.csv", ["nose"], np.ones((1, 2)), coords=("x", "y"), index=["labeled-data/img07.png"]
    )
    out = tmp_path / "out" / "l.h5"
    line = one_line_error(cli("data", "import-labeled", "--images", tmp_path, "--labels", labels, "--out", out))
    assert "image labeled-data/img07.png is not under" in line and "the one that holds labeled-data/" in line
    assert not out.parent.exists()


# -- end to end: the imported real session trains and completes a small stage 1 ----------------


@pytest.mark.slow
@needs_shared
def test_imported_real_session_completes_a_small_stage1(eks64, tmp_path: Path, cli):
    import optuna

    from psvae_opt.search.storage import open_database

    study_file = Path(__file__).resolve().parents[1] / "studies" / "mirror-mouse.toml"
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    tiny = [
        f"data.path={eks64[0]}",
        f"study.runs_dir={tmp_path / 'runs'}",
        "model.channels=[8, 16, 32, 64, 128]",
        "train.max_epochs=12",
        "train.precision=fp32",  # the same numbers on CPUs with and without bf16
        "train.batch_size=32",
        "loss.anneal_epochs=1",
        "stage1.alphas=[100.0, 1000.0]",
    ]
    sets = [a for s in tiny for a in ("--set", s)]
    r = cli("stage1", "--config", study_file, *sets, "--workers", "1", "--storage", url)
    assert r.code == 0, r.err
    study = optuna.load_study(study_name="mirror-mouse-stage1", storage=open_database(url).storage)
    trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert sorted(t.params["alpha"] for t in trials) == [100.0, 1000.0]
    r2 = {t.params["alpha"]: t.user_attrs["val_label_r2"] for t in trials}
    # 12 epochs on 800 frames: the labels are already far better predicted than by their mean (R^2 = 0)
    assert min(r2.values()) > 0.2, r2
    assert all(0 < t.user_attrs["val_pixel_mse"] < 0.05 for t in trials)
    assert "recommended alpha = " in r.out


def test_an_output_path_that_is_a_folder_is_refused(small: dict, cli):
    small["out"].parent.mkdir(parents=True, exist_ok=True)
    folder = small["out"].parent / "sessions"
    folder.mkdir()
    small["out"] = folder
    line = one_line_error(_import(cli, small))
    assert f"--out {folder} is a folder; give the path of the .h5 file to write" in line
    assert list(folder.iterdir()) == []


def test_views_with_one_file_name_in_two_folders_are_told_apart(small: dict, tmp_path: Path, cli):
    (tmp_path / "cam2").mkdir()
    short = write_video(tmp_path / "cam2" / "side.avi", moving_frames(20))
    _expect_refusal(
        _import(cli, small, "--video", short, "--truncate"),
        r"the views differ in length \(.*side.avi has 23, .*cam2/side.avi has 20 frames\)",
        small,
    )


# -- more pose formats, one labels file per view ----------------------------------------------------


def source_pixels(s) -> np.ndarray:
    """(T, K, 2) label coordinates mapped back to each source video's pixels, from the z-scored labels."""
    means, stds = np.asarray(s.attrs["label_means"]), np.asarray(s.attrs["label_stds"])
    sc = s.labels * stds + means  # stored-frame pixels
    hw = np.asarray(s.attrs["label_source_size"], dtype=np.float64)  # (2K, 2): (H, W) per label
    k = s.n_labels // 2
    size = s.frame_shape[-1]
    x = (sc[:, :k] + 0.5) * hw[:k, 1] / size - 0.5
    y = (sc[:, k:] + 0.5) * hw[k:, 0] / size - 0.5
    return np.stack([x, y], axis=-1)


def test_a_slp_import_maps_frames_tracks_and_scores(tmp_path: Path, cli):
    rng = np.random.default_rng(7)
    xy = np.stack([rng.uniform(0, 48, (6, 2, 2)), rng.uniform(0, 40, (6, 2, 2))], axis=-1)  # (6, 2 animals, 2, 2)
    xy[3, 1] = np.nan  # animal 1 absent from frame 3
    scores = rng.uniform(0.3, 1.0, (6, 2, 2))
    labels = write_slp(tmp_path / "p.slp", xy, scores)  # frames 0-5 of an 8-frame video; its length not recorded
    video = write_video(tmp_path / "v.avi", moving_frames(8, 40, 48))
    out = tmp_path / "out.h5"
    r = cli(
        "data", "import", "--video", video, "--labels", labels, "--out", out, "--size", "16", "--track", "1",
        "--likelihood-threshold", "0.5",
    )  # fmt: skip
    assert r.code == 0, r.err
    assert "p.slp ends at frame 5; the video's later frames (of 8) have no pose and are masked" in r.out
    s = load_session(out)
    assert s.n_frames == 8 and s.label_names == ("head_x", "tail_x", "head_y", "tail_y")
    assert s.attrs["labels_format"] == "sleap-slp"
    valid = np.isfinite(xy[:, 1]).all(axis=-1) & (scores[:, 1] >= 0.5)  # (6, 2) of animal 1
    np.testing.assert_array_equal(s.masks[:6], np.concatenate([valid, valid], axis=1))
    assert (s.masks[6:] == 0).all() and 0 < valid.mean() < 1
    back = source_pixels(s)[:6]
    np.testing.assert_allclose(back[valid], xy[:, 1][valid], atol=1e-3)  # animal 1, not animal 0


def test_an_nwb_import_takes_the_chosen_pose_estimation(tmp_path: Path, cli):
    rng = np.random.default_rng(8)
    mice = {m: (rng.uniform(5, 35, (9, 2, 2)), rng.uniform(0.5, 1, (9, 2))) for m in ("mouse1", "mouse2")}
    labels = write_pose_nwb(tmp_path / "p.nwb", mice, timestamps=np.arange(9) / 30)
    video = write_video(tmp_path / "v.avi", moving_frames(9, 40, 48))
    out = tmp_path / "out.h5"
    args = ["data", "import", "--video", video, "--labels", labels, "--out", out, "--size", "16"]
    line = one_line_error(cli(*args))
    assert "holds 2 PoseEstimation containers (mouse1, mouse2); choose one with --pose-estimation" in line
    assert not out.exists()
    r = cli(*args, "--pose-estimation", "mouse2", "--likelihood-threshold", "0.75")
    assert r.code == 0, r.err
    s = load_session(out)
    xy, confidence = mice["mouse2"]
    valid = confidence >= 0.75
    np.testing.assert_array_equal(s.masks, np.concatenate([valid, valid], axis=1))
    np.testing.assert_allclose(source_pixels(s)[valid], xy[valid], atol=1e-3)
    assert s.attrs["labels_format"] == "nwb" and s.label_names == ("nose_x", "tail_x", "nose_y", "tail_y")


@pytest.fixture
def two_views(tmp_path: Path) -> dict:
    """A side view 40x48 (H x W) with nose and paw, a bottom view 30x60 with paw and tail; 23 frames."""
    rng = np.random.default_rng(9)
    side = np.column_stack([rng.uniform(0, 48, 23), rng.uniform(0, 40, 23), rng.uniform(0.5, 1, 23)] * 2)
    bottom = np.column_stack([rng.uniform(0, 60, 23), rng.uniform(0, 30, 23), rng.uniform(0.5, 1, 23)] * 2)
    return {
        "videos": [
            write_video(tmp_path / "side.avi", moving_frames(23, 40, 48)),
            write_video(tmp_path / "bottom.avi", moving_frames(23, 30, 60, seed=1)),
        ],
        "labels": [
            write_dlc_csv(tmp_path / "side.csv", ["nose", "paw"], side),
            write_dlc_csv(tmp_path / "bottom.csv", ["paw", "tail"], bottom),
        ],
        "values": [side, bottom],
        "out": tmp_path / "out" / "two.h5",
    }


def _two_view_import(cli, v: dict, *extra, labels=None):
    args = ["data", "import", "--out", v["out"], "--size", "16", "--likelihood-threshold", "0.6"]
    for video in v["videos"]:
        args += ["--video", video]
    for file in v["labels"] if labels is None else labels:
        args += ["--labels", file]
    return cli(*args, *extra)


def test_one_labels_file_per_view_keeps_each_view_in_its_own_pixels(two_views: dict, cli):
    r = _two_view_import(cli, two_views)
    assert r.code == 0, r.err
    s = load_session(two_views["out"])
    names = ["nose_side", "paw_side", "paw_bottom", "tail_bottom"]
    assert s.label_names == tuple([f"{n}_x" for n in names] + [f"{n}_y" for n in names])
    assert list(s.attrs["keypoint_names"]) == names and list(s.attrs["view_names"]) == ["side", "bottom"]
    assert s.attrs["label_source_size"].tolist() == [[40, 48], [40, 48], [30, 60], [30, 60]] * 2
    assert s.attrs["view_frame_sizes"].tolist() == [[40, 48], [30, 60]]
    assert list(s.attrs["labels_files"]) == ["side.csv", "bottom.csv"] and s.frame_shape == (2, 16, 16)
    side, bottom = two_views["values"]
    want = np.concatenate(
        [np.stack([v[:, 0::3], v[:, 1::3]], axis=-1) for v in (side, bottom)], axis=1
    )  # (23, 4, 2) in each view's pixels
    likelihood = np.concatenate([side[:, 2::3], bottom[:, 2::3]], axis=1)
    valid = likelihood >= 0.6
    np.testing.assert_array_equal(s.masks, np.concatenate([valid, valid], axis=1))
    np.testing.assert_allclose(source_pixels(s)[valid], want[valid], atol=1e-3)
    sc = np.stack([s.labels_sc[:, :4], s.labels_sc[:, 4:]], axis=-1)
    np.testing.assert_allclose(sc[:, 2], scale_points(want[:, 2], (30, 60), 16), atol=1e-3)  # bottom: 60 wide


def test_view_names_and_keypoints_of_several_views(two_views: dict, cli):
    r = _two_view_import(cli, two_views, "--view-names", "top,bot", "--keypoints", "tail_bot,nose_top")
    assert r.code == 0, r.err
    s = load_session(two_views["out"])
    assert s.label_names == ("tail_bot_x", "nose_top_x", "tail_bot_y", "nose_top_y")
    assert s.attrs["label_source_size"].tolist() == [[30, 60], [40, 48]] * 2
    line = one_line_error(_two_view_import(cli, two_views, "--keypoints", "paw"))
    assert "no keypoint 'paw' in the labels files (they have: nose_side, paw_side, paw_bottom, tail_bottom)" in line


def test_a_labels_count_that_fits_no_rule_is_refused(two_views: dict, cli):
    labels = [*two_views["labels"], two_views["labels"][0]]
    line = one_line_error(_two_view_import(cli, two_views, labels=labels))
    assert "--labels given 3 times for 2 --video; give one labels file for all views or one per --video" in line
    assert not two_views["out"].parent.exists()


def test_one_labels_file_for_two_views_is_in_the_first_videos_pixels(two_views: dict, cli):
    r = _two_view_import(cli, two_views, labels=two_views["labels"][:1])
    assert r.code == 0, r.err
    s = load_session(two_views["out"])
    assert s.label_names == ("nose_x", "paw_x", "nose_y", "paw_y")
    assert s.attrs["label_source_size"].tolist() == [[40, 48]] * 4 and tuple(s.attrs["source_frame_size"]) == (40, 48)


# -- bad inputs: one line, nothing written or changed ------------------------------------------------


def test_an_unknown_coords_column_leaves_an_existing_output_untouched(small: dict, cli):
    write_dlc_csv(small["labels"], ["nose", "paw"], small["values"], coords=("x", "y", "prob"))
    small["out"].parent.mkdir()
    small["out"].write_bytes(b"an earlier import")
    line = one_line_error(_import(cli, small))
    assert "names a column 'prob' (of nose) (and 1 more), which is not one of x, y, likelihood" in line
    assert small["out"].read_bytes() == b"an earlier import" and leftovers(small["out"].parent) == ["s.h5"]


def _unwritable_commands(tmp: Path, out: Path, small: dict) -> dict[str, list]:
    """The three writing commands. The video and the image folder do not exist: the output is
    checked before any input is decoded, so the refusal names the output, not them."""
    return {
        "import": ["data", "import", "--video", tmp / "missing.avi", "--labels", small["labels"], "--out", out],
        "import-labeled": [
            "data",
            "import-labeled",
            "--images",
            tmp / "nowhere",
            "--labels",
            small["labels"],
            "--out",
            out,
        ],
        "synth": ["data", "synth", out, "--size", "32", "--trials", "2", "--frames", "2"],
    }


@pytest.mark.parametrize("command", ["import", "import-labeled", "synth"])
def test_an_output_under_a_regular_file_is_one_line(small: dict, tmp_path: Path, cli, command: str):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("not a folder")
    out = blocker / "sub" / "s.h5"
    line = one_line_error(cli(*_unwritable_commands(tmp_path, out, small)[command]))
    assert f"{out}: {blocker} is a file, not a folder; choose an output path in a folder" in line
    assert blocker.read_text() == "not a folder"


@pytest.mark.parametrize("command", ["import", "import-labeled", "synth"])
def test_an_output_folder_without_write_permission_is_one_line(small: dict, tmp_path: Path, cli, command: str):
    locked = tmp_path / "locked"
    locked.mkdir()
    out = locked / "s.h5"
    args = [str(a) for a in _unwritable_commands(tmp_path, out, small)[command]]
    locked.chmod(0o555)
    try:
        line = one_line_error(run_cli_unprivileged(args, tmp_path))
        assert f"{out}: no permission to write in {locked}; choose a folder you can write to" in line
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


def test_a_slp_without_the_extra_is_one_line_naming_the_pip_command(tmp_path: Path, cli, monkeypatch):
    xy = np.random.default_rng(10).uniform(0, 30, (4, 1, 2, 2))
    labels = write_slp(tmp_path / "p.slp", xy, np.ones((4, 1, 2)), tracks=None)
    monkeypatch.setitem(sys.modules, "sleap_io", None)  # as if `pip install psvae-opt` had no [poses]
    out = tmp_path / "out.h5"
    line = one_line_error(cli("data", "import", "--video", tmp_path / "v.avi", "--labels", labels, "--out", out))
    assert line == (
        f"psvae-opt: error: {labels}: reading sleap-slp files needs the poses extra (sleap_io is not installed): "
        "pip install 'psvae-opt[poses]'"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.slp"]
