"""A session through the model: latents, predicted labels and, where the data has them, scores.

Scores on new data are the two questions a lab asks of a model on a session it never saw:
do the supervised latents still track the labels (label R^2, in pixels of the stored frames
when the file has them, so that each session's own z-scoring does not matter), and do the
unsupervised latents still carry the unlabelled factors (each unlabelled factor's best |r| with
an unsupervised latent, as the search's ``factor_r_*``; synthetic data only)?
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from psvae_opt.inference.model import PsvaeModel
from psvae_opt.inference.sources import SessionFrames
from psvae_opt.model import metrics


@dataclass(frozen=True)
class Encoding:
    """What the model says about every frame of a session.

    Attributes:
        mean, variance: (T, K) posterior means and variances, ``[z_s | z_u]``.
        labels_z: (T, L) predicted labels in the model's z-scored units.
        labels_px: (T, L) in pixels of the source video (None when the bundle cannot tell).
        reconstructions: (T, C, H, W) uint8 from the latent means, when asked for.
        scores: ``label_r2`` and ``factor_r_<name>`` where the session has labels / factors.
    """

    mean: np.ndarray
    variance: np.ndarray
    labels_z: np.ndarray
    labels_px: np.ndarray | None
    reconstructions: np.ndarray | None = None
    scores: dict[str, float] = field(default_factory=dict)


def encode_session(
    model: PsvaeModel,
    session: SessionFrames,
    *,
    batch_size: int = 256,
    reconstructions: bool = False,
    progress: bool = False,
) -> Encoding:
    """Encode every frame of ``session`` in batches of ``batch_size``."""
    mean, variance = model.encode(session.frames, variance=True, batch_size=batch_size, progress=progress)
    labels_z = model.predict_labels(mean, pixels=False)
    labels_px = model.labels_to_pixels(labels_z, session.source_size) if model.has_pixels else None
    recon = None
    if reconstructions:
        decoded = model.decode(mean, batch_size)
        recon = np.clip(np.rint(decoded * 255.0), 0, 255).astype(np.uint8)
    return Encoding(mean, variance, labels_z, labels_px, recon, session_scores(model, session, mean, labels_z))


def session_scores(
    model: PsvaeModel, session: SessionFrames, mean: np.ndarray, labels_z: np.ndarray
) -> dict[str, float]:
    """Label R^2 and each unlabelled factor's best |r| with an unsupervised latent (where known)."""
    scores: dict[str, float] = {}
    if session.labels is not None and session.masks is not None and session.masks.any():
        if session.labels_sc is not None and model.has_pixels:
            # stored-frame pixels on both sides: the new file's own z-scoring does not enter
            stored = labels_z * np.asarray(model.info["label_stds"]) + np.asarray(model.info["label_means"])
            truth = np.nan_to_num(session.labels_sc)
            scores["label_r2"] = metrics.label_r2(truth, stored, session.masks)
        else:
            scores["label_r2"] = metrics.label_r2(session.labels, labels_z, session.masks)
    z_u = mean[:, model.n_labels :]
    if session.factors is not None and z_u.shape[1]:
        r = metrics.correlations(z_u, session.factors)
        for i, name in enumerate(session.factor_names):
            if not (session.factor_labeled[i] if i < len(session.factor_labeled) else False):
                scores[f"factor_r_{name}"] = float(np.abs(r[:, i]).max())
    return scores
