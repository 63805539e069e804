"""The guide's diagnostics as files, and what a worker uploads to the dashboard while it trains.

- :func:`write_curves`, :func:`write_labels`, :func:`write_summary`: the charts of
  :mod:`psvae_opt.reports.study_charts` as HTML (``report`` writes them self-contained; trials upload
  versions that load plotly.js from its CDN, 4 MB less each);
- :class:`TrialUploader`: a worker's :class:`~psvae_opt.search.objective.TrialHooks`. Every
  :data:`CURVES_SECONDS` (at an epoch's end) it refreshes the trial's ``curves.html`` artifact
  (the same artifact id, new content), and when the fit is done it uploads the curves, label traces, traversal image and
  movie, notes a collapsed unsupervised dimension in the trial's dashboard note and, in stage
  2, opens the trial's rating twin (:mod:`psvae_opt.reports.ratings`);
- :func:`save_search_summary`: the stage's summary chart saved on the study.

Diagnostics are best effort: a failure logs a warning and never fails a trained trial.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import optuna
import plotly.graph_objects as go

from psvae_opt.config import Config
from psvae_opt.data import Session
from psvae_opt.reports import dashboard, ratings, run_charts, study_charts, traversals
from psvae_opt.search.recommendation import describe_stage2
from psvae_opt.search.records import Stage2Recommendation
from psvae_opt.search.stages import STAGES
from psvae_opt.search.storage import error_line
from psvae_opt.training.devices import resolve_device
from psvae_opt.training.run_end import FitResult
from psvae_opt.training.run_folder import SPLIT_CODES, load_latents
from psvae_opt.training.trained import load_run

log = logging.getLogger(__name__)
CURVES_SECONDS = 30.0  # the least time between refreshes of a running trial's curves artifact
TRIAL_NOTE_RATING = "Rate this model's traversals in study **{study}**, trial {number} (the rating form is there)."
TRIAL_NOTE_COLLAPSED = (
    "**Collapsed:** unsupervised dimension(s) {dims} barely vary (posterior-mean std {stds}, below {limit}); "
    "a collapsed dimension correlates with nothing, so its low zu_corr is no merit."
)


def write_html(fig: go.Figure, path: Path, plotlyjs: bool | str = True) -> Path:
    """A figure as HTML: self-contained (``plotlyjs=True``) or loading plotly.js from its CDN ("cdn")."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.write_html(path, include_plotlyjs=plotlyjs, full_html=True)
    return path


def write_summary(study: optuna.Study, stage: int, path: Path) -> Path:
    return write_html(study_charts.search_summary(study, stage), path)


def write_curves(
    run_dir: Path, path: Path, splits: Sequence[str] = run_charts.CURVE_SPLITS, plotlyjs: bool | str = True
) -> Path:
    curves = [run_charts.training_curves_data(run_dir, s) for s in splits]
    title = f"{run_dir.name}: training curves ({', '.join(splits)})"
    return write_html(run_charts.training_curves_figure(curves, title), path, plotlyjs)


def write_labels(
    run_dir: Path,
    session: Session,
    path: Path,
    trials: Sequence[int] | None = None,
    labels: Sequence[int] | None = None,
    split: str = "val",
    plotlyjs: bool | str = True,
) -> Path:
    """Label traces of ``trials`` (default: two trials of ``split``, the first of each session
    before a second of one), each titled with its session and trial name."""
    latents = load_latents(run_dir)
    if not trials:
        pool = run_charts.trials_in_split(latents["split"], session.trial_starts, SPLIT_CODES[split])
        firsts: dict[int, int] = {}  # session -> its first trial of the split
        for t in pool:
            firsts.setdefault(int(session.trial_sessions[t]), t)
        chosen = [*firsts.values(), *(t for t in pool if t not in firsts.values())]
        trials = sorted(chosen[:2]) or [0]
    sessions = [session.session_names[s] for s in session.trial_sessions]
    data = run_charts.label_traces_data(
        session.labels,
        session.masks,
        latents["y_hat"],
        session.trial_starts,
        list(trials),
        list(labels) if labels else list(range(session.n_labels)),
        session.label_names,
        trial_names=[name.removeprefix(f"{s}/") for name, s in zip(session.trial_names, sessions)],
        trial_sessions=sessions,
    )
    return write_html(run_charts.label_traces_figure(data, f"{run_dir.name}: label reconstructions"), path, plotlyjs)


