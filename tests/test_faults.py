"""Fault injection: kills inside the run folder's writes, and a worker paused past its heartbeat.

Each case runs ``psvae-opt`` in a child process through :data:`HARNESS`, which wraps two
library calls of that process (``csv.DictWriter.writerows``, ``os.replace``) to kill or pause
it at the chosen moment. Nothing of psvae-opt is replaced: the faults hit the real code.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from psvae_opt.search.storage import open_database
from tests.test_search import run_folder, saved_epoch, study_file, wait_for_epoch

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]

# argv: MODE ARG LOG -- psvae-opt arguments. Modes:
#   kill-first-rows:     SIGKILL at the first metrics.csv write (a resumed run's rewrite)
#   kill-replace NAME:K  SIGKILL at the K-th rename onto a file called NAME, before it happens
#   stop-rows EPOCH      SIGSTOP while writing the metrics row of EPOCH; after SIGCONT every rename
#                        of this process is appended to LOG (a stale attempt must make none)
HARNESS = """
import csv, os, signal, sys
mode, arg, log_path = sys.argv[1:4]
args = sys.argv[sys.argv.index("--") + 1:]
writerows, replace = csv.DictWriter.writerows, os.replace
state = {"renames": 0, "resumed": False}

def rows_hook(self, rows):
    rows = list(rows)
    if rows and mode == "kill-first-rows":
        os.kill(os.getpid(), signal.SIGKILL)
    if rows and mode == "stop-rows" and not state["resumed"] and max(int(r["epoch"]) for r in rows) == int(arg):
        os.kill(os.getpid(), signal.SIGSTOP)
        state["resumed"] = True
    return writerows(self, rows)

def replace_hook(src, dst, *a, **k):
    if mode == "kill-replace":
        name, k_th = arg.split(":")
        if os.path.basename(dst) == name:
            state["renames"] += 1
            if state["renames"] == int(k_th):
                os.kill(os.getpid(), signal.SIGKILL)
    if state["resumed"]:
        with open(log_path, "a") as fh:
            fh.write(f"{dst}\\n")
    return replace(src, dst, *a, **k)

