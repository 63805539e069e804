"""Trial splits: the blocked default and BehaveNet's own assignment, one session or several."""

from __future__ import annotations

import numpy as np
import pytest

from psvae_opt.config import SPLIT_MODES as CONFIG_SPLIT_MODES
from psvae_opt.config import load_config
from psvae_opt.data import SPLITS, frame_indices, split_frames, split_trials
from psvae_opt.data.splits import SPLIT_MODES, behavenet_offset
from psvae_opt.errors import ConfigError, DataError


def _runs(idx: np.ndarray) -> list[tuple[int, int]]:
    """Consecutive runs (start, length) of sorted indices."""
    breaks = np.flatnonzero(np.diff(idx) != 1) + 1
    return [(int(r[0]), len(r)) for r in np.split(idx, breaks)]


def test_forty_trials_split_eight_one_one_in_contiguous_chunks():
    s = split_trials(40, (8, 1, 1, 0), seed=0)
    assert [len(s[k]) for k in ("train", "val", "test")] == [32, 4, 4]
    assert sorted(np.concatenate(list(s.values())).tolist()) == list(range(40))
    # each block of 10 holds its 8 training trials as one chunk (or two around a val/test trial
    # when the chunk order puts that in the middle), never as scattered single trials
    for block in range(4):
        in_block = s["train"][(s["train"] >= 10 * block) & (s["train"] < 10 * block + 10)]
        assert len(in_block) == 8
        assert len(_runs(in_block)) <= 2


def test_the_data_seed_changes_the_assignment_but_not_the_sizes():
    a, b = split_trials(40, (8, 1, 1, 0), seed=0), split_trials(40, (8, 1, 1, 0), seed=1)
    assert [len(a[k]) for k in a] == [len(b[k]) for k in b]
    assert any(not np.array_equal(a[k], b[k]) for k in a)
    np.testing.assert_array_equal(split_trials(40, (8, 1, 1, 0), seed=0)["val"], a["val"])


def test_gap_trials_belong_to_no_split_and_leftovers_train():
    # blocks of 8: 2 blocks, 7 leftover trials; seed 3 puts 6 before the grid and 1 after it:
    # "ttttt-ttt-T-v-ttt-v-T-t": the last leading one is a gap before the first chunk
    s = split_trials(23, (3, 1, 1, 1), seed=3)
    used = np.concatenate(list(s.values()))
    assert len(used) == len(set(used.tolist())) == 23 - 2 * 3 - 1
    assert len(s["val"]) == len(s["test"]) == 2 and len(s["train"]) == 2 * 3 + 6
    assert 5 not in used and {0, 1, 2, 3, 4, 22} <= set(s["train"].tolist())


def test_too_few_trials_is_a_clear_error():
    with pytest.raises(DataError, match=r"5 trials cannot fill one split block of 10 trials"):
        split_trials(5, (8, 1, 1, 0))


def test_frames_follow_their_trials():
    starts = np.array([0, 3, 3, 8, 10])  # trial 1 is empty
    np.testing.assert_array_equal(frame_indices(starts, np.array([0, 2])), [0, 1, 2, 3, 4, 5, 6, 7])
    frames = split_frames(starts, (1, 1, 1, 0), seed=0)
    assert sum(len(v) for v in frames.values()) == 10


@pytest.mark.parametrize("counts", [(8, 1, 1, 1), (3, 1, 1, 2), (8, 1, 1, 0)])
def test_no_two_splits_touch_when_a_gap_is_asked_for(counts):
    for n_trials in (23, 47, 61):
        for seed in range(25):
            where = np.full(n_trials, "-")
            for name, idx in split_trials(n_trials, counts, seed).items():
                where[idx] = {"train": "t", "val": "v", "test": "T"}[name]
            touching = [i for i in range(n_trials - 1) if "-" not in where[i : i + 2] and where[i] != where[i + 1]]
            if counts[3]:
                assert touching == [], f"{n_trials} trials, seed {seed}: {''.join(where)}"
            else:
                assert (where != "-").all()  # no gap asked for: every trial is used


# BehaveNet's split_trials, worked by hand: blocks of train | gap | val | gap | test | gap
# trials start at the offset, which is np.random.RandomState(seed).randint(0, leftover) when
# trials are left over (0 otherwise); trials off the grid belong to no split. The offsets of
# the legacy generator are listed beside each case (checked by the test below the table).
BEHAVENET_CASES = [
    # n_trials, counts, seed, offset, train, val, test
    (
        40,
        (8, 1, 1, 0),
        0,
        0,
        [*range(0, 8), *range(10, 18), *range(20, 28), *range(30, 38)],
        [8, 18, 28, 38],
        [9, 19, 29, 39],
    ),
    (
        40,
        (8, 1, 1, 0),
        7,
        0,
        [*range(0, 8), *range(10, 18), *range(20, 28), *range(30, 38)],
        [8, 18, 28, 38],
        [9, 19, 29, 39],
    ),
    (23, (8, 1, 1, 0), 0, 0, [*range(0, 8), *range(10, 18)], [8, 18], [9, 19]),
    (23, (8, 1, 1, 0), 1, 1, [*range(1, 9), *range(11, 19)], [9, 19], [10, 20]),
    (11, (8, 1, 1, 0), 12, 0, list(range(8)), [8], [9]),
    (23, (3, 1, 1, 1), 3, 2, [2, 3, 4, 10, 11, 12], [6, 14], [8, 16]),
    (25, (2, 1, 1, 2), 1, 3, [3, 4, 13, 14], [7, 17], [10, 20]),
    (19, (4, 1, 0, 0), 5, 3, [3, 4, 5, 6, 8, 9, 10, 11, 13, 14, 15, 16], [7, 12, 17], []),
]


