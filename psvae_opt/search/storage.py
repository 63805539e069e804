"""Where studies live: an embedded SQLite file by default, PostgreSQL for shared use.

``--storage URL``, else ``$PSVAE_OPT_STORAGE`` (read by the command edge,
:mod:`psvae_opt.commands.environment`), else ``sqlite:///psvae-opt.db`` in the working
directory. PostgreSQL goes through SQLAlchemy and psycopg 3 (``postgresql+psycopg://``) with
pre-ping, so a process survives a database restart.

A command resolves the URL once and passes the :class:`StudyDatabase` it opens to everything
that needs the database (docs/design.md, "Storage"). The URL may hold a password: it never
appears in a message (:func:`describe`) nor on a command line (local workers get it in their
environment, :data:`ENV_VAR`).
"""

from __future__ import annotations

import logging
import os
import re
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import optuna
import sqlalchemy
from sqlalchemy.engine import make_url

from psvae_opt.errors import StorageError, first_line

log = logging.getLogger(__name__)

ENV_VAR = "PSVAE_OPT_STORAGE"
DEFAULT_FILE = "psvae-opt.db"
HEARTBEAT_ENV = "PSVAE_OPT_HEARTBEAT"
DEFAULT_HEARTBEAT = 30  # seconds between heartbeats; a trial is stale after GRACE_BEATS missed ones
GRACE_BEATS = 3
PATIENCE_ENV = "PSVAE_OPT_DB_PATIENCE"
DEFAULT_PATIENCE = 300.0  # seconds of database outage a process rides out before it gives up
T = TypeVar("T")

# What a database outage looks like from inside optuna and SQLAlchemy.
TRANSIENT = (optuna.exceptions.StorageInternalError, sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)
_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@\s]*(@)")
# OperationalErrors that no wait mends: a SQLite file that is read-only, corrupt or gone
_PERMANENT = ("readonly database", "file is not a database", "unable to open database file", "disk image is malformed")


def resolve_url(url: str | None) -> str:
    """The storage URL a command uses: the one given (``--storage``, else ``$PSVAE_OPT_STORAGE``,
    which the command edge reads), else a SQLite file here."""
    if url:
        return url
    return f"sqlite:///{Path.cwd() / DEFAULT_FILE}"


def describe(url: str) -> str:
    """The URL with its password hidden, for messages (also when the URL is malformed)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # a malformed URL: hide what looks like a password
        return _PASSWORD.sub(r"\1***\2", url)


PG_CONNECTIONS_PER_PROCESS = 2


def _engine_kwargs(url: str) -> dict:
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        # isolation_level=None hands transactions to SQLAlchemy, which then begins each one
        # with BEGIN IMMEDIATE (see _serialize_sqlite)
        return {"connect_args": {"timeout": 120, "isolation_level": None}}
    if backend == "postgresql":
        # at most PG_CONNECTIONS_PER_PROCESS, ever (the trial loop and the heartbeat thread): a
        # large array must stay under the server's max_connections (README, "On a SLURM cluster")
        return {
            "pool_pre_ping": True,
            "pool_size": PG_CONNECTIONS_PER_PROCESS,
            "max_overflow": 0,
            "pool_timeout": 120,
            "connect_args": {"connect_timeout": 10},
        }
    return {"pool_pre_ping": True}


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL (None for other databases and in-memory SQLite)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database).expanduser().resolve()


def check_url(url: str) -> None:
    """Refuse URLs psvae-opt cannot use, in one line, before anything is opened."""
    try:
        parsed = make_url(url)
    except Exception:  # any parse failure
        raise StorageError(
            f"--storage {describe(url)!r} is not a database URL; use sqlite:///FILE.db or "
            "postgresql+psycopg://USER:PASSWORD@HOST:PORT/DATABASE"
        ) from None
    backend, driver = parsed.get_backend_name(), parsed.get_driver_name()
    if backend not in ("sqlite", "postgresql") or (backend == "postgresql" and driver != "psycopg"):
        raise StorageError(
            f"--storage {describe(url)}: psvae-opt supports sqlite:///FILE.db and "
            "postgresql+psycopg://... (SQLAlchemy with psycopg 3)"
        )
    path = sqlite_path(url)
    if path is not None and not path.parent.is_dir():
        raise StorageError(f"--storage {url}: folder {path.parent} does not exist; create it or choose another path")


def warn_password(url: str) -> None:
    """Warn when ``--storage`` holds a password: this process's command line shows it to every
    user of the machine (``ps``). Its children get the URL in their environment, never on their
    command lines; the README's examples keep it off this one too."""
    try:
        password = make_url(url).password
    except Exception:  # check_url reports a malformed URL
        return
    if password:
        log.warning(
            "--storage holds a password, which `ps` shows to every user of this machine; put the URL in "
            "%s or the password in ~/.pgpass and give --storage without it",
            ENV_VAR,
        )


def error_line(exc: BaseException) -> str:
    """The cause of a storage error in one line: the driver's own message (optuna wraps every
    failed commit as "invalid data in the commit, e.g. exceeding max length", whatever the cause)."""
    while isinstance(exc, optuna.exceptions.StorageInternalError) and exc.__cause__ is not None:
        exc = exc.__cause__
    return first_line(getattr(exc, "orig", None) or exc.__cause__ or exc)


