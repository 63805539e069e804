"""A real one-node SLURM cluster for the tests: munged, slurmctld and slurmd of Debian's
``slurm-wlm`` and ``munge`` packages, started as root with a generated slurm.conf in a
temporary folder and stopped by pid.

The cluster has one node (this host, its CPUs and memory) and two partitions: ``debug``
(the default) and ``urgent``, whose jobs preempt ``debug`` jobs (``PreemptMode=CANCEL``
after a 10 s grace time, with ``preempt_send_user_signal``: a preempted job's batch shell first gets
the signal of its ``--signal`` option, as on a cluster with preemptible partitions).
Clients (sbatch, squeue, scancel) find it through ``SLURM_CONF``, set in :meth:`env` and, by
the ``slurm`` fixture, in this process's environment for the test session.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scancel", "sinfo")
MUNGE_KEY = Path("/etc/munge/munge.key")


def find_bin(name: str) -> str | None:
    return shutil.which(name) or next(
        (p for d in ("/usr/sbin", "/sbin") if os.access(p := f"{d}/{name}", os.X_OK)), None
    )


def missing_binaries() -> list[str]:
    return [name for name in (*DAEMONS, *CLIENTS) if not find_bin(name)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_line(host: str) -> str:
    """This machine's node definition as slurmd itself detects it (CPUs, sockets, memory):
    a node declared larger than it is would be drained."""
    out = subprocess.run([find_bin("slurmd") or "slurmd", "-C"], capture_output=True, text=True, check=True).stdout
    fields = dict(f.split("=", 1) for f in out.splitlines()[0].split())
    keep = ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore", "RealMemory")
    return f"NodeName={host} NodeAddr=127.0.0.1 " + " ".join(f"{k}={fields[k]}" for k in keep if k in fields)


class SlurmCluster:
    """One throw-away cluster. ``conf`` is its slurm.conf; ``partition`` the default partition."""

    partition = "debug"
    urgent = "urgent"

    def __init__(self, start_timeout: float = 60.0) -> None:
        if os.geteuid() != 0:
            raise RuntimeError("the test SLURM cluster runs its daemons as root")
        missing = missing_binaries()
        if missing:
            raise RuntimeError(f"{', '.join(missing)} not installed (Debian slurm-wlm, munge; scripts/system-deps.sh)")
        self.root = Path(tempfile.mkdtemp(prefix="psvae-slurm-"))
        self.root.chmod(0o755)  # munged (user munge) reaches its socket folder through it
        self.procs: dict[str, subprocess.Popen] = {}
        self.host = socket.gethostname().split(".")[0]  # `hostname -s`: what slurmd calls itself
        try:
            self._start_munge()
            self.conf = self._write_conf()
            self._start("slurmctld", [find_bin("slurmctld"), "-D", "-i", "-f", str(self.conf)])
            self._start("slurmd", [find_bin("slurmd"), "-D", "-f", str(self.conf)])
            self._wait_idle(start_timeout)
        except BaseException:
            self.close()
            raise

    def env(self) -> dict[str, str]:
        """The environment of a client process of this cluster."""
        return dict(os.environ, SLURM_CONF=str(self.conf))

    def _start_munge(self) -> None:
        munge_dir = self.root / "munge"
        munge_dir.mkdir(mode=0o755)
        user = pwd.getpwnam("munge")
        os.chown(munge_dir, user.pw_uid, user.pw_gid)
        if not MUNGE_KEY.exists():  # the package's postinst makes one; a bare image may not have it
            MUNGE_KEY.parent.mkdir(mode=0o700, exist_ok=True)
            subprocess.run([find_bin("mungekey") or "mungekey", "--create", "--keyfile", str(MUNGE_KEY)], check=True)
            os.chown(MUNGE_KEY, user.pw_uid, user.pw_gid)
            MUNGE_KEY.chmod(0o600)
        self.munge_socket = munge_dir / "munge.socket"
        self._start(
            "munged",
            [
                "runuser",
                "-u",
                "munge",
                "--",
                find_bin("munged"),
                "--foreground",
                f"--socket={self.munge_socket}",
                f"--pid-file={munge_dir / 'munged.pid'}",
                f"--log-file={munge_dir / 'munged.log'}",
                f"--seed-file={munge_dir / 'munged.seed'}",
            ],
        )
        self._wait_for(lambda: self.munge_socket.exists(), 15, "munged did not create its socket")

    def _write_conf(self) -> Path:
        state, spool, logs = self.root / "state", self.root / "spool", self.root / "log"
        for folder in (state, spool, logs):
            folder.mkdir()
        self.ctld_port, self.slurmd_port = free_port(), free_port()
        conf = self.root / "slurm.conf"
        conf.write_text(
            "\n".join(
                [
                    "ClusterName=psvaetest",
                    f"SlurmctldHost={self.host}(127.0.0.1)",
                    f"SlurmctldPort={self.ctld_port}",
                    f"SlurmdPort={self.slurmd_port}",
                    "SlurmUser=root",
                    "SlurmdUser=root",
                    "AuthType=auth/munge",
                    "CredType=cred/munge",
                    f"AuthInfo=socket={self.munge_socket}",
                    f"StateSaveLocation={state}",
                    f"SlurmdSpoolDir={spool}",
                    f"SlurmctldPidFile={self.root / 'slurmctld.pid'}",
                    f"SlurmdPidFile={self.root / 'slurmd.pid'}",
                    f"SlurmctldLogFile={logs / 'slurmctld.log'}",
                    f"SlurmdLogFile={logs / 'slurmd.log'}",
                    "SlurmctldDebug=info",
                    "SlurmdDebug=info",
                    "ProctrackType=proctrack/linuxproc",
                    "TaskPlugin=task/none",
                    "SelectType=select/cons_tres",
                    "SelectTypeParameters=CR_CPU",  # memory is checked against the node, not reserved
                    "SchedulerType=sched/backfill",
                    "SchedulerParameters=sched_interval=1",
                    "MpiDefault=none",
                    "JobAcctGatherType=jobacct_gather/none",
                    "AccountingStorageType=accounting_storage/none",  # no slurmdbd: sacct has nothing
                    "JobCompType=jobcomp/none",
                    "ReturnToService=2",
                    "MaxArraySize=1001",
                    "KillWait=5",  # SIGTERM ... SIGKILL at a time limit
                    "MinJobAge=600",  # finished jobs stay visible to squeue --states=all
                    "InactiveLimit=0",
                    "SlurmdTimeout=60",
                    "PreemptType=preempt/partition_prio",
                    "PreemptMode=CANCEL",
                    "SlurmctldParameters=preempt_send_user_signal",  # PreemptParameters=send_user_signal from 23.02
                    _node_line(self.host),
                    f"PartitionName={self.partition} Nodes={self.host} Default=YES MaxTime=INFINITE State=UP "
                    "PriorityTier=1 GraceTime=10",
                    f"PartitionName={self.urgent} Nodes={self.host} MaxTime=INFINITE State=UP PriorityTier=10 "
                    "PreemptMode=OFF",
                    "",
                ]
            )
        )
        return conf

    def _start(self, name: str, argv: list) -> None:
        log = (self.root / f"{name}.out").open("a")
        env = dict(os.environ, SLURM_CONF=str(self.root / "slurm.conf"))
        self.procs[name] = subprocess.Popen([str(a) for a in argv], stdout=log, stderr=subprocess.STDOUT, env=env)

    def _wait_for(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():
                return
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}: {self.log_tail(name)}")
            time.sleep(0.2)
        raise RuntimeError(f"{what} within {timeout:.0f} s: {self.log_tail('slurmctld')} {self.log_tail('slurmd')}")

    def _wait_idle(self, timeout: float) -> None:
        def idle() -> bool:
            out = subprocess.run(
                [find_bin("sinfo"), "-h", "-N", "-o", "%T", "-p", self.partition],
                env=self.env(),
                capture_output=True,
                text=True,
            )
            return out.returncode == 0 and out.stdout.strip() == "idle"

        self._wait_for(idle, timeout, "the node did not become idle")

    def log_tail(self, name: str, chars: int = 1500) -> str:
        for path in (self.root / "log" / f"{name}.log", self.root / f"{name}.out", self.root / "munge" / "munged.log"):
            if path.exists() and name in path.name:
                return path.read_text(errors="replace")[-chars:]
        return ""

    def close(self) -> None:
        """Stop the daemons we started (SIGTERM to their pids, SIGKILL after 20 s) and delete the folder."""
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.procs.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            # runuser (munged) passes SIGTERM on to its child; slurmd/slurmctld run in the foreground (-D)
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)
