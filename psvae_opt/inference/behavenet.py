"""BehaveNet's files of an encoded session, as its ARHMM and decoder fitting reads them.

For a session ``NAME``, ``--format behavenet`` writes a folder ``NAME.behavenet/`` (BehaveNet's
``version_N`` folder of a model) holding

- ``NAME_latents.pkl``: a dict of ``latents``, a list of one (T_i, K) float32 array of latent
  means ``[z_s | z_u]`` per trial (BehaveNet indexes it by trial and calls ``.astype``), and
  ``trials``, ``{"train", "val", "test"}`` sorted int64 trial indices;
- ``meta_tags.pkl``: the model's hyperparameters as BehaveNet stores them (``model_class``
  ``"ps-vae"``, ``n_ae_latents``, ``n_labels``, ``ps_vae.alpha``/``beta``, ``trial_splits``,
  ``rng_seed_data``, ``training_completed``, ``ae_latents_file`` ...) and the provenance.

``trials`` is **BehaveNet's split of the session** (its ``split_trials``: train | gap | val |
gap | test | gap by blocks, the grid offset drawn with the legacy ``numpy.random`` seeded by the
data seed), with the study's ``data.split`` counts and data seed, whatever the study's
``data.split_mode``: BehaveNet fits and scores its ARHMMs on exactly the trials it would have
chosen itself. With ``split_mode = "blocked"`` these differ from the trials the PS-VAE trained
on; ``meta_tags.pkl`` keeps those as ``psvae_opt_trials``.

Both pickles hold only builtins and ``numpy.ndarray`` (rebuilt from its shape, dtype string and
bytes), never numpy 2's ``numpy._core`` module path, so numpy 1.17 through 2.x read them.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from psvae_opt.data import split_trials

PROTOCOL = 4  # Python >= 3.4: BehaveNet's pinned environments included


class PortablePickler(pickle.Pickler):
    """Pickles arrays as ``numpy.ndarray(shape, dtype_str, bytearray)`` (writable when loaded)
    and numpy scalars as Python numbers: no module path that differs between numpy 1 and 2."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, np.ndarray):
            if obj.dtype.hasobject:
                raise TypeError("object arrays cannot be pickled portably")
            a = np.ascontiguousarray(obj)
            return np.ndarray, (tuple(int(s) for s in a.shape), a.dtype.str, bytearray(a.tobytes()))
        if isinstance(obj, np.bool_):
            return bool, (bool(obj),)
        if isinstance(obj, np.integer):
            return int, (int(obj),)
        if isinstance(obj, np.floating):
            return float, (float(obj),)
        if isinstance(obj, np.str_):
            return str, (str(obj),)
        return NotImplemented


def dump(obj: Any, path: Path) -> None:
    with path.open("wb") as fh:
        PortablePickler(fh, protocol=PROTOCOL).dump(obj)


def behavenet_trials(info: dict[str, Any], n_trials: int) -> dict[str, np.ndarray]:
    """BehaveNet's split of a session of ``n_trials`` trials: the study's counts and data seed."""
    split = info.get("split") or {}
    counts = tuple(int(c) for c in split.get("counts", (8, 1, 1, 0)))
    return split_trials(n_trials, counts, int(split.get("data_seed", 0)), "behavenet")  # type: ignore[arg-type]


def meta_tags(info: dict[str, Any], name: str, latents_file: Path, frame_shape, provenance: dict) -> dict[str, Any]:
    """The hyperparameters BehaveNet keeps in ``meta_tags.pkl`` beside a model's latents."""
    split = info.get("split") or {}
    counts = [int(c) for c in split.get("counts", (8, 1, 1, 0))]
    c, h, w = (int(s) for s in frame_shape)
    n_labels = len(info["label_names"])
    return {
        "model_class": "ps-vae",
        "model_type": "conv",
        "n_ae_latents": n_labels + int(info["n_unsup"]),
        "n_labels": n_labels,
        "label_names": list(info["label_names"]),
        "ps_vae.alpha": float(info.get("alpha", float("nan"))),
        "ps_vae.beta": float(info.get("beta", float("nan"))),
        "n_input_channels": c,
        "y_pixels": h,
        "x_pixels": w,
        "trial_splits": ";".join(map(str, counts)),
        "rng_seed_data": int(split.get("data_seed", 0)),
        "rng_seed_model": int(info.get("model_seed", 0)),
        "lab": "psvae-opt",
        "expt": str(info.get("study")),
        "animal": "",
        "session": name,
        "experiment_name": str(info.get("study")),
        "version": 0,
        "training_completed": True,
        "ae_latents_file": str(latents_file),
        "psvae_opt": provenance,
    }


def write_behavenet_folder(
    folder: Path,
    name: str,
    mean: np.ndarray,
    trial_starts: np.ndarray,
    info: dict[str, Any],
    frame_shape,
    provenance: dict,
    final_folder: Path | None = None,
) -> Path:
    """Write ``folder/NAME.behavenet/`` (see the module docstring); returns the folder.

    Args:
        mean: (T, K) latent means; trial_starts: (n_trials + 1,) frame offsets.
        final_folder: where the folder will end up (``ae_latents_file`` names that path).
    """
    out = folder / f"{name}.behavenet"
    out.mkdir()
    n_trials = len(trial_starts) - 1
    latents = [np.ascontiguousarray(mean[a:b], np.float32) for a, b in zip(trial_starts[:-1], trial_starts[1:])]
    trials = behavenet_trials(info, n_trials)
    latents_file = out / f"{name}_latents.pkl"
    dump({"latents": latents, "trials": trials}, latents_file)
    final = (final_folder or folder) / out.name / latents_file.name
    tags = meta_tags(info, name, final, frame_shape, provenance)
    split = info.get("split") or {}
    if split.get("mode", "blocked") != "behavenet":
        counts = tuple(int(c) for c in split.get("counts", (8, 1, 1, 0)))
        own = split_trials(n_trials, counts, int(split.get("data_seed", 0)), split.get("mode", "blocked"))  # type: ignore[arg-type]
        tags["psvae_opt_trials"] = {k: v.tolist() for k, v in own.items()}
    dump(tags, out / "meta_tags.pkl")
    return out
