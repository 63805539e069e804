"""The guide's charts: data functions checked against known values on fake studies and runs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from psvae_opt.errors import ConfigError, DataError
from psvae_opt.model import metrics
from psvae_opt.reports import run_charts, study_charts
from psvae_opt.search.stages import STAGES, seed_summary
from psvae_opt.training.run_folder import CSV_COLUMNS

STAGE2_ATTRS = STAGES[2].summary_panels


def stage2_study(values: dict[tuple[float, int], dict[str, float]]) -> optuna.Study:
    """A fake stage-2 study: one complete trial per (beta, seed) with the given attributes."""
    study = optuna.create_study(directions=["minimize", "minimize"])
    dists = {"beta": CategoricalDistribution([1.0, 5.0, 10.0]), "seed": IntDistribution(0, 4)}
    for (beta, seed), attrs in values.items():
        study.add_trial(
            create_trial(
                params={"beta": beta, "seed": seed},
                distributions=dists,
                values=[attrs.get("train_zu_corr", 0.5), attrs["val_pixel_mse"]],
                user_attrs=attrs,
            )
        )
    study.add_trial(
        create_trial(
            state=TrialState.FAIL,
            params={"beta": 1.0, "seed": 4},
            distributions=dists,
            user_attrs={"val_pixel_mse": 99.0},
        )
    )  # failed trials are left out
    return study


def test_stage2_summary_means_and_spreads_equal_the_trials():
    rng = np.random.default_rng(0)
    values = {(b, s): {m: float(rng.uniform(0.1, 1)) for m in STAGE2_ATTRS} for b in (1.0, 5.0) for s in range(3)}
    del values[(5.0, 2)]["train_zu_corr"]  # undefined for one trial: left out of that metric only
    data = study_charts.search_summary_data(stage2_study(values), 2)
    assert (data.x_name, data.group_name, data.metrics) == ("beta", None, STAGE2_ATTRS)
    (series,) = data.series
    assert series.x.tolist() == [1.0, 5.0] and series.n.tolist() == [3, 3]
    for i, beta in enumerate((1.0, 5.0)):
        for m in STAGE2_ATTRS:
            got = [v[m] for (b, _), v in values.items() if b == beta and m in v]
            assert series.mean[m][i] == pytest.approx(np.mean(got))
            assert series.std[m][i] == pytest.approx(np.std(got, ddof=1))
    assert len([v for v in values.values() if "train_zu_corr" in v]) == 5


def test_stage2_summary_agrees_with_the_seed_summary_of_the_study():
    rng = np.random.default_rng(1)
    study = stage2_study(
        {(b, s): {m: float(rng.uniform()) for m in STAGE2_ATTRS} for b in (1.0, 10.0) for s in range(2)}
    )
    (series,) = study_charts.search_summary_data(study, 2).series
    for i, row in enumerate(seed_summary(study)):
        assert row["beta"] == series.x[i]
        for m in STAGE2_ATTRS:
            assert series.mean[m][i] == pytest.approx(row[f"{m}_mean"])
            assert series.std[m][i] == pytest.approx(row[f"{m}_std"])


def test_stage1_summary_has_one_line_per_n_unsup_sorted_by_alpha():
    study = optuna.create_study(directions=["minimize", "minimize"])
    dists = {"alpha": CategoricalDistribution([50.0, 100.0, 1000.0]), "n_unsup": CategoricalDistribution([2, 3])}
    for alpha, n_unsup in [(1000.0, 2), (50.0, 2), (100.0, 3), (50.0, 3)]:
        attrs = {"val_pixel_mse": alpha / 1000 + n_unsup, "val_label_mse": 1.0 / alpha}
        study.add_trial(
            create_trial(
                params={"alpha": alpha, "n_unsup": n_unsup},
                distributions=dists,
                values=[attrs["val_pixel_mse"], attrs["val_label_mse"]],
                user_attrs=attrs,
            )
        )
    data = study_charts.search_summary_data(study, 1)
    assert [s.group for s in data.series] == [2.0, 3.0]
    two, three = data.series
    assert two.x.tolist() == [50.0, 1000.0] and three.x.tolist() == [50.0, 100.0]
    assert two.mean["val_pixel_mse"].tolist() == pytest.approx([2.05, 3.0])
    assert three.mean["val_label_mse"].tolist() == pytest.approx([0.02, 0.01])
    assert two.std["val_pixel_mse"].tolist() == [0.0, 0.0]  # one trial per point: no spread
    fig = study_charts.search_summary_figure(data)
    lines = [t for t in fig.data if t.name == "n_unsup = 3"]
    assert len(fig.data) == 2 * 2 and list(lines[0].y) == pytest.approx([3.05, 3.1])
    assert fig.layout.xaxis.type == "log"


def test_an_empty_study_gives_an_empty_summary():
    data = study_charts.search_summary_data(optuna.create_study(directions=["minimize", "minimize"]), 2)
    assert data.series == ()


def test_stage2_summary_leaves_out_collapsed_seeds_and_shows_each_factor():
    base = {m: 0.5 for m in STAGE2_ATTRS}
    values = {
        (1.0, 0): {**base, "train_zu_corr": 0.4, "factor_r_jaw": 0.9, "factor_r_chest": 0.7},
        (1.0, 1): {**base, "train_zu_corr": 0.6, "factor_r_jaw": 0.7, "factor_r_chest": 0.9},
        (1.0, 2): {**base, "train_zu_corr": 0.01, "factor_r_jaw": 0.1, "factor_r_chest": 0.1, "collapsed": True},
    }
    data = study_charts.search_summary_data(stage2_study(values), 2)
    assert data.metrics == (*STAGE2_ATTRS, "factor_r_chest", "factor_r_jaw")
    (series,) = data.series
    assert series.n.tolist() == [2]  # the collapsed seed is left out, as in the recommendation
    assert series.mean["train_zu_corr"].tolist() == pytest.approx([0.5])
    assert series.mean["factor_r_jaw"].tolist() == pytest.approx([0.8])
    fig = study_charts.search_summary_figure(data)
    assert "factor_r_jaw" in [a.text for a in fig.layout.annotations] and "max_label_leak" in [
        a.text for a in fig.layout.annotations
    ]


def test_pareto_data_marks_the_front_and_the_recommendation():
    study = optuna.create_study(directions=["minimize", "minimize"])
    dists = {"beta": CategoricalDistribution([1.0, 5.0, 10.0]), "seed": IntDistribution(0, 4)}
    points = [(1.0, 0, 0.9, 0.01), (5.0, 0, 0.5, 0.02), (10.0, 0, 0.2, 0.03), (10.0, 1, 0.6, 0.05)]
    for beta, seed, zu, pixel in points:
        study.add_trial(create_trial(params={"beta": beta, "seed": seed}, distributions=dists, values=[zu, pixel]))
    study.set_user_attr("recommendation", {"beta": 10.0, "trial": 2})
    data = study_charts.pareto_data(study, 2)
    assert data.names == ("zu_corr", "pixel_mse") and data.numbers == (0, 1, 2, 3)
    assert data.on_front.tolist() == [True, True, True, False]  # trial 3 is dominated by trial 1
    assert data.labels[3] == "beta=10, seed=1" and data.recommended.tolist() == [0.2, 0.03]
    fig = study_charts.pareto_figure(data, "t")
    front = next(t for t in fig.data if t.name == "Pareto front")
    assert list(front.x) == [0.2, 0.5, 0.9] and list(front.y) == [0.03, 0.02, 0.01]  # ordered along x
    assert next(t for t in fig.data if t.name == "recommended").x == (0.2,)
    stage1 = optuna.create_study(directions=["minimize", "minimize"])
    rec = {"alpha": 100.0, "n_unsup": 2, "trial": 0, "pixel_mse": 0.02, "label_mse": 0.3}
    stage1.set_user_attr("recommendation", rec)
    assert study_charts.pareto_data(stage1, 1).recommended.tolist() == [0.02, 0.3]  # the seed means


def write_run(run_dir: Path, epochs: int, best: int | None) -> None:
    run_dir.mkdir(parents=True)
    with (run_dir / "metrics.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for e in range(epochs):
            for k, split in enumerate(("train", "val")):
                writer.writerow(
                    {"epoch": e, "split": split, **{m: 100 * k + 10 * e + j for j, m in enumerate(CSV_COLUMNS[2:])}}
                )
    if best is not None:
        (run_dir / "summary.json").write_text(json.dumps({"best_epoch": best}))


@pytest.mark.parametrize("split,offset", [("train", 0), ("val", 100)])
def test_training_curves_are_the_rows_of_one_split(tmp_path: Path, split: str, offset: int):
    write_run(tmp_path / "run", epochs=4, best=2)
    curves = run_charts.training_curves_data(tmp_path / "run", split)
    assert curves.split == split and curves.best_epoch == 2
    assert curves.epochs.tolist() == [0, 1, 2, 3]
    names = list(CSV_COLUMNS[2:])
    for m in run_charts.CURVE_METRICS:
        assert curves.values[m].tolist() == [offset + 10 * e + names.index(m) for e in range(4)]
    fig = run_charts.training_curves_figure([curves])
    assert len(fig.data) == len(run_charts.CURVE_METRICS)
    assert list(fig.data[run_charts.CURVE_METRICS.index("tc")].y) == curves.values["tc"].tolist()


def test_training_curves_refuse_a_bad_split_and_a_run_without_metrics(tmp_path: Path):
    write_run(tmp_path / "run", epochs=1, best=None)
    assert run_charts.training_curves_data(tmp_path / "run", "val").best_epoch is None  # still training
    with pytest.raises(ConfigError, match="--split 'test'"):
        run_charts.training_curves_data(tmp_path / "run", "test")
    with pytest.raises(DataError, match="no metrics.csv"):
        run_charts.training_curves_data(tmp_path / "nowhere", "val")


def test_label_traces_concatenate_the_chosen_trials_with_the_r2_of_each_label():
    rng = np.random.default_rng(0)
    starts = np.array([0, 5, 12, 20])
    labels = rng.standard_normal((20, 3))
    masks = np.ones((20, 3))
    masks[6, 1] = 0
    y_hat = labels.copy()
    y_hat[:, 2] += rng.standard_normal(20) * 0.5
    data = run_charts.label_traces_data(labels, masks, y_hat, starts, [2, 1], [2, 1], ["a", "b", "c"])
    assert data.label_names == ("c", "b") and data.trials == (2, 1)
    assert data.frames.tolist() == list(range(12, 20)) + list(range(5, 12))
    assert data.trial_starts.tolist() == [0, 8, 15]
    assert np.isnan(data.true[8 + 1, 1]) and np.isfinite(data.true).sum() == 15 * 2 - 1  # frame 6, label b masked
    assert data.predicted[:, 1].tolist() == labels[data.frames, 1].tolist()
    assert data.r2[1] == pytest.approx(1.0)  # perfect predictions
    expected, _ = metrics.label_r2_per_label(
        labels[data.frames][:, [2]], y_hat[data.frames][:, [2]], masks[data.frames][:, [2]]
    )
    assert data.r2[0] == pytest.approx(expected[0]) and data.r2[0] < 0.95
    fig = run_charts.label_traces_figure(data)
    assert fig.layout.annotations[0].text == f"c (R² = {data.r2[0]:.3f})"
    assert data.trial_names == data.trial_sessions == ()  # unnamed: each trial titled by its index
    assert [a.text for a in fig.layout.annotations[2:]] == ["trial 2", "trial 1"]


def test_label_traces_title_each_trial_with_its_session_and_name():
    starts = np.array([0, 3, 5, 9, 10])
    labels = np.random.default_rng(1).standard_normal((10, 2))
    names, sessions = ["t0", "t1", "t0", "t1"], ["mouse_a", "mouse_a", "mouse_b", "mouse_b"]
    data = run_charts.label_traces_data(
        labels,
        np.ones_like(labels),
        labels,
        starts,
        [3, 0, 2],
        [0],
        ["a", "b"],
        trial_names=names,
        trial_sessions=sessions,
    )
    assert data.trial_names == ("t1", "t0", "t0") and data.trial_sessions == ("mouse_b", "mouse_a", "mouse_b")
    assert data.trial_titles == ("mouse_b: t1", "mouse_a: t0", "mouse_b: t0")
    fig = run_charts.label_traces_figure(data)
    titles = [a for a in fig.layout.annotations if a.text in data.trial_titles]
    assert [a.text for a in titles] == list(data.trial_titles)
    # each title sits at the start of its trial's stretch: frames 9, then 0..2 (3 frames), then 5..8
    assert [a.x for a in titles] == [-0.5, 0.5, 3.5] and data.trial_starts.tolist() == [0, 1, 4, 8]


def test_label_traces_refuse_unknown_trials_and_labels():
    starts, labels = np.array([0, 4, 8]), np.zeros((8, 2))
    with pytest.raises(ConfigError, match="between 0 and 1"):
        run_charts.label_traces_data(labels, labels, labels, starts, [2], [0], ["a", "b"])
    with pytest.raises(ConfigError, match="labels \\[5\\]"):
        run_charts.label_traces_data(labels, labels, labels, starts, [0], [5], ["a", "b"])


def test_trials_in_split_are_the_trials_whose_frames_are_in_the_split():
    starts = np.array([0, 3, 6, 9])
    split = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
    assert run_charts.trials_in_split(split, starts) == [1]
    assert run_charts.trials_in_split(split, starts, code=0) == [0]
