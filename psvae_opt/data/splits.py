"""Train/validation/test splits by trial, never by frame (DESIGN section 1).

BehaveNet's blocked scheme: consecutive trials are grouped in blocks of
``train + val + test + 3 * gap`` trials; inside a block the train, validation and test trials
are each one contiguous chunk, separated by ``gap`` unused trials, so neighbouring frames
rarely straddle two splits. The data seed shifts the block grid and shuffles the order of
the three chunks inside each block; trials outside the grid go to training (with a
gap before the grid's first chunk as well).
"""

from __future__ import annotations

import numpy as np

from psvae_opt.errors import DataError

SPLITS = ("train", "val", "test")


def split_trials(
    n_trials: int, counts: tuple[int, int, int, int] = (8, 1, 1, 0), seed: int = 0
) -> dict[str, np.ndarray]:
    """Assign trial indices to splits.

    Args:
        n_trials: number of trials in the session.
        counts: (train, val, test, gap) trials per block, BehaveNet's "8;1;1;0" by default.
        seed: the data seed.

    Returns:
        ``{"train": idx, "val": idx, "test": idx}``, sorted int64 trial indices.
    """
    n_train, n_val, n_test, gap = counts
    block = n_train + n_val + n_test + 3 * gap
    n_blocks = n_trials // block
    if n_blocks == 0:
        raise DataError(
            f"{n_trials} trials cannot fill one split block of {block} trials "
            f"(data.split = '{n_train};{n_val};{n_test};{gap}'); cut the video into more, "
            "shorter trials or use a smaller split such as '3;1;1;0'"
        )
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
    return {name: np.array(sorted(idx), dtype=np.int64) for name, idx in out.items()}


def frame_indices(trial_starts: np.ndarray, trials: np.ndarray) -> np.ndarray:
    """All frame indices of the given trials, in order.

    Args:
        trial_starts: (n_trials + 1,) frame offsets of the trials.
        trials: trial indices.
    """
    parts = [np.arange(trial_starts[t], trial_starts[t + 1]) for t in trials]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


def split_frames(session_or_starts, counts: tuple[int, int, int, int], seed: int) -> dict[str, np.ndarray]:
    """Frame indices of each split of a session (or of its ``trial_starts``)."""
    starts = getattr(session_or_starts, "trial_starts", session_or_starts)
    trials = split_trials(len(starts) - 1, counts, seed)
    return {name: frame_indices(starts, idx) for name, idx in trials.items()}
