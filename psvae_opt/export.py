"""Exports of a finished stage: the Pareto front (CSV, JSON, HTML plot) and, for stage 2,
the per-beta summary over seeds. Each plot is a data function plus a plotly renderer.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import plotly.graph_objects as go
from optuna.trial import FrozenTrial, TrialState

from psvae_opt import space
from psvae_opt.ratings import RATING_ATTRS, ratings_by_trial
from psvae_opt.runs import METRIC_NAMES
from psvae_opt.study import knee_index, pareto_front, seed_summary

ATTR_COLUMNS = tuple(f"val_{m}" for m in METRIC_NAMES) + ("train_zu_corr", "mig", "seed", "best_epoch")


def trial_row(trial: FrozenTrial) -> dict[str, Any]:
    """One trial as a flat row: number, parameters, every metric, run folder."""
    row: dict[str, Any] = {"trial": trial.number}
    row.update({k: trial.params[k] for k in sorted(trial.params)})
    row.update({k: trial.user_attrs.get(k) for k in ATTR_COLUMNS})
    row["run_dir"] = trial.user_attrs.get("run_dir")
    return row


def pareto_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """The Pareto front as rows, ordered by the first objective."""
    return [trial_row(t) for t in pareto_front(study)]


def with_ratings(rated: dict[int, dict[str, Any]], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Stage-2 rows with the human traversal ratings (``ratings_by_trial``; None where unrated)."""
    return [{**row, **{k: rated.get(row["trial"], {}).get(k) for k in RATING_ATTRS}} for row in rows]


def pareto_plot_data(study: optuna.Study, stage: int) -> dict[str, Any]:
    """Objective values of every complete trial, which are on the front, and the knee."""
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    front = {t.number for t in study.best_trials}
    values = np.array([t.values for t in trials], float).reshape(-1, 2)
    front_values = np.array([t.values for t in pareto_front(study)], float).reshape(-1, 2)
    return {
        "names": list(space.OBJECTIVES[stage]),
        "numbers": [t.number for t in trials],
        "labels": [", ".join(f"{k}={v:g}" for k, v in sorted(t.params.items())) for t in trials],
        "values": values,
        "on_front": np.array([t.number in front for t in trials], bool),
        "knee": front_values[knee_index(front_values)] if len(front_values) else None,
    }


def pareto_figure(data: dict[str, Any], title: str) -> go.Figure:
    """Scatter of every trial, the front highlighted and joined, the knee marked."""
    x_name, y_name = data["names"]
    values, on = data["values"], data["on_front"]
    fig = go.Figure()
    hover = [f"trial {n}: {lab}" for n, lab in zip(data["numbers"], data["labels"])]
    fig.add_scatter(
        x=values[~on, 0],
        y=values[~on, 1],
        mode="markers",
        name="dominated",
        marker={"color": "lightgray", "size": 9},
        text=[h for h, o in zip(hover, on) if not o],
    )
    order = np.argsort(values[on, 0])
    front_hover = [h for h, o in zip(hover, on) if o]
    front_labels = [lab for lab, o in zip(data["labels"], on) if o]
    fig.add_scatter(
        x=values[on, 0][order],
        y=values[on, 1][order],
        mode="lines+markers+text",
        name="Pareto front",
        marker={"size": 11},
        hovertext=[front_hover[i] for i in order],
        text=[front_labels[i] for i in order],
        textposition="top center",
        cliponaxis=False,
    )
    if data["knee"] is not None:
        fig.add_scatter(
            x=[data["knee"][0]],
            y=[data["knee"][1]],
            mode="markers",
            name="recommended (knee)",
            marker={"symbol": "star", "size": 18, "color": "crimson"},
        )
    fig.update_layout(
        title=title, xaxis_title=f"{x_name} (minimise)", yaxis_title=f"{y_name} (minimise)", template="plotly_white"
    )
    return fig


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows({k: (json.dumps(v) if isinstance(v, list) else v) for k, v in row.items()} for row in rows)
    return path


def export_stage(study: optuna.Study, stage: int, out_dir: str | Path) -> list[Path]:
    """Write pareto.csv, pareto.json, pareto.html and, for stage 2, seeds_summary.csv and ratings.csv.

    Stage-2 rows carry the human traversal ratings; ratings.csv lists every complete trial.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rated = ratings_by_trial(study) if stage == 2 else {}
    rows = pareto_rows(study) if stage == 1 else with_ratings(rated, pareto_rows(study))
    written = [_write_csv(out / "pareto.csv", rows)]
    payload = {
        "study": study.study_name,
        "stage": stage,
        "objectives": list(space.OBJECTIVES[stage]),
        "recommendation": study.user_attrs.get("recommendation"),
        "pareto_front": rows,
    }
    (out / "pareto.json").write_text(json.dumps(payload, indent=2))
    written.append(out / "pareto.json")
    fig = pareto_figure(pareto_plot_data(study, stage), f"{study.study_name}: Pareto front")
    fig.write_html(out / "pareto.html", include_plotlyjs=True)
    written.append(out / "pareto.html")
    if stage == 2:
        written.append(_write_csv(out / "seeds_summary.csv", seed_summary(study)))
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        written.append(_write_csv(out / "ratings.csv", with_ratings(rated, [trial_row(t) for t in complete])))
    return written
