"""The two-stage search service end to end: real worker processes, SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from optuna.trial import TrialState

from psvae_opt.storage import open_storage
from psvae_opt.study import knee_index
from tests.conftest import one_line_error

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def study_file(
    tmp_path: Path, data: Path, *, epochs: int = 3, alphas=(50.0, 1000.0), n_unsup=(2, 3), betas=(1.0, 5.0)
) -> Path:
    path = tmp_path / "study.toml"
    path.write_text(
        f'[study]\nname = "t"\nruns_dir = "{tmp_path / "runs"}"\n'
        f'[data]\npath = "{data}"\nsplit = "3;1;1;0"\n'
        "[model]\nchannels = [4, 8, 8, 8, 8]\n"
        f"[train]\nmax_epochs = {epochs}\nbatch_size = 16\nlearning_rate = 1e-3\n"
        "[loss]\nanneal_epochs = 1\n"
        f"[stage1]\nalphas = {list(alphas)}\nn_unsup = {list(n_unsup)}\n"
        f"[stage2]\nbetas = {list(betas)}\nseeds = 2\n"
    )
    return path


def load(url: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(url, heartbeat=False))


def worker(config: Path, url: str, stage: int = 1) -> subprocess.Popen:
    env = dict(os.environ, TZ="UTC", OMP_NUM_THREADS="1")
    cmd = [
        sys.executable,
        "-m",
        "psvae_opt.cli",
        "worker",
        "--config",
        str(config),
        "--stage",
        str(stage),
        "--storage",
        url,
    ]
    return subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def saved_epoch(run_dir: Path) -> int:
    try:
        return int(torch.load(run_dir / "last.pt", weights_only=True)["epoch"])
    except (FileNotFoundError, RuntimeError, EOFError):
        return 0


def wait_for_epoch(run_dir: Path, epoch: int, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if saved_epoch(run_dir) >= epoch:
            return saved_epoch(run_dir)
        time.sleep(0.05)
    raise AssertionError(f"{run_dir} never reached epoch {epoch}")


def run_folder(tmp_path: Path, number: int = 0, timeout: float = 120) -> Path:
    """The run folder of trial ``number`` of stage 1, once its worker has made it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = list((tmp_path / "runs" / "t-stage1").glob(f"*/trial_{number:04d}"))
        if found:
            assert len(found) == 1, found
            return found[0]
        time.sleep(0.05)
    raise AssertionError(f"no run folder of trial {number} under {tmp_path / 'runs'}")


def assert_each_point_complete_once(study: optuna.Study, points: list[tuple]) -> None:
    complete = [
        tuple(t.params[k] for k in ("alpha", "n_unsup")) for t in study.get_trials(states=(TrialState.COMPLETE,))
    ]
    assert sorted(complete) == sorted(points)
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))


