"""Blocked trial splits (BehaveNet's "8;1;1;0" scheme)."""

from __future__ import annotations

import numpy as np
import pytest

from psvae_opt.data import frame_indices, split_frames, split_trials
from psvae_opt.errors import DataError


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
