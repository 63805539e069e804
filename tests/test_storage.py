"""Storage URLs: flag, then environment, then an SQLite file here."""

from __future__ import annotations

from pathlib import Path

import pytest

from psvae_opt.errors import StorageError
from psvae_opt.storage import describe, heartbeat_interval, open_storage, resolve_url


def test_the_flag_wins_then_the_environment_then_sqlite(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PSVAE_OPT_STORAGE", raising=False)
    assert resolve_url(None) == f"sqlite:///{tmp_path / 'psvae-opt.db'}"
    monkeypatch.setenv("PSVAE_OPT_STORAGE", "postgresql+psycopg://u@h/db")
    assert resolve_url(None) == "postgresql+psycopg://u@h/db"
    assert resolve_url("sqlite:///x.db") == "sqlite:///x.db"


def test_passwords_are_hidden_in_messages():
    assert describe("postgresql+psycopg://lab:hunter2@db:5432/psvae") == "postgresql+psycopg://lab:***@db:5432/psvae"


def test_heartbeat_interval_from_the_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("PSVAE_OPT_HEARTBEAT", raising=False)
    assert heartbeat_interval() == 30
    monkeypatch.setenv("PSVAE_OPT_HEARTBEAT", "5")
    assert heartbeat_interval() == 5
    monkeypatch.setenv("PSVAE_OPT_HEARTBEAT", "soon")
    with pytest.raises(StorageError, match="PSVAE_OPT_HEARTBEAT='soon'"):
        heartbeat_interval()


def test_sqlite_storage_uses_write_ahead_logging(tmp_path: Path):
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}", heartbeat=True)
    with storage.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    assert storage.heartbeat_interval == 30 and storage.grace_period == 90
