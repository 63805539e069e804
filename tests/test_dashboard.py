"""The dashboard side: artifact store, uploads, study figures, rating twins, exports, `report`.

Browser checks of the served dashboard are in tests/test_dashboard_browser.py.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from pathlib import Path

import av
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, IntDistribution
from optuna.trial import TrialState, create_trial
from PIL import Image

from psvae_opt.config import dump_config, load_config
from psvae_opt.reports import dashboard, ratings
from psvae_opt.reports.diagnostics import TrialUploader, save_search_summary, trial_note
from psvae_opt.reports.stage_files import export_stage
from psvae_opt.search import trial_queue
from psvae_opt.search.storage import open_database
from tests.conftest import one_line_error
from tests.test_search import study_file

DISTS = {"beta": CategoricalDistribution([1.0, 5.0]), "seed": IntDistribution(0, 1)}


@pytest.fixture
def storage(tmp_path: Path) -> optuna.storages.RDBStorage:
    return open_database(f"sqlite:///{tmp_path / 's.db'}").storage


def stage2(storage, name: str = "t-stage2") -> optuna.Study:
    study = optuna.create_study(storage=storage, study_name=name, directions=["minimize", "minimize"])
    study.set_user_attr("stage", 2)
    study.set_user_attr("n_unsup", 3)
    return study


def running_trial(study: optuna.Study, beta: float, seed: int, **attrs) -> optuna.Trial:
    study.enqueue_trial({"beta": beta, "seed": seed})  # as the stage-2 grid is queued
    trial = study.ask()
    trial.suggest_categorical("beta", [1.0, 5.0])
    trial.suggest_int("seed", 0, 1)
    for key, value in attrs.items():
        trial.set_user_attr(key, value)
    return trial


def test_the_rating_form_is_registered_once_with_three_user_attribute_widgets(storage):
    rating = ratings.open_rating_study(storage, stage2(storage), n_unsup=3)
    form = trial_queue.study_system_attrs(rating)[ratings.FORM_KEY]
    assert rating.study_name == "t-stage2-rating" and form["output_type"] == "user_attr"
    assert [w["user_attr_key"] for w in form["widgets"]] == list(ratings.RATING_ATTRS)
    slider, choice, note = form["widgets"]
    assert (slider["type"], slider["min"], slider["max"], slider["step"]) == ("slider", 0, 3, 1)
    assert [lab["label"] for lab in slider["labels"]] == ["0", "1", "2", "3"]
    assert choice["choices"] == ["yes", "partly", "no"] and choice["values"] == [1.0, 0.5, 0.0]
    assert note["type"] == "text" and note["optional"] is True
    again = ratings.open_rating_study(storage, optuna.load_study(study_name="t-stage2", storage=storage), n_unsup=3)
    assert trial_queue.study_id(again) == trial_queue.study_id(rating)


def test_a_twin_copies_its_trial_once_and_its_ratings_reach_the_export(storage, tmp_path: Path):
    study = stage2(storage)
    rating = ratings.open_rating_study(storage, study, n_unsup=3)
    store = dashboard.open_store(tmp_path / "artifacts")
    files = []
    for name in ("traversal.png", "traversal.mp4"):
        files.append(tmp_path / name)
        files[-1].write_bytes(name.encode() * 10)
    numbers = []
    for beta, seed in [(1.0, 0), (5.0, 1)]:
        trial = running_trial(study, beta, seed, train_zu_corr=0.1 * (seed + 1), val_pixel_mse=0.01, run_dir=f"r{seed}")
        numbers.append(ratings.add_twin(rating, trial, files, store))
        assert ratings.add_twin(rating, trial, files, store) == numbers[-1]  # once only
        study.tell(trial, [0.1 * (seed + 1), 0.01 / (seed + 1)])  # both on the front
    twins = rating.get_trials()
    assert [t.state for t in twins] == [TrialState.RUNNING] * 2  # open: the form stays editable
    assert [t.params for t in twins] == [{"beta": 1.0, "seed": 0}, {"beta": 5.0, "seed": 1}]
    assert [t.user_attrs[ratings.TWIN_OF] for t in twins] == [0, 1]
    assert twins[1].user_attrs["train_zu_corr"] == pytest.approx(0.2) and twins[1].user_attrs["run_dir"] == "r1"
    metas = optuna.artifacts.get_all_artifact_meta(twins[0], storage=storage)
    assert sorted((m.filename, m.mimetype) for m in metas) == [
        ("traversal.mp4", "video/mp4"),
        ("traversal.png", "image/png"),
    ]
    stored = {m.filename: (tmp_path / "artifacts" / m.artifact_id).read_bytes() for m in metas}
    assert stored["traversal.png"] == files[0].read_bytes()
    assert ratings.ratings_by_trial(storage, study) == {}
    # what the dashboard's form posts: the twin's user attributes
    storage.set_trial_user_attr(trial_queue.trial_id(twins[1]), ratings.SINGLE_FEATURE, 2)
    storage.set_trial_user_attr(trial_queue.trial_id(twins[1]), ratings.NOTE, "z_u0 jaw, z_u1 chest")
    expected = {1: {ratings.SINGLE_FEATURE: 2, ratings.NOTE: "z_u0 jaw, z_u1 chest"}}
    assert ratings.ratings_by_trial(storage, study) == expected
    export_stage(storage, study, 2, tmp_path / "export")
    with (tmp_path / "export" / "ratings.csv").open() as fh:
        rows = {int(r["trial"]): r for r in csv.DictReader(fh)}
    assert rows[1][ratings.SINGLE_FEATURE] == "2" and rows[1][ratings.NOTE] == "z_u0 jaw, z_u1 chest"
    assert rows[0][ratings.SINGLE_FEATURE] == "" and rows[1][ratings.SUPERVISED_CLEAN] == ""
    front = json.loads((tmp_path / "export" / "pareto.json").read_text())["pareto_front"]
    assert [r["trial"] for r in front] == [0, 1] and front[1][ratings.NOTE] == "z_u0 jaw, z_u1 chest"
    assert front[0][ratings.SINGLE_FEATURE] is None


def test_stage1_exports_carry_no_rating_columns(storage, tmp_path: Path):
    study = optuna.create_study(storage=storage, study_name="t-stage1", directions=["minimize", "minimize"])
    study.add_trial(
        create_trial(
            params={"alpha": 50.0, "n_unsup": 2},
            values=[0.1, 0.2],
            distributions={"alpha": CategoricalDistribution([50.0]), "n_unsup": CategoricalDistribution([2])},
        )
    )
    export_stage(storage, study, 1, tmp_path)
    with (tmp_path / "pareto.csv").open() as fh:
        header = next(csv.reader(fh))
    assert not [c for c in header if c.startswith("rating_")] and not (tmp_path / "ratings.csv").exists()


def test_the_artifact_folder_is_recorded_once_and_found_again(storage, tmp_path: Path, monkeypatch):
    study = stage2(storage)
    cfg = load_config(None, [f"study.runs_dir={tmp_path / 'runs'}"])
    assert dashboard.record_artifact_dir(study, cfg) == tmp_path / "runs" / "artifacts"
    other = load_config(None, [f"study.runs_dir={tmp_path / 'elsewhere'}"])
    assert dashboard.record_artifact_dir(study, other) == tmp_path / "runs" / "artifacts"  # a resumed study keeps it
    assert dashboard.artifact_dir([study], other) == tmp_path / "runs" / "artifacts"
    assert dashboard.artifact_dir([], other) == tmp_path / "elsewhere" / "artifacts"
    mounted = str(tmp_path / "mounted")  # $PSVAE_OPT_ARTIFACTS, as the command edge reads it
    assert dashboard.artifact_dir([study], cfg, mounted) == tmp_path / "mounted"
    fresh = stage2(storage, name="fresh")
    assert dashboard.record_artifact_dir(fresh, cfg, mounted) == tmp_path / "mounted"


def test_the_search_summary_is_saved_on_the_study(storage):
    study = stage2(storage)
    for seed in (0, 1):
        study.add_trial(
            create_trial(
                params={"beta": 1.0, "seed": seed},
                distributions=DISTS,
                values=[0.5, 0.1],
                user_attrs={"val_pixel_mse": 0.1 + seed, "train_zu_corr": 0.5},
            )
        )
    save_search_summary(study, 2)
    attrs = trial_queue.study_system_attrs(study)
    key = "dashboard:plot_data:search-summary-stage2:"
    figure = json.loads("".join(attrs[f"{key}{i}"] for i in range(len([k for k in attrs if k.startswith(key)]))))
    pixel = next(t for t in figure["data"] if t["yaxis"] == "y")  # first panel: val_pixel_mse
    assert (
        pixel["x"] == [1.0]
        and pixel["y"] == [pytest.approx(0.6)]
        and pixel["error_y"]["array"] == [pytest.approx(0.70710678)]
    )


def test_a_failing_upload_warns_and_leaves_the_trial_alone(storage, tmp_path: Path, caplog, tiny_h5: Path):
    from psvae_opt.data import load_session
    from psvae_opt.training.run_end import FitResult

    study = stage2(storage)
    cfg = load_config(None, [f"study.runs_dir={tmp_path}"])
    trial = running_trial(study, 1.0, 0)
    result = FitResult(run_dir=tmp_path / "missing", best_epoch=0, epochs_run=1, annealing_complete=True, metrics={})
    with caplog.at_level(logging.WARNING):
        TrialUploader(storage, study, load_session(tiny_h5), cfg).on_finish(trial, cfg, result)
    assert "trial 0: diagnostics not uploaded" in caplog.text
    assert study.trials[0].state == TrialState.RUNNING and "diagnostics_seconds" not in study.trials[0].user_attrs
    assert optuna.artifacts.get_all_artifact_meta(study.trials[0], storage=storage) == []


@pytest.mark.slow
def test_a_search_uploads_each_trials_diagnostics_and_report_writes_them(tiny_h5: Path, tmp_path: Path, cli):
    url = f"sqlite:///{tmp_path / 's.db'}"
    config = study_file(tmp_path, tiny_h5, betas=(1.0,))
    r = cli("stage2", "--config", config, "--storage", url, "--workers", "1", "--seeds", "2", "--alpha", "100")
    assert r.code == 0, r.err
    storage = open_database(url).storage
    study = optuna.load_study(study_name="t-stage2", storage=storage)
    assert study.user_attrs["artifact_dir"] == str(tmp_path / "runs" / "artifacts")
    for t in study.trials:
        metas = optuna.artifacts.get_all_artifact_meta(t, storage=storage)
        assert sorted(m.filename for m in metas) == ["curves.html", "labels.html", "traversal.mp4", "traversal.png"]
        assert 0 < t.user_attrs["diagnostics_seconds"] < 60
        png = next(m for m in metas if m.filename == "traversal.png")
        stored = tmp_path / "runs" / "artifacts" / png.artifact_id
        assert stored.read_bytes() == (Path(t.user_attrs["run_dir"]) / "diagnostics" / "traversal.png").read_bytes()
    twins = optuna.load_study(study_name="t-stage2-rating", storage=storage).trials
    assert sorted(t.user_attrs["stage2_trial"] for t in twins) == [0, 1]
    keys = trial_queue.study_system_attrs(study)
    assert any(k.startswith("dashboard:plot_data:search-summary-stage2:") for k in keys)
    out = tmp_path / "report"
    common = ("--config", config, "--storage", url, "--stage", "2", "--out", out)
    assert cli("report", "summary", *common).code == 0
    assert "train_zu_corr" in (out / "summary.html").read_text()
    rec = study.user_attrs["recommendation"]["trial"]
    assert cli("report", "curves", *common, "--split", "train").code == 0
    assert (out / f"trial_{rec:04d}_curves_train.html").exists()
    assert cli("report", "labels", *common, "--trial", "1", "--trials", "2", "--labels", "paw_front_x,3").code == 0
    html = (out / "trial_0001_labels.html").read_text()
    assert "paw_front_x (R" in html and "paw_hind_y (R" in html and "paw_hind_x (R" not in html
    assert cli("report", "traversal", *common, "--trial", "0", "--frame", "5", "--steps", "3").code == 0
    assert Image.open(out / "trial_0000_traversal.png").size[1] == 2 * 14 + 6 * (4 * 32 + 2)
    assert cli("report", "movie", *common, "--trial", "0", "--frames", "1,2", "--steps", "4", "--fps", "10").code == 0
    with av.open(str(out / "trial_0000_traversal.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 2 * 7 + 10
    assert "--trial 7: study 't-stage2' has no such trial" in one_line_error(
        cli("report", "curves", *common, "--trial", "7")
    )
    assert "'paw' is not a label" in one_line_error(cli("report", "labels", *common, "--labels", "paw"))


def test_the_dashboard_listens_on_loopback_by_default_and_refuses_a_taken_port(tmp_path: Path, tiny_h5: Path, cli):
    import socket

    from psvae_opt.cli import build_parser

    args = build_parser().parse_args(["dashboard", "--config", "study.toml"])
    assert (args.host, args.port) == ("127.0.0.1", 8080)
    config = study_file(tmp_path, tiny_h5)
    url = f"sqlite:///{tmp_path / 's.db'}"
    assert "--port 70000: give a port between 1 and 65535" in one_line_error(
        cli("dashboard", "--config", config, "--storage", url, "--port", "70000")
    )
    assert "no study database at" in one_line_error(cli("dashboard", "--config", config, "--storage", url))
    assert not (tmp_path / "s.db").exists()
    assert cli("stage1", "--config", config, "--storage", url, "--workers", "0").code == 0
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = cli("dashboard", "--config", config, "--storage", f"sqlite:///{tmp_path / 's.db'}", "--port", port)
    assert f"cannot listen on 127.0.0.1:{port}" in one_line_error(r)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    r = cli(
        "dashboard", "--config", config, "--storage", f"sqlite:///{tmp_path / 's.db'}", "--artifacts", blocker / "art"
    )
    assert f"--artifacts {blocker / 'art'}: cannot create the artifact folder" in one_line_error(r)


def test_a_running_trials_curves_artifact_is_refreshed_in_place(storage, tmp_path: Path, tiny_config):
    from psvae_opt.data import load_session, split_frames
    from psvae_opt.training.loop import fit

    study = stage2(storage)
    cfg = load_config(None, [f"study.runs_dir={tmp_path / 'runs'}"])
    dashboard.record_artifact_dir(study, cfg)
    session = load_session(tiny_config.data.path)
    frames = split_frames(session, tiny_config.data.split_counts, tiny_config.data.data_seed)
    trial = running_trial(study, 1.0, 0)
    uploader = TrialUploader(storage, study, session, cfg, refresh_seconds=0.0)
    run = tmp_path / "run"
    seen = []

    def on_epoch(epoch: int, rows: dict) -> None:
        uploader.on_epoch(trial, run, epoch, rows)
        (meta,) = optuna.artifacts.get_all_artifact_meta(study.trials[0], storage=storage)
        seen.append((meta.artifact_id, (tmp_path / "runs" / "artifacts" / meta.artifact_id).read_text()))

    fit(tiny_config.model, tiny_config.loss, tiny_config.train, session, frames, run, progress=False, on_epoch=on_epoch)
    ids = {artifact for artifact, _ in seen[1:]}
    assert len(seen) == 3 and len(ids) == 1  # one artifact, uploaded once, then rewritten
    assert seen[1][1] != seen[2][1]  # its content changed while the trial ran: one more epoch of curves
    assert study.trials[0].state == TrialState.RUNNING


def test_the_note_of_a_collapsed_trial_says_so(storage):
    study = stage2(storage)
    trial = running_trial(study, 1.0, 0, collapsed=True, collapsed_dims=[1], zu_std=[0.9, 0.12])
    note = trial_note(trial, 0.25, ("t-stage2-rating", 3))
    assert "**Collapsed:** unsupervised dimension(s) [1]" in note and "0.120" in note and "below 0.25" in note
    assert "trial 3" in note
    healthy = running_trial(study, 5.0, 0, collapsed=False, collapsed_dims=[], zu_std=[0.9, 0.8])
    assert trial_note(healthy, 0.25, None) == ""


@pytest.mark.slow
def test_diagnostics_of_a_trial_that_ends_during_an_outage_are_uploaded_once_it_ends(
    postgres, tmp_path: Path, tiny_config, caplog
):
    import threading

    from psvae_opt.data import load_session, split_frames
    from psvae_opt.training.loop import fit
    from tests.test_search import _database

    db = open_database(_database(postgres, "upload_outage_test"))
    study = stage2(db.storage)
    cfg = load_config(None, [f"study.runs_dir={tmp_path / 'runs'}"])
    session = load_session(tiny_config.data.path)
    frames = split_frames(session, tiny_config.data.split_counts, tiny_config.data.data_seed)
    trial = running_trial(study, 1.0, 0)
    uploader = TrialUploader(db.storage, study, session, cfg, retry=db.retry)
    tiny = tiny_config
    text = dump_config(tiny)
    result = fit(tiny.model, tiny.loss, tiny.train, session, frames, tmp_path / "run", config_text=text, progress=False)
    postgres.stop()
    coming_back = threading.Thread(target=lambda: (time.sleep(4.0), postgres.start()))
    coming_back.start()
    try:
        with caplog.at_level(logging.WARNING):
            uploader.on_finish(trial, tiny, result)
    finally:
        coming_back.join()
    assert "database unreachable while uploading the diagnostics of trial 0" in caplog.text
    assert "diagnostics not uploaded" not in caplog.text
    (frozen,) = optuna.load_study(study_name="t-stage2", storage=db.storage).trials
    names = sorted(m.filename for m in optuna.artifacts.get_all_artifact_meta(frozen, storage=db.storage))
    assert names == ["curves.html", "labels.html", "traversal.mp4", "traversal.png"]
    assert frozen.user_attrs["diagnostics_seconds"] > 0
    (twin,) = optuna.load_study(study_name="t-stage2-rating", storage=db.storage).trials
    assert twin.user_attrs[ratings.TWIN_OF] == 0 and twin.params == {"beta": 1.0, "seed": 0}
