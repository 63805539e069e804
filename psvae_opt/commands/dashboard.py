"""`psvae-opt dashboard`, and what feeds it during a search.

- while a trial runs (at its end, still RUNNING), :func:`trial_uploader` renders its
  diagnostics into ``<run_dir>/diagnostics`` and uploads them as the trial's artifacts; a
  stage-2 trial also gets its rating twin (:mod:`psvae_opt.ratings`);
- after a stage, :func:`save_search_summary` saves the search summary on the study;
- ``psvae-opt dashboard`` serves the database and the artifact store on 127.0.0.1.

Diagnostics are best effort: a failure to render or upload logs a warning and the trial goes on.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable

import optuna

from psvae_opt import dashboard, plots, ratings, space
from psvae_opt.commands import Command, add_config_arguments, add_storage_argument, load_config_from
from psvae_opt.commands.report import render_trial_diagnostics
from psvae_opt.config import Config
from psvae_opt.data import Session
from psvae_opt.devices import resolve_device
from psvae_opt.trainer import FitResult

log = logging.getLogger(__name__)
TRIAL_NOTE = "Rate this model's traversals in study **{study}**, trial {number} (the rating form is there)."


def open_rating_study(storage: optuna.storages.BaseStorage, stage2: optuna.Study) -> optuna.Study:
    """The rating study of a stage-2 study (created with its form when missing)."""
    return ratings.open_rating_study(storage, stage2, int(stage2.user_attrs.get("n_unsup", 2)))


def trial_uploader(
    study: optuna.Study, session: Session, config: Config
) -> Callable[[optuna.Trial, Config, FitResult], None]:
    """The ``on_finish`` hook of a worker's trials (see :class:`psvae_opt.objectives.TrialContext`)."""
    folder = dashboard.artifact_dir([study], config)
    stage = study.user_attrs.get("stage")

    def upload(trial: optuna.Trial, trial_config: Config, result: FitResult) -> None:
        start = time.perf_counter()
        try:
            store = dashboard.open_store(folder)
            device = str(resolve_device(trial_config.train.device))
            paths = render_trial_diagnostics(result.run_dir, session, result.run_dir / "diagnostics", device)
            dashboard.upload_files(trial, store, paths)
            if stage == 2:
                from optuna_dashboard import save_note

                rating = open_rating_study(study._storage, study)
                twin = ratings.add_twin(rating, trial, [p for p in paths if p.suffix in (".png", ".mp4")], store)
                save_note(trial, TRIAL_NOTE.format(study=rating.study_name, number=twin))
            trial.set_user_attr("diagnostics_seconds", round(time.perf_counter() - start, 2))
        except Exception as exc:
            log.warning("trial %d: diagnostics not uploaded (%s: %s)", trial.number, type(exc).__name__, exc)

    return upload


def save_search_summary(study: optuna.Study, stage: int) -> None:
    """Save the stage's search summary on the study (optuna-dashboard shows it on the study page)."""
    try:
        dashboard.save_figure(study, plots.search_summary(study, stage), f"search-summary-stage{stage}")
    except Exception as exc:
        log.warning("search summary not saved on %s (%s: %s)", study.study_name, type(exc).__name__, exc)


def _add_dashboard(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    add_storage_argument(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    p.add_argument(
        "--artifacts", metavar="DIR", help="artifact folder (default: recorded on the studies, else RUNS_DIR/artifacts)"
    )


def _run_dashboard(args: argparse.Namespace) -> int:
    from pathlib import Path

    from psvae_opt.errors import ConfigError, StorageError
    from psvae_opt.storage import describe, open_storage, resolve_url
    from psvae_opt.study import load_stage

    cfg = load_config_from(args)
    url = resolve_url(args.storage)
    storage = open_storage(url, heartbeat=False)
    studies = []
    for stage in space.STAGES:
        try:
            studies.append(load_stage(storage, cfg, stage))
        except StorageError:
            pass
    folder = Path(args.artifacts).resolve() if args.artifacts else dashboard.artifact_dir(studies, cfg)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning(
            "listening on %s: optuna-dashboard has no login, anyone who reaches this port can change trials", args.host
        )
    try:
        store = dashboard.open_store(folder)
    except OSError as exc:
        raise ConfigError(f"--artifacts {folder}: cannot create the artifact folder ({exc.strerror or exc})") from None
    try:
        dashboard.check_address(args.host, args.port)
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {args.host}:{args.port} ({exc.strerror or exc}); choose another --port or --host"
        ) from None
    print(
        f"optuna-dashboard: http://{args.host}:{args.port}/dashboard  ({describe(url)}; artifacts {folder})", flush=True
    )
    dashboard.serve(storage, store, args.host, args.port)
    return 0


COMMANDS = {
    "dashboard": Command("serve optuna-dashboard on the studies and their artifacts", _add_dashboard, _run_dashboard)
}
