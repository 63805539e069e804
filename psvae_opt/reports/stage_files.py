"""The files of `psvae-opt export` (not `psvae-opt model export`, which writes a model bundle:
:mod:`psvae_opt.inference.bundle`): the Pareto front (CSV, JSON, HTML plot), the per-group summary over
seeds, the trials that gave up and, for stage 2, the human ratings.

Files (docs/design.md, "Exports"): ``pareto.csv`` / ``pareto.json`` (the front, with every
metric, latent health and leakage; the JSON adds the recommendation, with stage 2's P(best)
per beta and the guide's choice beside the service's, and the trials that gave up),
``pareto.html``, ``seeds_summary.csv`` (one row per beta, or per alpha and n_unsup, with means,
spreads and t intervals), ``failures.csv`` (grid points that spent their crash budget) and,
for stage 2, ``ratings.csv`` and ``recommendation.txt`` (both choices in words).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from psvae_opt.errors import ConfigError
from psvae_opt.reports import study_charts
from psvae_opt.reports.ratings import RATING_ATTRS, ratings_by_trial
from psvae_opt.search import trial_queue
from psvae_opt.search.recommendation import describe_stage2, pareto_front
from psvae_opt.search.rules import BASE_METRICS, FACTOR_PREFIX
from psvae_opt.search.stages import STAGES, seed_summary
from psvae_opt.search.study import given_up

HEALTH_COLUMNS = ("collapsed", "collapsed_dims", "zu_std", "zu_kl", "zu_label_corr", "zu_factor_corr")
SESSION_COLUMNS = ("val_label_r2_by_session", "val_pixel_mse_by_session")  # session name -> value; 2+ sessions
ATTR_COLUMNS = (*BASE_METRICS, "seed", "best_epoch", *HEALTH_COLUMNS, *SESSION_COLUMNS)


def trial_row(trial: FrozenTrial) -> dict[str, Any]:
    """One trial as a flat row: number, parameters, every metric, latent health and leakage, run folder."""
    row: dict[str, Any] = {"trial": trial.number}
    row.update({k: trial.params[k] for k in sorted(trial.params)})
    row.update({k: trial.user_attrs.get(k) for k in ATTR_COLUMNS})
    row.update({k: v for k, v in sorted(trial.user_attrs.items()) if k.startswith(FACTOR_PREFIX)})
    row["run_dir"] = trial.user_attrs.get("run_dir")
    return row


def failure_row(trial: FrozenTrial) -> dict[str, Any]:
    """A trial that gave up: its grid point, attempts, last error and run folder."""
    line = trial_queue.lineage(trial)
    return {
        "trial": trial.number,
        **trial_queue.point_of(trial),
        "first_trial": line[trial_queue.FIRST],
        "crash_retries": line[trial_queue.CRASHES],
        "signal_requeues": line[trial_queue.SIGNALS],
        "error": trial.user_attrs.get("error"),
        "run_dir": trial.user_attrs.get("run_dir"),
    }


def with_ratings(rated: dict[int, dict[str, Any]], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Stage-2 rows with the human traversal ratings (``ratings_by_trial``; None where unrated)."""
    return [{**row, **{k: rated.get(row["trial"], {}).get(k) for k in RATING_ATTRS}} for row in rows]


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    columns = list(dict.fromkeys(k for row in rows for k in row)) or ["trial"]
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(
            {k: (json.dumps(v) if isinstance(v, list | dict) else v) for k, v in row.items()} for row in rows
        )
    return path


def prepare_folder(out_dir: str | Path) -> Path:
    """Create the export folder, or refuse in one line when it cannot be written."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".psvae-opt-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot write there ({exc.strerror or exc}); choose another folder") from None
    return out


def export_stage(
    storage: optuna.storages.BaseStorage,
    study: optuna.Study,
    stage: int,
    out_dir: str | Path,
    recommendation: dict | None = None,
) -> list[Path]:
    """Write the stage's files (module docstring); ``storage`` holds the study and its rating study,
    ``recommendation`` the stage's current one (None: incomplete, or nothing complete)."""
    record = STAGES[stage]
    out = prepare_folder(out_dir)
    rated = ratings_by_trial(storage, study) if record.rated else {}
    front = [trial_row(t) for t in pareto_front(study)]
    rows = with_ratings(rated, front) if record.rated else front
    failures = [failure_row(t) for t in given_up(study)]
    written = [_write_csv(out / "pareto.csv", rows)]
    payload = {
        "study": study.study_name,
        "stage": stage,
        "objectives": list(record.objectives),
        "recommendation": None if recommendation is None else recommendation.stored(),
        "pareto_front": rows,
        "gave_up": failures,
    }
    (out / "pareto.json").write_text(json.dumps(payload, indent=2))
    written.append(out / "pareto.json")
    fig = study_charts.pareto_figure(study_charts.pareto_data(study, stage), f"{study.study_name}: Pareto front")
    fig.write_html(out / "pareto.html", include_plotlyjs=True)
    written.append(out / "pareto.html")
    written.append(_write_csv(out / "seeds_summary.csv", seed_summary(study, stage)))
    written.append(_write_csv(out / "failures.csv", failures))
    if record.rated:
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        written.append(_write_csv(out / "ratings.csv", with_ratings(rated, [trial_row(t) for t in complete])))
    if record.explains_choice and recommendation:  # the service's choice and the guide's, side by side, in words
        (out / "recommendation.txt").write_text("\n".join(describe_stage2(recommendation, run_dirs=True)) + "\n")
        written.append(out / "recommendation.txt")
    return written