def render_trial_diagnostics(run_dir: Path, session: Session, out_dir: Path, device: str = "cpu") -> list[Path]:
    """What a finished trial uploads: curves.html, labels.html, traversal.png, traversal.mp4.

    Kept cheap next to training: labels over at most two validation trials, one traversal
    grid of 7 steps, a movie of 3 base frames with 30 steps per sweep.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    run = load_run(run_dir, session, device)
    return [
        write_curves(run_dir, out_dir / "curves.html", plotlyjs="cdn"),
        write_labels(run_dir, session, out_dir / "labels.html", plotlyjs="cdn"),
        traversals.write_traversal_png(run, session, out_dir / "traversal.png"),
        traversals.write_traversal_movie(run, session, out_dir / "traversal.mp4"),
    ]


def trial_note(trial: optuna.Trial, collapse_std: float, rating: tuple[str, int] | None) -> str:
    """The dashboard note of a finished trial: a collapse warning, and where to rate it."""
    attrs = trial.user_attrs
    lines = []
    if attrs.get("collapsed"):
        stds = ", ".join(f"{attrs['zu_std'][d]:.3f}" for d in attrs["collapsed_dims"])
        lines.append(TRIAL_NOTE_COLLAPSED.format(dims=attrs["collapsed_dims"], stds=stds, limit=collapse_std))
    if rating is not None:
        lines.append(TRIAL_NOTE_RATING.format(study=rating[0], number=rating[1]))
    return "\n\n".join(lines)


class TrialUploader:
    """The hooks of a worker's trials: live curves, then every diagnostic at the end.

    Args:
        storage: the study database (the rating twins live there).
        study: the stage's study (its ``stage`` and artifact folder attributes).
        session: the worker's data.
        config: the worker's study file.
        retry: how the end-of-trial uploads ride out a database outage
            (:meth:`psvae_opt.search.storage.StudyDatabase.retry`); by default they do not.
        mounted_artifacts: where this machine mounts the artifact folder (``$PSVAE_OPT_ARTIFACTS``).
    """

    def __init__(
        self,
        storage: optuna.storages.BaseStorage,
        study: optuna.Study,
        session: Session,
        config: Config,
        refresh_seconds: float = CURVES_SECONDS,
        retry: Callable[..., Any] | None = None,
        mounted_artifacts: str | None = None,
    ) -> None:
        self.storage, self.study, self.session, self.config = storage, study, session, config
        self.folder = dashboard.artifact_dir([study], config, mounted_artifacts, writing=True)
        stage = study.user_attrs.get("stage")
        self.rated = stage in STAGES and STAGES[stage].rated  # its traversals get a rating twin
        self.refresh_seconds = refresh_seconds
        self.retry = retry
        self.curves_ids: dict[int, str] = {}  # trial number -> the artifact id of its curves.html
        self.refreshed: dict[int, float] = {}  # trial number -> time.monotonic() of its last refresh

    def on_epoch(self, trial: optuna.Trial, run_dir: Path, epoch: int, rows: dict) -> None:
        """Refresh the running trial's curves artifact once ``refresh_seconds`` have passed."""
        now = time.monotonic()
        if now - self.refreshed.setdefault(trial.number, now) < self.refresh_seconds:
            return
        self.refreshed[trial.number] = now
        try:
            self._upload_curves(trial, run_dir)
        except Exception as exc:  # the curves are a convenience (the next epoch tries again)
            log.warning("trial %d: curves not refreshed (%s: %s)", trial.number, type(exc).__name__, error_line(exc))

    def _upload_curves(self, trial: optuna.Trial, run_dir: Path) -> None:
        path = write_curves(run_dir, run_dir / "diagnostics" / "curves.html", plotlyjs="cdn")
        store = dashboard.open_store(self.folder)
        artifact = self.curves_ids.get(trial.number)
        if artifact is None:
            self.curves_ids[trial.number] = dashboard.upload_files(trial, store, [path])[0]
        else:
            store.write(artifact, io.BytesIO(path.read_bytes()))

    def _stored(self, call: Callable[[], Any], what: str) -> Any:
        return self.retry(call, what=what) if self.retry else call()

    def on_finish(self, trial: optuna.Trial, trial_config: Config, result: FitResult) -> None:
        start = time.perf_counter()
        try:
            store = dashboard.open_store(self.folder)
            device = str(resolve_device(trial_config.train.device))
            paths = render_trial_diagnostics(result.run_dir, self.session, result.run_dir / "diagnostics", device)
            what = f"uploading the diagnostics of trial {trial.number}"
            self._stored(lambda: self._upload_curves(trial, result.run_dir), what)
            self._stored(
                lambda: dashboard.upload_files(trial, store, [p for p in paths if p.name != "curves.html"]), what
            )
            rating = None
            if self.rated:
                rating = self._stored(lambda: self._add_twin(trial, paths, store), what)
            note = trial_note(trial, self.config.study.collapse_std, rating)
            if note:
                self._stored(lambda: dashboard.save_trial_note(trial, note), what)
            seconds = round(time.perf_counter() - start, 2)
            self._stored(lambda: trial.set_user_attr("diagnostics_seconds", seconds), what)
        except Exception as exc:  # diagnostics never fail a trained trial
            log.warning(
                "trial %d: diagnostics not uploaded (%s: %s)", trial.number, type(exc).__name__, error_line(exc)
            )

    def _add_twin(
        self, trial: optuna.Trial, paths: list[Path], store: optuna.artifacts.FileSystemArtifactStore
    ) -> tuple[str, int]:
        n_unsup = int(self.study.user_attrs.get("n_unsup", 2))
        twin_study = ratings.open_rating_study(self.storage, self.study, n_unsup)
        media = [p for p in paths if p.suffix in (".png", ".mp4")]
        return twin_study.study_name, ratings.add_twin(twin_study, trial, media, store)


