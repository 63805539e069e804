"""Train/validation/test splits by trial, never by frame.

Both modes group consecutive trials in blocks of ``train + val + test + 3 * gap`` trials
(``data.split = "train;val;test;gap"``); inside a block the train, validation and test trials
are each one contiguous chunk followed by ``gap`` unused trials, so neighbouring frames rarely
straddle two splits. They differ in what the data seed does and in the trials off the grid:

- ``"blocked"`` (the default): the seed shifts the block grid (from a
  ``numpy.random.default_rng(seed)`` draw over every possible offset) and shuffles the order of
  the three chunks inside each block; trials off the grid go to training, with ``gap`` unused
  trials before the grid's first chunk.
- ``"behavenet"``: BehaveNet's ``split_trials`` exactly, so that a fit can be compared with a
  BehaveNet fit of the same trials. Chunks keep the order train | val | test in every block;
  the grid's offset is ``numpy.random.RandomState(seed).randint(0, leftover)`` (the legacy
  generator that BehaveNet seeds globally; an exclusive range, so the grid never ends on the
  last trial) and 0 without a draw when there is no leftover, in which case the seed changes
  nothing; trials off the grid belong to no split.

A session made of several recorded sessions (an object with ``trial_sessions``) is split
session by session with the same counts, seed and mode, as BehaveNet splits each session of a
multi-session fit on its own.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from psvae_opt.errors import ConfigError, DataError

SPLITS = ("train", "val", "test")
Counts = tuple[int, int, int, int]


def _block_size(counts: Counts) -> int:
    n_train, n_val, n_test, gap = counts
    return n_train + n_val + n_test + 3 * gap


def _blocked(n_trials: int, counts: Counts, seed: int) -> dict[str, list[int]]:
    """psvae-opt's scheme: shifted grid, chunk order shuffled per block, leftovers train."""
    n_train, n_val, n_test, gap = counts
    block = _block_size(counts)
    n_blocks = n_trials // block
    rng = np.random.default_rng(seed)
    offset = int(rng.integers(0, n_trials - n_blocks * block + 1))
    out: dict[str, list[int]] = {name: [] for name in SPLITS}
    # leftovers train: those after the grid follow the last block's gap; those before it
    # keep ``gap`` unused trials next to the first block's first chunk
    out["train"] += list(range(0, max(offset - gap, 0))) + list(range(offset + n_blocks * block, n_trials))
    sizes = dict(zip(SPLITS, (n_train, n_val, n_test)))
    for b in range(n_blocks):
        cursor = offset + b * block
        for name in rng.permutation(np.array(SPLITS)):
            out[str(name)] += list(range(cursor, cursor + sizes[str(name)]))
            cursor += sizes[str(name)] + gap
    return out


def behavenet_offset(n_trials: int, counts: Counts, seed: int) -> int:
    """The first trial of BehaveNet's block grid: its legacy ``np.random`` draw from [0, leftover)."""
    leftover = n_trials % _block_size(counts)
    if leftover == 0:
        return 0  # BehaveNet draws nothing here: every seed gives the same split
    if not 0 <= seed < 2**32:
        raise ConfigError(f"data.data_seed = {seed}: BehaveNet's split takes seeds from 0 to 2**32 - 1")
    return int(np.random.RandomState(seed).randint(0, leftover))


def _behavenet(n_trials: int, counts: Counts, seed: int) -> dict[str, list[int]]:
    """BehaveNet's ``split_trials``: train | gap | val | gap | test | gap per block, leftovers unused.

    BehaveNet also permutes the order in which the blocks are listed; that changes no
    assignment (its loaders sample each split as a set), so the trials are returned sorted.
    """
    n_train, n_val, n_test, gap = counts
    block = _block_size(counts)
    offset = behavenet_offset(n_trials, counts, seed)
    out: dict[str, list[int]] = {name: [] for name in SPLITS}
    for b in range(n_trials // block):
        start = offset + b * block
        for name, first, size in (
            ("train", start, n_train),
            ("val", start + n_train + gap, n_val),
            ("test", start + n_train + gap + n_val + gap, n_test),
        ):
            out[name] += range(first, first + size)
    return out


SPLIT_MODES: dict[str, Callable[[int, Counts, int], dict[str, list[int]]]] = {
    "blocked": _blocked,
    "behavenet": _behavenet,
}


def split_trials(
    n_trials: int, counts: Counts = (8, 1, 1, 0), seed: int = 0, mode: str = "blocked"
) -> dict[str, np.ndarray]:
    """Assign trial indices to splits.

    Args:
        n_trials: number of trials in the session.
        counts: (train, val, test, gap) trials per block, BehaveNet's "8;1;1;0" by default.
        seed: the data seed.
        mode: "blocked" or "behavenet" (see the module docstring).

    Returns:
        ``{"train": idx, "val": idx, "test": idx}``, sorted int64 trial indices.
    """
    if mode not in SPLIT_MODES:
        raise ConfigError(f"data.split_mode: {mode!r} is not one of {', '.join(SPLIT_MODES)}")
    n_train, n_val, n_test, gap = counts
    block = _block_size(counts)
    if n_trials // block == 0:
        raise DataError(
            f"{n_trials} trials cannot fill one split block of {block} trials "
            f"(data.split = '{n_train};{n_val};{n_test};{gap}'); cut the video into more, "
            "shorter trials or use a smaller split such as '3;1;1;0'"
        )
    out = SPLIT_MODES[mode](n_trials, counts, seed)
    return {name: np.array(sorted(out[name]), dtype=np.int64) for name in SPLITS}


def frame_indices(trial_starts: np.ndarray, trials: np.ndarray) -> np.ndarray:
    """All frame indices of the given trials, in order.

    Args:
        trial_starts: (n_trials + 1,) frame offsets of the trials.
        trials: trial indices.
    """
    parts = [np.arange(trial_starts[t], trial_starts[t + 1]) for t in trials]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


def _split_by_session(
    trial_sessions: np.ndarray, counts: Counts, seed: int, mode: str, names=None
) -> dict[str, np.ndarray]:
    """Split the trials of each session on its own; global trial indices, sorted."""
    out: dict[str, list[np.ndarray]] = {name: [] for name in SPLITS}
    for s in np.unique(trial_sessions):
        own = np.flatnonzero(trial_sessions == s)  # this session's trials, in recording order
        try:
            part = split_trials(len(own), counts, seed, mode)
        except DataError as exc:
            label = f"session {names[s]!r}" if names is not None and 0 <= s < len(names) else f"session {s}"
            raise DataError(f"{label}: {exc}") from None
        for name in SPLITS:
            out[name].append(own[part[name]])
    return {name: np.sort(np.concatenate(parts)).astype(np.int64) for name, parts in out.items()}


def split_frames(session_or_starts, counts: Counts, seed: int, mode: str = "blocked") -> dict[str, np.ndarray]:
    """Frame indices of each split of a session (or of its ``trial_starts``).

    An object with ``trial_sessions`` ((n_trials,) int, the recorded session of each trial) is
    split session by session; the frame indices are global (into the concatenated session).
    """
    starts = getattr(session_or_starts, "trial_starts", session_or_starts)
    sessions = getattr(session_or_starts, "trial_sessions", None)
    if sessions is None or len(np.unique(sessions)) < 2:
        trials = split_trials(len(starts) - 1, counts, seed, mode)
    else:
        names = getattr(session_or_starts, "session_names", None)
        trials = _split_by_session(np.asarray(sessions), counts, seed, mode, names)
    return {name: frame_indices(starts, idx) for name, idx in trials.items()}
