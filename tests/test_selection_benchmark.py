"""The selection benchmark: its arithmetic against known answers, and a --quick run through the service."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import selection
import selection_table as table

from psvae_opt.data import load_session


def test_spearman_rho_ranks_ties_together_and_skips_nans():
    x = np.array([1.0, 2.0, 3.0, 4.0, np.nan])
    assert table.spearman_rho(x, np.array([10.0, 20.0, 30.0, 40.0, 0.0])) == pytest.approx(1.0)
    assert table.spearman_rho(x, np.array([4.0, 3.0, 2.0, 1.0, 9.0])) == pytest.approx(-1.0)
    # excluded trials tie at -inf: ranks (1.5, 1.5, 3, 4) against (1, 2, 3, 4)
    tied = table.spearman_rho(np.array([-np.inf, -np.inf, 0.5, 0.9]), np.array([1.0, 2.0, 3.0, 4.0]))
    a, b = np.array([1.5, 1.5, 3, 4]) - 2.5, np.array([1.0, 2, 3, 4]) - 2.5
    assert tied == pytest.approx((a * b).sum() / np.sqrt((a**2).sum() * (b**2).sum()))
    assert np.isnan(table.spearman_rho(np.array([1.0, 2.0]), np.array([1.0, 2.0])))


def test_wilcoxon_signed_rank_exact_p_values():
    assert table.wilcoxon_less([-1.0, -2.0, -3.0, -4.0, -5.0]) == pytest.approx(1 / 32)  # all below: 1 pattern in 32
    assert table.wilcoxon_less([1.0, 2.0, 3.0, 4.0, 5.0]) == pytest.approx(1.0)
    # ranks 1..4, the positive one has rank 1: sign patterns with positive-rank sum <= 1 are {} and {1}
    assert table.wilcoxon_less([0.1, -0.2, -0.3, -0.4, 0.0]) == pytest.approx(2 / 16)
    assert table.wilcoxon_less([0.0, 0.0]) == 1.0
    big = table.wilcoxon_less([-(i + 1.0) for i in range(20)])  # the normal approximation
    assert big < 1e-4


def search_of(mig, scores, betas=(1.0, 1.0, 1.0, 5.0, 5.0, 5.0), collapsed=None) -> table.SearchTrials:
    betas = np.array(betas)
    return table.SearchTrials(
        name="s",
        betas=betas,
        seeds=np.array([0, 1, 2] * (len(betas) // 3)),
        mig=np.array(mig),
        collapsed=np.zeros(len(betas), bool) if collapsed is None else np.array(collapsed),
        scores={k: np.array(v, float) for k, v in scores.items()},
    )


def test_a_criterion_chooses_its_beta_by_p_best_then_its_best_trial_and_is_charged_the_regret():
    mig = [0.9, 0.8, 0.85, 0.2, 0.3, 0.25]
    search = search_of(mig, {"zu_corr": [0, 0, 0, 1, 1, 1.1], "good": [1, 0.8, 0.9, 0, 0.1, 0.05]})
    ev = table.evaluate(search)
    assert ev["good"].chosen == 0 and ev["good"].regret == 0.0 and ev["good"].within_10 == 1.0
    assert ev["good"].rho == pytest.approx(1.0)
    assert ev["zu_corr"].chosen == 5 and ev["zu_corr"].regret == pytest.approx(0.9 - 0.25)
    assert ev["random"].regret == pytest.approx(np.mean(0.9 - np.array(mig)))
    assert ev["random"].within_10 == pytest.approx(2 / 6)  # 0.9 and 0.85 are >= 0.9 x 0.9; 0.8 is not
    # collapsed trials are not chosen within the beta and count as failures in its P(best)
    collapsed = search_of(mig, {"c": [1, 5, 0.9, 0, 0.1, 0.05]}, collapsed=[False, True, False, False, False, False])
    assert table.evaluate(collapsed)["c"].chosen == 0


def test_the_verdict_follows_the_pre_registered_rule():
    def ev(rho, regret):
        return table.Evaluation(rho, regret, float(regret <= 0.05), 0)

    rng = np.random.default_rng(0)
    searches = []
    for _ in range(10):
        searches.append(
            {
                "zu_corr": ev(0.1, 0.3 + 0.01 * rng.random()),
                "by_rho": ev(0.8, 0.3 + 0.01 * rng.random()),  # rho 0.8 beats 0.1 in 10 of 10
                "by_regret": ev(0.0, 0.02 * rng.random()),  # regret below zu_corr's in every search
                "neither": ev(0.4, 0.3),
            }
        )
    rows = {r.criterion: r for r in table.verdicts(searches)}
    assert list(rows)[0] == "zu_corr" and not rows["zu_corr"].passes
    assert rows["by_rho"].passes and rows["by_rho"].reason == "rho" and rows["by_rho"].rho_wins == 10
    assert rows["by_regret"].passes and rows["by_regret"].reason == "regret"
    assert rows["by_regret"].regret_p == pytest.approx(1 / 1024)
    assert not rows["neither"].passes and rows["neither"].median_rho == pytest.approx(0.4)


def test_the_floored_rho_reads_the_scores_as_the_choice_does_and_the_raw_rho_beside_it():
    mig = [0.9, 0.8, 0.85, 0.2, 0.3, 0.25]
    # collapsed trials 3 and 4 score highest raw: the choice floors them, so does the floored rho
    search = search_of(mig, {"c": [0.5, 0.3, 0.4, 2.0, 3.0, 0.1]}, collapsed=[False, False, False, True, True, False])
    np.testing.assert_array_equal(table.floored(search, search.scores["c"]), [0.5, 0.3, 0.4, -np.inf, -np.inf, 0.1])
    ev = table.evaluate(search)["c"]
    assert ev.rho_raw == pytest.approx(table.spearman_rho(np.array([0.5, 0.3, 0.4, 2.0, 3.0, 0.1]), np.array(mig)))
    floored = np.array([0.5, 0.3, 0.4, -np.inf, -np.inf, 0.1])
    assert ev.rho == pytest.approx(table.spearman_rho(floored, np.array(mig))) and ev.rho > 0.5 > ev.rho_raw


def test_the_baselines_read_no_criterion_and_random_picks_are_charged_their_expected_regret():
    mig = [0.9, 0.8, 0.85, 0.2, 0.3, 0.25]
    search = table.SearchTrials(
        name="s",
        betas=np.array([1.0, 1.0, 1.0, 5.0, 5.0, 5.0]),
        seeds=np.array([0, 1, 2, 0, 1, 2]),
        mig=np.array(mig),
        collapsed=np.array([False, False, False, False, True, False]),
        scores={"zu_corr": np.array([0.0, 1.0, 0.5, 2.0, 3.0, 2.0]), "label_leak": np.array([-0.1] * 5 + [-0.9])},
        scene="demo",
        sap=np.array([0.5, 0.7, 0.6, 0.1, 0.2, 0.3]),
        pixel_mse=np.array([0.010, 0.011, 0.009, 0.012, 0.013, 0.014]),
    )
    ev = table.evaluate(search)
    assert ev["lowest_beta"].regret == pytest.approx(np.mean([0.0, 0.1, 0.05]))
    assert ev["lowest_beta"].within_10 == pytest.approx(2 / 3) and ev["lowest_beta"].chosen == -1
    assert ev["lowest_beta"].regret_sap == pytest.approx(np.mean([0.2, 0.0, 0.1]))  # SAP's best is 0.7
    assert ev["lowest_beta+zu_corr"].chosen == 1 and ev["lowest_beta+zu_corr"].regret == pytest.approx(0.1)
    assert ev["highest_beta"].regret == pytest.approx(np.mean([0.7, 0.6, 0.65]))
    assert ev["lowest_pixel_mse"].chosen == 2 and ev["lowest_pixel_mse"].regret == pytest.approx(0.05)
    # guards only: trial 4 collapsed, trial 5 leaks (0.9 > 0.5); 0.012 <= 1.5 x 0.009 stays
    assert ev["guards_only"].regret == pytest.approx(np.mean([0.0, 0.1, 0.05, 0.7]))
    assert ev["random"].regret == pytest.approx(np.mean(0.9 - np.array(mig)))
    assert ev["zu_corr"].chosen == 3  # P(best) over the paired seeds, collapsed trial 4 a failure
    assert table.is_baseline("lowest_beta+udr") and not table.is_baseline("udr+guards")
    assert table.best_betas(search) == {
        "search": "s",
        "scene": "demo",
        "betas": "1 5",
        "best_beta_mig": 1.0,
        "best_mig": 0.9,
        "best_beta_sap": 1.0,
        "best_sap": 0.7,
    }


def test_the_bootstrap_interval_of_a_mean_over_searches():
    assert table.bootstrap_interval([0.2] * 7) == pytest.approx((0.2, 0.2))
    low, high = table.bootstrap_interval([0.0, 1.0] * 10)
    half = 1.96 * 0.5 / np.sqrt(20)  # the normal interval of a mean of 20 values with SD 0.5 (the bootstrap's
    # means are multiples of 1/20)
    assert low == pytest.approx(0.5 - half, abs=0.05) and high == pytest.approx(0.5 + half, abs=0.05)
    assert all(np.isnan(table.bootstrap_interval([])))


def test_trials_csv_alone_gives_the_same_table(tmp_path: Path):
    rng = np.random.default_rng(3)
    searches = []
    for k, scene in enumerate(("demo", "equal_effect", "demo")):
        n = 6
        searches.append(
            table.SearchTrials(
                name=f"{k:02d} {scene}",
                betas=np.array([1.0, 1.0, 1.0, 5.0, 5.0, 5.0]),
                seeds=np.array([0, 1, 2] * 2),
                mig=rng.random(n),
                collapsed=rng.random(n) < 0.2,
                scores={name: rng.random(n) for name in ("zu_corr", "udr", "label_leak")},
                service_choice=k,
                scene=scene,
                sap=rng.random(n),
                pixel_mse=0.01 + 0.001 * rng.random(n),
                mig_val=rng.random(n),
            )
        )
    selection.write_trials(tmp_path / "trials.csv", searches, "abc123")
    again = table.read_trials(tmp_path / "trials.csv")
    for a, b in zip(searches, again):
        assert (a.name, a.scene, a.service_choice) == (b.name, b.scene, b.service_choice)
        np.testing.assert_array_equal(a.collapsed, b.collapsed)
        for x, y in ((a.mig, b.mig), (a.sap, b.sap), (a.scores["udr"], b.scores["udr"]), (a.betas, b.betas)):
            np.testing.assert_allclose(x, y)
    assert str(table.score_all(again)) == str(table.score_all(searches))  # (NaN != NaN in ==)
    assert table.main([str(tmp_path / "trials.csv"), "--out", str(tmp_path / "re")]) == 0
    with (tmp_path / "re" / "selection.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert {r["scope"] for r in rows} == {"all", "demo", "equal_effect"} and {r["commit"] for r in rows} == {"abc123"}
    demo = [r for r in rows if r["scope"] == "demo" and r["criterion"] == "random"][0]
    assert int(demo["searches"]) == 2


def test_the_searches_rotate_the_scene_variants_from_any_first_dataset():
    assert selection.plan(0, 4) == [(0, "demo"), (1, "three_unlabelled"), (2, "two_views"), (3, "correlated")]
    assert selection.plan(10, 3) == [(10, "equal_effect"), (11, "distractor"), (12, "demo")]
    assert selection.plan(0, 3, selection.QUICK.variants) == [(0, "demo"), (1, "equal_effect"), (2, "distractor")]
    assert set(selection.QUICK.variants) - {"demo", "three_unlabelled", "two_views"}  # at least one new scene


@pytest.mark.slow
def test_the_quick_benchmark_runs_stage_2_through_the_service_and_writes_its_table(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
):
    out = tmp_path / "selection"
    monkeypatch.setattr(selection, "RESULTS", tmp_path / "results")
    commit = selection.commit_name()  # the commit every file names (git rev-parse, "+changes" if the tree differs)
    assert selection.main(["--out", str(out), "--quick", "--keep", "q"]) == 0
    printed = capsys.readouterr().out
    assert "3 searches x 2 betas x 3 seeds (quick)" in printed and "| zu_corr |" in printed
    assert "| lowest_beta |" in printed and "| equal_effect | 1 |" in printed  # the criteria's and the scenes' tables
    with (out / "trials.csv").open() as fh:
        trials = list(csv.DictReader(fh))
    with (out / "selection.csv").open() as fh:
        table_rows = list(csv.DictReader(fh))
    rows = {r["criterion"]: r for r in table_rows if r["scope"] == "all"}
    assert (out / "selection.html").stat().st_size > 10_000
    names = ["00 demo", "01 equal_effect", "02 distractor"]
    assert sorted({r["search"] for r in trials}) == names
    for name in names:  # the full grid of every search
        grid = sorted((float(r["beta"]), int(r["seed"])) for r in trials if r["search"] == name)
        assert grid == [(b, s) for b in (1.0, 20.0) for s in range(3)]
    distractor = load_session(out / "data" / "02_distractor.h5")
    assert distractor.factor_names[-1] == "light" and distractor.factor_labeled.count(False) == 3
    for name in names:  # a held-out session of the same scene, another data seed, >= 2,000 frames
        index, variant = name.split()
        held = load_session(out / "data" / f"{index}_{variant}_eval.h5")
        assert held.n_frames >= 2000 and held.attrs["seed"] == 1_000_000 + int(index)
        assert held.attrs["scene"] == selection.VARIANTS[variant][0]
    baselines = {"lowest_beta", "lowest_beta+udr", "highest_beta", "lowest_pixel_mse", "guards_only", "random"}
    criteria_names = {"zu_corr", "zu_corr_val", "mutual_information", "hsic", "udr", "centrality", "label_leak"}
    assert criteria_names | baselines | {"service"} <= set(rows)
    assert {r["commit"] for r in table_rows} == {commit} and {r["commit"] for r in trials} == {commit}
    assert {r["scope"] for r in table_rows} == {"all", "demo", "equal_effect", "distractor"}
    # the table's figures are those of the trials' scores: floored (collapsed trials at -inf) and raw
    for name in ("zu_corr", "hsic"):
        rhos, raw = [], []
        for search in names:
            mine = [r for r in trials if r["search"] == search]
            mig = np.array([float(r["mig"]) for r in mine])
            scores = np.array([float(r[name]) for r in mine])
            dead = np.array([r["collapsed"] == "True" for r in mine]) | ~np.isfinite(scores)
            floored = np.where(dead, -np.inf, scores) if not dead.all() else scores
            rhos.append(table.spearman_rho(floored, mig))
            raw.append(table.spearman_rho(scores, mig))
        assert float(rows[name]["median_rho"]) == pytest.approx(np.nanmedian(rhos))
        assert float(rows[name]["median_rho_raw"]) == pytest.approx(np.nanmedian(raw))
    random_regret = [
        np.mean(
            [
                max(float(x["mig"]) for x in trials if x["search"] == s) - float(r["mig"])
                for r in trials
                if r["search"] == s
            ]
        )
        for s in names
    ]
    assert float(rows["random"]["mean_regret"]) == pytest.approx(np.mean(random_regret))
    assert float(rows["random"]["regret_low"]) <= np.mean(random_regret) <= float(rows["random"]["regret_high"])
    assert all(0.0 <= float(r["mean_regret"]) <= 1.0 for r in rows.values())
    with (out / "scenes.csv").open() as fh:
        scenes = list(csv.DictReader(fh))
    assert [r["scene"] for r in scenes] == ["demo", "equal_effect", "distractor"]
    assert all(r["best_beta_mig"] in ("1.0", "20.0") for r in scenes)
    kept = sorted(p.name for p in (tmp_path / "results" / "q").iterdir())
    assert kept == ["run.txt", "scenes.csv", "selection.csv", "trials.csv"]

    # resumable: a second run trains nothing and gives the same table
    runs = sorted(p.name for p in (out / "runs").rglob("trial_*"))
    assert selection.main(["--out", str(out), "--quick"]) == 0
    assert sorted(p.name for p in (out / "runs").rglob("trial_*")) == runs
    with (out / "selection.csv").open() as fh:
        assert list(csv.DictReader(fh)) == table_rows
