"""The model bundle: a self-contained folder that loads the chosen PS-VAE anywhere, without the study.

A bundle folder holds

- ``weights.pt``   ``{"model": state_dict}``, read with ``torch.load(..., weights_only=True)``;
- ``config.toml``  the trial's resolved configuration (model, loss, split, seeds);
- ``bundle.json``  what a new session needs and how the model was chosen, the keys of
                   :data:`REQUIRED_KEYS` and more (see :func:`psvae_opt.inference.card.bundle_info`);
- ``model_card.md`` the model card, and ``traversal.png`` / ``traversal.mp4`` when they exist.

``bundle.json`` records the SHA-256 of ``weights.pt``, so a truncated or swapped weights file
is refused by name instead of loading into a model that encodes nonsense. Writing goes through
a hidden staging folder that is renamed into place at the end: a failed export leaves nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from psvae_opt.config import Config, load_config_text
from psvae_opt.errors import ConfigError, DataError, PsvaeError
from psvae_opt.model.network import PSVAE
from psvae_opt.training.checkpoints import load_state
from psvae_opt.training.steps import build_model

FORMAT = "psvae-opt-bundle"
VERSION = 1
WEIGHTS, CONFIG, INFO, CARD = "weights.pt", "config.toml", "bundle.json", "model_card.md"
REQUIRED_KEYS = ("format", "version", "frame_shape", "label_names", "n_unsup", "weights_sha256")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _staging(out: Path) -> Path:
    """A fresh hidden folder beside ``out`` (same file system, so the final rename is atomic)."""
    staging = out.parent / f".{out.name}.staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging


def check_bundle_out(out: str | Path) -> Path:
    """Refuse an ``--out`` that is a file or a non-empty folder other than an earlier bundle."""
    out = Path(out)
    if out.is_file():
        raise ConfigError(f"--out {out} is a file; give a folder for the bundle")
    if out.is_dir() and any(out.iterdir()) and not (out / INFO).is_file():
        raise ConfigError(f"--out {out} is a folder that holds other files; give a new or empty folder")
    return out


def write_bundle(out: str | Path, fill: Callable[[Path], dict[str, Any]]) -> Path:
    """Write a bundle: ``fill(staging)`` writes weights, config, card and media into the staging
    folder and returns the bundle information; the weights' hash is added and the folder renamed
    to ``out`` (an earlier bundle there is replaced only once the new one is complete)."""
    out = check_bundle_out(out)
    try:
        staging = _staging(out)
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot write there ({exc.strerror or exc}); choose another folder") from None
    try:
        info = fill(staging)
        info = {"format": FORMAT, "version": VERSION, **info, "weights_sha256": file_sha256(staging / WEIGHTS)}
        (staging / INFO).write_text(json.dumps(info, indent=2, allow_nan=False))
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        if out.exists():
            out.rename(old)
        staging.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def save_weights(network: PSVAE, folder: Path) -> None:
    torch.save({"model": {k: v.detach().cpu() for k, v in network.state_dict().items()}}, folder / WEIGHTS)


def read_info(folder: str | Path) -> dict[str, Any]:
    """``bundle.json`` of a bundle folder, checked to be a bundle this version reads."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such bundle folder; give the --out folder of `psvae-opt model export`")
    path = folder / INFO
    if not path.is_file():
        raise DataError(f"{folder}: not a model bundle (no {INFO}); give the --out folder of `psvae-opt model export`")
    try:
        info = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: damaged ({exc}); export the bundle again") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise DataError(f"{path}: not a psvae-opt bundle description; export the bundle again")
    if info.get("version") != VERSION:
        raise DataError(
            f"{path}: bundle version {info.get('version')!r}, this psvae-opt reads version {VERSION}; "
            "export it again with this version"
        )
    missing = [k for k in REQUIRED_KEYS if k not in info]
    if missing:
        raise DataError(f"{path}: lacks {', '.join(missing)}; export the bundle again")
    return info


def read_config(folder: Path) -> Config:
    path = folder / CONFIG
    if not path.is_file():
        raise DataError(f"{folder}: the bundle has no {CONFIG}; export it again")
    try:
        return load_config_text(path.read_text(), str(path))
    except ConfigError as exc:
        raise DataError(str(exc)) from None


def load_network(folder: str | Path, device: str | torch.device = "cpu") -> tuple[PSVAE, dict[str, Any], Config]:
    """The bundle's network (eval mode, on ``device``), its information and its configuration.

    Every way a bundle can be broken (missing or damaged files, weights of another model, a
    weights file that is not the one exported) is a one-line :class:`DataError` naming the file.
    """
    folder = Path(folder)
    info = read_info(folder)
    config = read_config(folder)
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise DataError(f"{folder}: the bundle has no {WEIGHTS}; export it again")
    if file_sha256(weights) != info["weights_sha256"]:
        raise DataError(f"{weights}: not the weights this bundle was exported with (damaged or replaced); export again")
    try:
        network = build_model(config.model, tuple(info["frame_shape"]), len(info["label_names"]), seed=0)
    except (PsvaeError, ValueError, TypeError) as exc:
        raise DataError(f"{folder / INFO}: describes no buildable model ({exc}); export the bundle again") from None
    state = load_state(weights, device)
    try:
        network.load_state_dict(state["model"])
    except (KeyError, RuntimeError) as exc:
        reason = str(exc).strip().splitlines()[0]
        raise DataError(f"{weights}: weights of another model than {CONFIG} describes ({reason[:160]})") from None
    return network.to(device).eval(), info, config