def save_search_summary(study: optuna.Study, stage: int) -> None:
    """Save the stage's search summary on the study (optuna-dashboard shows it on the study page)."""
    try:
        dashboard.save_figure(study, study_charts.search_summary(study, stage), f"search-summary-stage{stage}")
    except Exception as exc:  # the summary is a convenience
        log.warning("search summary not saved on %s (%s: %s)", study.study_name, type(exc).__name__, exc)


def choice_note(study: optuna.Study, rec: Stage2Recommendation) -> str:
    """The study note of stage 2's recommendation: the service's choice and the guide's, side by
    side, each a link to its trial page (traversal movies and plots one click away)."""
    lines = ["## Recommended model", "", *(f"- {line.strip()}" for line in describe_stage2(rec)), ""]
    service = dashboard.trial_link(study, rec.trial, f"trial {rec.trial}")
    lines.append(f"- chosen by {rec.criterion}: {service}")
    guide = rec.guide
    if guide and rec.differs:
        link = dashboard.trial_link(study, guide.trial, f"trial {guide.trial}")
        lines.append(f"- chosen by the guide's zu_corr: {link}")
    return "\n".join(lines) + "\n"


def save_choice_note(study: optuna.Study, rec: Stage2Recommendation | None) -> None:
    """Save :func:`choice_note` on the study (nothing without a recommendation)."""
    if not rec:
        return
    try:
        dashboard.save_study_note(study, choice_note(study, rec))
    except Exception as exc:  # the note is a convenience
        log.warning("recommendation note not saved on %s (%s: %s)", study.study_name, type(exc).__name__, exc)
