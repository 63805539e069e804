"""`psvae-opt dashboard`: optuna-dashboard on the studies and their artifact store."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from psvae_opt.commands import (
    Command,
    add_config_arguments,
    add_storage_argument,
    environment,
    load_config_from,
    open_database_from,
)
from psvae_opt.errors import ConfigError

log = logging.getLogger(__name__)


def _add_dashboard(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    add_storage_argument(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8080, help="port, 1-65535 (default 8080)")
    p.add_argument("--artifacts", metavar="DIR", help="artifact folder (default: recorded on the studies)")


def _run_dashboard(args: argparse.Namespace) -> int:
    from psvae_opt.reports import dashboard
    from psvae_opt.search import space
    from psvae_opt.search.study import NoStudy, load_stage

    cfg = load_config_from(args)
    if not 1 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port}: give a port between 1 and 65535")
    db = open_database_from(args)
    studies = []
    for stage in space.STAGE_NUMBERS:
        try:
            studies.append(load_stage(db, cfg, stage))
        except NoStudy:
            pass
    folder = (
        Path(args.artifacts).resolve()
        if args.artifacts
        else dashboard.artifact_dir(studies, cfg, environment.artifacts())
    )
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning(
            "listening on %s: optuna-dashboard has no login; anyone who reaches it can change trials", args.host
        )
    try:
        store = dashboard.open_store(folder)
    except OSError as exc:
        raise ConfigError(f"--artifacts {folder}: cannot create the artifact folder ({exc.strerror or exc})") from None
    try:
        dashboard.check_address(args.host, args.port)
    except OSError as exc:
        reason = exc.strerror or exc
        raise ConfigError(
            f"cannot listen on {args.host}:{args.port} ({reason}); choose another --port or --host"
        ) from None
    print(f"optuna-dashboard: http://{args.host}:{args.port}/dashboard  ({db.shown}; artifacts {folder})", flush=True)
    dashboard.serve(db.storage, store, args.host, args.port)
    return 0


COMMANDS = {
    "dashboard": Command("serve optuna-dashboard on the studies and their artifacts", _add_dashboard, _run_dashboard)
}
