"""Search spaces: the guide's grids and the per-trial configuration."""

from __future__ import annotations

from psvae_opt.config import load_config
from psvae_opt.search.space import configure_stage1, configure_stage2, stage1_grid, stage2_grid, study_name


def test_grids_follow_the_study_file():
    cfg = load_config(None, ["stage1.n_unsup=[2, 4]", "study.name=lab"])
    alphas = (50.0, 100.0, 500.0, 1000.0)
    assert stage1_grid(cfg) == [{"alpha": a, "n_unsup": n, "seed": 0} for a in alphas for n in (2, 4)]
    seeded = load_config(None, ["stage1.model_seed=3", "stage1.alphas=[50.0]"])
    assert stage1_grid(seeded, seeds=2) == [{"alpha": 50.0, "n_unsup": 2, "seed": s} for s in (3, 4)]
    assert stage2_grid(cfg, seeds=3) == [{"beta": b, "seed": s} for b in (1.0, 5.0, 10.0, 20.0) for s in range(3)]
    assert (study_name(cfg, 1), study_name(cfg, 2)) == ("lab-stage1", "lab-stage2")


def test_trial_configs_fill_in_the_hyperparameters():
    cfg = load_config(None, ["stage1.beta=2.0", "stage1.model_seed=7"])
    one = configure_stage1(cfg, {"alpha": 500.0, "n_unsup": 4, "seed": 8}, {})
    assert (one.loss.alpha, one.loss.beta, one.model.n_unsup, one.train.model_seed) == (500.0, 2.0, 4, 8)
    two = configure_stage2(cfg, {"beta": 10.0, "seed": 3}, {"alpha": 100.0, "n_unsup": 2})
    assert (two.loss.alpha, two.loss.beta, two.model.n_unsup, two.train.model_seed) == (100.0, 10.0, 2, 3)
    assert two.model.channels == cfg.model.channels  # everything else from the study file
