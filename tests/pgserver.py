"""A real PostgreSQL server for the tests: initdb in a temporary folder, listening on
127.0.0.1 only, started and stopped by pid (Debian's ``postgresql`` package).
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def find_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """One throw-away cluster; ``url`` is a SQLAlchemy + psycopg 3 URL of database ``psvae``."""

    def __init__(self) -> None:
        self.initdb, self.postgres = find_bin("initdb"), find_bin("postgres")
        if not (self.initdb and self.postgres):
            raise RuntimeError("PostgreSQL is not installed (Debian package postgresql; scripts/system-deps.sh)")
        self.root = Path(tempfile.mkdtemp(prefix="psvae-pg-"))
        self.data, self.sockets = self.root / "data", self.root / "sockets"
        self.sockets.mkdir()
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_user:  # initdb refuses to run as root
            shutil.chown(self.root, "postgres")
            shutil.chown(self.sockets, "postgres")
        subprocess.run(
            [
                *self.as_user,
                self.initdb,
                "-D",
                str(self.data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            ],
            check=True,
            capture_output=True,
        )
        self.start()
        subprocess.run(
            [
                *self.as_user,
                find_bin("psql") or "psql",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-c",
                "CREATE DATABASE psvae",
            ],
            check=True,
            capture_output=True,
        )

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/psvae"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                *self.as_user,
                self.postgres,
                "-D",
                str(self.data),
                "-p",
                str(self.port),
                "-h",
                "127.0.0.1",
                "-k",
                str(self.sockets),
                "-c",
                "fsync=off",
                "-c",
                "max_connections=200",
            ],
            stdout=subprocess.DEVNULL,
            stderr=(self.root / "server.log").open("a"),
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    time.sleep(0.3)
                    return
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited: {(self.root / 'server.log').read_text()[-2000:]}")
            time.sleep(0.1)
        raise RuntimeError("postgres did not start within 30 s")

    def stop(self) -> None:
        """Fast shutdown of the server we started (SIGINT to its pid)."""
        if self.proc is None:
            return
        pid = self._postmaster_pid()
        if pid:
            os.kill(pid, signal.SIGINT)
        self.proc.wait(timeout=30)
        self.proc = None

    def restart(self, down_seconds: float = 2.0) -> None:
        self.stop()
        time.sleep(down_seconds)
        self.start()

    def _postmaster_pid(self) -> int | None:
        # runuser forks the server as a child; postmaster.pid names the server itself
        pid_file = self.data / "postmaster.pid"
        if pid_file.exists():
            return int(pid_file.read_text().splitlines()[0])
        return self.proc.pid if self.proc else None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
