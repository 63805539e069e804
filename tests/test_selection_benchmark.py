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


def test_the_searches_rotate_the_scene_variants_from_any_first_dataset():
    assert selection.plan(0, 4) == [(0, "demo"), (1, "three_unlabelled"), (2, "two_views"), (3, "demo")]
    assert selection.plan(10, 3) == [(10, "three_unlabelled"), (11, "two_views"), (12, "demo")]


@pytest.mark.slow
def test_the_quick_benchmark_runs_stage_2_through_the_service_and_writes_its_table(
    tmp_path: Path, capsys: pytest.CaptureFixture
):
    out = tmp_path / "selection"
    assert selection.main(["--out", str(out), "--quick"]) == 0
    printed = capsys.readouterr().out
    assert "3 searches x 2 betas x 3 seeds (quick)" in printed and "| zu_corr |" in printed
    with (out / "trials.csv").open() as fh:
        trials = list(csv.DictReader(fh))
    with (out / "selection.csv").open() as fh:
        rows = {r["criterion"]: r for r in csv.DictReader(fh)}
    assert (out / "selection.html").stat().st_size > 10_000
    assert sorted({r["search"] for r in trials}) == ["00 demo", "01 three_unlabelled", "02 two_views"]
    for name in ("00 demo", "01 three_unlabelled", "02 two_views"):  # the full grid of every search
        grid = sorted((float(r["beta"]), int(r["seed"])) for r in trials if r["search"] == name)
        assert grid == [(b, s) for b in (1.0, 20.0) for s in range(3)]
    three = load_session(out / "data" / "01_three_unlabelled.h5")
    assert three.labels.shape[1] == 3 and three.factor_labeled.count(False) == 3
    assert load_session(out / "data" / "02_two_views.h5").images.shape[1] == 2
    criteria_names = {"zu_corr", "zu_corr_val", "mutual_information", "hsic", "udr", "centrality", "label_leak"}
    assert criteria_names | {"service", "random"} <= set(rows)
    # the table's figures are those of the trials' scores
    for name in ("zu_corr", "hsic"):
        rhos = []
        for search in sorted({r["search"] for r in trials}):
            mine = [r for r in trials if r["search"] == search]
            rhos.append(
                table.spearman_rho(np.array([float(r[name]) for r in mine]), np.array([float(r["mig"]) for r in mine]))
            )
        assert float(rows[name]["median_rho"]) == pytest.approx(np.nanmedian(rhos))
    random_regret = np.mean(
        [
            np.mean(
                [
                    max(float(x["mig"]) for x in trials if x["search"] == s) - float(r["mig"])
                    for r in trials
                    if r["search"] == s
                ]
            )
            for s in sorted({r["search"] for r in trials})
        ]
    )
    assert float(rows["random"]["mean_regret"]) == pytest.approx(random_regret)
    assert all(0.0 <= float(r["mean_regret"]) <= 1.0 for r in rows.values())

    # resumable: a second run trains nothing and gives the same table
    runs = sorted(p.name for p in (out / "runs").rglob("trial_*"))
    assert selection.main(["--out", str(out), "--quick"]) == 0
    assert sorted(p.name for p in (out / "runs").rglob("trial_*")) == runs
    with (out / "selection.csv").open() as fh:
        assert {r["criterion"]: r for r in csv.DictReader(fh)} == rows
