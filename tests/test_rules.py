"""Stage 2's choice under a criterion other than the guide's: pure rules on rows, and the service's
recommendation read from run folders, shown side by side with the guide's choice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, IntDistribution
from optuna.trial import create_trial

from psvae_opt.config import CRITERIA
from psvae_opt.reports.diagnostics import choice_note
from psvae_opt.search import criteria, rules
from psvae_opt.search.recommendation import describe_stage2, recommend_stage2
from psvae_opt.search.rules import TrialRow
from psvae_opt.training.run_folder import SPLIT_CODES


def test_the_config_offers_every_criterion_the_criteria_module_scores():
    assert CRITERIA == criteria.NAMES


def test_choose_stage2_takes_the_best_beta_then_its_best_healthy_trial():
    rows = [TrialRow(n, {"beta": b, "seed": s}, {"train_zu_corr": 0.1}) for n, (b, s) in enumerate(
        [(1.0, 0), (1.0, 1), (1.0, 2), (5.0, 0), (5.0, 1), (5.0, 2)]
    )]  # fmt: skip
    scores = {0: 0.1, 1: 0.2, 2: 0.15, 3: 0.9, 4: 0.8, 5: 0.95}
    pick = rules.choose_stage2(rows, scores, "udr")
    assert (pick.beta, pick.trial, pick.seed, pick.score) == (5.0, 5, 2, 0.95)
    assert pick.p_best_of(5.0) > 0.99 and pick.means == pytest.approx((0.15, 0.8833333))
    # 2 betas x 3 seeds have 4 distinct labellings: the best lead has p = 1/4 or so, never resolved
    assert pick.p_value == pytest.approx(0.25, abs=0.03) and not pick.resolved
    six = rows + [TrialRow(6 + n, {"beta": b, "seed": s}, {}) for n, (b, s) in enumerate(
        [(1.0, 3), (1.0, 4), (1.0, 5), (5.0, 3), (5.0, 4), (5.0, 5)]
    )]  # fmt: skip
    more = {**scores, 6: 0.1, 7: 0.2, 8: 0.15, 9: 0.9, 10: 0.8, 11: 0.95}
    sure = rules.choose_stage2(six, more, "udr")  # 6 seeds: 32 labellings, p = 1/32
    assert sure.resolved and sure.p_value == pytest.approx(1 / 32, abs=0.01) and sure.alpha == 0.05
    assert not rules.choose_stage2(six, more, "udr", looks=8).resolved  # --seeds auto, 8 looks: 0.05 / 8 each
    # a missing score is a failure: beta 5 without scores falls to the floor and loses
    worse = rules.choose_stage2(rows, {k: v for k, v in scores.items() if k < 3 or k == 5}, "udr")
    assert worse.beta == 1.0 and worse.n_collapsed == (0, 2) and worse.trial == 1


def test_next_round_fills_the_lowest_incomplete_seed_first():
    pick = rules.Pick(
        "zu_corr", 1.0, 0, 0, None, 0.0, None, None, False, (1.0, 5.0), (0.6, 0.4), (0, 0), (0, 0), 2, False
    )
    assert rules.next_round(pick, {1.0: {0, 1, 2}, 5.0: {0, 1}}, 5) == [{"beta": 5.0, "seed": 2}]
    assert rules.next_round(pick, {1.0: {0, 1}, 5.0: {0, 1}}, 5) == [{"beta": 1.0, "seed": 2}, {"beta": 5.0, "seed": 2}]
    assert rules.next_round(pick, {1.0: {0, 1}, 5.0: {0, 1}}, 2) == []
    assert rules.next_round(None, {1.0: {0}}, 5) == []


def _latents(folder: Path, z_u: np.ndarray, rng: np.random.Generator) -> str:
    """A run folder whose latents.npz has one label column and ``z_u`` on every frame (half train, half val)."""
    n = len(z_u)
    folder.mkdir(parents=True)
    split = np.where(np.arange(n) < n // 2, SPLIT_CODES["train"], SPLIT_CODES["val"]).astype(np.int8)
    mu = np.concatenate([rng.normal(size=(n, 1)), z_u], axis=1).astype(np.float32)
    np.savez(folder / "latents.npz", mu=mu, logvar=np.zeros_like(mu), split=split, n_labels=np.array(1))
    return str(folder)


def _rotated_study(tmp_path: Path) -> optuna.Study:
    """Two independent uniform factors on the same frames. Beta 1: each seed a different rotation of
    them (30, 45, 60 degrees: uncorrelated but dependent, and seeds disagree) with the lower stored
    zu_corr; beta 5: each seed the factors themselves up to order and sign."""
    study = optuna.create_study(directions=["minimize", "minimize"])
    study.set_user_attr("stage", 2)
    dists = {"beta": CategoricalDistribution([1.0, 5.0]), "seed": IntDistribution(0, 9)}
    rng = np.random.default_rng(0)
    factors = rng.uniform(-1, 1, size=(1200, 2))
    for beta, zu in ((1.0, 0.01), (5.0, 0.05)):
        for seed in range(3):
            if beta == 1.0:
                a = np.deg2rad(30 + 15 * seed)
                z_u = factors @ np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
            else:
                z_u = [factors, -factors[:, ::-1], factors * [1.0, -1.0]][seed]  # order and sign
            run_dir = _latents(tmp_path / f"b{beta:g}s{seed}", z_u, rng)
            attrs = {"train_zu_corr": zu + 0.001 * seed, "val_pixel_mse": 0.01, "run_dir": run_dir}
            attrs.update(max_label_leak=0.05, collapsed=False, collapsed_dims=[], mig=0.9 if beta == 5 else 0.1)
            study.add_trial(
                create_trial(
                    values=[zu, 0.01], params={"beta": beta, "seed": seed}, distributions=dists, user_attrs=attrs
                )
            )
    return study


@pytest.mark.parametrize("criterion", ["hsic", "mutual_information", "udr"])
def test_a_criterion_that_sees_rotation_overrules_the_guide_and_both_are_shown(tmp_path: Path, criterion: str):
    study = _rotated_study(tmp_path)
    study.set_user_attr("criterion", criterion)
    rec = recommend_stage2(study)
    assert (rec.criterion, rec.beta, rec.mig) == (criterion, 5.0, 0.9)
    assert rec.guide.beta == 1.0 and rec.guide.mig == 0.1 and rec.differs is True
    lines = describe_stage2(rec)
    assert lines[0].startswith(f"recommended beta = 5 by {criterion}: P(best) ")
    assert any(line.startswith("the guide's rule (zu_corr) chooses otherwise: beta 1, trial ") for line in lines)
    note = choice_note(study, rec)
    sid = study._study_id
    assert f"(/dashboard/studies/{sid}/trials?numbers={rec.trial})" in note
    assert f"(/dashboard/studies/{sid}/trials?numbers={rec.guide.trial})" in note
    guide_only = recommend_stage2(study, store=False, criterion="zu_corr")
    assert guide_only.beta == 1.0 and guide_only.guide is None


def test_a_trial_without_latents_counts_as_a_failure_under_a_latent_criterion(tmp_path: Path):
    study = _rotated_study(tmp_path)
    for folder in tmp_path.glob("b5s*"):
        (folder / "latents.npz").unlink()
    rec = recommend_stage2(study, store=False, criterion="hsic")
    assert rec.beta == 1.0 and rec.n_collapsed == (0, 3)


def test_a_criterion_that_scores_too_few_trials_chooses_nothing_and_the_guide_falls_in_by_name(tmp_path: Path):
    study = _rotated_study(tmp_path)
    for folder in tmp_path.glob("b*s*"):
        (folder / "latents.npz").unlink()  # every UDR score NaN: no latents to compare
    rows = rules_rows(study)
    assert rules.unscored(rows, {}, "udr") == "udr scored 0 of 6 trials (fewer than 50%): it chooses nothing"
    assert rules.unscored(rows, {0: 0.1, 1: 0.2, 2: 0.3}, "udr") is None  # half is enough
    rec = recommend_stage2(study, store=False, criterion="udr")
    assert (rec.criterion, rec.beta, rec.guide, rec.differs) == ("zu_corr", 1.0, None, False)
    assert (
        rec.fallback
        == "udr scored 0 of 6 trials (fewer than 50%): it chooses nothing; the guide's rule (zu_corr) chooses instead"
    )
    lines = describe_stage2(rec)
    assert lines[0].startswith("recommended beta = 1 by zu_corr: ")
    assert lines[1] == f"  not by the study's criterion: {rec.fallback}"
    # the printout names the frames of each figure of the model
    assert "zu_corr (training frames) 0.010" in lines[2] and "MIG (training frames) 0.100" in lines[2]


def test_nothing_is_recommended_when_no_criterion_scores_enough_trials(tmp_path: Path, caplog):
    study = optuna.create_study(directions=["minimize", "minimize"])
    dists = {"beta": CategoricalDistribution([1.0, 5.0]), "seed": IntDistribution(0, 9)}
    for n in range(4):  # no train_zu_corr, no run folder: neither criterion can score
        params = {"beta": [1.0, 5.0][n % 2], "seed": n // 2}
        study.add_trial(create_trial(values=[0.1, 0.01], params=params, distributions=dists, user_attrs={}))
    with caplog.at_level("WARNING"):
        assert recommend_stage2(study, store=False, criterion="udr") is None
    assert "stage 2 recommends no model: zu_corr scored 0 of 4 trials" in caplog.text


def test_the_description_names_the_frames_of_the_criterion_score(tmp_path: Path):
    study = _rotated_study(tmp_path)
    rec = recommend_stage2(study, store=False, criterion="udr")
    assert rec.frames == {"score": "validation", "zu_corr": "training", "mig": "training"}
    model = describe_stage2(rec)[1]
    assert model.startswith(f"recommended model: trial {rec.trial}, seed {rec.seed} (udr score (validation frames) ")
    # P(best) and the test: 2 betas x 3 seeds cannot resolve (p about 1/4), and the line says so
    assert (
        ", lead p = 0.2" in describe_stage2(rec)[0] and "(resolves at <= 0.05), NOT resolved" in describe_stage2(rec)[0]
    )


def rules_rows(study: optuna.Study) -> list[TrialRow]:
    return [TrialRow(t.number, dict(t.params), dict(t.user_attrs)) for t in study.trials]


def test_a_cross_seed_criterion_with_too_few_seeds_is_refused_before_anything_is_created(
    tmp_path: Path, tiny_h5: Path, cli
):
    from tests.conftest import one_line_error
    from tests.test_reliability import tiny_study_file

    url = f"sqlite:///{tmp_path / 's.db'}"
    config = tiny_study_file(tmp_path, tiny_h5)
    args = ("stage2", "--config", config, "--storage", url, "--workers", "0", "--alpha", "100")
    line = one_line_error(cli(*args, "--seeds", "2", "--criterion", "udr+guards"))
    assert "criterion udr+guards compares the seeds of each beta: it needs at least 3 seeds" in line
    assert not (tmp_path / "s.db").exists() or not optuna.get_all_study_summaries(url)


@pytest.mark.slow
def test_stage2_chooses_by_udr_by_default_with_the_guides_choice_beside_it(tmp_path: Path, tiny_h5: Path, cli):
    from tests.conftest import one_line_error
    from tests.test_search import study_file

    url = f"sqlite:///{tmp_path / 's.db'}"
    config = study_file(tmp_path, tiny_h5, criterion=None)  # no criterion in the file: the default
    args = ("stage2", "--config", config, "--storage", url, "--alpha", "100")
    refused = one_line_error(cli(*args, "--workers", "0", "--seeds", "2"))
    assert "criterion udr compares the seeds of each beta" in refused and "--criterion zu_corr" in refused
    r = cli(*args, "--workers", "2", "--seeds", "3")
    assert r.code == 0, r.err
    study = optuna.load_study(study_name="t-stage2", storage=url)
    rec = study.user_attrs["recommendation"]
    assert study.user_attrs["criterion"] == "udr" and rec["criterion"] == "udr"
    assert rec["guide"]["criterion"] == "zu_corr" and rec["n_seeds"] == 3
    # the chosen trial is the best UDR score of its beta, scored again here from its run folder
    trials = [t for t in study.trials if t.params["beta"] == rec["beta"]]
    views = []
    for t in trials:
        with np.load(Path(t.user_attrs["run_dir"]) / "latents.npz") as lat:
            z = lat["mu"][:, int(lat["n_labels"]) :]
            val, train = z[lat["split"] == SPLIT_CODES["val"]], z[lat["split"] == SPLIT_CODES["train"]]
        informative = np.ones(z.shape[1], bool)
        informative[list(t.user_attrs["collapsed_dims"])] = False
        views.append(criteria.TrialLatents(rec["beta"], val, train, None, None, 0.0, informative, None))
    udr = criteria.score("udr", views)
    healthy = [i for i, t in enumerate(trials) if not t.user_attrs["collapsed"]] or list(range(len(trials)))
    best = max(healthy, key=lambda i: udr[i])
    assert rec["trial"] == trials[best].number and rec["score"] == pytest.approx(udr[best])
    assert f"recommended beta = {rec['beta']:g} by udr: P(best) " in r.out
    guide_line = "the guide's rule (zu_corr) chooses " + ("otherwise: beta " if rec["differs"] else "the same model")
    assert guide_line in r.out
