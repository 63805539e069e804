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


def test_every_local_worker_gets_its_share_of_the_cores():
    """GPU workers too: without OMP_NUM_THREADS each of N processes starts a thread per core."""
    from psvae_opt.service.local_launcher import local_worker_env

    assert local_worker_env(3, ["0", "1"], 4, cpus=16) == {"CUDA_VISIBLE_DEVICES": "1", "OMP_NUM_THREADS": "4"}
    assert local_worker_env(0, [], 2, cpus=16) == {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "8"}
    assert local_worker_env(5, ["GPU-a"], 32, cpus=16)["OMP_NUM_THREADS"] == "1"


def test_a_stop_after_training_skips_the_diagnostics(tiny_config, tmp_path):
    """Rendering diagnostics can outlast a preemption's grace time: the trial goes back to the
    queue at once, and its next attempt (training done) only evaluates and renders."""
    from psvae_opt.config import replace
    from psvae_opt.data import load_session, split_frames
    from psvae_opt.search.objective import TrialContext, TrialHooks, objective

    cfg = replace(tiny_config, study={"runs_dir": str(tmp_path / "runs")})
    session = load_session(cfg.data.path)
    frames = split_frames(session, cfg.data.split_counts, cfg.data.data_seed)
    finished = []
    ctx = TrialContext(
        cfg, 1, session, frames, progress=False, hooks=TrialHooks(on_finish=lambda *a: finished.append(a))
    )
    study = optuna.create_study(directions=["minimize", "minimize"])
    study.enqueue_trial({"alpha": 50.0, "n_unsup": 2, "seed": 0})
    polls = []
    training_and_evaluation = 3 * (7 + 1) + 3  # batches and epoch ends, then the three splits' evaluations
    with pytest.raises(KeyboardInterrupt, match="stopped before the diagnostics"):
        objective(study.ask(), ctx, 0, should_stop=lambda: polls.append(1) or len(polls) > training_and_evaluation)
    assert finished == []
    study.enqueue_trial({"alpha": 50.0, "n_unsup": 2, "seed": 0})
    values = objective(study.ask(), ctx, 0)
    assert len(finished) == 1 and all(v == v for v in values)


@pytest.mark.parametrize("max_seeds", [None, 5])
def test_an_idle_worker_near_the_end_of_a_stage_frees_its_gpu(db_study, max_seeds):
    """Every trial runs elsewhere (fresh heartbeats): after one grace period an idle worker exits
    instead of waiting for them all; with --seeds auto it stays, to run the next round."""
    import threading

    from psvae_opt.service.trial_loop import run_worker

    db, study = db_study
    tids = [trial_queue.pop_waiting(study) for _ in range(3)]
    beating = threading.Event()

    def beat() -> None:  # the other workers, alive
        while not beating.wait(0.3):
            for tid in tids:
                trial_queue.stamp(study, tid)

    threading.Thread(target=beat, daemon=True).start()
    stop = StopFlag()
    timer = threading.Timer(12.0, stop.event.set)  # the limit: it would otherwise wait for them all
    timer.start()
    start = time.monotonic()
    try:
        assert run_worker(db, study, None, stop, interval=1, max_seeds=max_seeds) == 0
    finally:
        timer.cancel()
        beating.set()
    if max_seeds is None:
        assert not stop() and 3 <= time.monotonic() - start < 10  # left by itself after the grace (3 beats)
    else:
        assert stop()
    assert {t.state for t in study.get_trials()} == {TrialState.RUNNING}  # nobody's trial was judged dead


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
