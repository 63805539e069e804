"""Where studies live: an embedded SQLite file by default, PostgreSQL for shared use.

``--storage URL``, else ``$PSVAE_OPT_STORAGE``, else ``sqlite:///psvae-opt.db`` in the working
directory. PostgreSQL goes through SQLAlchemy and psycopg 3 (``postgresql+psycopg://``) with
pre-ping, so a worker survives a database restart. Heartbeats mark the trials of a dead worker
as failed; the retry callback queues a copy that resumes from the run's checkpoint.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import optuna
import sqlalchemy
from sqlalchemy.engine import make_url

from psvae_opt.errors import StorageError

log = logging.getLogger(__name__)

ENV_VAR = "PSVAE_OPT_STORAGE"
DEFAULT_FILE = "psvae-opt.db"
HEARTBEAT_ENV = "PSVAE_OPT_HEARTBEAT"
DEFAULT_HEARTBEAT = 30  # seconds between heartbeats; a trial is stale after 3 missed ones
MAX_RETRIES = 3  # times a trial of a dead worker is re-queued
T = TypeVar("T")

# What a database outage looks like from inside optuna and SQLAlchemy.
TRANSIENT = (optuna.exceptions.StorageInternalError, sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)


def resolve_url(url: str | None) -> str:
    """The storage URL a command uses: the flag, else the environment, else a SQLite file."""
    if url:
        return url
    if os.environ.get(ENV_VAR):
        return os.environ[ENV_VAR]
    return f"sqlite:///{Path.cwd() / DEFAULT_FILE}"


def describe(url: str) -> str:
    """The URL with its password hidden, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def heartbeat_interval() -> int:
    value = os.environ.get(HEARTBEAT_ENV, str(DEFAULT_HEARTBEAT))
    if not value.isdigit() or int(value) < 1:
        raise StorageError(f"{HEARTBEAT_ENV}={value!r}: give a whole number of seconds >= 1")
    return int(value)


def _engine_kwargs(url: str) -> dict:
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        # isolation_level=None hands transactions to SQLAlchemy, which then begins each one
        # with BEGIN IMMEDIATE (see _serialize_sqlite)
        return {"connect_args": {"timeout": 120, "isolation_level": None}}
    if backend == "postgresql":
        return {"pool_pre_ping": True, "pool_size": 2, "max_overflow": 2, "connect_args": {"connect_timeout": 10}}
    return {"pool_pre_ping": True}


def _check_url(url: str) -> None:
    try:
        parsed = make_url(url)
    except Exception:
        raise StorageError(
            f"--storage {url!r} is not a database URL; use sqlite:///FILE.db or "
            "postgresql+psycopg://USER:PASSWORD@HOST:PORT/DATABASE"
        ) from None
    backend, driver = parsed.get_backend_name(), parsed.get_driver_name()
    if backend not in ("sqlite", "postgresql") or (backend == "postgresql" and driver != "psycopg"):
        raise StorageError(
            f"--storage {describe(url)}: psvae-opt supports sqlite:///FILE.db and "
            "postgresql+psycopg://... (SQLAlchemy with psycopg 3)"
        )
    if backend == "sqlite" and parsed.database not in (None, "", ":memory:"):
        folder = Path(parsed.database).expanduser().resolve().parent
        if not folder.is_dir():
            raise StorageError(f"--storage {url}: folder {folder} does not exist; create it or choose another path")


def open_storage(url: str | None = None, *, heartbeat: bool = True) -> optuna.storages.RDBStorage:
    """Connect to (and create the schema of) the study database.

    Args:
        url: storage URL; see :func:`resolve_url`.
        heartbeat: workers need heartbeats and the retry callback; readers do not.
    """
    url = resolve_url(url)
    _check_url(url)
    kwargs = {}
    if heartbeat:
        interval = heartbeat_interval()
        kwargs = {
            "heartbeat_interval": interval,
            "grace_period": 3 * interval,
            "heartbeat_stale_trial_callback": optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES),
        }
    try:
        storage = optuna.storages.RDBStorage(url, engine_kwargs=_engine_kwargs(url), **kwargs)
        if make_url(url).get_backend_name() == "sqlite":
            _serialize_sqlite(storage.engine)
        return storage
    except TRANSIENT + (sqlalchemy.exc.SQLAlchemyError,) as exc:
        reason = str(getattr(exc, "orig", None) or exc.__cause__ or exc).strip().splitlines()[0]
        raise StorageError(
            f"cannot open the study database {describe(url)} ({reason}); start the server or fix --storage"
        ) from None


def _serialize_sqlite(engine: sqlalchemy.Engine) -> None:
    """Make every SQLite transaction take the write lock when it begins.

    Popping a queued trial reads its state and then writes RUNNING. pysqlite starts a
    transaction only at the write, so two worker processes could both read WAITING and both
    take the trial; with BEGIN IMMEDIATE the read and the write happen under one lock.
    (PostgreSQL gets the same from optuna's SELECT ... FOR UPDATE.)
    """
    with engine.connect() as conn:  # write-ahead logging: readers do not block the writer
        conn.exec_driver_sql("PRAGMA journal_mode=WAL")
    sqlalchemy.event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))


def with_retries(call: Callable[[], T], *, what: str, seconds: float = 120.0) -> T:
    """Run a storage call, retrying through a database outage of up to ``seconds``."""
    deadline, delay = time.monotonic() + seconds, 0.5
    while True:
        try:
            return call()
        except TRANSIENT as exc:
            if time.monotonic() > deadline:
                raise StorageError(f"the study database stayed unreachable for {seconds:.0f} s while {what}") from exc
            log.warning("database unreachable while %s; retrying in %.1f s", what, delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