@pytest.mark.parametrize(("n_trials", "counts", "seed", "offset", "train", "val", "test"), BEHAVENET_CASES)
def test_behavenet_mode_reproduces_behavenets_assignment(n_trials, counts, seed, offset, train, val, test):
    s = split_trials(n_trials, counts, seed, mode="behavenet")
    assert s["train"].tolist() == train
    assert s["val"].tolist() == val
    assert s["test"].tolist() == test
    assert all(v.dtype == np.int64 for v in s.values())


@pytest.mark.parametrize(("n_trials", "counts", "seed", "offset"), [c[:4] for c in BEHAVENET_CASES])
def test_the_table_offsets_are_the_legacy_generators_draws(n_trials, counts, seed, offset):
    leftover = n_trials % (sum(counts[:3]) + 3 * counts[3])
    if leftover:
        saved = np.random.get_state()
        np.random.seed(seed)  # what BehaveNet does: the global legacy generator
        drawn = np.random.randint(0, high=leftover)
        np.random.set_state(saved)
        assert drawn == offset
    else:
        assert offset == 0
    assert behavenet_offset(n_trials, counts, seed) == offset


def test_behavenet_mode_ignores_the_seed_when_no_trial_is_left_over_and_drops_leftovers():
    first = split_trials(30, (3, 1, 1, 0), 0, mode="behavenet")
    for seed in range(1, 20):
        later = split_trials(30, (3, 1, 1, 0), seed, mode="behavenet")
        assert all(np.array_equal(first[k], later[k]) for k in first)
    offsets = {behavenet_offset(34, (3, 1, 1, 0), seed) for seed in range(200)}
    assert offsets == {0, 1, 2, 3}  # 4 leftover trials: the range [0, 4) excludes 4
    for seed in range(20):
        s = split_trials(34, (3, 1, 1, 0), seed, mode="behavenet")
        assert sum(len(v) for v in s.values()) == 30  # the 4 leftover trials are dropped


def test_behavenet_mode_never_matches_the_blocked_default_here():
    # the observation: the two schemes differ for the same counts and seed
    for seed in range(5):
        a, b = split_trials(40, (8, 1, 1, 0), seed), split_trials(40, (8, 1, 1, 0), seed, mode="behavenet")
        assert any(not np.array_equal(a[k], b[k]) for k in a)


def test_an_unknown_mode_is_refused_in_the_config_and_here(tmp_path):
    with pytest.raises(ConfigError, match="data.split_mode: 'random' is not one of blocked, behavenet"):
        split_trials(40, (8, 1, 1, 0), 0, mode="random")
    with pytest.raises(ConfigError, match="data.split_mode: 'random' is not one of blocked, behavenet"):
        load_config(None, ["data.split_mode=random"])
    assert load_config(None, ["data.split_mode=behavenet"]).data.split_mode == "behavenet"
    assert load_config(None).data.split_mode == "blocked"
    assert set(SPLIT_MODES) == set(CONFIG_SPLIT_MODES)


class _Sessions:
    """Two recorded sessions in one: 10 trials of 5 frames, then 12 trials of 3 frames."""

    trial_starts = np.concatenate([np.arange(0, 50, 5), 50 + np.arange(0, 37, 3)])
    trial_sessions = np.array([0] * 10 + [1] * 12, dtype=np.int64)


def test_several_sessions_are_split_each_on_its_own():
    frames = split_frames(_Sessions(), (8, 1, 1, 0), seed=1, mode="behavenet")
    # session 0: 10 trials, nothing left over: train 0-7, val 8, test 9 (frames 5 per trial);
    # session 1: 12 trials, offset RandomState(1).randint(0, 2) = 1: train 1-8, val 9, test 10,
    # global trials 11-18, 19, 20 (frames 3 per trial from frame 50); trials 10 and 21 unused
    assert frames["train"].tolist() == [*range(0, 40), *range(53, 77)]
    assert frames["val"].tolist() == [*range(40, 45), *range(77, 80)]
    assert frames["test"].tolist() == [*range(45, 50), *range(80, 83)]
    blocked = split_frames(_Sessions(), (8, 1, 1, 0), seed=4)
    starts = _Sessions.trial_starts
    for name in SPLITS:
        own = [split_trials(10, (8, 1, 1, 0), 4)[name], 10 + split_trials(12, (8, 1, 1, 0), 4)[name]]
        assert blocked[name].tolist() == frame_indices(starts, np.concatenate(own)).tolist()


def test_a_session_too_short_for_one_block_is_named():
    class Short:
        trial_starts = np.arange(0, 16)
        trial_sessions = np.array([0] * 10 + [1] * 5)

    with pytest.raises(DataError, match=r"session 1: 5 trials cannot fill one split block of 10 trials"):
        split_frames(Short(), (8, 1, 1, 0), seed=0)
    Short.session_names = ("mouse-a", "mouse-b")
    with pytest.raises(DataError, match=r"session 'mouse-b': 5 trials"):
        split_frames(Short(), (8, 1, 1, 0), seed=0, mode="behavenet")


def test_one_session_with_trial_sessions_splits_as_before():
    class One:
        trial_starts = np.arange(0, 24 * 4, 4)
        trial_sessions = np.zeros(23, np.int64)
        session_names = ("only",)

    for mode in SPLIT_MODES:
        plain = split_frames(One.trial_starts, (3, 1, 1, 1), 3, mode=mode)
        tagged = split_frames(One(), (3, 1, 1, 1), 3, mode=mode)
        assert all(np.array_equal(plain[k], tagged[k]) for k in SPLITS)
    with pytest.raises(DataError, match=r"^23 trials cannot fill one split block of 35 trials"):
        split_frames(One(), (10, 5, 5, 5), 0)
