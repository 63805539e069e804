"""The guide's charts of one run (docs/design.md, "Diagnostics"): each a pure data function plus
a plotly renderer; the charts of a whole study are in :mod:`psvae_opt.reports.study_charts`.

- training curves of one run, for the training or the validation split;
- label reconstructions: true and predicted label traces over chosen trials, R^2 per label.

The data functions return frozen dataclasses of numpy arrays (tests check those); the
renderers only draw them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from psvae_opt.errors import ConfigError, DataError
from psvae_opt.model import metrics
from psvae_opt.reports.choices import CURVE_SPLITS
from psvae_opt.training.run_folder import SPLIT_CODES, read_metrics

CURVE_METRICS = ("loss", "pixel_mse", "label_r2", "kl_s", "icmi", "tc", "dwkl")


@dataclass(frozen=True)
class TrainingCurves:
    """Per-epoch metrics of one run and split.

    Attributes:
        epochs: (E,) epoch numbers; values: metric -> (E,) values of :data:`CURVE_METRICS`.
        best_epoch: the epoch of the kept checkpoint (from summary.json), None before it exists.
    """

    split: str
    epochs: np.ndarray
    values: dict[str, np.ndarray]
    best_epoch: int | None


def training_curves_data(run_dir: str | Path, split: str) -> TrainingCurves:
    """The rows of ``metrics.csv`` of one split, epoch by epoch."""
    if split not in CURVE_SPLITS:
        raise ConfigError(f"--split {split!r}: choose one of {', '.join(CURVE_SPLITS)}")
    run_dir = Path(run_dir)
    if not (run_dir / "metrics.csv").exists():
        raise DataError(f"{run_dir}: no metrics.csv; the run has not trained an epoch yet (or the folder is wrong)")
    rows = sorted((r for r in read_metrics(run_dir) if r["split"] == split), key=lambda r: r["epoch"])
    summary = run_dir / "summary.json"
    best = json.loads(summary.read_text())["best_epoch"] if summary.exists() else None
    return TrainingCurves(
        split=split,
        epochs=np.array([r["epoch"] for r in rows], int),
        values={m: np.array([r[m] for r in rows], float) for m in CURVE_METRICS},
        best_epoch=best,
    )


def training_curves_figure(curves: Sequence[TrainingCurves], title: str = "") -> go.Figure:
    """One panel per metric of :data:`CURVE_METRICS`, one line per split, the kept epoch dashed."""
    cols = 4
    fig = make_subplots(rows=2, cols=cols, subplot_titles=CURVE_METRICS)
    colors = {"train": "#1f77b4", "val": "#d62728"}
    for i, metric in enumerate(CURVE_METRICS):
        row, col = divmod(i, cols)
        for c in curves:
            fig.add_scatter(
                x=c.epochs.tolist(),
                y=c.values[metric].tolist(),
                mode="lines",
                name=c.split,
                legendgroup=c.split,
                line={"color": colors.get(c.split)},
                showlegend=i == 0,
                row=row + 1,
                col=col + 1,
            )
        fig.update_xaxes(title_text="epoch", row=row + 1, col=col + 1)
    best = next((c.best_epoch for c in curves if c.best_epoch is not None), None)
    if best is not None:
        for i in range(len(CURVE_METRICS)):
            fig.add_vline(x=best, line={"dash": "dash", "color": "gray"}, row=i // cols + 1, col=i % cols + 1)
    fig.update_layout(
        title=title or "training curves" + (f" (dashed: kept epoch {best})" if best is not None else ""),
        template="plotly_white",
    )
    return fig


@dataclass(frozen=True)
class LabelTraces:
    """True and predicted labels over chosen trials, shown one after another.

    Attributes:
        label_names: (L',) names of the shown labels.
        trials: session trial indices shown, in order.
        trial_names, trial_sessions: the name of each shown trial and of its session.
        frames: (N,) session frame indices of those trials, concatenated.
        trial_starts: (len(trials) + 1,) offsets of each trial within ``frames``.
        true: (N, L') labels, NaN where masked; predicted: (N, L') predictions.
        r2: (L',) R^2 of each label over the shown valid entries.
    """

    label_names: tuple[str, ...]
    trials: tuple[int, ...]
    frames: np.ndarray
    trial_starts: np.ndarray
    true: np.ndarray
    predicted: np.ndarray
    r2: np.ndarray
    trial_names: tuple[str, ...] = ()
    trial_sessions: tuple[str, ...] = ()

    @property
    def trial_titles(self) -> tuple[str, ...]:
        """``session: trial`` of each shown trial (the trial index when unnamed)."""
        names = self.trial_names or tuple(f"trial {t}" for t in self.trials)
        sessions = self.trial_sessions or ("",) * len(names)
        return tuple(f"{s}: {n}" if s else n for s, n in zip(sessions, names))


def label_traces_data(
    labels: np.ndarray,
    masks: np.ndarray,
    y_hat: np.ndarray,
    trial_starts: np.ndarray,
    trials: Sequence[int],
    label_idx: Sequence[int],
    label_names: Sequence[str],
    trial_names: Sequence[str] = (),
    trial_sessions: Sequence[str] = (),
) -> LabelTraces:
    """Label traces of ``trials`` for the labels ``label_idx``.

    Args:
        labels, masks, y_hat: (T, L) labels, validity and predictions of every session frame.
        trial_starts: (n_trials + 1,) frame offsets of the session's trials.
        label_names: (L,) names of all labels.
        trial_names, trial_sessions: (n_trials,) the name of every trial and of its session
            (optional; the figure titles each shown trial with them).
    """
    n_trials = len(trial_starts) - 1
    bad = [t for t in trials if not 0 <= t < n_trials]
    if bad or not trials:
        raise ConfigError(f"trials {list(trials)}: give trial indices between 0 and {n_trials - 1}")
    if not label_idx or not all(0 <= k < labels.shape[1] for k in label_idx):
        raise ConfigError(f"labels {list(label_idx)}: give label indices between 0 and {labels.shape[1] - 1}")
    frames = np.concatenate([np.arange(trial_starts[t], trial_starts[t + 1]) for t in trials])
    lengths = [trial_starts[t + 1] - trial_starts[t] for t in trials]
    cols = list(label_idx)
    y, m, p = labels[frames][:, cols], masks[frames][:, cols], y_hat[frames][:, cols]
    r2, _ = metrics.label_r2_per_label(y, p, m)
    return LabelTraces(
        label_names=tuple(label_names[k] for k in cols),
        trials=tuple(int(t) for t in trials),
        frames=frames,
        trial_starts=np.concatenate([[0], np.cumsum(lengths)]).astype(int),
        true=np.where(m > 0, y, np.nan),
        predicted=p.astype(float),
        r2=r2,
        trial_names=tuple(trial_names[t] for t in trials) if len(trial_names) else (),
        trial_sessions=tuple(trial_sessions[t] for t in trials) if len(trial_sessions) else (),
    )


def trials_in_split(split_of_frame: np.ndarray, trial_starts: np.ndarray, code: int = SPLIT_CODES["val"]) -> list[int]:
    """Session trials whose first frame is in the split ``code`` (splits are by trial)."""
    return [t for t in range(len(trial_starts) - 1) if split_of_frame[trial_starts[t]] == code]


def label_traces_figure(data: LabelTraces, title: str = "") -> go.Figure:
    """One row per label: true trace in black, prediction in colour, trial boundaries dotted."""
    titles = [f"{n} (R² = {r:.3f})" for n, r in zip(data.label_names, data.r2)]
    fig = make_subplots(rows=len(titles), cols=1, shared_xaxes=True, subplot_titles=titles, vertical_spacing=0.04)
    x = list(range(len(data.frames)))
    for k in range(len(titles)):
        for name, values, color in (("true", data.true, "black"), ("predicted", data.predicted, "#d62728")):
            fig.add_scatter(
                x=x,
                y=values[:, k].tolist(),
                mode="lines",
                name=name,
                legendgroup=name,
                line={"color": color},
                showlegend=k == 0,
                row=k + 1,
                col=1,
            )
        for start in data.trial_starts[1:-1]:
            fig.add_vline(x=start - 0.5, line={"dash": "dot", "color": "gray"}, row=k + 1, col=1)
    for start, text in zip(data.trial_starts[:-1], data.trial_titles):  # each trial's name, atop its stretch
        fig.add_annotation(
            x=float(start) - 0.5,
            y=1.0,
            xref="x",
            yref="y domain",
            text=text,
            showarrow=False,
            xanchor="left",
            yanchor="top",
            font={"size": 11, "color": "dimgray"},
            bgcolor="rgba(255, 255, 255, 0.7)",
        )
    fig.update_xaxes(title_text=f"frame (trials {', '.join(map(str, data.trials))})", row=len(titles), col=1)
    fig.update_layout(
        title=title or "label reconstructions", template="plotly_white", height=max(300, 180 * len(titles))
    )
    return fig
