"""Study logic on fake studies built from optuna.trial.create_trial."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from psvae_opt.config import load_config
from psvae_opt.errors import ConfigError, StorageError
from psvae_opt.study import (
    counts,
    create_stage,
    enqueue_budget,
    enqueue_points,
    knee_index,
    load_stage,
    recommend_stage1,
    recommend_stage2,
    seed_summary,
)


def test_knee_is_the_point_nearest_the_scaled_utopia():
    front = np.array([[0.01, 9.0], [0.02, 2.0], [0.05, 1.5], [0.20, 1.0]])
    # scaled: (0, 1), (0.053, 0.125), (0.21, 0.0625), (1, 0) -> the second is nearest (0, 0)
    assert knee_index(front) == 1
    assert knee_index(np.array([[1.0, 5.0]])) == 0
    assert knee_index(np.array([[1.0, 5.0], [1.0, 3.0]])) == 1  # a constant objective is ignored


def _stage1_trial(alpha: float, pixel: float, label: float) -> optuna.trial.FrozenTrial:
    return create_trial(
        state=TrialState.COMPLETE,
        values=[pixel, label],
        params={"alpha": alpha, "n_unsup": 2},
        distributions={
            "alpha": CategoricalDistribution([50.0, 100.0, 500.0, 1000.0]),
            "n_unsup": CategoricalDistribution([2]),
        },
        user_attrs={"run_dir": f"/runs/{alpha}"},
    )


def test_stage1_recommendation_is_the_knee_and_is_stored():
    study = optuna.create_study(directions=["minimize", "minimize"])
    for alpha, pixel, label in [(50, 0.010, 0.30), (100, 0.011, 0.05), (500, 0.014, 0.03), (1000, 0.030, 0.02)]:
        study.add_trial(_stage1_trial(float(alpha), pixel, label))
    study.add_trial(_stage1_trial(100.0, 0.02, 0.10))  # dominated
    rec = recommend_stage1(study)
    assert (rec["alpha"], rec["n_unsup"], rec["trial"], rec["run_dir"]) == (100.0, 2, 1, "/runs/100.0")
    assert study.user_attrs["recommendation"] == rec


def _stage2_trial(
    beta: float, seed: int, zu: float, pixel: float, mig: float | None = None
) -> optuna.trial.FrozenTrial:
    attrs = {"train_zu_corr": zu, "val_pixel_mse": pixel, "val_label_mse": 0.1 * seed, "run_dir": f"/r/{beta}/{seed}"}
    if mig is not None:
        attrs["mig"] = mig
    return create_trial(
        state=TrialState.COMPLETE,
        values=[zu, pixel],
        params={"beta": beta, "seed": seed},
        distributions={"beta": CategoricalDistribution([1.0, 5.0]), "seed": IntDistribution(0, 2)},
        user_attrs=attrs,
    )


def test_seed_summary_and_stage2_recommendation():
    study = optuna.create_study(directions=["minimize", "minimize"])
    rows = [
        (1.0, 0, 0.50, 0.010, 0.1),
        (1.0, 1, 0.30, 0.012, 0.2),
        (1.0, 2, 0.40, 0.011, 0.3),
        (5.0, 0, 0.20, 0.020, 0.6),
        (5.0, 1, 0.10, 0.019, 0.4),
    ]
    for beta, seed, zu, pixel, mig in rows:
        study.add_trial(_stage2_trial(beta, seed, zu, pixel, mig))
    summary = seed_summary(study)
    assert [(r["beta"], r["n_seeds"], r["seeds"]) for r in summary] == [(1.0, 3, [0, 1, 2]), (5.0, 2, [0, 1])]
    assert summary[0]["train_zu_corr_mean"] == pytest.approx(0.4)
    assert summary[0]["train_zu_corr_std"] == pytest.approx(0.1)
    assert summary[1]["mig_mean"] == pytest.approx(0.5) and summary[1]["val_pixel_mse_std"] == pytest.approx(
        np.std([0.02, 0.019], ddof=1)
    )
    assert summary[0]["val_loss_mean"] is None  # an attribute no trial has
    rec = recommend_stage2(study)
    assert (rec["beta"], rec["seed"], rec["trial"]) == (5.0, 1, 4)
    assert rec["zu_corr_mean"] == pytest.approx(0.15)
    assert study.user_attrs["seed_summary"] == summary


def test_recommendations_of_an_empty_study_are_none():
    study = optuna.create_study(directions=["minimize", "minimize"])
    assert recommend_stage1(study) is None and recommend_stage2(study) is None


def test_enqueueing_is_idempotent_and_requeues_only_failed_points(tmp_path):
    storage = f"sqlite:///{tmp_path / 's.db'}"
    cfg = load_config(None, ["study.name=q"])
    study = create_stage(optuna.storages.RDBStorage(storage), cfg, 1)
    points = [{"alpha": a, "n_unsup": 2} for a in (50.0, 100.0, 500.0)]
    assert enqueue_points(study, points) == 3
    assert enqueue_points(study, points) == 0
    study.tell(study.ask(), state=TrialState.FAIL)  # the first point failed for good
    assert enqueue_points(study, points) == 1 and counts(study) == {"WAITING": 3, "FAIL": 1}
    assert enqueue_budget(study, 5) == 2 and counts(study)["WAITING"] == 5


def test_a_stage_remembers_its_settings(tmp_path):
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 's.db'}")
    cfg = load_config(None, ["study.name=m"])
    study = create_stage(storage, cfg, 2, fixed={"alpha": 100.0, "n_unsup": 2, "seeds": 3})
    assert study.metric_names == ["zu_corr", "pixel_mse"]
    assert create_stage(storage, cfg, 2, fixed={"alpha": 100.0, "n_unsup": 2, "seeds": 3}).user_attrs["alpha"] == 100.0
    with pytest.raises(ConfigError, match="was started with seeds = 3, not 5"):
        create_stage(storage, cfg, 2, fixed={"alpha": 100.0, "n_unsup": 2, "seeds": 5})
    with pytest.raises(StorageError, match="no stage-1 study 'm-stage1'"):
        load_stage(storage, cfg, 1)