_first_line = error_line


@dataclass
class StudyDatabase:
    """An open study database and how this process has fared with it.

    Attributes:
        url: the resolved URL (it may hold a password: show :attr:`shown` instead).
        storage: optuna's storage on it.
        patience: seconds of outage a call rides out before it raises :class:`StorageError`.
        last_failure: ``time.monotonic()`` when this process last got through to the database
            after finding it unreachable (the opening time at first): a worker judges other
            workers' heartbeats only once it has itself been connected for a whole grace period
            (docs/design.md, "Faults").
    """

    url: str
    storage: optuna.storages.RDBStorage
    patience: float = DEFAULT_PATIENCE
    last_failure: float = field(default_factory=time.monotonic)

    @property
    def shown(self) -> str:
        return describe(self.url)

    @property
    def is_sqlite(self) -> bool:
        return sqlite_path(self.url) is not None or make_url(self.url).get_backend_name() == "sqlite"

    def connected_for(self) -> float:
        """Seconds since this process got through to the database after an outage (or opened it)."""
        return time.monotonic() - self.last_failure

    def retry(self, call: Callable[[], T], *, what: str) -> T:
        """Run a storage call, riding out a database outage of up to :attr:`patience` seconds."""
        deadline, delay, failed = time.monotonic() + self.patience, 0.5, False
        while True:
            try:
                result = call()
                if failed:  # connected again from now on
                    self.last_failure = time.monotonic()
                return result
            except TRANSIENT as exc:
                failed = True
                if any(text in str(exc) for text in _PERMANENT):
                    raise StorageError(
                        f"the study database {self.shown} refused {what} ({_first_line(exc)}); "
                        "check that the file is a psvae-opt database and writable"
                    ) from None
                self.last_failure = time.monotonic()
                if self.last_failure > deadline:
                    raise StorageError(
                        f"the study database {self.shown} stayed unreachable for {self.patience:.0f} s while {what} "
                        f"({_first_line(exc)}); set {PATIENCE_ENV} to wait longer"
                    ) from None
                log.warning("database unreachable while %s; retrying in %.1f s", what, delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)


def open_database(
    url: str | None = None, *, must_exist: bool = False, read_only: bool = False, patience: float = DEFAULT_PATIENCE
) -> StudyDatabase:
    """Connect to the study database (creating its schema when new).

    Args:
        url: storage URL; see :func:`resolve_url`.
        must_exist: for commands that only read (status, export, report, dashboard): a SQLite
            file that is not there is an error, not a new empty database.
        read_only: for commands that change nothing (status, export, report): the database is
            opened read-only (SQLite ``mode=ro``, a PostgreSQL session with read-only
            transactions), no schema is created and SQLite's journal mode is left as it is; a
            database without psvae-opt's tables is refused in one line.
        patience: seconds of database outage the process rides out (``$PSVAE_OPT_DB_PATIENCE``).
    """
    url = resolve_url(url)
    check_url(url)
    path = sqlite_path(url)
    if (must_exist or read_only) and path is not None and not path.exists():
        raise StorageError(f"no study database at {path}; run `psvae-opt stage1` first, or give --storage")
    try:
        if read_only:
            storage = _open_read_only(url, path)
        else:
            storage = optuna.storages.RDBStorage(url, engine_kwargs=_engine_kwargs(url))
        if path is not None and not read_only:
            _serialize_sqlite(storage.engine)
    except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as exc:
        raise StorageError(
            f"cannot open the study database {describe(url)} ({_first_line(exc)}); "
            + (
                "check the file (not a SQLite database, or not writable)"
                if path
                else "start the server or fix --storage"
            )
        ) from None
    return StudyDatabase(url, storage, patience)


def _open_read_only(url: str, path: Path | None) -> optuna.storages.RDBStorage:
    """Optuna's storage on a read-only connection, after checking that its tables exist."""
    kwargs = _engine_kwargs(url)
    if path is not None:
        # SQLite's URI form: mode=ro refuses every write. A file in WAL mode in a folder this user
        # cannot write has no -shm file to open, so it is read as immutable: nothing can change it
        # while no -wal file (of a writer elsewhere) exists
        wal = path.with_name(path.name + "-wal")
        immutable = "&immutable=1" if not os.access(path.parent, os.W_OK) and not wal.exists() else ""
        url = f"sqlite:///file:{urllib.parse.quote(str(path))}?mode=ro{immutable}&uri=true"
        kwargs["connect_args"] = {**kwargs.get("connect_args", {}), "uri": True}
    elif make_url(url).get_backend_name() == "postgresql":
        kwargs["connect_args"] = {**kwargs.get("connect_args", {}), "options": "-c default_transaction_read_only=on"}
    engine = sqlalchemy.create_engine(url, **kwargs)
    try:
        tables = set(sqlalchemy.inspect(engine).get_table_names())
    finally:
        engine.dispose()
    if not {"studies", "trials", "version_info"} <= tables:
        raise StorageError(
            f"{describe(url) if path is None else path} holds no psvae-opt studies (no Optuna tables); "
            "run `psvae-opt stage1` first, or give the right --storage"
        )
    return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, skip_table_creation=True)


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
