"""What every output of ``encode`` records about where it came from.

:func:`provenance` gives one JSON-able dict per session: the psvae-opt version, the bundle
(folder, weights SHA-256, study and trial), the source files with their SHA-256, the geometry
used (source frame size, crop, resize, frame range, frame rate and where it came from) and the
options of the command. npz stores it as the JSON string ``provenance``, NWB in each series'
``comments``, BehaveNet in ``meta_tags.pkl`` (``psvae_opt``), and the CSVs in the sidecar
``NAME.provenance.json``.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from psvae_opt import __version__
from psvae_opt.inference.bundle import file_sha256


def provenance(
    info: dict[str, Any],
    bundle_folder: Path | None,
    sources: Sequence[Path],
    geometry: dict[str, Any],
    options: dict[str, Any],
) -> dict[str, Any]:
    """The provenance of one encoded session (plain builtins only: JSON and portable pickles)."""
    return {
        "psvae_opt_version": __version__,
        "bundle": {
            "folder": str(Path(bundle_folder).resolve()) if bundle_folder is not None else None,
            "weights_sha256": str(info.get("weights_sha256")),
            "study": info.get("study"),
            "trial": info.get("trial"),
        },
        "sources": [{"path": str(Path(p).resolve()), "sha256": file_sha256(Path(p))} for p in sources],
        "geometry": json.loads(json.dumps(geometry)),
        "options": json.loads(json.dumps(options, default=str)),
        "written": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def as_json(record: dict[str, Any]) -> str:
    return json.dumps(record, indent=1, allow_nan=True)
