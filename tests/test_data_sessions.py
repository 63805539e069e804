"""Several session files as one Session: order, names, session indices, agreement checks, globs."""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np
import pytest

from psvae_opt.config import dump_config, load_config
from psvae_opt.data import load_session, split_frames, synth_session
from psvae_opt.errors import ConfigError, DataError
from tests.conftest import one_line_error
from tests.test_data_layout import good_trials, write_raw


@pytest.fixture(scope="module")
def sessions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two demo sessions of one setup (5 and 7 trials), one of another frame size, one of other labels."""
    folder = tmp_path_factory.mktemp("sessions")
    return {
        "a": synth_session(folder / "mouse_a.h5", size=32, trials=5, frames=6, seed=1),
        "b": synth_session(folder / "mouse_b.h5", size=32, trials=7, frames=4, seed=2),
        "big": synth_session(folder / "other" / "mouse_big.h5", size=64, trials=3, frames=4, seed=3),
        "raw": write_raw(folder / "raw.h5", *good_trials(n_trials=2, t=5, n_labels=4)),
    }


def test_two_files_load_as_one_session(sessions: dict[str, Path]):
    a, b = load_session(sessions["a"]), load_session(sessions["b"])
    s = load_session([sessions["a"], sessions["b"]])
    assert s.n_frames == a.n_frames + b.n_frames == 30 + 28 and s.n_trials == 12
    assert s.paths == (sessions["a"], sessions["b"]) and s.path == sessions["a"] and s.n_sessions == 2
    assert s.session_names == ("mouse_a", "mouse_b")
    assert s.trial_sessions.tolist() == [0] * 5 + [1] * 7 and s.trial_sessions.dtype == np.int64
    assert s.frame_sessions.tolist() == [0] * 30 + [1] * 28
    assert s.trial_names[0] == "mouse_a/trial_0000" and s.trial_names[5] == "mouse_b/trial_0000"
    assert len(set(s.trial_names)) == 12
    np.testing.assert_array_equal(s.trial_starts, np.concatenate([a.trial_starts, b.trial_starts[1:] + 30]))
    np.testing.assert_array_equal(s.images, np.concatenate([a.images, b.images]))
    np.testing.assert_array_equal(s.labels, np.concatenate([a.labels, b.labels]))
    np.testing.assert_array_equal(s.factors, np.concatenate([a.factors, b.factors]))
    np.testing.assert_array_equal(s.labels_sc, np.concatenate([a.labels_sc, b.labels_sc]))
    assert s.factor_names == a.factor_names and s.label_names == a.label_names
    assert [m["seed"] for m in s.session_attrs] == [1, 2] and s.attrs["seed"] == 1


def test_one_file_is_one_session_as_before(sessions: dict[str, Path]):
    s = load_session(str(sessions["a"]))
    assert s.paths == (sessions["a"],) and s.session_names == ("mouse_a",) and s.n_sessions == 1
    assert s.trial_sessions.tolist() == [0] * 5 and s.trial_names[0] == "trial_0000"
    assert s.frame_sessions.tolist() == [0] * 30


def test_a_glob_names_the_sessions_in_name_order(sessions: dict[str, Path]):
    s = load_session(str(sessions["a"].parent / "mouse_*.h5"))
    assert s.paths == (sessions["a"], sessions["b"])  # not other/mouse_big.h5: the glob does not recurse
    assert load_session((str(sessions["b"]), str(sessions["a"].parent / "*_a.h5"))).session_names == (
        "mouse_b",
        "mouse_a",
    )


def test_equal_stems_are_told_apart_by_their_folders(tmp_path: Path):
    paths = [
        synth_session(tmp_path / m / "session.h5", size=32, trials=2, frames=3, seed=i) for i, m in enumerate("xy")
    ]
    s = load_session(paths)
    assert s.session_names == ("x/session", "y/session") and s.trial_names[2] == "y/session/trial_0000"


@pytest.mark.parametrize(
    "given, message",
    [
        ([], r"data.path: an empty list; give one session file or several"),
        (["{folder}/nothing_*.h5"], r"data.path: .*/nothing_\*.h5 matches no file; check the pattern"),
        (["{a}", "{folder}/*_a.h5"], r"data.path: .*/mouse_a.h5 is named twice \(also as .*mouse_a.h5\)"),
    ],
)
def test_empty_lists_unmatched_globs_and_repeats_are_refused(sessions: dict[str, Path], given, message: str):
    paths = [g.format(folder=sessions["a"].parent, a=sessions["a"]) for g in given]
    with pytest.raises(DataError, match=message):
        load_session(paths)


def test_sessions_of_different_frame_shapes_are_refused_naming_both(sessions: dict[str, Path], cli):
    line = one_line_error(cli("data", "check", sessions["a"], sessions["big"]))
    assert f"{sessions['a']} and {sessions['big']} differ in frame shape ((1, 32, 32) vs (1, 64, 64)" in line
    assert "import every session at one --size" in line


def test_sessions_of_different_labels_are_refused_naming_both(sessions: dict[str, Path], tmp_path: Path):
    renamed = tmp_path / "renamed.h5"
    renamed.write_bytes(sessions["b"].read_bytes())
    with h5py.File(renamed, "a") as f:
        f.attrs["label_names"] = ["paw_front_x", "paw_hind_x", "paw_front_y", "tail_y"]
    with pytest.raises(DataError, match=rf"{sessions['a']} and {renamed} differ in label names \('paw_hind_y' vs "):
        load_session([sessions["a"], renamed])
    with pytest.raises(DataError, match=r"differ in label names \(4 vs 3 labels\)"):
        load_session([sessions["a"], write_raw(tmp_path / "three.h5", *good_trials(n_labels=3))])


def test_factors_are_kept_only_when_every_session_has_the_same(sessions: dict[str, Path], tmp_path: Path):
    plain = tmp_path / "plain.h5"
    plain.write_bytes(sessions["b"].read_bytes())
    with h5py.File(plain, "a") as f:
        del f["factors"]
    s = load_session([sessions["a"], plain])
    assert s.factors is None and s.factor_names == () and s.labels_sc is not None


def test_a_study_over_two_sessions_loads_them_and_splits_within_each(sessions: dict[str, Path]):
    cfg = load_config(None, [f'data.path=["{sessions["a"]}", "{sessions["b"]}"]', "data.split=3;1;1;0"])
    assert cfg.data.path == (str(sessions["a"]), str(sessions["b"]))
    s = load_session(cfg.data.path)
    splits = split_frames(s, cfg.data.split_counts, cfg.data.data_seed)
    frames = np.concatenate(list(splits.values()))
    assert len(np.unique(frames)) == len(frames)  # no frame in two splits
    for name in ("train", "val", "test"):  # every session has a block of 3;1;1;0, so a part of every split
        assert set(s.frame_sessions[splits[name]]) == {0, 1}, name
    trial_of = np.searchsorted(s.trial_starts, np.arange(s.n_frames), side="right") - 1
    for name, idx in splits.items():  # whole trials only
        trials = np.unique(trial_of[idx])
        assert sum(np.diff(s.trial_starts)[trials]) == len(idx), name


def test_data_check_summarizes_each_file_then_the_whole(sessions: dict[str, Path], cli):
    r = cli("data", "check", sessions["a"], sessions["b"], "--split", "3;1;1;0")
    assert r.code == 0, r.err
    assert r.out.count("file          ") == 2 and f"file          {sessions['b']}" in r.out
    assert re.search(r"trials        5 \(6-6 frames each\)\nframes        30\n", r.out)
    assert re.search(r"trials        7 \(4-4 frames each\)\nframes        28\n", r.out)
    combined = [line for line in r.out.splitlines() if line.startswith("combined")]
    assert len(combined) == 1
    assert "2 sessions (mouse_a, mouse_b): 12 trials, 58 frames, (1, 32, 32) (C, H, W), 4 labels" in combined[0]
    assert "split 3;1;1;0 within each session: train " in combined[0]


def test_an_empty_trial_is_refused_at_load_naming_it(tmp_path: Path, cli):
    images, labels = good_trials(n_trials=10)
    images["trial_0009"], labels["trial_0009"] = images["trial_0009"][:0], labels["trial_0009"][:0]
    path = write_raw(tmp_path / "empty_trial.h5", images, labels)
    before = path.read_bytes()
    line = one_line_error(cli("data", "check", path))
    assert f"{path}: images/trial_0009 has 0 frames" in line
    assert "delete the trial from every group (images, labels, ...) or import again" in line
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["empty_trial.h5"]


def test_data_path_is_a_file_or_a_list_of_files_in_a_study(tmp_path: Path):
    cfg = load_config(None, ['data.path=["a.h5", "s/*.h5"]'])
    assert cfg.data.path == ("a.h5", "s/*.h5") and load_config(None, ["data.path=a.h5"]).data.path == "a.h5"
    study = tmp_path / "study.toml"
    study.write_text(dump_config(cfg))
    assert load_config(study) == cfg
    for bad in ("data.path=3", "data.path=[1, 2]"):
        with pytest.raises(ConfigError, match=r"data.path: expected str or a list of str, got "):
            load_config(None, [bad])
