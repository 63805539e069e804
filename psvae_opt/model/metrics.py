"""Metrics (docs/design.md, "Training and metrics"), one implementation each, pure numpy.

The functions use only array arithmetic and reductions, so :func:`pixel_mse` also runs on
torch tensors batch by batch in the trainer without moving frames off the device.
"""

from __future__ import annotations

import numpy as np


def pixel_mse(x, x_hat) -> float:
    """Mean squared error per pixel of [0, 1] frames: any matching shapes, e.g. (N, C, H, W)."""
    return float(((x - x_hat) ** 2).mean())


def label_mse(y: np.ndarray, y_hat: np.ndarray, mask: np.ndarray) -> float:
    """Mean squared error per valid label entry, (N, L) arrays, z-scored units."""
    n_valid = mask.sum()
    return float((mask * (y - y_hat) ** 2).sum() / n_valid) if n_valid > 0 else float("nan")


def label_r2_per_label(y: np.ndarray, y_hat: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """R^2 of each label over its valid entries, and each label's variance.

    Args:
        y, y_hat, mask: (N, L) true labels, predictions and 1/0 validity.

    Returns:
        (r2, variance), each (L,); NaN for a label with no valid entry or no variance.
    """
    count = mask.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (mask * y).sum(0) / count
        ss_tot = (mask * (y - mean) ** 2).sum(0)
        ss_res = (mask * (y - y_hat) ** 2).sum(0)
        defined = (count > 0) & (ss_tot > 0)
        r2 = np.where(defined, 1.0 - ss_res / np.where(defined, ss_tot, 1.0), np.nan)
        var = np.where(defined, ss_tot / np.maximum(count, 1), np.nan)
    return r2, var


def label_r2(y: np.ndarray, y_hat: np.ndarray, mask: np.ndarray) -> float:
    """R^2 per label over valid entries, averaged with weights = label variance."""
    r2, var = label_r2_per_label(y, y_hat, mask)
    ok = np.isfinite(r2)
    return float((r2[ok] * var[ok]).sum() / var[ok].sum()) if ok.any() else float("nan")


def zu_corr(z_u: np.ndarray) -> float:
    """Mean over pairs i < j of |Pearson r| between the columns of (N, D) latent means.

    A column without variance counts as uncorrelated with every other. NaN for D < 2.
    """
    n, d = z_u.shape
    if d < 2 or n < 2:
        return float("nan")
    zc = z_u - z_u.mean(0)
    std = np.sqrt((zc**2).mean(0))
    scale = np.where(std > 0, std, np.inf)
    r = (zc.T @ zc) / n / np.outer(scale, scale)
    return float(np.abs(r[np.triu_indices(d, k=1)]).mean())


def discretize(values: np.ndarray, n_bins: int = 20) -> np.ndarray:
    """Bin each column of (N, D) values into ``n_bins`` equal-width bins: (N, D) int64."""
    low, high = values.min(0), values.max(0)
    width = np.where(high > low, (high - low) / n_bins, 1.0)
    return np.clip(((values - low) / width).astype(np.int64), 0, n_bins - 1)


def discrete_entropy(a: np.ndarray) -> float:
    """Entropy in nats of a 1-d array of bin indices."""
    p = np.bincount(a) / len(a)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def discrete_mutual_information(a: np.ndarray, b: np.ndarray) -> float:
    """Mutual information in nats between two 1-d arrays of bin indices."""
    nb = int(b.max()) + 1
    joint = np.bincount(a * nb + b, minlength=(int(a.max()) + 1) * nb).reshape(-1, nb) / len(a)
    pa, pb = joint.sum(1, keepdims=True), joint.sum(0, keepdims=True)
    nz = joint > 0
    return float((joint[nz] * np.log(joint[nz] / (pa @ pb)[nz])).sum())


def mutual_information_gap(latents: np.ndarray, factors: np.ndarray, n_bins: int = 20) -> float:
    """MIG (Chen et al. 2018): per factor, the gap between the two latents most informative
    about it, divided by the factor's entropy, averaged over factors.

    Args:
        latents: (N, D) latent means.
        factors: (N, F) ground-truth factors.

    Returns:
        in [0, 1]: near 1 when each factor is captured by one latent alone, near 0 when no
        latent is specific to a factor. With one latent the gap is its MI over the entropy.
    """
    lat, fac = discretize(latents, n_bins), discretize(factors, n_bins)
    gaps = []
    for k in range(fac.shape[1]):
        h = discrete_entropy(fac[:, k])
        if h <= 0:
            continue
        mi = sorted((discrete_mutual_information(lat[:, j], fac[:, k]) for j in range(lat.shape[1])), reverse=True)
        gaps.append((mi[0] - (mi[1] if len(mi) > 1 else 0.0)) / h)
    return float(np.mean(gaps)) if gaps else float("nan")


def dimension_kl(mu: np.ndarray, logvar: np.ndarray) -> np.ndarray:
    """Mean KL of each latent's posterior to the N(0, 1) prior: (N, D) means and log-variances -> (D,) nats.

    A dimension the model does not use has posteriors equal to the prior: KL near 0.
    """
    return (0.5 * (mu**2 + np.exp(logvar) - 1.0 - logvar)).mean(0)


def correlations(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Pearson r of every column of ``a`` with every column of ``b``: (N, D), (N, F) -> (D, F).

    ``mask`` (N, F) of 1/0 restricts each column of ``b`` (and ``a`` with it) to its valid rows.
    A column without variance (on the rows used) correlates 0 with everything.
    """
    mask = np.ones(b.shape, bool) if mask is None else mask > 0
    out = np.zeros((a.shape[1], b.shape[1]))
    for f in range(b.shape[1]):
        rows = mask[:, f]
        if rows.sum() < 2:
            continue
        x = a[rows] - a[rows].mean(0)
        y = b[rows, f] - b[rows, f].mean()
        denom = np.sqrt((x**2).sum(0) * (y**2).sum())
        out[:, f] = np.where(denom > 0, (x * y[:, None]).sum(0) / np.where(denom > 0, denom, 1.0), 0.0)
    return out


def separated_attribute_predictability(latents: np.ndarray, factors: np.ndarray) -> float:
    """SAP (Kumar et al. 2018) for continuous factors: per factor, the gap between the two
    latents that predict it best by a linear fit of one latent (R^2, the squared Pearson r),
    averaged over the factors that vary.

    Args:
        latents: (N, D) latent means.
        factors: (N, F) ground-truth factors.

    Returns:
        in [0, 1]: 1 when each factor is a linear function of one latent that no other latent
        predicts, about 0 for latents independent of the factors or each mixing several (a
        45-degree rotation of two factors gives 0). With one latent the gap is its R^2. NaN
        when no factor varies.
    """
    varies = factors.std(0) > 0
    if not varies.any():
        return float("nan")
    r2 = np.sort(correlations(latents, factors[:, varies]) ** 2, axis=0)[::-1]  # (D, F), best latent first
    gaps = r2[0] - (r2[1] if len(r2) > 1 else 0.0)
    return float(gaps.mean())
