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

from psvae_opt.search import trial_queue
from psvae_opt.search.rules import knee_index
from psvae_opt.search.storage import open_database
from tests.conftest import one_line_error

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def study_file(
    tmp_path: Path,
    data: Path,
    *,
    epochs: int = 3,
    alphas=(50.0, 1000.0),
    n_unsup=(2, 3),
    betas=(1.0, 5.0),
    criterion: str | None = "zu_corr",
) -> Path:
    """A tiny study file. Stage 2 chooses by the guide's ``zu_corr`` unless ``criterion`` says
    otherwise (None: the default, UDR, which needs 3 seeds per beta), so that 2-seed searches run."""
    path = tmp_path / "study.toml"
    path.write_text(
        f'[study]\nname = "t"\nruns_dir = "{tmp_path / "runs"}"\n'
        f'[data]\npath = "{data}"\nsplit = "3;1;1;0"\n'
        "[model]\nchannels = [4, 8, 8, 8, 8]\n"
        # checkpoint_seconds = 0: last.pt every epoch, which the tests watch to kill workers mid-run
        f"[train]\nmax_epochs = {epochs}\nbatch_size = 16\nlearning_rate = 1e-3\ncheckpoint_seconds = 0\n"
        "[loss]\nanneal_epochs = 1\n"
        f"[stage1]\nalphas = {list(alphas)}\nn_unsup = {list(n_unsup)}\n"
        f"[stage2]\nbetas = {list(betas)}\nseeds = 2\n" + (f'criterion = "{criterion}"\n' if criterion else "")
    )
    return path


def load(url: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_database(url).storage)


def worker(config: Path, url: str, stage: int = 1, **env: str) -> subprocess.Popen:
    env = dict(os.environ, TZ="UTC", OMP_NUM_THREADS="1", PSVAE_OPT_STORAGE=url, **env)
    cmd = [sys.executable, "-m", "psvae_opt.cli", "worker", "--config", str(config), "--stage", str(stage)]
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
    assert all(t.params["seed"] == 0 for t in study.get_trials(states=(TrialState.COMPLETE,)))
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
    retry = next(t for t in study.get_trials(states=(TrialState.COMPLETE,)) if trial_queue.first_number(t) == 0)
    assert retry.user_attrs["resumed_from_epoch"] == killed_at and retry.number != 0
    assert trial_queue.lineage(retry)[trial_queue.CRASHES] == 1 and retry.user_attrs["run_dir"] == str(run0)
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
    assert study.trials[0].user_attrs["error"] == "stopped by SIGTERM"
    assert trial_queue.lineage(study.trials[1]) == {
        trial_queue.FIRST: 0,
        trial_queue.CRASHES: 0,
        trial_queue.SIGNALS: 1,
    }


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
    assert rec["criterion"] == "zu_corr" and rec["beta"] == rec["betas"][int(np.argmax(rec["means"]))]
    if not any(t.user_attrs.get("collapsed") for t in complete):  # two betas: P(best) follows the means
        assert rec["beta"] == float(min(rows, key=lambda row: float(row["train_zu_corr_mean"]))["beta"])
    in_beta = [t for t in complete if t.params["beta"] == rec["beta"]]
    healthy = [t for t in in_beta if not t.user_attrs.get("collapsed")] or in_beta
    assert rec["trial"] == min(healthy, key=lambda t: t.user_attrs["train_zu_corr"]).number
    assert f"recommended beta = {rec['beta']:g} by zu_corr: P(best) " in r.out
    # another criterion on the finished search: nothing trains again, both choices are stored
    again = cli("stage2", "--config", config, "--storage", storage_url, "--seeds", "2", "--alpha", "100",
                "--criterion", "hsic")  # fmt: skip
    assert again.code == 0, again.err
    study = load(storage_url, "t-stage2")
    rec = study.user_attrs["recommendation"]
    assert study.user_attrs["criterion"] == "hsic" and len(study.get_trials()) == 4
    assert (rec["criterion"], rec["guide"]["criterion"]) == ("hsic", "zu_corr")
    assert f"recommended beta = {rec['beta']:g} by hsic: P(best) " in again.out


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
    assert "no study database at" in one_line_error(cli("worker", "--config", config, "--storage", url, "--stage", "1"))
    assert "no study database at" in one_line_error(
        cli("export", "--config", config, "--storage", url, "--stage", "2", "--out", tmp_path / "out")
    )
    assert not (tmp_path / "s.db").exists() and not (tmp_path / "runs").exists() and not (tmp_path / "out").exists()
    assert cli("stage1", "--config", config, "--storage", url, "--workers", "0").code == 0
    assert "no stage-2 study 't-stage2'" in one_line_error(
        cli("worker", "--config", config, "--storage", url, "--stage", "2")
    )
    assert "needs n_unsup >= 2" in one_line_error(
        cli("stage2", "--config", config, "--storage", url, "--alpha", "5", "--n-unsup", "1")
    )
    bad = tmp_path / "bad.toml"
    bad.write_text("[stage1]\nalphas = [50.0]\nlr = 3\n")
    assert "stage1.lr: unknown key" in one_line_error(cli("stage1", "--config", bad, "--storage", url))
    assert "--gpus 'a,b'" in one_line_error(cli("stage1", "--config", config, "--storage", url, "--gpus", "a,b"))
    if not torch.cuda.is_available():
        line = one_line_error(cli("worker", "--config", config, "--storage", url, "--stage", "1", "--gpu", "auto"))
        assert "--gpu auto" in line and "CUDA" in line
    assert "--gpu 'x'" in one_line_error(
        cli("worker", "--config", config, "--storage", url, "--stage", "1", "--gpu", "x")
    )


