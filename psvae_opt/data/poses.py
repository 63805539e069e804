"""One animal's keypoints read from a pose file, whatever the format, and what picks them.

The readers of every format (``pose_files``, ``sleap``, ``nwb``) return a :class:`Poses`; the
optional libraries some of them need (the ``poses`` extra) are imported inside those readers
only, so the base install reads the other formats without them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import h5py
import numpy as np

from psvae_opt.errors import DataError


@dataclass(frozen=True)
class PoseOptions:
    """What picks one animal's poses out of a file.

    Attributes:
        track: the animal of a multi-animal file (SLEAP track, DeepLabCut individual).
        pose_estimation: the name of one ndx-pose ``PoseEstimation`` container of an NWB file.
        video: the file name of the video the poses belong to (picks one video of a ``.slp``).
    """

    track: int = 0
    pose_estimation: str | None = None
    video: str | None = None


@dataclass(frozen=True)
class Poses:
    """One animal's keypoints on every frame of a pose file.

    Attributes:
        path: the pose file.
        format: its key in ``POSE_FORMATS``.
        keypoints: K keypoint names, in file order.
        xy: (T, K, 2) float64 pixel coordinates (x, y) in the source frames; NaN = missing.
        likelihood: (T, K) float64 confidence, or None when the file has none.
        row_names: T row names (frame numbers, or image paths of hand-labeled frames).
        open_end: the rows are video frames 0..T-1 and the file stops at its last frame with
            a pose (SLEAP, NWB), so the video's later frames have no pose rather than
            belonging to another video.
    """

    path: Path
    format: str
    keypoints: tuple[str, ...]
    xy: np.ndarray
    likelihood: np.ndarray | None
    row_names: tuple[str, ...] = ()
    open_end: bool = False

    @property
    def n_frames(self) -> int:
        return int(self.xy.shape[0])

    def first(self, n: int) -> Poses:
        """The first ``n`` frames."""
        lik = None if self.likelihood is None else self.likelihood[:n]
        return replace(self, xy=self.xy[:n], likelihood=lik, row_names=self.row_names[:n])

    def pad(self, n: int) -> Poses:
        """``n`` >= T frames, the added ones missing (NaN)."""
        extra = n - self.n_frames
        xy = np.concatenate([self.xy, np.full((extra, *self.xy.shape[1:]), np.nan)])
        lik = None
        if self.likelihood is not None:
            lik = np.concatenate([self.likelihood, np.full((extra, self.likelihood.shape[1]), np.nan)])
        rows = self.row_names + tuple(str(i) for i in range(self.n_frames, n))
        return replace(self, xy=xy, likelihood=lik, row_names=rows)

    def select(self, names: Sequence[str]) -> Poses:
        """Only the named keypoints, in the order given."""
        unknown = [n for n in names if n not in self.keypoints]
        if unknown:
            raise DataError(
                f"{self.path}: no keypoint {', '.join(map(repr, unknown))} in this file "
                f"(it has: {', '.join(self.keypoints)}); fix --keypoints"
            )
        idx = [self.keypoints.index(n) for n in names]
        lik = None if self.likelihood is None else self.likelihood[:, idx]
        return replace(self, keypoints=tuple(names), xy=self.xy[:, idx], likelihood=lik)


def is_hdf5(path: Path) -> bool:
    try:
        return path.is_file() and h5py.is_hdf5(path)
    except OSError:
        return False


def pick_index(path: Path, track: int, names: Sequence[str], kind: str = "track") -> int:
    """Check ``--track`` against the animals of a file; ``names`` lists them."""
    if not 0 <= track < len(names):
        listed = f" ({', '.join(names)})" if names else ""
        raise DataError(
            f"{path}: --track {track} but the file has {len(names)} {kind}(s){listed}; "
            f"choose --track 0..{len(names) - 1}"
        )
    return track
