"""`psvae-opt stage1 --launcher slurm` end to end: a real one-node SLURM cluster
(tests/slurmcluster.py), a real PostgreSQL server and real worker processes as array tasks."""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psycopg
import pytest
import torch
from optuna.trial import TrialState

from psvae_opt.search import trial_queue
from psvae_opt.search.rules import knee_index
from psvae_opt.service.slurm import DONE_STATES, task_states
from tests.conftest import one_line_error
from tests.test_search import (
    _database,
    assert_each_point_complete_once,
    load,
    run_folder,
    study_file,
    wait_for_epoch,
)

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.postgres]
REPO = Path(__file__).resolve().parents[1]
COMPLETED = re.compile(r"^worker (\d+): (\d+) trials completed$", re.M)
TAKEN = re.compile(r"psvae_opt\.search\.objective: trial (\d+): .* -> (\S+)$", re.M)


def slurm_study(tmp_path: Path, data: Path, slurm: str = "", **kwargs) -> Path:
    """test_search's tiny study file with CPU-only array tasks (the test cluster has no GPU) of
    one CPU each unless ``slurm`` says (the default, 2 per worker, would let one task at a time
    run on the test cluster's 2-core node)."""
    path = study_file(tmp_path, data, **kwargs)
    cpus = "" if "cpus_per_task" in slurm else "cpus_per_task = 1\n"
    path.write_text(path.read_text() + "[slurm]\ngpus_per_task = 0\n" + cpus + slurm)
    return path


