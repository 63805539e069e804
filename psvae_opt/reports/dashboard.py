"""optuna-dashboard's side of a search: the artifact store, uploads, study figures, the server.

Both stages upload to one :class:`~optuna.artifacts.FileSystemArtifactStore`, by default
``<study.runs_dir>/artifacts`` (absolute), recorded on each stage's study as the user
attribute ``artifact_dir`` when the launcher creates it, so that workers and
``psvae-opt dashboard`` anywhere find it. The store keeps one file per artifact, named by
its id; the file name and MIME type are the trial's (or study's) system attribute
``artifacts:<id>``. With workers on several machines the folder must be shared (NFS or
similar) and mounted at the same path everywhere, or each machine sets
``$PSVAE_OPT_ARTIFACTS`` to where it mounts it.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Sequence
from pathlib import Path

import optuna
import plotly.graph_objects as go
from optuna.artifacts import FileSystemArtifactStore, upload_artifact

from psvae_opt.config import Config
from psvae_opt.errors import StorageError
from psvae_opt.training.run_folder import confined

log = logging.getLogger(__name__)

ARTIFACT_ATTR = "artifact_dir"
ARTIFACT_ENV = "PSVAE_OPT_ARTIFACTS"  # where a machine mounts the artifact folder (read by the command edge)


def default_artifact_dir(config: Config) -> Path:
    """``<study.runs_dir>/artifacts``, absolute."""
    return Path(config.study.runs_dir).resolve() / "artifacts"


def record_artifact_dir(study: optuna.Study, config: Config, mounted: str | None = None) -> Path:
    """Record where the study's artifacts go (once: a resumed study keeps its folder); returns it.

    ``mounted``: ``$PSVAE_OPT_ARTIFACTS`` (read by the command edge), which wins over the default.
    """
    if ARTIFACT_ATTR not in study.user_attrs:
        study.set_user_attr(ARTIFACT_ATTR, str(Path(mounted or default_artifact_dir(config)).resolve()))
    return Path(study.user_attrs[ARTIFACT_ATTR])


def artifact_dir(
    studies: Sequence[optuna.Study], config: Config, mounted: str | None = None, *, writing: bool = False
) -> Path:
    """The artifact folder: ``mounted`` (``$PSVAE_OPT_ARTIFACTS``, read by the command edge), else
    the first one recorded on ``studies``, else the default.

    ``writing`` (a worker uploading): a recorded folder must lie inside ``study.runs_dir``.
    """
    if mounted:
        return Path(mounted).resolve()
    recorded = [s.user_attrs[ARTIFACT_ATTR] for s in studies if ARTIFACT_ATTR in s.user_attrs]
    if len(set(recorded)) > 1:
        log.warning("the studies record different artifact folders %s; serving %s", sorted(set(recorded)), recorded[0])
    if not recorded:
        return default_artifact_dir(config)
    if not writing:  # the dashboard only reads the files the database names
        return Path(recorded[0])
    # a folder read from the database must lie in the runs folder; one set elsewhere by the
    # launcher's $PSVAE_OPT_ARTIFACTS needs the same variable here (docs/design.md, "Faults")
    if not isinstance(recorded[0], str):
        raise StorageError(
            f"the study records the artifact folder {recorded[0]!r}, not a path; the database was altered"
        )
    return confined(
        Path(config.study.runs_dir), recorded[0], f"the recorded artifact folder (set {ARTIFACT_ENV} if it is yours)"
    )


def open_store(folder: str | Path) -> FileSystemArtifactStore:
    """The artifact store in ``folder`` (created if missing)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(str(folder))


def upload_files(trial: optuna.Trial, store: FileSystemArtifactStore, paths: Sequence[Path]) -> list[str]:
    """Upload files to a RUNNING trial (optuna refuses finished ones); returns the artifact ids."""
    return [upload_artifact(artifact_store=store, file_path=str(p), study_or_trial=trial) for p in paths]


def save_figure(study: optuna.Study, figure: go.Figure, graph_id: str) -> None:
    """Save a plotly figure on the study (optuna-dashboard shows it on the study page); same id = replaced."""
    from optuna_dashboard import save_plotly_graph_object

    save_plotly_graph_object(study, figure, graph_object_id=graph_id)


def save_study_note(study: optuna.Study, text: str) -> None:
    """The study's note in the dashboard (Markdown, on the study page; a later note replaces it)."""
    from optuna_dashboard import save_note

    save_note(study, text)


def trial_link(study: optuna.Study, number: int, text: str) -> str:
    """A Markdown link to a trial's page in optuna-dashboard (its artifacts: traversal movies, plots)."""
    return f"[{text}](/dashboard/studies/{study._study_id}/trials?numbers={number})"


def save_trial_note(trial: optuna.Trial, text: str) -> None:
    """The trial's note in the dashboard (Markdown; a later note replaces it)."""
    from optuna_dashboard import save_note

    save_note(trial, text)


def check_address(host: str, port: int) -> None:
    """Raise OSError now if ``host:port`` cannot be listened on (the server would say so only after its banner)."""
    family, kind, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    with socket.socket(family, kind) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will
        probe.bind(address)


def serve(storage: optuna.storages.BaseStorage, store: FileSystemArtifactStore, host: str, port: int) -> None:
    """Run optuna-dashboard on ``host:port`` with the artifact store; blocks (check the
    address first with :func:`check_address`: the server says so only after its banner)."""
    from optuna_dashboard import run_server

    run_server(storage, host=host, port=port, artifact_store=store)
