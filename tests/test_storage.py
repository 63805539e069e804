"""Storage URLs and the study database: flag, environment or SQLite; passwords hidden; outages ridden out."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import sqlalchemy

from psvae_opt.errors import StorageError
from psvae_opt.search.storage import describe, open_database, resolve_url


def test_a_url_given_wins_else_sqlite_here(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PSVAE_OPT_STORAGE", "postgresql+psycopg://u@h/db")  # read by the command edge only
    assert resolve_url(None) == f"sqlite:///{tmp_path / 'psvae-opt.db'}"
    assert resolve_url("sqlite:///x.db") == "sqlite:///x.db"


def test_passwords_are_hidden_in_messages_even_in_malformed_urls():
    assert describe("postgresql+psycopg://lab:hunter2@db:5432/psvae") == "postgresql+psycopg://lab:***@db:5432/psvae"
    assert "hunter2" not in describe("postgresql+psycopg://lab:hunter2@db:port/psvae")  # a port that is no number
    assert describe("postgresql+psycopg://lab:hunter2@db:port/psvae") == "postgresql+psycopg://lab:***@db:port/psvae"


def test_sqlite_storage_uses_write_ahead_logging(tmp_path: Path):
    db = open_database(f"sqlite:///{tmp_path / 's.db'}")
    with db.storage.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    assert db.is_sqlite and db.shown == f"sqlite:///{tmp_path / 's.db'}"


def test_readers_never_create_a_database(tmp_path: Path):
    missing = tmp_path / "none.db"
    with pytest.raises(StorageError, match="no study database at .*none.db; run `psvae-opt stage1` first"):
        open_database(f"sqlite:///{missing}", must_exist=True)
    assert not missing.exists()


def test_a_corrupt_or_read_only_file_is_one_line(tmp_path: Path):
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StorageError, match="cannot open the study database .*corrupt.db"):
        open_database(f"sqlite:///{corrupt}")
    assert corrupt.read_bytes() == b"this is not a database" * 100


def test_retry_rides_out_an_outage_and_records_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    db = open_database(f"sqlite:///{tmp_path / 's.db'}")
    calls = []

    def flaky() -> int:
        calls.append(1)
        if len(calls) < 3:
            raise sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("server closed the connection"))
        return 7

    assert db.connected_for() >= 0
    assert db.retry(flaky, what="testing") == 7 and len(calls) == 3
    assert db.connected_for() < 1.0  # it was cut off just now
    db.patience = 1.0

    def down() -> int:
        raise sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("connection refused"))

    with pytest.raises(StorageError, match="stayed unreachable for 1 s while testing"):
        db.retry(down, what="testing")

    def readonly() -> int:
        raise sqlalchemy.exc.OperationalError("INSERT", {}, Exception("attempt to write a readonly database"))

    with pytest.raises(StorageError, match="refused testing"):
        db.retry(readonly, what="testing")  # no waiting: a read-only file does not mend
    assert os.environ["TZ"] == "UTC"


@pytest.mark.postgres
def test_each_process_holds_at_most_two_postgresql_connections(postgres):
    """A large job array must stay under max_connections: the pool never grows past 2 (the trial
    loop and its heartbeat thread); a third concurrent user waits for one instead of opening it."""
    from psvae_opt.search.storage import PG_CONNECTIONS_PER_PROCESS

    db = open_database(postgres.url)
    engine = db.storage.engine
    assert PG_CONNECTIONS_PER_PROCESS == 2
    held = [engine.connect() for _ in range(PG_CONNECTIONS_PER_PROCESS)]
    engine.pool._timeout = 0.5  # 120 s in use: long enough to outlast a slow statement of the other thread
    with pytest.raises(sqlalchemy.exc.TimeoutError):
        engine.connect()
    assert engine.pool.checkedout() == 2
    for conn in held:
        conn.close()
    engine.dispose()