def arrays() -> dict[str, dict[int, str]]:
    """Every job array the cluster knows (finished ones too): job id -> {task: state}."""
    out = subprocess.run(
        ["squeue", "--array", "--states=all", "--noheader", "--format=%F|%K|%T"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    jobs: dict[str, dict[int, str]] = {}
    for line in out.split():
        job, task, state = line.split("|")
        if task.isdigit():
            jobs.setdefault(job, {})[int(task)] = state
    return jobs


def wait_until(ready, what: str, timeout: float = 180.0):
    """``ready()`` once it is not None."""
    deadline = time.monotonic() + timeout
    while (value := ready()) is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout:.0f} s")
        time.sleep(0.1)
    return value


def job_of(log_dir: Path, task: int = 0) -> str:
    """The job id of the array whose task ``task`` has started, from its log's name."""
    return wait_until(
        lambda: next((p.name.split("_")[0] for p in log_dir.glob(f"*_{task}.log")), None),
        f"no task {task} log in {log_dir}",
    )


def first_trial(worker_log: Path) -> tuple[int, Path]:
    """The number and run folder of the first trial a worker took, once its log names it."""

    def named() -> tuple[int, Path] | None:
        match = TAKEN.search(worker_log.read_text()) if worker_log.exists() else None
        return (int(match.group(1)), Path(match.group(2))) if match else None

    return wait_until(named, f"{worker_log} names no trial")


def worker_totals(log_dir: Path, job: str, task: int) -> dict[int, int]:
    """pid -> trials completed, from the worker logs of one array task."""
    totals = {}
    for log in sorted(log_dir.glob(f"{job}_{task}.w*.log")):
        for pid, n in COMPLETED.findall(log.read_text()):
            totals[int(pid)] = int(n)
    return totals


def task_end(job: str, task: int = 0) -> str:
    """How an array task ended, once it has."""

    def ended() -> str | None:
        state = task_states(job, task + 1)[task]
        return state if state in DONE_STATES else None

    return wait_until(ended, f"task {job}_{task} did not end")


def start_stage(config: Path, url: str, workers: int, **env: str) -> subprocess.Popen:
    """`psvae-opt stage1 --launcher slurm` as a process of its own (its output in .stdout)."""
    argv = ["stage1", "--config", str(config), "--storage", url, "--launcher", "slurm", "--workers", str(workers)]
    return subprocess.Popen(
        [sys.executable, "-m", "psvae_opt.cli", *argv],
        env=dict(os.environ, TZ="UTC", **env),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def tables(url: str) -> list[str]:
    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
        return [name for (name,) in rows]


def test_stage1_runs_as_one_job_array_and_prints_the_recommendation(slurm, postgres, tiny_h5: Path, tmp_path, cli):
    url = _database(postgres, "slurm_stage1")
    config = slurm_study(tmp_path, tiny_h5, epochs=2, alphas=(50.0, 1000.0), n_unsup=(2,))
    args = ("stage1", "--config", config, "--storage", url, "--launcher", "slurm", "--workers", "2")
    folder = tmp_path / "runs" / "t-stage1" / "slurm"
    dry = cli(*args, "--dry-run")
    assert dry.code == 0, dry.err
    before = arrays()
    r = cli(*args)
    assert r.code == 0, r.err
    new = {job: tasks for job, tasks in arrays().items() if job not in before}
    assert len(new) == 1 and list(new.values()) == [{0: "COMPLETED", 1: "COMPLETED"}]  # waited for the array
    (job,) = new
    assert f"submitted job array {job} (2 tasks): {folder / 'stage1.sbatch'}" in r.out
    # every grid point once; the recommendation stored and printed after the front
    study = load(url, "t-stage1")
    assert_each_point_complete_once(study, [(50.0, 2), (1000.0, 2)])
    assert not study.get_trials(states=(TrialState.FAIL,))
    front = sorted(study.best_trials, key=lambda t: t.values)
    knee = front[knee_index(np.array([t.values for t in front]))]
    rec = study.user_attrs["recommendation"]
    assert (rec["alpha"], rec["trial"]) == (knee.params["alpha"], knee.number)
    assert r.out.index("Pareto front of t-stage1") < r.out.index(f"recommended alpha = {rec['alpha']:g}")
    # the script: kept beside the run folders, as --dry-run showed it, absolute paths, no URL
    script = (folder / "stage1.sbatch").read_text()
    assert dry.out == f"# {folder / 'stage1.sbatch'} (not written; nothing submitted)\n{script}"
    assert "#SBATCH --array=0-1" in script and f"#SBATCH --output={folder}/logs/%A_%a.log" in script
    assert f"{sys.executable} -m psvae_opt.cli worker --config {config} --stage 1" in script
    assert f"cd {Path.cwd()} " in script
    assert "://" not in script and "postgres" not in script and "--storage" not in script
    # the task logs beside it: each task's one worker ran, together they ran the grid
    for task in (0, 1):
        assert f"task {job}_{task}: worker 0 exited with 0" in (folder / "logs" / f"{job}_{task}.log").read_text()
    totals = [worker_totals(folder / "logs", job, task) for task in (0, 1)]
    assert [len(t) for t in totals] == [1, 1] and sum(n for t in totals for n in t.values()) == 2


# how a task is stopped mid-trial: the task's end state, the first words of the stopped attempt's
# error and the budget its next attempt was re-queued on
STOPS = {
    # scancel: SIGTERM to the task's processes; its worker re-queues its trial and exits
    "scancel": ("CANCELLED", "stopped by SIGTERM", trial_queue.SIGNALS),
    # SLURM's warning before a time limit or at preemption (--signal=B:USR1): to the batch shell only
    "usr1": ("COMPLETED", "stopped by SIGUSR1", trial_queue.SIGNALS),
    # the worker killed hard (the OOM killer, say): its trial stays RUNNING until the other task's
    # worker finds its heartbeat stale (scancel --signal=KILL would not do: SLURM sends SIGTERM first)
    "kill": ("FAILED", "no heartbeat for", trial_queue.CRASHES),
}


def stop_task(how: str, job: str, task_log: Path) -> None:
    if how == "kill":
        (pid,) = re.findall(rf"task {job}_1: worker 0 \(pid (\d+)\)", task_log.read_text())
        os.kill(int(pid), signal.SIGKILL)
        return
    command = ["scancel"] if how == "scancel" else ["scancel", "--signal=USR1", "--batch"]
    subprocess.run([*command, f"{job}_1"], check=True, timeout=60)


@pytest.mark.parametrize("how", STOPS)
def test_a_task_stopped_mid_trial_hands_its_trial_on(how: str, slurm, postgres, tiny_h5: Path, tmp_path: Path):
    end_state, reason, budget = STOPS[how]
    url = _database(postgres, f"slurm_stop_{how}")
    config = slurm_study(tmp_path, tiny_h5, epochs=30, alphas=(50.0, 1000.0), n_unsup=(2,))
    stage = start_stage(config, url, 2, PSVAE_OPT_HEARTBEAT="1")
    logs = tmp_path / "runs" / "t-stage1" / "slurm" / "logs"
    try:
        job = job_of(logs)
        taken = {task: first_trial(logs / f"{job}_{task}.w0.log") for task in (0, 1)}
        assert sorted(number for number, _ in taken.values()) == [0, 1]  # each task trains a grid point
        wait_for_epoch(taken[1][1], 3)
        stop_task(how, job, logs / f"{job}_1.log")
        output, _ = stage.communicate(timeout=400)
    finally:
        stage.kill()
    assert stage.returncode == 0, output
    states = task_states(job, 2)
    assert states == {0: "COMPLETED", 1: end_state}
    study = load(url, "t-stage1")
    assert_each_point_complete_once(study, [(50.0, 2), (1000.0, 2)])
    (stopped,) = study.get_trials(states=(TrialState.FAIL,))
    assert stopped.number == taken[1][0] and stopped.user_attrs["error"].startswith(reason)
    (retry,) = [t for t in study.trials if t.user_attrs.get(trial_queue.REQUEUED_FROM) == stopped.number]
    assert retry.state == TrialState.COMPLETE
    other = {trial_queue.SIGNALS: trial_queue.CRASHES, trial_queue.CRASHES: trial_queue.SIGNALS}[budget]
    assert trial_queue.lineage(retry) == {trial_queue.FIRST: stopped.number, budget: 1, other: 0}
    # it resumed from the epoch the stopped attempt saved, in the same run folder
    run = Path(stopped.user_attrs["run_dir"])
    assert retry.user_attrs["run_dir"] == str(run) and retry.user_attrs["resumed_from_epoch"] >= 3
    with (run / "metrics.csv").open() as fh:
        epochs = [int(row["epoch"]) for row in csv.DictReader(fh) if row["split"] == "train"]
    assert epochs == list(range(30))  # every epoch once: resumed, not redone
    # task 0 ran it if its worker was still there; else (it left once it found nothing to take,
    # trial_loop.leave_when_idle) the array the launcher submitted again for the trial left did
    later = {p.name.split("_")[0] for p in logs.glob("*_0.log")} - {job}
    ran = [sum(worker_totals(logs, j, 0).values()) for j in [job, *sorted(later)]]
    assert sum(ran) == 2 and ran[0] >= 1, ran
    assert sum(worker_totals(logs, job, 1).values()) == 0
    if end_state != "COMPLETED":
        assert f"array task {job}_1 ended {end_state}" in output


def test_sqlite_is_refused_and_a_dry_run_creates_nothing(slurm, postgres, tiny_h5: Path, tmp_path: Path, cli):
    config = slurm_study(tmp_path, tiny_h5)
    sqlite = tmp_path / "studies.db"
    r = cli("stage1", "--config", config, "--storage", f"sqlite:///{sqlite}", "--launcher", "slurm", "--workers", "2")
    assert r.code == 1
    assert "--launcher slurm needs a database server" in one_line_error(r)
    assert not sqlite.exists() and not (tmp_path / "runs").exists()
    url = _database(postgres, "slurm_dry_run")
    slurm_args = ("stage1", "--config", config, "--storage", url, "--launcher", "slurm")
    assert "--launcher slurm --workers 0: give the number of array tasks" in one_line_error(
        cli(*slurm_args, "--workers", "0")
    )
    assert "--gpus 0 picks GPUs of this machine" in one_line_error(cli(*slurm_args, "--gpus", "0"))
    spaced = ("--set", f'study.runs_dir="{tmp_path / "my runs"}"')  # the logs' folder is on #SBATCH lines
    assert "#SBATCH lines cannot hold spaces" in one_line_error(cli(*slurm_args, *spaced))
    before = arrays()
    r = cli(*slurm_args, "--workers", "3", "--dry-run")
    assert r.code == 0, r.err
    path = tmp_path / "runs" / "t-stage1" / "slurm" / "stage1.sbatch"
    assert r.out.startswith(f"# {path} (not written; nothing submitted)\n#!/bin/bash\n")
    assert "#SBATCH --array=0-2" in r.out and "each task runs 1 worker process(es)" in r.out and "://" not in r.out
    # workers per task: slurm.workers_per_task, or --workers-per-gpu K on each of the task's GPUs
    r = cli(*slurm_args, "--dry-run", "--set", "slurm.workers_per_task=3")
    assert "each task runs 3 worker process(es)" in r.out and "gpus=()" in r.out
    two_gpus = ("--set", "slurm.gpus_per_task=2", "--set", "slurm.workers_per_task=2")
    r = cli(*slurm_args, "--dry-run", "--workers-per-gpu", "2", *two_gpus)
    assert "each task runs 4 worker process(es)" in r.out and "gpus=(0 0 1 1)" in r.out and "--gres=gpu:2" in r.out
    assert arrays() == before  # nothing submitted
    assert not (tmp_path / "runs").exists() and not (tmp_path / "my runs").exists()  # no folder
    assert tables(url) == []  # no study either


def test_cpu_tasks_run_workers_per_gpu_workers_each(slurm, postgres, tiny_h5: Path, tmp_path: Path, cli):
    """--workers-per-gpu 2 with CPU-only tasks: two workers in the one task; --no-wait returns at
    once, and `stage1 --workers 0 --wait` follows the stage to its recommendation."""
    url = _database(postgres, "slurm_per_task")
    config = slurm_study(tmp_path, tiny_h5, "cpus_per_task = 2\n", epochs=2, alphas=(50.0, 1000.0), n_unsup=(2,))
    args = ("--launcher", "slurm", "--workers", "1", "--workers-per-gpu", "2", "--no-wait")
    r = cli("stage1", "--config", config, "--storage", url, *args)
    assert r.code == 0, r.err
    folder = tmp_path / "runs" / "t-stage1" / "slurm"
    (job,) = re.findall(rf"submitted job array (\d+) \(1 tasks\): {re.escape(str(folder))}/stage1.sbatch", r.out)
    assert task_states(job, 1)[0] in ("PENDING", "RUNNING") and "Pareto front" not in r.out
    r = cli("stage1", "--config", config, "--storage", url, "--workers", "0", "--wait")
    assert r.code == 0, r.err
    assert task_end(job) == "COMPLETED"  # its workers exit once no trial is left
    rec = load(url, "t-stage1").user_attrs["recommendation"]
    assert f"recommended alpha = {rec['alpha']:g}" in r.out
    script = (folder / "stage1.sbatch").read_text()
    assert "each task runs 2 worker process(es)" in script and "#SBATCH --array=0-0" in script
    assert "#SBATCH --cpus-per-task=2" in script and "--gres" not in script and "gpus=()" in script
    task_log = (folder / "logs" / f"{job}_0.log").read_text()
    assert [f"worker {i} exited with 0" in task_log for i in (0, 1)] == [True, True]
    totals = worker_totals(folder / "logs", job, 0)
    assert len(totals) == 2 and sum(totals.values()) == 2  # two worker processes shared the grid
    assert_each_point_complete_once(load(url, "t-stage1"), [(50.0, 2), (1000.0, 2)])


def test_an_array_whose_tasks_all_got_usr1_is_submitted_again(slurm, postgres, tiny_h5: Path, tmp_path: Path):
    """Every task reached its time limit (or was preempted): the trials they re-queued are left,
    so the launcher submits the array again, and the new task resumes them."""
    url = _database(postgres, "slurm_resubmit")
    config = slurm_study(tmp_path, tiny_h5, epochs=30, alphas=(100.0,), n_unsup=(2,))
    before = arrays()
    stage = start_stage(config, url, 1, PSVAE_OPT_HEARTBEAT="1")
    try:
        run = run_folder(tmp_path, 0, timeout=180)
        wait_for_epoch(run, 3)
        logs = tmp_path / "runs" / "t-stage1" / "slurm" / "logs"
        first_job = job_of(logs)
        subprocess.run(["scancel", "--signal=USR1", "--batch", f"{first_job}_0"], check=True, timeout=60)
        output, _ = stage.communicate(timeout=400)
    finally:
        stage.kill()
    assert stage.returncode == 0, output
    new = {job: tasks for job, tasks in arrays().items() if job not in before}
    second_job = max(new, key=int)
    assert second_job != first_job and new == {first_job: {0: "COMPLETED"}, second_job: {0: "COMPLETED"}}
    assert f"job array {first_job} ended with 1 trial(s) left: submitted it again as {second_job}" in output
    study = load(url, "t-stage1")
    stopped, retry = study.trials
    assert stopped.state == TrialState.FAIL and stopped.user_attrs["error"] == "stopped by SIGUSR1"
    assert retry.state == TrialState.COMPLETE and retry.user_attrs["resumed_from_epoch"] >= 3
    assert trial_queue.lineage(retry) == {trial_queue.FIRST: 0, trial_queue.CRASHES: 0, trial_queue.SIGNALS: 1}
    with (run / "metrics.csv").open() as fh:
        assert [int(row["epoch"]) for row in csv.DictReader(fh) if row["split"] == "train"] == list(range(30))
    assert list(worker_totals(logs, first_job, 0).values()) == [0]
    assert list(worker_totals(logs, second_job, 0).values()) == [1]
    rec = study.user_attrs["recommendation"]
    assert rec["trial"] == retry.number and f"recommended alpha = {rec['alpha']:g}" in output


def test_a_cancelled_array_is_not_submitted_again(slurm, postgres, tiny_h5: Path, tmp_path: Path):
    """scancel of the whole job is the user stopping the stage: its trial waits for the next run."""
    url = _database(postgres, "slurm_cancel")
    config = slurm_study(tmp_path, tiny_h5, epochs=30, alphas=(100.0,), n_unsup=(2,))
    before = arrays()
    stage = start_stage(config, url, 1)
    try:
        wait_for_epoch(run_folder(tmp_path, 0, timeout=180), 2)
        logs = tmp_path / "runs" / "t-stage1" / "slurm" / "logs"
        job = job_of(logs)
        subprocess.run(["scancel", job], check=True, timeout=60)
        output, _ = stage.communicate(timeout=300)
    finally:
        stage.kill()
    assert stage.returncode == 1, output  # no trial completed
    assert {j: t for j, t in arrays().items() if j not in before} == {job: {0: "CANCELLED"}}
    assert f"job array {job} ended with 1 trial(s) left and a task was cancelled; run the stage again" in output
    stopped, waiting = load(url, "t-stage1").trials
    assert (stopped.state, stopped.user_attrs["error"]) == (TrialState.FAIL, "stopped by SIGTERM")
    assert waiting.state == TrialState.WAITING and trial_queue.lineage(waiting)[trial_queue.SIGNALS] == 1


def test_tasks_that_fail_at_once_are_submitted_again_only_once(
    slurm, postgres, tiny_h5: Path, tmp_path: Path, cli, caplog: pytest.LogCaptureFixture
):
    """Array tasks that fail before they change anything (here: told to train on a GPU the node
    lacks) are submitted once more, then the launcher gives up instead of submitting forever."""
    if torch.cuda.is_available():
        pytest.skip("the tasks would train on this machine's GPU")
    url = _database(postgres, "slurm_stalled")
    config = slurm_study(tmp_path, tiny_h5, alphas=(100.0,), n_unsup=(2,))
    before = arrays()
    r = cli("stage1", "--config", config, "--storage", url, "--launcher", "slurm", "--workers", "2",
            "--set", "train.device=cuda")  # fmt: skip
    assert r.code == 1 and "the stage is incomplete" in r.out  # trials left: no recommendation
    new = {j: t for j, t in arrays().items() if j not in before}
    first, second = sorted(new, key=int)
    assert new == {first: {0: "FAILED", 1: "FAILED"}, second: {0: "FAILED"}}  # once more, with 1 task for 1 trial
    assert f"job array {second} ended with 1 trial(s) left and it changed nothing (see its logs)" in caplog.text
    log = tmp_path / "runs" / "t-stage1" / "slurm" / "logs" / f"{second}_0.w0.log"
    assert "train.device = 'cuda'" in log.read_text()
    (waiting,) = load(url, "t-stage1").trials
    assert waiting.state == TrialState.WAITING
