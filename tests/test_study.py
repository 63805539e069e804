"""Study logic on fake studies built from optuna.trial.create_trial."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from psvae_opt.config import load_config
from psvae_opt.errors import ConfigError
from psvae_opt.search import trial_queue
from psvae_opt.search.intervals import t_interval
from psvae_opt.search.recommendation import (
    plan_more_seeds,
    recommend_stage1,
    recommend_stage2,
    withdraw_recommendation,
)
from psvae_opt.search.rules import knee_index
from psvae_opt.search.stages import seed_summary
from psvae_opt.search.storage import open_database
from psvae_opt.search.study import counts, create_stage, enqueue_points, given_up, incomplete


def test_knee_is_the_point_nearest_the_scaled_utopia():
    front = np.array([[0.01, 9.0], [0.02, 2.0], [0.05, 1.5], [0.20, 1.0]])
    # scaled: (0, 1), (0.053, 0.125), (0.21, 0.0625), (1, 0) -> the second is nearest (0, 0)
    assert knee_index(front) == 1
    assert knee_index(np.array([[1.0, 5.0]])) == 0
    assert knee_index(np.array([[1.0, 5.0], [1.0, 3.0]])) == 1  # a constant objective is ignored


def stage1_study(rows: list[tuple[float, int, float, float]]) -> optuna.Study:
    """(alpha, seed, pixel, label) rows as complete stage-1 trials."""
    study = optuna.create_study(directions=["minimize", "minimize"])
    study.set_user_attr("stage", 1)
    dists = {
        "alpha": CategoricalDistribution([50.0, 100.0, 500.0, 1000.0]),
        "n_unsup": CategoricalDistribution([2]),
        "seed": IntDistribution(0, 4),
    }
    for alpha, seed, pixel, label in rows:
        study.add_trial(
            create_trial(
                values=[pixel, label],
                params={"alpha": alpha, "n_unsup": 2, "seed": seed},
                distributions=dists,
                user_attrs={"run_dir": f"/runs/{alpha}/{seed}", "val_pixel_mse": pixel, "val_label_mse": label},
            )
        )
    return study


def test_stage1_recommendation_is_the_knee_and_is_stored():
    study = stage1_study([(50, 0, 0.010, 0.30), (100, 0, 0.011, 0.05), (500, 0, 0.014, 0.03), (1000, 0, 0.030, 0.02)])
    rec = recommend_stage1(study)
    assert (rec.alpha, rec.n_unsup, rec.trial, rec.n_seeds) == (100.0, 2, 1, 1)
    assert rec.run_dir == "/runs/100/0"
    assert study.user_attrs["recommendation"] == rec.stored()


def test_stage1_knee_is_computed_on_the_seed_means():
    """Seed 0 alone would make alpha 100 the knee; over three seeds alpha 500 is."""
    rows = [(50, s, 0.010, 0.30) for s in range(3)] + [(1000, s, 0.030, 0.02) for s in range(3)]
    rows += [(100, 0, 0.011, 0.05), (100, 1, 0.016, 0.20), (100, 2, 0.017, 0.22)]  # seed 0 was lucky
    rows += [(500, 0, 0.014, 0.06), (500, 1, 0.013, 0.04), (500, 2, 0.015, 0.05)]
    study = stage1_study(rows)
    rec = recommend_stage1(study)
    assert (rec.alpha, rec.n_seeds) == (500.0, 3)
    assert rec.pixel_mse == pytest.approx(0.014) and rec.label_mse == pytest.approx(0.05)
    assert rec.trial == 9  # the recommended alpha's first seed
    assert (rec.n_points, rec.n_trials) == (4, 12)  # what it rests on
    (row,) = [r for r in study.user_attrs["seed_summary"] if r["alpha"] == 100.0]
    assert row["val_label_mse_mean"] == pytest.approx(0.47 / 3)
    seed0 = stage1_study([r for r in rows if r[1] == 0])
    assert recommend_stage1(seed0).alpha == 100.0


def test_a_recommendation_is_computed_without_storing_and_withdrawn_while_incomplete():
    study = stage1_study([(50, 0, 0.010, 0.30), (100, 0, 0.011, 0.05)])
    unstored = recommend_stage1(study, store=False)
    assert unstored.n_points == 2 and "recommendation" not in study.user_attrs
    assert recommend_stage1(study) == unstored
    assert study.user_attrs["recommendation"] == unstored.stored()
    study.enqueue_trial({"alpha": 500.0, "n_unsup": 2, "seed": 0})
    unfinished, gave_up = incomplete(study)
    assert [t.state for t in unfinished] == [TrialState.WAITING] and gave_up == []
    withdraw_recommendation(study)
    assert study.user_attrs["recommendation"] is None


def stage2_study(rows: list[tuple], **extra: dict) -> optuna.Study:
    """(beta, seed, zu_corr, pixel[, mig[, collapsed]]) rows as complete stage-2 trials."""
    study = optuna.create_study(directions=["minimize", "minimize"])
    study.set_user_attr("stage", 2)
    for beta, seed, zu, pixel, *rest in rows:
        attrs = {
            "train_zu_corr": zu,
            "val_pixel_mse": pixel,
            "val_label_mse": 0.1 * seed,
            "run_dir": f"/r/{beta}/{seed}",
        }
        if rest:
            attrs["mig"] = rest[0]
        if len(rest) > 1:
            attrs.update(collapsed=rest[1], collapsed_dims=[0] if rest[1] else [])
        study.add_trial(
            create_trial(
                values=[zu, pixel],
                params={"beta": beta, "seed": seed},
                distributions={"beta": CategoricalDistribution([1.0, 5.0, 10.0, 20.0]), "seed": IntDistribution(0, 9)},
                user_attrs=attrs,
            )
        )
    return study


def test_seed_summary_intervals_and_the_stage2_recommendation():
    rows = [(1.0, 0, 0.50, 0.010, 0.1), (1.0, 1, 0.30, 0.012, 0.2), (1.0, 2, 0.40, 0.011, 0.3)]
    rows += [(5.0, 0, 0.20, 0.020, 0.6), (5.0, 1, 0.10, 0.019, 0.4)]
    study = stage2_study(rows)
    summary = seed_summary(study)
    assert [(r["beta"], r["n_seeds"], r["seeds"], r["n_collapsed"]) for r in summary] == [
        (1.0, 3, [0, 1, 2], 0),
        (5.0, 2, [0, 1], 0),
    ]
    iv = t_interval([0.5, 0.3, 0.4])
    assert (summary[0]["train_zu_corr_mean"], summary[0]["train_zu_corr_std"]) == (
        pytest.approx(0.4),
        pytest.approx(0.1),
    )
    assert (summary[0]["train_zu_corr_low"], summary[0]["train_zu_corr_high"]) == (
        pytest.approx(iv.low),
        pytest.approx(iv.high),
    )
    assert summary[1]["mig_mean"] == pytest.approx(0.5)
    assert summary[1]["val_pixel_mse_std"] == pytest.approx(np.std([0.02, 0.019], ddof=1))
    assert summary[0]["val_loss_mean"] is None  # an attribute no trial has
    rec = recommend_stage2(study)
    assert (rec.beta, rec.seed, rec.trial, rec.criterion) == (5.0, 1, 4, "zu_corr")
    assert rec.zu_corr_mean == pytest.approx(0.15) and rec.mig == pytest.approx(0.4)
    # paired seeds 0 and 1: beta 5 is ahead by 0.25 with one residual degree of freedom, sigma about
    # 0.05: P(t_1 < 5) = 0.94 (Monte Carlo), short of the 0.97 that resolves
    assert rec.n_seeds == 2 and rec.betas == (1.0, 5.0) and sum(rec.p_best) == pytest.approx(1.0)
    assert 0.9 < rec.p_best[1] < 0.97 and rec.resolved is False
    assert rec.guide is None and rec.differs is False  # the criterion is the guide's own
    assert study.user_attrs["seed_summary"] == summary and study.user_attrs["recommendation"] == rec.stored()


CLEAR = [(b, s, 0.80 + 0.01 * s + 0.01 * b, 0.01) for b in (1.0, 5.0, 20.0) for s in range(5)]
CLEAR += [(10.0, s, 0.10 + 0.01 * s, 0.01) for s in range(5)]  # beta 10 far ahead in each of 5 seeds


def test_a_clear_winner_is_resolved():
    rec = recommend_stage2(stage2_study(CLEAR))
    assert (rec.beta, rec.resolved, rec.p_best, rec.n_seeds) == (10.0, True, (0.0, 0.0, 1.0, 0.0), 5)
    # the randomisation test: a permutation matches the lead when it keeps the 5 best trials in one
    # beta, (1/4)^4 of them (the others are too close together to matter)
    assert rec.p_value == pytest.approx(1 / 256, abs=0.003) and rec.alpha == 0.05
    # with 3 seeds the same lead has p = (1/4)^2: no exact test resolves it at 0.05
    three = recommend_stage2(stage2_study([r for r in CLEAR if r[1] < 3]), store=False)
    assert three.p_value == pytest.approx(1 / 16, abs=0.015) and not three.resolved


def test_collapsed_trials_count_as_failures_not_as_absent():
    rows = [(1.0, s, 0.40 + 0.02 * s, 0.01, 0.2, False) for s in range(3)]
    # beta 10's one survivor has the lowest zu_corr of all, but two of its three seeds collapsed
    rows += [(10.0, 0, 0.01, 0.01, 0.1, True), (10.0, 1, 0.02, 0.01, 0.1, True), (10.0, 2, 0.05, 0.01, 0.6, False)]
    rows += [(20.0, s, 0.02, 0.01, 0.1, True) for s in range(3)]
    study = stage2_study(rows)
    rec = recommend_stage2(study)
    assert (rec.beta, rec.trial, rec.seed, rec.collapsed) == (1.0, 0, 0, False)
    assert rec.n_collapsed == (0, 2, 3) and (rec.n_seeds, rec.n_healthy) == (3, 3)
    # the floor is the lowest healthy score less the healthy range: -0.44 - (0.44 - 0.05) = -0.83
    assert list(rec.means) == pytest.approx([-0.42, (-0.83 - 0.83 - 0.05) / 3, -0.83])
    assert rec.warnings == ("beta 20: every one of its 3 trial(s) has a collapsed unsupervised dimension",)
    by_beta = {r["beta"]: r for r in seed_summary(study)}
    assert by_beta[10.0]["trials"] == [5] and by_beta[20.0]["all_collapsed"] and by_beta[20.0]["n_collapsed"] == 3


def test_every_trial_collapsed_still_chooses_with_a_warning_per_beta():
    study = stage2_study(
        [(1.0, 0, 0.3, 0.01, 0.1, True), (5.0, 0, 0.1, 0.01, 0.1, True), (5.0, 1, 0.2, 0.01, 0.1, True)]
    )
    rec = recommend_stage2(study)
    assert rec.collapsed and rec.resolved is False and rec.p_best == (0.5, 0.5)  # one paired seed
    # compared as they are: beta 5 has the higher mean score on the paired seed 0, trial 1 its best
    assert (rec.beta, rec.trial, rec.means) == (5.0, 1, pytest.approx((-0.3, -0.1)))
    assert [w.split(":")[0] for w in rec.warnings] == ["beta 1", "beta 5", "every trial of every beta collapsed"]


def test_the_printout_says_when_the_recommendation_rests_on_collapsed_trials(capsys):
    from psvae_opt.commands.service import _print_stage2
    from psvae_opt.service.stage_run import StageOutcome

    study = stage2_study(
        [(1.0, 0, 0.3, 0.01, 0.1, True), (5.0, 0, 0.1, 0.01, 0.1, True), (5.0, 1, 0.2, 0.01, 0.1, True)]
    )
    rec = recommend_stage2(study)
    _print_stage2(StageOutcome(study, recommendation=rec, summary=seed_summary(study)))
    lines = capsys.readouterr().out.splitlines()
    warning = next(i for i, line in enumerate(lines) if line.startswith("warning: beta 5: every one"))
    chosen = next(i for i, line in enumerate(lines) if line.startswith("recommended beta = "))
    assert warning < chosen  # the warning comes before the recommendation it qualifies
    beta = f"{rec.beta:g}"
    assert lines[chosen] == (
        f"recommended beta = {beta} by zu_corr: P(best) 0.50 over 1 paired seed(s), NOT resolved (another beta "
        "may be better)"
    )
    assert lines[chosen + 1].startswith(f"recommended model: trial {rec.trial}, seed {rec.seed} (zu_corr ")
    assert lines[chosen + 1].endswith(", a collapsed dimension)")
    assert "P(best)" in lines[1] and lines[2].split()[-1] == "0.500"  # the table's P(best) column


def test_recommendations_of_an_empty_study_are_none():
    study = optuna.create_study(directions=["minimize", "minimize"])
    assert recommend_stage1(study) is None and recommend_stage2(study) is None


def test_auto_seeds_add_the_next_seed_to_every_beta_until_resolved_or_the_budget():
    rows = [(1.0, s, 0.9 - 0.01 * s, 0.01) for s in range(3)]  # clearly worst
    rows += [(5.0, 0, 0.10, 0.01), (5.0, 1, 0.60, 0.01), (5.0, 2, 0.30, 0.01)]  # the seed decides
    rows += [(10.0, 0, 0.20, 0.01), (10.0, 1, 0.25, 0.01), (10.0, 2, 0.30, 0.01)]
    study = stage2_study(rows)
    assert not recommend_stage2(study, store=False).resolved
    # paired blocks stay complete: every beta gets seed 3, the clearly worst one too
    assert plan_more_seeds(study, max_seeds=10) == [{"beta": b, "seed": 3} for b in (1.0, 5.0, 10.0)]
    assert plan_more_seeds(study, max_seeds=3) == []  # the budget is spent
    study.enqueue_trial({"beta": 10.0, "seed": 3})
    assert plan_more_seeds(study, max_seeds=10) == []  # a round is still running
    assert plan_more_seeds(stage2_study(CLEAR), max_seeds=10) == []  # resolved: p = 1/256


def test_auto_seeds_stop_once_resolved_at_the_level_of_one_look():
    study = stage2_study(CLEAR)
    study.set_user_attr("seeds", "auto")
    study.set_user_attr("initial_seeds", 3)
    study.set_user_attr("max_seeds", 10)  # 8 looks: each at 0.05 / 8
    rec = recommend_stage2(study, store=False)
    assert rec.alpha == pytest.approx(0.05 / 8) and rec.resolved
    assert plan_more_seeds(study, max_seeds=10) == []


def test_enqueueing_is_idempotent_and_resumes_failed_points(tmp_path):
    db = open_database(f"sqlite:///{tmp_path / 's.db'}")
    cfg = load_config(None, ["study.name=q"])
    study = create_stage(db, cfg, 1)
    points = [{"alpha": a, "n_unsup": 2, "seed": 0} for a in (50.0, 100.0, 500.0)]
    assert enqueue_points(study, points) == 3
    assert enqueue_points(study, points) == 0
    tid = trial_queue.pop_waiting(study)
    trial_queue.fail(study, tid, "NaN loss")  # the first point failed for good
    assert enqueue_points(study, points) == 1 and counts(study) == {"WAITING": 3, "FAIL": 1}
    again = study.get_trials(states=(TrialState.WAITING,))[-1]
    assert trial_queue.point_of(again) == points[0] and trial_queue.first_number(again) == 0


def test_a_study_keeps_its_identity_settings(tmp_path):
    db = open_database(f"sqlite:///{tmp_path / 's.db'}")
    cfg = load_config(None, ["study.name=q"])
    study = create_stage(db, cfg, 2, settings={"alpha": 100.0, "n_unsup": 2, "seeds": 2})
    create_stage(db, cfg, 2, settings={"alpha": 100.0, "n_unsup": 2, "seeds": 5})  # more seeds: fine
    assert optuna.load_study(study_name="q-stage2", storage=db.storage).user_attrs["seeds"] == 5
    with pytest.raises(ConfigError, match="was started with alpha = 100.0, not 7.0"):
        create_stage(db, cfg, 2, settings={"alpha": 7.0, "n_unsup": 2, "seeds": 2})
    assert study.user_attrs["run_key"]


def test_given_up_lists_the_last_attempt_of_each_spent_lineage(tmp_path):
    db = open_database(f"sqlite:///{tmp_path / 's.db'}")
    study = create_stage(db, load_config(None, ["study.name=q"]), 1)
    enqueue_points(study, [{"alpha": 50.0, "n_unsup": 2, "seed": 0}])
    for _ in range(trial_queue.MAX_CRASH_RETRIES + 1):
        tid = trial_queue.pop_waiting(study)
        trial_queue.requeue(study, tid, "killed", "crash")
    (last,) = given_up(study)
    assert last.user_attrs["error"] == "killed" and trial_queue.first_number(last) == 0
    assert trial_queue.point_of(last) == {"alpha": 50.0, "n_unsup": 2, "seed": 0}
    assert enqueue_points(study, [{"alpha": 50.0, "n_unsup": 2, "seed": 0}]) == 1  # the stage run again
    assert given_up(study) == []
