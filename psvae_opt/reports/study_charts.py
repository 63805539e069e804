"""The guide's charts of a study (docs/design.md, "Diagnostics"): each a pure data function plus
a plotly renderer; the charts of one run are in :mod:`psvae_opt.reports.run_charts`.

- search summary: a stage's metrics against the searched weight, mean and spread over seeds;
- Pareto front: every trial's two objectives, the front and the recommendation.

The data functions return frozen dataclasses of numpy arrays (tests check those); the
renderers only draw them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import optuna
import plotly.graph_objects as go
from optuna.trial import TrialState
from plotly.subplots import make_subplots

from psvae_opt.search.records import stored_recommendation
from psvae_opt.search.rules import FACTOR_PREFIX, group_summary, summary_metrics
from psvae_opt.search.stages import STAGES


@dataclass(frozen=True)
class SummarySeries:
    """One line of the search summary: complete trials grouped by the searched weight.

    Attributes:
        group: the value of the grouping parameter (stage 1: n_unsup), None in stage 2.
        x: (P,) sorted distinct values of the weight (alpha or beta).
        n: (P,) trials (seeds) summarised at each x (stage 2: those whose latents did not collapse).
        mean, std: metric -> (P,) mean and sample std (0 for one trial, NaN for none).
    """

    group: float | None
    x: np.ndarray
    n: np.ndarray
    mean: dict[str, np.ndarray]
    std: dict[str, np.ndarray]


@dataclass(frozen=True)
class SearchSummary:
    """The search summary of one stage."""

    stage: int
    x_name: str
    group_name: str | None
    metrics: tuple[str, ...]
    series: tuple[SummarySeries, ...]


def search_summary_data(study: optuna.Study, stage: int) -> SearchSummary:
    """Per value of the searched weight (and, in stage 1, per n_unsup): mean and spread of each metric.

    The statistics are :func:`psvae_opt.search.rules.group_summary`'s (stage 2 over the seeds whose
    latents did not collapse, as the recommendation); a trial without a metric (e.g.
    ``train_zu_corr`` undefined) is left out of that metric only.
    """
    record = STAGES[stage]
    by = record.group_by  # the searched weight first, then (stage 1) one line per value of the other
    x_name, group_name = by[0], (by[1] if len(by) > 1 else None)
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    factors = tuple(m for m in summary_metrics(trials) if m.startswith(FACTOR_PREFIX)) if record.factor_panels else ()
    panels = record.summary_panels + factors
    rows = group_summary(trials, by, skip_collapsed=record.skip_collapsed)
    groups = sorted({r[group_name] for r in rows}) if group_name else [None] if rows else []
    series = []
    for group in groups:
        mine = sorted((r for r in rows if group is None or r[group_name] == group), key=lambda r: r[x_name])

        def column(key: str, mine: list = mine) -> np.ndarray:
            return np.array([math.nan if r[key] is None else r[key] for r in mine], float)

        series.append(
            SummarySeries(
                group=None if group is None else float(group),
                x=np.array([float(r[x_name]) for r in mine]),
                n=np.array([len(r["trials"]) for r in mine]),
                mean={m: column(f"{m}_mean") for m in panels},
                std={m: column(f"{m}_std") for m in panels},
            )
        )
    return SearchSummary(stage, x_name, group_name, panels, tuple(series))


def search_summary_figure(data: SearchSummary, title: str = "") -> go.Figure:
    """One panel per metric, the weight on x (log scale for alpha), error bars = std over seeds.

    Renderers hand plotly lists, not arrays: plotly would store arrays as base64 typed
    arrays, which older plotly.js (and a reader of the study's JSON) cannot read.
    """
    cols = min(3, len(data.metrics))
    fig = make_subplots(rows=math.ceil(len(data.metrics) / cols), cols=cols, subplot_titles=data.metrics)
    for i, metric in enumerate(data.metrics):
        row, col = divmod(i, cols)
        for s in data.series:
            name = f"{data.group_name} = {s.group:g}" if data.group_name else "mean ± std over seeds"
            fig.add_scatter(
                x=s.x.tolist(),
                y=_plain(s.mean[metric]),
                error_y={"type": "data", "array": _plain(s.std[metric]), "visible": True},
                mode="lines+markers",
                name=name,
                legendgroup=name,
                showlegend=i == 0,
                customdata=s.n.tolist(),
                hovertemplate=f"{data.x_name}=%{{x:g}}<br>{metric}=%{{y:.5g}}<br>n=%{{customdata}}",
                row=row + 1,
                col=col + 1,
            )
        fig.update_xaxes(
            title_text=data.x_name, type="log" if data.x_name == "alpha" else "linear", row=row + 1, col=col + 1
        )
    fig.update_layout(title=title or f"stage {data.stage}: search summary", template="plotly_white")
    return fig


def _plain(values: np.ndarray) -> list[float | None]:
    """A list for plotly, NaN as None (a gap)."""
    return [None if math.isnan(v) else float(v) for v in values]


def search_summary(study: optuna.Study, stage: int) -> go.Figure:
    """The search summary chart of a stage's study."""
    return search_summary_figure(search_summary_data(study, stage), f"{study.study_name}: search summary")


@dataclass(frozen=True)
class ParetoData:
    """The Pareto chart of a stage: every complete trial, which are on the front, the recommendation.

    Attributes:
        names: the two objectives (both minimised).
        numbers: (n,) trial numbers; labels: their parameters as text.
        values: (n, 2) objective values; on_front: (n,) bool.
        recommended: (2,) the recommended point (stage 1: the seed means of the recommended
            alpha; stage 2: the recommended model), or None.
    """

    names: tuple[str, str]
    numbers: tuple[int, ...]
    labels: tuple[str, ...]
    values: np.ndarray
    on_front: np.ndarray
    recommended: np.ndarray | None


def pareto_data(study: optuna.Study, stage: int) -> ParetoData:
    """The data of :func:`pareto_figure`."""
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    front = {t.number for t in study.best_trials}
    rec = stored_recommendation(study.user_attrs)
    recommended = None
    if rec and STAGES[stage].marks_means:
        recommended = np.array([rec.pixel_mse, rec.label_mse], float)
    elif rec:
        recommended = next((np.array(t.values, float) for t in trials if t.number == rec.trial), None)
    return ParetoData(
        names=STAGES[stage].objectives,
        numbers=tuple(t.number for t in trials),
        labels=tuple(", ".join(f"{k}={v:g}" for k, v in sorted(t.params.items())) for t in trials),
        values=np.array([t.values for t in trials], float).reshape(-1, 2),
        on_front=np.array([t.number in front for t in trials], bool),
        recommended=recommended,
    )


def pareto_figure(data: ParetoData, title: str) -> go.Figure:
    """Scatter of every trial, the front highlighted and joined, the recommendation starred."""
    x_name, y_name = data.names
    values, on = data.values, data.on_front
    hover = [f"trial {n}: {lab}" for n, lab in zip(data.numbers, data.labels)]
    fig = go.Figure()
    fig.add_scatter(
        x=values[~on, 0].tolist(),
        y=values[~on, 1].tolist(),
        mode="markers",
        name="dominated",
        marker={"color": "lightgray", "size": 9},
        text=[h for h, o in zip(hover, on) if not o],
    )
    order = np.argsort(values[on, 0])
    front_hover = [h for h, o in zip(hover, on) if o]
    front_labels = [lab for lab, o in zip(data.labels, on) if o]
    fig.add_scatter(
        x=values[on, 0][order].tolist(),
        y=values[on, 1][order].tolist(),
        mode="lines+markers+text",
        name="Pareto front",
        marker={"size": 11},
        hovertext=[front_hover[i] for i in order],
        text=[front_labels[i] for i in order],
        textposition="top center",
        cliponaxis=False,
    )
    if data.recommended is not None:
        fig.add_scatter(
            x=[float(data.recommended[0])],
            y=[float(data.recommended[1])],
            mode="markers",
            name="recommended",
            marker={"symbol": "star", "size": 18, "color": "crimson"},
        )
    fig.update_layout(
        title=title, xaxis_title=f"{x_name} (minimise)", yaxis_title=f"{y_name} (minimise)", template="plotly_white"
    )
    return fig
