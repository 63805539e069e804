"""Where a trial meets training (psvae_opt/search/objective.py): the attributes it records,
checked on known answers, and one trial run directly, without a worker."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest

from psvae_opt.config import Config, load_config_text, replace
from psvae_opt.data import Session, load_session, split_frames
from psvae_opt.search import objective as obj
from psvae_opt.training.run_end import FitResult
from psvae_opt.training.run_folder import METRIC_NAMES, SPLIT_CODES

TRAIN, VAL = SPLIT_CODES["train"], SPLIT_CODES["val"]


def session_of(labels: np.ndarray, masks: np.ndarray | None = None, factors: np.ndarray | None = None, **kw) -> Session:
    n = len(labels)
    return Session(
        path=Path("known.h5"),
        images=np.zeros((n, 1, 4, 4), np.uint8),
        labels=labels.astype(np.float32),
        masks=np.ones_like(labels, np.float32) if masks is None else masks.astype(np.float32),
        trial_names=("trial_0",),
        trial_starts=np.array([0, n]),
        label_names=tuple(f"label_{i}" for i in range(labels.shape[1])),
        factors=factors,
        **kw,
    )


def test_the_collapse_rule_and_leakage_on_known_latents():
    rng = np.random.default_rng(0)
    n = 400
    label = rng.normal(size=(n, 1))
    split = np.full(n, TRAIN, np.int8)
    split[300:] = VAL
    mu = np.hstack(
        [
            label,  # z_s: the label's own latent, not judged
            np.full((n, 1), 0.3),  # constant: collapsed
            0.1 * rng.normal(size=(n, 1)),  # std 0.1 < 0.25: collapsed
            label + 0.01 * rng.normal(size=(n, 1)),  # healthy but a copy of the label: leaks
        ]
    )
    mu[300:, 1] = 50 * rng.normal(size=100)  # validation frames do not count
    latents = {"mu": mu, "logvar": np.zeros_like(mu), "split": split, "n_labels": np.asarray(1)}
    attrs = obj.latent_attributes(session_of(label), latents, collapse_std=0.25)
    assert attrs["collapsed_dims"] == [0, 1] and attrs["collapsed"] is True
    np.testing.assert_allclose(attrs["zu_std"][0], 0.0, atol=1e-12)
    assert attrs["zu_std"][1] == pytest.approx(0.1, rel=0.15) and attrs["zu_std"][2] == pytest.approx(1.0, rel=0.15)
    assert attrs["zu_label_corr"][0][0] == pytest.approx(0.0, abs=1e-6)  # a constant correlates with nothing
    assert attrs["zu_label_corr"][2][0] == pytest.approx(1.0, abs=1e-3)
    assert attrs["max_label_leak"] == pytest.approx(1.0, abs=1e-3)
    # KL to the prior with unit variances is half the mean squared mean: 0.045 for the constant 0.3
    assert attrs["zu_kl"][0] == pytest.approx(0.5 * 0.3**2)
    assert "mig" not in attrs and "zu_factor_corr" not in attrs  # no ground-truth factors
    assert not obj.latent_attributes(session_of(label), latents, collapse_std=0.0)["collapsed"]  # 0: never


def test_unlabelled_factors_give_factor_r_and_mig():
    rng = np.random.default_rng(1)
    n = 300
    label, hidden = rng.normal(size=(n, 1)), rng.uniform(-1, 1, size=(n, 1))
    session = session_of(
        label, factors=np.hstack([label, hidden]), factor_names=("x", "hidden"), factor_labeled=(True, False)
    )
    mu = np.hstack([label, hidden, rng.normal(size=(n, 1))])  # z_u[0] is the hidden factor, z_u[1] noise
    latents = {"mu": mu, "logvar": np.zeros_like(mu), "split": np.zeros(n, np.int8), "n_labels": np.asarray(1)}
    attrs = obj.latent_attributes(session, latents, collapse_std=0.25)
    assert attrs["factor_r_hidden"] == pytest.approx(1.0) and "factor_r_x" not in attrs
    assert attrs["mig"] > 0.5 and attrs["factor_names"] == ["x", "hidden"]


def test_no_unsupervised_latent_records_nothing():
    latents = {"mu": np.zeros((10, 2)), "split": np.zeros(10, np.int8), "n_labels": np.asarray(2)}
    assert obj.latent_attributes(session_of(np.zeros((10, 2))), latents, 0.25) == {}


def fit_result(**metrics) -> FitResult:
    split = {m: float(i) for i, m in enumerate(METRIC_NAMES)}
    return FitResult(
        Path("run"), 4, 7, True, {"train": {**split, "zu_corr": 0.5}, "val": split, **metrics}, resumed_from=3
    )


def test_fit_attributes_and_objective_values():
    attrs = obj.fit_attributes(fit_result(test=dict.fromkeys(METRIC_NAMES, 9.0)), seed=2)
    assert {attrs[f"val_{m}"] for m in METRIC_NAMES} == set(map(float, range(len(METRIC_NAMES))))
    assert attrs["train_zu_corr"] == 0.5 and attrs["test_label_r2"] == 9.0 and "test_loss" not in attrs
    assert (attrs["best_epoch"], attrs["epochs"], attrs["seed"], attrs["resumed_from_epoch"]) == (4, 7, 2, 3)
    assert "test_pixel_mse" not in obj.fit_attributes(fit_result(), seed=0)
    val = fit_result().metrics["val"]
    assert obj._objective_values(1, fit_result()) == (val["pixel_mse"], val["label_mse"])
    assert obj._objective_values(2, fit_result()) == (0.5, val["pixel_mse"])  # zu_corr on training data


def test_session_attributes_from_a_summary():
    summary = {"per_session": {"a": {"val": {"label_r2": 0.9, "pixel_mse": 0.1}}, "b": {"train": {}}}}
    assert obj.session_attributes(summary) == {
        "val_label_r2_by_session": {"a": 0.9},
        "val_pixel_mse_by_session": {"a": 0.1},
    }
    assert obj.session_attributes({"metrics": {}}) == {}


def test_non_finite_attributes_are_stored_as_none():
    assert obj._finite_or_none({"a": float("nan"), "b": {"s": float("inf"), "t": 1.0}, "c": [1]}) == {
        "a": None,
        "b": {"s": None, "t": 1.0},
        "c": [1],
    }


@pytest.mark.slow
def test_one_trial_trains_and_records_what_it_reports(tiny_config: Config, tmp_path: Path):
    """The objective run directly on an in-memory study: its values are the fit's, its
    attributes come from the fit's own latents and summary, its run folder is the grid point's."""
    cfg = replace(tiny_config, study={"runs_dir": str(tmp_path / "runs")})
    session = load_session(cfg.data.path)
    frames = split_frames(session, cfg.data.split_counts, cfg.data.data_seed)
    ctx = obj.TrialContext(cfg, 2, session, frames, fixed={"alpha": 100.0, "n_unsup": 2}, study_key="key")
    study = optuna.create_study(directions=["minimize", "minimize"])
    study.enqueue_trial({"beta": 5.0, "seed": 0})
    trial = study.ask()
    values = obj.objective(trial, ctx, first_number=trial.number)
    attrs = trial.user_attrs
    run_dir = tmp_path / "runs" / "psvae-stage2" / "key" / "trial_0000"
    assert attrs["run_dir"] == str(run_dir) and (run_dir / "summary.json").exists()
    assert values == (attrs["train_zu_corr"], attrs["val_pixel_mse"])
    assert load_config_text(attrs["config"], "trial").loss.beta == 5.0
    assert load_config_text(attrs["config"], "trial").loss.alpha == 100.0
    assert len(attrs["zu_std"]) == 2 and attrs["epochs_done"] == cfg.train.max_epochs
