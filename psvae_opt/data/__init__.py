"""Data: BehaveNet's HDF5 layout, trial splits, the demo dataset and real-data import.

Owns: ``layout`` (the HDF5 layout and its checks), ``sessions`` (one or several files loaded
as one session), ``splits`` (trial splits), ``synth`` (the demo dataset with ground truth),
``writer`` (writing the layout), ``video`` (decoding and resizing frames), ``importer`` (video
and pose files into the layout), ``pose_files`` (a pose file of any format read), ``poses`` (the
:class:`Poses` every reader returns), ``views``, ``pandas_h5``, ``sleap``
and ``nwb`` (the pose formats).
May import: ``errors``, ``config``. h5py is imported only inside this package; the optional pose
libraries (sleap-io, pynwb, ndx-pose, hdf5plugin) only inside the readers that need them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from psvae_opt.data.importer import ImportSummary, import_labeled, import_video
    from psvae_opt.data.pose_files import POSE_FORMATS, read_poses
    from psvae_opt.data.poses import Poses
    from psvae_opt.data.sessions import Session, load_session, resolve_paths, session_bytes
    from psvae_opt.data.splits import SPLITS, frame_indices, split_frames, split_trials
    from psvae_opt.data.synth import synth_session
    from psvae_opt.data.writer import check_writable, write_session

# name -> the module that defines it: each is imported on first use, so that a module that needs
# one name (``SPLITS``, say) does not load h5py, PyAV and torch with the rest
_HOMES = {
    "ImportSummary": "importer",
    "import_labeled": "importer",
    "import_video": "importer",
    "Poses": "poses",
    "POSE_FORMATS": "pose_files",
    "read_poses": "pose_files",
    "Session": "sessions",
    "load_session": "sessions",
    "resolve_paths": "sessions",
    "session_bytes": "sessions",
    "SPLITS": "splits",
    "frame_indices": "splits",
    "split_frames": "splits",
    "split_trials": "splits",
    "synth_session": "synth",
    "check_writable": "writer",
    "write_session": "writer",
}

__all__ = [
    "POSE_FORMATS",
    "SPLITS",
    "ImportSummary",
    "Poses",
    "Session",
    "check_writable",
    "frame_indices",
    "import_labeled",
    "import_video",
    "load_session",
    "read_poses",
    "resolve_paths",
    "session_bytes",
    "split_frames",
    "split_trials",
    "synth_session",
    "write_session",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'psvae_opt.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"psvae_opt.data.{home}"), name)
    globals()[name] = value
    return value