def test_stage1_with_three_workers_runs_each_grid_point_once(storage_url: str, tiny_h5: Path, tmp_path: Path, cli):
    config = study_file(tmp_path, tiny_h5)
    r = cli("stage1", "--config", config, "--storage", storage_url, "--workers", "3")
    assert r.code == 0, r.err
    study = load(storage_url, "t-stage1")
    assert_each_point_complete_once(study, [(a, n) for a in (50.0, 1000.0) for n in (2, 3)])
    assert not study.get_trials(states=(TrialState.FAIL,))
    assert study.metric_names == ["pixel_mse", "label_mse"]
    for t in study.trials:
        attrs = t.user_attrs
        assert {
            "val_loss",
            "val_pixel_mse",
            "val_label_mse",
            "val_label_r2",
            "val_kl_s",
            "val_icmi",
            "val_tc",
            "val_dwkl",
            "val_zu_corr",
            "train_zu_corr",
            "run_dir",
            "config",
            "seed",
            "mig",
        } <= set(attrs)
        assert t.values == [attrs["val_pixel_mse"], attrs["val_label_mse"]]
        assert (Path(attrs["run_dir"]) / "metrics.csv").exists() and attrs["seed"] == 0
        assert f"alpha = {t.params['alpha']}" in attrs["config"]
    # the recommendation is the knee of the front, stored on the study and printed
    front = sorted(study.best_trials, key=lambda t: t.values)
    knee = front[knee_index(np.array([t.values for t in front]))]
    rec = study.user_attrs["recommendation"]
    assert (rec["alpha"], rec["trial"]) == (knee.params["alpha"], knee.number)
    assert f"recommended alpha = {rec['alpha']:g}" in r.out
    # the export's rows are the front
    out = tmp_path / "export"
    r = cli("export", "--config", config, "--storage", storage_url, "--stage", "1", "--out", out)
    assert r.code == 0, r.err
    with (out / "pareto.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [int(row["trial"]) for row in rows] == [t.number for t in front]
    for row, t in zip(rows, front):
        assert float(row["val_pixel_mse"]) == pytest.approx(t.values[0])
        assert float(row["val_label_mse"]) == pytest.approx(t.values[1])
        assert float(row["alpha"]) == t.params["alpha"] and row["run_dir"] == t.user_attrs["run_dir"]
    payload = json.loads((out / "pareto.json").read_text())
    assert [p["trial"] for p in payload["pareto_front"]] == [t.number for t in front]
    assert payload["recommendation"]["alpha"] == rec["alpha"]
    assert "plotly" in (out / "pareto.html").read_text()[:5000].lower()


def test_a_killed_worker_trial_is_retried_and_resumes_from_its_epoch(
    storage_url: str, tiny_h5: Path, tmp_path: Path, cli, monkeypatch
):
    monkeypatch.setenv("PSVAE_OPT_HEARTBEAT", "1")  # stale after 3 s without a heartbeat
    config = study_file(tmp_path, tiny_h5, epochs=40, alphas=(100.0,), n_unsup=(2, 3))
    assert cli("stage1", "--config", config, "--storage", storage_url, "--workers", "0").code == 0
    victim = worker(config, storage_url)
    run0 = run_folder(tmp_path)
    assert run0.parent.name == load(storage_url, "t-stage1").user_attrs["run_key"]
    wait_for_epoch(run0, 3)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed_at = saved_epoch(run0)
    assert 3 <= killed_at < 40
    r = cli("stage1", "--config", config, "--storage", storage_url, "--workers", "2")
    assert r.code == 0, r.err
    study = load(storage_url, "t-stage1")
    assert_each_point_complete_once(study, [(100.0, 2), (100.0, 3)])
    first = study.trials[0]
    assert first.state == TrialState.FAIL
    retry = next(t for t in study.get_trials(states=(TrialState.COMPLETE,)) if t.system_attrs.get("failed_trial") == 0)
    assert retry.user_attrs["resumed_from_epoch"] == killed_at
    assert retry.user_attrs["retry_of"] == 0 and retry.user_attrs["run_dir"] == str(run0)
    with (run0 / "metrics.csv").open() as fh:
        epochs = [(int(row["epoch"]), row["split"]) for row in csv.DictReader(fh)]
    assert epochs == [(e, s) for e in range(40) for s in ("train", "val")]  # every epoch once: resumed, not redone


def test_sigterm_requeues_the_running_trial(tiny_h5: Path, tmp_path: Path, cli):
    url = f"sqlite:///{tmp_path / 's.db'}"
    config = study_file(tmp_path, tiny_h5, epochs=200, alphas=(100.0,), n_unsup=(2,))
    assert cli("stage1", "--config", config, "--storage", url, "--workers", "0").code == 0
    proc = worker(config, url)
    run0 = run_folder(tmp_path)
    wait_for_epoch(run0, 2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    study = load(url, "t-stage1")
    states = [t.state for t in study.trials]
    assert states == [TrialState.FAIL, TrialState.WAITING]  # nothing left RUNNING
    assert study.trials[0].user_attrs["error"] == "stopped by a signal; re-queued"
    assert study.trials[1].system_attrs["failed_trial"] == 0


def test_workers_carry_on_through_a_postgres_restart(postgres, tiny_h5: Path, tmp_path: Path):
    import psycopg

    with psycopg.connect(f"host=127.0.0.1 port={postgres.port} user=postgres dbname=postgres", autocommit=True) as conn:
        conn.execute("CREATE DATABASE restart_test")
    url = postgres.url.rsplit("/", 1)[0] + "/restart_test"
    config = study_file(tmp_path, tiny_h5, epochs=30, alphas=(50.0, 1000.0), n_unsup=(2,))
    env = dict(os.environ, TZ="UTC", PSVAE_OPT_HEARTBEAT="2")
    stage = subprocess.Popen(
        [sys.executable, "-m", "psvae_opt.cli", "stage1", "--config", str(config), "--storage", url, "--workers", "2"],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    wait_for_epoch(run_folder(tmp_path), 3)
    postgres.restart(down_seconds=2.0)
    output, _ = stage.communicate(timeout=300)
    assert stage.returncode == 0, output
    study = load(url, "t-stage1")
    assert_each_point_complete_once(study, [(50.0, 2), (1000.0, 2)])
    assert not study.get_trials(states=(TrialState.FAIL,))  # nothing was lost or redone
    assert all(t.user_attrs["epochs"] == 30 for t in study.trials)


def test_stage2_seed_summary_means_equal_the_trials(storage_url: str, tiny_h5: Path, tmp_path: Path, cli):
    config = study_file(tmp_path, tiny_h5)
    r = cli("stage2", "--config", config, "--storage", storage_url, "--workers", "2", "--seeds", "2", "--alpha", "100")
    assert r.code == 0, r.err
    study = load(storage_url, "t-stage2")
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert sorted((t.params["beta"], t.params["seed"]) for t in complete) == [(1.0, 0), (1.0, 1), (5.0, 0), (5.0, 1)]
    assert study.metric_names == ["zu_corr", "pixel_mse"]
    assert all(t.values[0] == t.user_attrs["train_zu_corr"] for t in complete)
    assert all(
        "alpha = 100.0" in t.user_attrs["config"] and f"model_seed = {t.params['seed']}" in t.user_attrs["config"]
        for t in complete
    )
    out = tmp_path / "export"
    assert cli("export", "--config", config, "--storage", storage_url, "--stage", "2", "--out", out).code == 0
    with (out / "seeds_summary.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [float(row["beta"]) for row in rows] == [1.0, 5.0]
    for row in rows:
        trials = [t for t in complete if t.params["beta"] == float(row["beta"])]
        assert int(row["n_seeds"]) == 2
        for key in ("val_pixel_mse", "val_label_mse", "train_zu_corr", "val_tc", "mig"):
            values = [t.user_attrs[key] for t in trials]
            assert float(row[f"{key}_mean"]) == pytest.approx(np.mean(values))
            assert float(row[f"{key}_std"]) == pytest.approx(np.std(values, ddof=1))
    rec = study.user_attrs["recommendation"]
    best_beta = min(rows, key=lambda row: float(row["train_zu_corr_mean"]))
    assert rec["beta"] == float(best_beta["beta"])
    in_beta = [t for t in complete if t.params["beta"] == rec["beta"]]
    assert rec["trial"] == min(in_beta, key=lambda t: t.user_attrs["train_zu_corr"]).number
    assert f"recommended beta = {rec['beta']:g}" in r.out


def test_stage2_takes_alpha_from_the_stage1_recommendation(tiny_h5: Path, tmp_path: Path, cli):
    url = f"sqlite:///{tmp_path / 's.db'}"
    config = study_file(tmp_path, tiny_h5, alphas=(50.0, 1000.0), n_unsup=(3,), betas=(1.0,))
    assert cli("stage1", "--config", config, "--storage", url, "--workers", "2").code == 0
    rec = load(url, "t-stage1").user_attrs["recommendation"]
    assert cli("stage2", "--config", config, "--storage", url, "--workers", "2", "--seeds", "2").code == 0
    stage2 = load(url, "t-stage2")
    assert (stage2.user_attrs["alpha"], stage2.user_attrs["n_unsup"]) == (rec["alpha"], 3)
    # a second stage-2 run with another alpha would mix two searches: refused
    r = cli("stage2", "--config", config, "--storage", url, "--workers", "0", "--alpha", "7")
    assert "was started with alpha = " in one_line_error(r)


def test_adaptive_stage1_runs_its_trial_budget(tiny_h5: Path, tmp_path: Path, cli):
    url = f"sqlite:///{tmp_path / 's.db'}"
    config = study_file(tmp_path, tiny_h5, n_unsup=(2,))
    r = cli("stage1", "--config", config, "--storage", url, "--workers", "2", "--sampler", "tpe", "--n-trials", "4")
    assert r.code == 0, r.err
    study = load(url, "t-stage1")
    alphas = [t.params["alpha"] for t in study.get_trials(states=(TrialState.COMPLETE,))]
    assert len(alphas) == 4 and len(set(alphas)) == 4 and all(10 <= a <= 5000 for a in alphas)


def test_a_study_started_again_trains_in_new_run_folders(tiny_h5: Path, tmp_path: Path, cli):
    """Same study name and runs_dir, a new database: the old trials' checkpoints are not reused."""
    config = study_file(tmp_path, tiny_h5, epochs=2, alphas=(100.0,), n_unsup=(2,))
    runs = []
    for db in ("a.db", "b.db"):
        url = f"sqlite:///{tmp_path / db}"
        assert cli("stage1", "--config", config, "--storage", url, "--workers", "1").code == 0
        (trial,) = load(url, "t-stage1").trials
        assert trial.user_attrs["resumed_from_epoch"] == 0 and trial.user_attrs["epochs"] == 2
        runs.append(Path(trial.user_attrs["run_dir"]))
    assert runs[0] != runs[1] and runs[0].name == runs[1].name == "trial_0000"
    assert (runs[0] / "best.pt").exists() and (runs[1] / "best.pt").exists()


def test_a_trial_running_without_a_heartbeat_is_requeued(storage_url: str):
    """A worker that died between taking a trial and its first heartbeat: optuna's stale
    check skips such trials, psvae-opt re-queues them once they are old enough."""
    from psvae_opt.workers import pop_waiting, requeue_unwatched

    study = optuna.create_study(study_name="orphans", storage=open_storage(storage_url, heartbeat=False))
    for x in range(2):
        study.enqueue_trial({"x": x})
    watched = pop_waiting(study)  # stamps its first heartbeat
    storage = study._storage
    orphan = next(t._trial_id for t in study.trials if t._trial_id != watched)
    assert storage.set_trial_state_values(orphan, state=TrialState.RUNNING)  # taken, never stamped
    assert requeue_unwatched(study, older_than=3600) == []  # too young
    assert requeue_unwatched(study, older_than=0) == [orphan]
    states = {t._trial_id: t.state for t in study.get_trials()}
    assert states[watched] == TrialState.RUNNING and states[orphan] == TrialState.FAIL
    (retry,) = study.get_trials(states=(TrialState.WAITING,))
    orphan_number = storage.get_trial(orphan).number
    assert retry.system_attrs["failed_trial"] == orphan_number and retry.params == {}


def _pop_all(url: str, name: str, out: str) -> None:  # runs in a child process
    from psvae_opt.workers import pop_waiting

    study = optuna.load_study(study_name=name, storage=open_storage(url, heartbeat=False))
    taken = []
    while (trial_id := pop_waiting(study)) is not None:
        taken.append(trial_id)
    Path(out).write_text(json.dumps(taken))


def test_concurrent_workers_never_pop_the_same_trial(storage_url: str, tmp_path: Path):
    import multiprocessing

    study = optuna.create_study(study_name="race", storage=open_storage(storage_url, heartbeat=False))
    for i in range(60):
        study.enqueue_trial({"x": i})
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_pop_all, args=(storage_url, "race", str(tmp_path / f"{i}.json"))) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    taken = [i for n in range(4) for i in json.loads((tmp_path / f"{n}.json").read_text())]
    assert sorted(taken) == sorted(t._trial_id for t in study.trials)  # all popped, none twice


# -- bad input: one line, non-zero exit, no traceback ----------------------------------------


def test_unreachable_and_malformed_storage_urls(tiny_h5: Path, tmp_path: Path, cli):
    from tests.pgserver import free_port

    config = study_file(tmp_path, tiny_h5)
    dead = f"postgresql+psycopg://someone:secret@127.0.0.1:{free_port()}/psvae"
    line = one_line_error(cli("stage1", "--config", config, "--storage", dead, "--workers", "0"))
    assert "cannot open the study database postgresql+psycopg://someone:***@127.0.0.1" in line
    assert "secret" not in line
    assert "is not a database URL" in one_line_error(cli("status", "--config", config, "--storage", "not a url"))
    assert "supports sqlite" in one_line_error(cli("status", "--config", config, "--storage", "mysql://u@h/db"))
    assert "does not exist" in one_line_error(
        cli("status", "--config", config, "--storage", f"sqlite:///{tmp_path}/no/dir/x.db")
    )


def test_stage2_without_alpha_and_other_bad_requests(tiny_h5: Path, tmp_path: Path, cli):
    url = f"sqlite:///{tmp_path / 's.db'}"
    config = study_file(tmp_path, tiny_h5)
    assert "stage 2 needs alpha: give --alpha A" in one_line_error(cli("stage2", "--config", config, "--storage", url))
    assert "no stage-1 study 't-stage1'" in one_line_error(
        cli("worker", "--config", config, "--storage", url, "--stage", "1")
    )
    assert "no stage-2 study" in one_line_error(
        cli("export", "--config", config, "--storage", url, "--stage", "2", "--out", tmp_path)
    )
    assert "needs n_unsup >= 2" in one_line_error(
        cli("stage2", "--config", config, "--storage", url, "--alpha", "5", "--n-unsup", "1")
    )
    bad = tmp_path / "bad.toml"
    bad.write_text("[stage1]\nalphas = [50.0]\nlr = 3\n")
    assert "stage1.lr: unknown key" in one_line_error(cli("stage1", "--config", bad, "--storage", url))
    assert "--gpus 'a,b'" in one_line_error(cli("stage1", "--config", config, "--storage", url, "--gpus", "a,b"))
    if not torch.cuda.is_available():
        assert "--gpu auto: no CUDA GPU is visible" in one_line_error(
            cli("worker", "--config", config, "--storage", url, "--stage", "1", "--gpu", "auto")
        )
    assert "--gpu 'x'" in one_line_error(
        cli("worker", "--config", config, "--storage", url, "--stage", "1", "--gpu", "x")
    )


def test_a_missing_data_file_is_refused_before_workers_start(tmp_path: Path, cli):
    config = study_file(tmp_path, tmp_path / "nowhere.h5")
    line = one_line_error(
        cli("stage1", "--config", config, "--storage", f"sqlite:///{tmp_path / 's.db'}", "--workers", "2")
    )
    assert "nowhere.h5: file not found" in line
