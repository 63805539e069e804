"""Launchers and the worker process, unit by unit: a worker's command line and environment,
local workers started and followed (stand-in workers that only print, so nothing trains),
and a worker's request checked before anything starts."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import optuna
import pytest

from psvae_opt.config import load_config
from psvae_opt.errors import ConfigError, StorageError
from psvae_opt.search.storage import open_database
from psvae_opt.service import follow, local_launcher, worker

# A stand-in worker: prints its command line and device environment, exits with argv[1].
STAND_IN = (
    "import os, sys; print(sys.argv[1:], repr(os.environ.get('CUDA_VISIBLE_DEVICES')), "
    "os.environ.get('OMP_NUM_THREADS'), os.environ.get('TZ'), flush=True); sys.exit(int(sys.argv[1]))"
)


@pytest.fixture
def db(tmp_path: Path):
    return open_database(f"sqlite:///{tmp_path / 's.db'}")


def test_a_worker_command_line_has_absolute_paths_and_no_storage_url(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = follow.worker_argv("study.toml", ["train.max_epochs=2", "loss.beta=1"], [1, 2], ["--wait", "600"])
    assert argv[:4] == [sys.executable, "-m", "psvae_opt.cli", "worker"]
    assert argv[4:] == [
        "--config", str(tmp_path / "study.toml"), "--set", "train.max_epochs=2", "--set", "loss.beta=1",
        "--stage", "1", "2", "--wait", "600",
    ]  # fmt: skip


def test_a_worker_environment_carries_the_url_in_utc(db):
    env = follow.worker_env(db, {"EXTRA": "1"})
    assert env["PSVAE_OPT_STORAGE"] == db.url and env["TZ"] == "UTC" and env["PYTHONUNBUFFERED"] == "1"
    assert env["EXTRA"] == "1" and env["PATH"]  # the launcher's own environment passes on


def logs(folder: Path) -> dict[str, list[str]]:
    return {p.name: p.read_text().splitlines() for p in sorted(folder.glob("worker-*.log"))}


def test_local_workers_each_get_one_device_and_the_gpu_flag(db, tmp_path: Path):
    study = optuna.create_study(study_name="s", storage=db.storage)
    argv = [sys.executable, "-c", STAND_IN, "0"]
    failures = local_launcher.launch_local(argv, {"TZ": "UTC"}, ["3", "GPU-abc"], 2, study, db, tmp_path / "logs")
    assert failures == 0
    threads = max(1, (os.cpu_count() or 1) // 2)  # each of the 2 workers gets half the cores
    assert logs(tmp_path / "logs") == {
        "worker-0.log": [f"['0', '--gpu', '0'] '3' {threads} UTC"],
        "worker-1.log": [f"['0', '--gpu', '0'] 'GPU-abc' {threads} UTC"],
    }


def test_cpu_workers_see_no_gpu_and_share_the_cores(db, tmp_path: Path):
    import os

    study = optuna.create_study(study_name="s", storage=db.storage)
    local_launcher.launch_local([sys.executable, "-c", STAND_IN, "0"], {}, [], 2, study, db, tmp_path / "logs")
    threads = str(max(1, (os.cpu_count() or 1) // 2))
    assert logs(tmp_path / "logs")["worker-0.log"] == [f"['0'] '' {threads} None"]


def test_a_dead_worker_is_replaced_while_trials_remain(db, tmp_path: Path):
    study = optuna.create_study(study_name="s", storage=db.storage)
    study.enqueue_trial({"x": 1.0})  # a trial waits, so a failed worker is started again (twice for one worker)
    failures = local_launcher.launch_local(
        [sys.executable, "-c", STAND_IN, "3"], {}, [], 1, study, db, tmp_path / "logs"
    )
    assert failures == 3 and len(logs(tmp_path / "logs")["worker-0.log"]) == 3
    done = optuna.create_study(study_name="done", storage=db.storage)  # nothing left: not replaced
    assert local_launcher.launch_local([sys.executable, "-c", STAND_IN, "3"], {}, [], 1, done, db, tmp_path / "l2") == 1


def test_waiting_for_a_finished_stage_returns_at_once(db):
    follow.wait_until_done(optuna.create_study(study_name="s", storage=db.storage), db, poll=60)


@pytest.mark.parametrize("gpu", ["first", "-1", "1.5", ""])
def test_a_bad_gpu_option_is_refused_before_the_database_is_opened(gpu: str, tmp_path: Path):
    missing = tmp_path / "never.db"
    req = worker.WorkerRequest(stages=(1,), storage=f"sqlite:///{missing}", gpu=gpu)
    with pytest.raises(ConfigError, match=f"^--gpu '{gpu}': give auto or the index of a visible GPU"):
        worker.run(req, load_config(None))
    assert not missing.exists()


def test_a_worker_needs_the_launchers_database(tmp_path: Path):
    import signal

    from psvae_opt.service.trial_loop import STOP_SIGNALS

    handlers = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}  # run() installs the worker's own
    req = worker.WorkerRequest(stages=(1,), storage=f"sqlite:///{tmp_path / 'none.db'}")
    with pytest.raises(StorageError, match="no study database at"):
        try:
            worker.run(req, load_config(None))
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
    assert not (tmp_path / "none.db").exists()


def test_a_cpu_worker_keeps_its_config_and_holds_no_lock():
    cfg = load_config(None, ["train.device=cpu"])
    assert worker.worker_device(worker.WorkerRequest(stages=(1,)), cfg) == (cfg, None)


def test_a_gpu_worker_names_why_cuda_is_unusable(monkeypatch):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA works here")
    monkeypatch.setattr(torch.version, "cuda", "12.8")  # a CUDA build, so the visible-devices check speaks
    req = worker.WorkerRequest(stages=(1,), gpu="0", cuda_visible="-1")
    with pytest.raises(ConfigError, match=r"^--gpu 0: CUDA is not usable here: CUDA_VISIBLE_DEVICES='-1' hides every"):
        worker.worker_device(req, load_config(None))


def test_a_worker_waits_no_longer_than_asked_for_a_missing_study(db):
    with pytest.raises(StorageError, match="no stage-2 study 'psvae-stage2'"):
        worker.wait_for_study(db, load_config(None), 2, seconds=0)


def test_a_queued_stage_and_its_status_without_training(tiny_h5: Path, tmp_path: Path, cli, monkeypatch):
    """`stage1 --workers 0` goes through stage_run.run (queue only); `status` through stage_status.status.
    The storage URL comes from the environment, as the command edge reads it."""
    from tests.test_search import study_file

    config = study_file(tmp_path, tiny_h5)
    monkeypatch.setenv("PSVAE_OPT_STORAGE", f"sqlite:///{tmp_path / 'env.db'}")
    queued = cli("stage1", "--config", config, "--workers", "0")
    assert queued.code == 0, queued.err
    assert f"study t-stage1 in sqlite:///{tmp_path / 'env.db'}: 4 trials queued; {{'WAITING': 4}}" in queued.out
    assert "no local workers; start them with: psvae-opt worker" in queued.out
    status = cli("status", "--config", config)
    assert status.code == 0 and status.out.splitlines() == [
        f"storage sqlite:///{tmp_path / 'env.db'}",
        "stage 1: t-stage1: waiting 4",
        "stage 2: not started (t-stage2)",
    ]
    again = cli("stage1", "--config", config, "--workers", "0")  # the grid is queued once
    assert ": 0 trials queued; {'WAITING': 4}" in again.out
