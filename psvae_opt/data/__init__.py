"""Data: BehaveNet's HDF5 layout, trial splits and the demo dataset.

h5py is imported only inside this package.
"""

from psvae_opt.data.layout import Session, load_session, write_session
from psvae_opt.data.splits import SPLITS, frame_indices, split_frames, split_trials
from psvae_opt.data.synth import synth_session

__all__ = [
    "SPLITS",
    "Session",
    "frame_indices",
    "load_session",
    "split_frames",
    "split_trials",
    "synth_session",
    "write_session",
]
