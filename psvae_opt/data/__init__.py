"""Data: BehaveNet's HDF5 layout, trial splits, the demo dataset and real-data import.

h5py is imported only inside this package.
"""

from psvae_opt.data.importer import ImportSummary, import_labeled, import_video
from psvae_opt.data.layout import Session, load_session, write_session
from psvae_opt.data.poses import POSE_FORMATS, Poses, read_poses
from psvae_opt.data.splits import SPLITS, frame_indices, split_frames, split_trials
from psvae_opt.data.synth import synth_session

__all__ = [
    "POSE_FORMATS",
    "SPLITS",
    "ImportSummary",
    "Poses",
    "Session",
    "frame_indices",
    "import_labeled",
    "import_video",
    "load_session",
    "read_poses",
    "split_frames",
    "split_trials",
    "synth_session",
    "write_session",
]
