"""The ``psvae-opt`` command line: a registry of commands; ``main`` returns the exit code.

Errors a user can cause (:class:`PsvaeError`) print as one line on stderr with exit code 1;
bad arguments exit with 2 (argparse). Logging is configured here and nowhere else.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from psvae_opt.commands import Command
from psvae_opt.commands import dashboard as dashboard_commands
from psvae_opt.commands import data as data_commands
from psvae_opt.commands import inference as inference_commands
from psvae_opt.commands import report as report_commands
from psvae_opt.commands import service as service_commands
from psvae_opt.commands import train as train_commands
from psvae_opt.errors import PsvaeError

COMMANDS: dict[str, Command | dict[str, Command]] = {
    **data_commands.COMMANDS,
    **train_commands.COMMANDS,
    **service_commands.COMMANDS,
    **report_commands.COMMANDS,
    **dashboard_commands.COMMANDS,
    **inference_commands.COMMANDS,
}


def build_parser() -> argparse.ArgumentParser:
    from psvae_opt import __version__

    parser = argparse.ArgumentParser(
        prog="psvae-opt", description="Hyperparameter search for PS-VAEs of behavioural video."
    )
    parser.add_argument("--version", action="version", version=f"psvae-opt {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        if isinstance(command, dict):
            group = sub.add_parser(name, help=f"{name} commands: {', '.join(command)}")
            group_sub = group.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")
            for sub_name, sub_command in command.items():
                _add(group_sub, sub_name, sub_command)
        else:
            _add(sub, name, command)
    return parser


def _add(sub: argparse._SubParsersAction, name: str, command: Command) -> None:
    p = sub.add_parser(name, help=command.help, description=command.help)
    command.add_arguments(p)
    p.set_defaults(run=command.run)


def _configure_warnings() -> None:
    import warnings

    import optuna

    # heartbeats, the retry callback and metric names are marked experimental in optuna 5
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not verbose:
        for noisy in ("optuna", "sqlalchemy", "alembic", "PIL"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the process exit code."""
    args = build_parser().parse_args(argv)
    _configure_logging(args.verbose)
    _configure_warnings()
    try:
        return int(args.run(args) or 0)
    except PsvaeError as exc:
        print(f"psvae-opt: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("psvae-opt: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `psvae-opt status | head`: the reader left; stop quietly, as shell tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that the interpreter's final flush finds no broken pipe
        return 141


def main_entry() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    sys.exit(main())
