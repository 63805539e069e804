"""The Optuna adapter against the pinned Optuna, on SQLite and a real PostgreSQL."""

from __future__ import annotations

import datetime
import json
import os
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from psvae_opt.search import trial_queue
from psvae_opt.search.storage import open_database
from psvae_opt.service.trial_loop import requeue_stale


@pytest.fixture
def study(storage_url: str) -> optuna.Study:
    db = open_database(storage_url)
    study = optuna.create_study(study_name="q", storage=db.storage, directions=["minimize", "minimize"])
    for beta in (1.0, 5.0):
        study.enqueue_trial({"beta": beta, "seed": 0})
    return study


def _age_heartbeat(study: optuna.Study, tid: int, seconds: float) -> None:
    """Move a trial's last heartbeat ``seconds`` into the past, by the database's clock."""
    engine = trial_queue._engine(study)
    beats = sqlalchemy.table("trial_heartbeats", sqlalchemy.column("trial_id"), sqlalchemy.column("heartbeat"))
    with engine.begin() as conn:
        now = conn.execute(sqlalchemy.select(sqlalchemy.func.now())).scalar_one().replace(tzinfo=None)
        past = now - datetime.timedelta(seconds=seconds)
        conn.execute(sqlalchemy.update(beats).where(beats.c.trial_id == tid).values(heartbeat=past))


def test_pop_takes_each_waiting_trial_once_and_stamps_it(study: optuna.Study):
    first, second = trial_queue.pop_waiting(study), trial_queue.pop_waiting(study)
    assert first != second and trial_queue.pop_waiting(study) is None
    ages = trial_queue.heartbeat_ages(study)
    assert set(ages) == {first, second} and all(0 <= age < 5 for age in ages.values())
    assert trial_queue.get_trial(study, first).state == TrialState.RUNNING


def test_heartbeat_ages_use_the_database_clock(study: optuna.Study):
    tid = trial_queue.pop_waiting(study)
    _age_heartbeat(study, tid, 100)
    assert trial_queue.heartbeat_ages(study)[tid] == pytest.approx(100, abs=3)
    with trial_queue._engine(study).connect() as conn:  # the database server's clock
        now = conn.execute(sqlalchemy.select(sqlalchemy.func.now())).scalar_one().replace(tzinfo=None)
    utc = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    assert abs((now - utc).total_seconds()) < 5  # both servers keep UTC (the tests run with TZ=UTC)


def test_a_worker_with_a_skewed_clock_fails_no_fresh_trial(study: optuna.Study, monkeypatch):
    """Staleness is judged by the database's clock: a worker whose local time is hours off sees
    a fresh heartbeat as fresh (the old check compared datetime_start with the local clock)."""
    tid = trial_queue.pop_waiting(study)
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        assert requeue_stale(study, grace=30, unwatched={}) == []
    finally:
        monkeypatch.setenv("TZ", "UTC")
        time.tzset()
    assert trial_queue.get_trial(study, tid).state == TrialState.RUNNING


def test_a_requeued_attempt_keeps_its_grid_point_and_lineage(study: optuna.Study):
    tid = trial_queue.pop_waiting(study)
    first = trial_queue.get_trial(study, tid)
    failed = trial_queue.requeue(study, tid, "its worker died", "crash")
    assert failed.state == TrialState.FAIL and failed.user_attrs["error"] == "its worker died"
    (retry,) = [t for t in study.get_trials(states=(TrialState.WAITING,)) if t.number != 1]
    assert trial_queue.point_of(retry) == {"beta": 1.0, "seed": 0}
    expected = {trial_queue.FIRST: first.number, trial_queue.CRASHES: 1, trial_queue.SIGNALS: 0}
    assert trial_queue.lineage(retry) == expected
    assert retry.user_attrs[trial_queue.REQUEUED_FROM] == first.number and "error" not in retry.user_attrs
    assert trial_queue.requeue(study, tid, "again", "crash") is None  # already failed: nothing more


def test_crash_and_signal_budgets_are_apart(study: optuna.Study):
    """Signals never spend the crash budget: ten preemptions and three crashes, then the fourth crash gives up."""
    for _ in range(trial_queue.MAX_CRASH_RETRIES + 10 + 1):
        waiting = [t for t in study.get_trials(states=(TrialState.WAITING,)) if trial_queue.point_of(t)["beta"] == 1.0]
        if not waiting:
            break
        tid = trial_queue.trial_id(waiting[0])
        assert trial_queue._storage(study).set_trial_state_values(tid, TrialState.RUNNING)
        signals = trial_queue.lineage(waiting[0])[trial_queue.SIGNALS]
        trial_queue.requeue(study, tid, "stopped", "signal" if signals < 10 else "crash")
    attempts = [t for t in study.trials if t.system_attrs.get("fixed_params", {}).get("beta") == 1.0]
    last = attempts[-1]
    assert len(attempts) == 1 + 10 + trial_queue.MAX_CRASH_RETRIES  # the last crash queued nothing
    assert last.state == TrialState.FAIL and last.user_attrs[trial_queue.GAVE_UP] is True
    assert trial_queue.lineage(last) == {trial_queue.FIRST: 0, trial_queue.CRASHES: 3, trial_queue.SIGNALS: 10}
    trial_queue.queue_again(study, last)  # the stage run again: a new crash budget, the same run
    again = study.get_trials(states=(TrialState.WAITING,))[-1]
    assert trial_queue.lineage(again) == {trial_queue.FIRST: 0, trial_queue.CRASHES: 0, trial_queue.SIGNALS: 10}


def test_study_system_attributes_and_parameters(study: optuna.Study, tmp_path: Path):
    assert isinstance(trial_queue.study_system_attrs(study), dict)
    trial = study.ask()
    dist = optuna.distributions.CategoricalDistribution([1.0, 5.0])
    trial_queue.set_trial_param(study, trial, "beta", 5.0, dist)
    assert trial_queue.get_trial(study, trial_queue.trial_id(trial)).params == {"beta": 5.0}
    assert trial_queue.fail(study, trial_queue.trial_id(trial), "bad") is True
    assert trial_queue.fail(study, trial_queue.trial_id(trial), "bad") is False


def test_first_number_reads_older_studies_lineage():
    legacy = optuna.trial.create_trial(state=TrialState.WAITING, system_attrs={"failed_trial": 4})
    assert trial_queue.first_number(legacy) == 4


def _pop_all(url: str, name: str, out: str) -> None:  # runs in a child process
    study = optuna.load_study(study_name=name, storage=open_database(url).storage)
    taken = []
    while (tid := trial_queue.pop_waiting(study)) is not None:
        taken.append(tid)
    Path(out).write_text(json.dumps(taken))


def test_concurrent_workers_never_pop_the_same_trial(storage_url: str, tmp_path: Path):
    import multiprocessing

    study = optuna.create_study(study_name="race", storage=open_database(storage_url).storage)
    for i in range(60):
        study.enqueue_trial({"x": i})
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_pop_all, args=(storage_url, "race", str(tmp_path / f"{i}.json"))) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    taken = [i for n in range(4) for i in json.loads((tmp_path / f"{n}.json").read_text())]
    assert sorted(taken) == sorted(trial_queue.trial_id(t) for t in study.trials)  # all popped, none twice
    assert os.environ["TZ"] == "UTC"
