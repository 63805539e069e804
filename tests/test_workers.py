"""Worker logic in-process: judging other workers' heartbeats, duplicates, the stop flag."""

from __future__ import annotations

import os
import signal
import time

import optuna
import pytest
from optuna.trial import TrialState

from psvae_opt.search import trial_queue
from psvae_opt.search.storage import open_database
from psvae_opt.service.trial_loop import StopFlag, _duplicate_of, judge_others, requeue_stale
from tests.test_trial_queue import _age_heartbeat


@pytest.fixture
def db_study(storage_url: str):
    db = open_database(storage_url)
    study = optuna.create_study(study_name="w", storage=db.storage, directions=["minimize", "minimize"])
    for beta in (1.0, 5.0, 10.0):
        study.enqueue_trial({"beta": beta, "seed": 0})
    return db, study


def test_a_stale_trial_is_requeued_and_a_fresh_one_is_not(db_study):
    db, study = db_study
    stale, fresh = trial_queue.pop_waiting(study), trial_queue.pop_waiting(study)
    _age_heartbeat(study, stale, 40)
    assert requeue_stale(study, grace=30, unwatched={}) == [stale]
    states = {trial_queue.trial_id(t): t.state for t in study.get_trials()}
    assert states[stale] == TrialState.FAIL and states[fresh] == TrialState.RUNNING
    retry = study.get_trials()[-1]
    assert retry.state == TrialState.WAITING and trial_queue.first_number(retry) == 0
    assert "no heartbeat for 4" in trial_queue.get_trial(study, stale).user_attrs["error"]


def test_a_worker_cut_off_lately_judges_no_one(db_study):
    """After an outage, a worker waits a whole grace period before it fails others' trials:
    they were cut off too, and need a beat to stamp their trials again."""
    db, study = db_study
    tid = trial_queue.pop_waiting(study)
    _age_heartbeat(study, tid, 60)  # looks dead: its worker has not stamped through the outage
    db.last_failure = time.monotonic()  # this worker just got through again
    assert judge_others(db, study, grace=30, unwatched={}) == []
    assert trial_queue.get_trial(study, tid).state == TrialState.RUNNING
    db.last_failure = time.monotonic() - 31  # connected for a grace period: now it may judge
    assert judge_others(db, study, grace=30, unwatched={}) == [tid]


def test_a_trial_taken_but_never_stamped_is_requeued_after_the_grace(db_study):
    db, study = db_study
    storage = trial_queue._storage(study)
    orphan = trial_queue.trial_id(study.get_trials(states=(TrialState.WAITING,))[0])
    assert storage.set_trial_state_values(orphan, TrialState.RUNNING)  # taken, never stamped
    unwatched: dict[int, float] = {}
    assert requeue_stale(study, grace=30, unwatched=unwatched) == [] and orphan in unwatched
    unwatched[orphan] -= 31  # first seen over a grace period ago
    assert requeue_stale(study, grace=30, unwatched=unwatched) == [orphan]
    assert "died before the first heartbeat" in trial_queue.get_trial(study, orphan).user_attrs["error"]


def test_a_second_copy_of_a_grid_point_is_a_duplicate(db_study):
    db, study = db_study
    study.enqueue_trial({"beta": 1.0, "seed": 0})  # two processes queued the same point
    first = trial_queue.pop_waiting(study)
    others = [t for t in study.get_trials(states=(TrialState.WAITING,)) if trial_queue.point_of(t)["beta"] == 1.0]
    assert _duplicate_of(study, others[0]) == trial_queue.get_trial(study, first).number
    assert _duplicate_of(study, trial_queue.get_trial(study, first)) is None


def test_the_stop_flag_names_the_signal():
    flag = StopFlag()
    old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)}
    try:
        flag.install()
        os.kill(os.getpid(), signal.SIGUSR1)
        deadline = time.monotonic() + 5
        while not flag() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert flag() and flag.cause == "SIGUSR1"
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def test_a_trial_losing_the_database_with_an_empty_message_is_requeued(db_study, monkeypatch):
    """The handler quotes the error's first line; an empty message once raised IndexError there."""
    from psvae_opt.errors import StorageError
    from psvae_opt.search.objective import TrialContext
    from psvae_opt.service import trial_loop

    def lose_the_database(*args, **kwargs):
        raise StorageError("")

    monkeypatch.setattr(trial_loop, "objective", lose_the_database)  # the trial's training, not the database
    db, study = db_study
    tid = trial_queue.pop_waiting(study)
    ctx = TrialContext(config=None, stage=2, session=None, split_frames={})  # the objective never reads it
    assert trial_loop.run_one(db, study, tid, ctx, StopFlag(), interval=60) == TrialState.FAIL
    assert trial_queue.get_trial(study, tid).state == TrialState.FAIL
    again = [t for t in study.get_trials() if t.state == TrialState.WAITING and trial_queue.first_number(t) == 0]
    assert len(again) == 1 and trial_queue.lineage(again[0])[trial_queue.CRASHES] == 1


def test_first_line_of_any_error():
    from psvae_opt.errors import first_line

    assert first_line(RuntimeError("\n  disk full  \nmore")) == "disk full"
    assert first_line(RuntimeError()) == "RuntimeError" and first_line(ValueError("  \n ")) == "ValueError"
    assert first_line("", "no output") == "no output" and first_line("\n") == "no message"