csv.DictWriter.writerows, os.replace = rows_hook, replace_hook
from psvae_opt.cli import main
sys.exit(main(args))
"""


def worker(config: Path, url: str, *args: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "psvae_opt.cli", "worker", "--config", str(config), "--stage", "1", *args]
    env = dict(os.environ, TZ="UTC", OMP_NUM_THREADS="1", PSVAE_OPT_STORAGE=url, PSVAE_OPT_HEARTBEAT="1")
    return subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def harness(mode: str, arg: str, log: Path, *args: object, **env: str) -> subprocess.Popen:
    env = dict(os.environ, TZ="UTC", OMP_NUM_THREADS="1", **env)
    cmd = [sys.executable, "-c", HARNESS, mode, arg, str(log), "--", *map(str, args)]
    return subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def train_args(config: Path, run: Path, epochs: int) -> list[str]:
    return ["train", "--config", str(config), "--out", str(run), "--no-progress", "--set", f"train.max_epochs={epochs}"]


def metric_epochs(run: Path) -> list[int]:
    with (run / "metrics.csv").open(newline="") as fh:
        return [int(row["epoch"]) for row in csv.DictReader(fh) if row["split"] == "train"]


def leftovers(run: Path) -> set[str]:
    return {p.name for p in run.iterdir() if p.name.endswith(".tmp")}


def test_a_kill_inside_the_metrics_rewrite_loses_no_epoch(tiny_h5: Path, tmp_path: Path, cli):
    config, run = study_file(tmp_path, tiny_h5), tmp_path / "run"
    assert cli(*train_args(config, run, 3)).code == 0
    assert metric_epochs(run) == [0, 1, 2]
    # a longer run resumes at epoch 3 and first rewrites metrics.csv; killed inside that rewrite
    victim = harness("kill-first-rows", "-", tmp_path / "log", *train_args(config, run, 6))
    assert victim.wait(timeout=300) == -signal.SIGKILL
    assert metric_epochs(run) == [0, 1, 2]  # the old file, whole (before: an empty file)
    r = cli(*train_args(config, run, 6))
    assert r.code == 0, r.err
    assert metric_epochs(run) == list(range(6)) and not leftovers(run)


def test_a_kill_inside_the_checkpoint_rename_leaves_nothing_behind(tiny_h5: Path, tmp_path: Path, cli):
    config, run = study_file(tmp_path, tiny_h5), tmp_path / "run"
    victim = harness("kill-replace", "best.pt:2", tmp_path / "log", *train_args(config, run, 6))
    assert victim.wait(timeout=300) == -signal.SIGKILL
    first = leftovers(run)
    assert first  # the checkpoint the kill interrupted
    done = saved_epoch(run)
    assert 1 <= done < 6 and metric_epochs(run)[:done] == list(range(done))
    # the next attempt removes the leftovers before it writes anything (killed at its first write)
    again = harness("kill-first-rows", "-", tmp_path / "log", *train_args(config, run, 6))
    assert again.wait(timeout=300) == -signal.SIGKILL
    assert not first & leftovers(run)
    r = cli(*train_args(config, run, 6))
    assert r.code == 0, r.err
    assert metric_epochs(run) == list(range(6)) and not leftovers(run)
    assert int(torch.load(run / "last.pt", weights_only=True)["epoch"]) == 6
    torch.load(run / "best.pt", weights_only=True)


def _paused(proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T":
            return
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    raise AssertionError("the worker never paused")


def test_a_worker_paused_past_its_heartbeat_writes_nothing_once_its_trial_is_taken_over(
    tiny_h5: Path, tmp_path: Path, cli
):
    url = f"sqlite:///{tmp_path / 's.db'}"
    config = study_file(tmp_path, tiny_h5, epochs=40, alphas=(100.0,), n_unsup=(2,))
    assert cli("stage1", "--config", config, "--storage", url, "--workers", "0").code == 0
    log = tmp_path / "stale-renames.txt"
    stale = harness(
        "stop-rows", "2", log, "worker", "--config", config, "--stage", "1",
        PSVAE_OPT_STORAGE=url, PSVAE_OPT_HEARTBEAT="1",
    )  # fmt: skip
    run0 = run_folder(tmp_path)
    _paused(stale)  # inside its write of epoch 2's metrics: no heartbeat from here on
    taker = subprocess.Popen(
        [sys.executable, "-m", "psvae_opt.cli", "worker", "--config", str(config), "--stage", "1"],
        env=dict(os.environ, TZ="UTC", OMP_NUM_THREADS="1", PSVAE_OPT_STORAGE=url, PSVAE_OPT_HEARTBEAT="1"),
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    wait_for_epoch(run0, 5)  # the taker re-queued the trial, resumed it at epoch 2 and went on
    stale.send_signal(signal.SIGCONT)
    _, stale_err = stale.communicate(timeout=300)
    _, taker_err = taker.communicate(timeout=300)
    assert stale.returncode == 0 and taker.returncode == 0, stale_err + taker_err
    assert not log.exists(), log.read_text()  # the stale attempt renamed nothing into the folder
    assert "was taken over by another worker" in stale_err
    study = optuna.load_study(study_name="t-stage1", storage=open_database(url).storage)
    states = [t.state for t in study.trials]
    assert states == [TrialState.FAIL, TrialState.COMPLETE], states
    assert study.trials[1].user_attrs["resumed_from_epoch"] == 2
    assert metric_epochs(run0) == list(range(40)) and not leftovers(run0)


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def test_a_launcher_out_of_worker_restarts_fails_and_withdraws_the_recommendation(
    tiny_h5: Path, tmp_path: Path, cli, monkeypatch
):
    url = f"sqlite:///{tmp_path / 's.db'}"
    grown = study_file(tmp_path, tiny_h5, epochs=400, alphas=(50.0, 1000.0), n_unsup=(2,))
    assert cli("stage1", "--config", grown, "--storage", url, "--workers", "0").code == 0
    first = worker(grown, url, "--set", "train.max_epochs=2")  # completes trial 0, then is killed
    study = optuna.load_study(study_name="t-stage1", storage=open_database(url).storage)
    deadline = time.monotonic() + 240
    while not study.get_trials(states=(TrialState.COMPLETE,)):
        assert time.monotonic() < deadline and first.poll() is None
        time.sleep(0.1)
    first.kill()
    first.wait()
    study.set_user_attr("recommendation", {"alpha": 50.0, "n_unsup": 2, "trial": 0, "run_dir": "x"})  # an old one
    # the stage's only worker is killed three times (1 start + 2 restarts)
    launcher = subprocess.Popen(
        [sys.executable, "-m", "psvae_opt.cli", "stage1", "--config", str(grown), "--storage", url, "--workers", "1"],
        env=dict(os.environ, TZ="UTC", PSVAE_OPT_HEARTBEAT="1"), cwd=REPO,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    run1, killed = run_folder(tmp_path, 1), set()
    for _ in range(3):
        # a new worker (not one already killed) that has trained past the last kill: the killed
        # worker may have saved one more epoch before the signal landed
        deadline = time.monotonic() + 240
        while not (workers := set(_children(launcher.pid)) - killed):
            assert time.monotonic() < deadline and launcher.poll() is None
            time.sleep(0.05)
        wait_for_epoch(run1, saved_epoch(run1) + 1, timeout=240)
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        killed |= workers
    out, err = launcher.communicate(timeout=300)
    assert launcher.returncode == 1, out + err
    assert "ERROR: 1 trial(s) still waiting or running" in out and "recommended alpha" not in out
    study = optuna.load_study(study_name="t-stage1", storage=open_database(url).storage)
    assert study.user_attrs["recommendation"] is None  # the one-point recommendation is withdrawn
    monkeypatch.setenv("PSVAE_OPT_HEARTBEAT", "1")
    time.sleep(4)  # past the grace period of the last killed worker's heartbeat
    status = cli("status", "--config", grown, "--storage", url)
    assert status.code == 0 and "running 1" in status.out
    assert "1 of 1 running trial(s) have no live worker" in status.out
    assert "recommended alpha" not in status.out