def test_a_missing_data_file_is_refused_before_workers_start(tmp_path: Path, cli):
    config = study_file(tmp_path, tmp_path / "nowhere.h5")
    line = one_line_error(
        cli("stage1", "--config", config, "--storage", f"sqlite:///{tmp_path / 's.db'}", "--workers", "2")
    )
    assert "nowhere.h5: file not found" in line
    assert not (tmp_path / "s.db").exists()  # refused before the database was created


# -- faults: database outages, the crash budget, secrets ----------------------------------------


def _database(postgres, name: str, password: str | None = None) -> str:
    import psycopg

    with psycopg.connect(f"host=127.0.0.1 port={postgres.port} user=postgres dbname=postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    user = f"postgres:{password}" if password else "postgres"
    return f"postgresql+psycopg://{user}@127.0.0.1:{postgres.port}/{name}"


def test_database_outages_of_20_s_fail_no_live_trial(postgres, tiny_h5: Path, tmp_path: Path):
    """Two workers, the server stopped for 20 s three times while they train (heartbeats every 2 s,
    so each outage is over three times the grace period): no worker errs, no trial fails."""
    url = _database(postgres, "outage_test")
    config = study_file(tmp_path, tiny_h5, epochs=250, alphas=(50.0, 100.0, 500.0, 1000.0), n_unsup=(2,))
    env = dict(os.environ, TZ="UTC", PSVAE_OPT_HEARTBEAT="2")
    stage = subprocess.Popen(
        [sys.executable, "-m", "psvae_opt.cli", "stage1", "--config", str(config), "--storage", url, "--workers", "2"],
        env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    wait_for_epoch(run_folder(tmp_path), 5)
    for _ in range(3):
        postgres.restart(down_seconds=20.0)
        time.sleep(4.0)
    output, _ = stage.communicate(timeout=900)
    assert stage.returncode == 0, output
    study = load(url, "t-stage1")
    assert_each_point_complete_once(study, [(a, 2) for a in (50.0, 100.0, 500.0, 1000.0)])
    assert not study.get_trials(states=(TrialState.FAIL,)), [t.user_attrs.get("error") for t in study.trials]
    assert all(t.user_attrs["epochs"] == 250 and t.user_attrs["resumed_from_epoch"] == 0 for t in study.trials)
    logs = "".join(p.read_text() for p in (tmp_path / "runs" / "t-stage1" / "workers").glob("worker-*.log"))
    assert "database unreachable" in logs or "heartbeat of trial" in logs  # the outages were seen
    assert "Traceback" not in logs


def test_a_launcher_that_ends_during_an_outage_still_recommends(postgres, tiny_h5: Path, tmp_path: Path, cli, caplog):
    """The launcher's last reads (recommendation, summary, front) ride out an outage that begins
    just as its workers finish (CI once failed here: the workers rode it out, the launcher did not)."""
    import threading

    from psvae_opt.service import stage_run as stages

    url = _database(postgres, "late_outage_test")
    config = study_file(tmp_path, tiny_h5, epochs=2, alphas=(50.0, 1000.0), n_unsup=(2,))
    assert cli("stage1", "--config", config, "--storage", url, "--workers", "0").code == 0
    assert worker(config, url).wait(timeout=300) == 0
    db = open_database(url)
    study = load(url, "t-stage1")
    postgres.stop()
    coming_back = threading.Thread(target=lambda: (time.sleep(4.0), postgres.start()))
    coming_back.start()
    try:
        outcome = stages.finish_stage(study, 1, db, stages.StageOutcome(study))
    finally:
        coming_back.join()
    assert "database unreachable while summarising the stage" in caplog.text
    numbers = sorted(t.number for t in load(url, "t-stage1").get_trials(states=(TrialState.COMPLETE,)))
    assert numbers == [0, 1]
    assert outcome.recommendation.trial in numbers
    assert load(url, "t-stage1").user_attrs["recommendation"]["trial"] == outcome.recommendation.trial
    assert outcome.counts == {"COMPLETE": 2}
    assert 1 <= len(outcome.front) <= 2 and {t.number for t in outcome.front} <= set(numbers)


def test_a_point_killed_past_its_crash_budget_is_reported_then_resumed(tiny_h5: Path, tmp_path: Path, cli):
    url = f"sqlite:///{tmp_path / 's.db'}"
    config = study_file(tmp_path, tiny_h5, epochs=60, alphas=(100.0,), n_unsup=(2,))
    assert cli("stage1", "--config", config, "--storage", url, "--workers", "0").code == 0
    run0, epoch = None, 0
    for _ in range(trial_queue.MAX_CRASH_RETRIES + 1):  # four kills: one first attempt, three retries
        victim = worker(config, url, PSVAE_OPT_HEARTBEAT="1")
        run0 = run_folder(tmp_path)
        epoch = wait_for_epoch(run0, epoch + 2)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
    saved = saved_epoch(run0)
    judge = worker(config, url, PSVAE_OPT_HEARTBEAT="1")  # finds the trial stale: the budget is spent
    assert judge.wait(timeout=120) == 0
    study = load(url, "t-stage1")
    (last,) = [t for t in study.trials if t.state == TrialState.FAIL and t.user_attrs.get(trial_queue.GAVE_UP)]
    assert len(study.trials) == 4 and not study.get_trials(states=(TrialState.WAITING, TrialState.RUNNING))
    status = cli("status", "--config", config, "--storage", url)
    assert "ERROR: 1 grid point(s) gave up" in status.out and f"trial {last.number}" in status.out
    out = tmp_path / "export"
    assert cli("export", "--config", config, "--storage", url, "--stage", "1", "--out", out).code == 0
    with (out / "failures.csv").open() as fh:
        (failure,) = list(csv.DictReader(fh))
    assert (int(failure["trial"]), failure["error"], failure["run_dir"]) == (
        last.number,
        last.user_attrs["error"],
        str(run0),
    )
    assert int(failure["first_trial"]) == 0 and int(failure["crash_retries"]) == trial_queue.MAX_CRASH_RETRIES
    assert json.loads((out / "pareto.json").read_text())["gave_up"][0]["trial"] == last.number
    r = cli("stage1", "--config", config, "--storage", url, "--workers", "1")  # run again: resumed
    assert r.code == 0, r.err
    study = load(url, "t-stage1")
    (done,) = study.get_trials(states=(TrialState.COMPLETE,))
    assert done.user_attrs["resumed_from_epoch"] == saved and done.user_attrs["run_dir"] == str(run0)
    assert trial_queue.first_number(done) == 0 and trial_queue.lineage(done)[trial_queue.CRASHES] == 0
    with (run0 / "metrics.csv").open() as fh:
        epochs = [int(row["epoch"]) for row in csv.DictReader(fh) if row["split"] == "train"]
    assert epochs == list(range(60))  # every epoch once, through four kills and a resume


def test_local_workers_show_no_password(postgres, tiny_h5: Path, tmp_path: Path):
    url = _database(postgres, "secret_test", password="s3cret-pw")  # trust auth ignores it
    config = study_file(tmp_path, tiny_h5, epochs=60, alphas=(100.0,), n_unsup=(2,))
    stage = subprocess.Popen(
        [sys.executable, "-m", "psvae_opt.cli", "stage1", "--config", str(config), "--storage", url, "--workers", "2"],
        env=dict(os.environ, TZ="UTC"), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    wait_for_epoch(run_folder(tmp_path), 2)
    listing = subprocess.run(["ps", "-eww", "-o", "pid,args", "--no-headers"], capture_output=True, text=True).stdout
    # this test's workers (by their study file), not those of anything else running on the machine
    workers = [line for line in listing.splitlines() if "psvae_opt.cli worker" in line and str(config) in line]
    output, _ = stage.communicate(timeout=300)
    assert stage.returncode == 0, output
    assert len(workers) == 2 and all("--storage" not in line for line in workers)
    launcher = [line for line in listing.splitlines() if "psvae_opt.cli stage1" in line]
    assert launcher and "s3cret-pw" in launcher[0]  # the user's own command line (their choice)
    assert "s3cret-pw" not in "\n".join(workers)
    assert "s3cret-pw" not in output and "postgres:***@" in output


def test_stage1_with_seeds_takes_the_knee_of_the_seed_means(tiny_h5: Path, tmp_path: Path, cli):
    url = f"sqlite:///{tmp_path / 's.db'}"
    config = study_file(tmp_path, tiny_h5, alphas=(50.0, 1000.0), n_unsup=(2,))
    r = cli("stage1", "--config", config, "--storage", url, "--workers", "2", "--seeds", "2")
    assert r.code == 0, r.err
    study = load(url, "t-stage1")
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert sorted((t.params["alpha"], t.params["seed"]) for t in complete) == [
        (50.0, 0),
        (50.0, 1),
        (1000.0, 0),
        (1000.0, 1),
    ]
    assert all(f"model_seed = {t.params['seed']}" in t.user_attrs["config"] for t in complete)
    rec = study.user_attrs["recommendation"]
    assert rec["n_seeds"] == 2 and "means of 2 seeds" in r.out
    means = {a: np.mean([t.values for t in complete if t.params["alpha"] == a], axis=0) for a in (50.0, 1000.0)}
    assert (rec["pixel_mse"], rec["label_mse"]) == tuple(pytest.approx(v) for v in means[rec["alpha"]])


def test_auto_seeds_add_seeds_until_resolved_or_the_budget(tiny_h5: Path, tmp_path: Path, cli):
    url = f"sqlite:///{tmp_path / 's.db'}"
    config = study_file(tmp_path, tiny_h5, betas=(1.0, 5.0))
    args = ("--seeds", "auto", "--initial-seeds", "2", "--max-seeds", "3", "--alpha", "100", "--n-unsup", "2")
    r = cli("stage2", "--config", config, "--storage", url, "--workers", "2", *args)
    assert r.code == 0, r.err
    study = load(url, "t-stage2")
    rec = study.user_attrs["recommendation"]
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    seeds = {b: sorted(t.params["seed"] for t in complete if t.params["beta"] == b)
             for b in (1.0, 5.0)}  # fmt: skip
    assert all(s[:2] == [0, 1] and len(s) <= 3 for s in seeds.values())
    assert len(seeds[1.0]) == len(seeds[5.0])  # rounds add a seed to every beta: paired blocks
    if rec["resolved"]:
        assert rec["p_value"] <= rec["alpha"] and ", resolved" in r.out  # 2 betas: from 6 seeds on only
    else:  # unresolved at the end: every beta got the whole budget
        assert seeds == {1.0: [0, 1, 2], 5.0: [0, 1, 2]} and rec["n_seeds"] == 3
        assert "NOT resolved" in r.out
    first_round = max(t.number for t in study.trials if t.params["seed"] < 2)
    assert all(t.number > first_round for t in study.trials if t.params["seed"] == 2)  # queued after round one
    assert study.user_attrs["seeds"] == "auto" and study.user_attrs["max_seeds"] == 3
