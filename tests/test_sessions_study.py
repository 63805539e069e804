"""A study on two session files: training, latents, per-session metrics and attributes, reports."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from optuna.trial import TrialState

from psvae_opt.config import Config, load_config, replace
from psvae_opt.data import load_session, split_frames, synth_session
from psvae_opt.search.storage import open_database
from psvae_opt.training.devices import to_device
from psvae_opt.training.loop import fit
from psvae_opt.training.run_folder import SPLIT_CODES, load_latents
from psvae_opt.training.steps import evaluate
from psvae_opt.training.trained import load_checkpoint
from tests.conftest import TINY_MODEL, one_line_error
from tests.test_search import study_file

pytestmark = pytest.mark.slow
NAMES = ("mouse_a", "mouse_b")


@pytest.fixture(scope="module")
def two_sessions(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two recordings of one setup: 10 trials of 10 frames, and 10 trials of 8 frames."""
    folder = tmp_path_factory.mktemp("sessions")
    return (
        synth_session(folder / "mouse_a.h5", size=32, trials=10, frames=10, seed=1),
        synth_session(folder / "mouse_b.h5", size=32, trials=10, frames=8, seed=2),
    )


def two_session_study(tmp_path: Path, paths: tuple[Path, ...], **kwargs) -> Path:
    """test_search's study file with ``data.path`` the list of ``paths``."""
    config = study_file(tmp_path, paths[0], **kwargs)
    listed = ", ".join(f'"{p}"' for p in paths)
    config.write_text(config.read_text().replace(f'path = "{paths[0]}"', f"path = [{listed}]"))
    return config


def _config(paths) -> Config:
    base = load_config(
        None,
        [*TINY_MODEL, "data.split=3;1;1;0", "train.max_epochs=2", "train.batch_size=16", "loss.anneal_epochs=1"],
    )
    return replace(base, data={"path": tuple(str(p) for p in paths)})


def test_fit_on_two_sessions_records_each_frames_session_and_per_session_metrics(two_sessions, tmp_path: Path):
    cfg = _config(two_sessions)
    session = load_session(cfg.data.path)
    frames = split_frames(session, cfg.data.split_counts, cfg.data.data_seed)
    result = fit(cfg.model, cfg.loss, cfg.train, session, frames, tmp_path / "run", progress=False)
    latents = load_latents(tmp_path / "run")
    assert latents["session"].dtype == np.int16
    assert latents["session"].tolist() == [0] * 100 + [1] * 80
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert set(summary["per_session"]) == set(NAMES)
    # each session's metrics are evaluate() on that session's frames of the split, with the kept model
    model = load_checkpoint(tmp_path / "run", cfg.model, session.frame_shape, session.n_labels)
    data = to_device(session, frames, torch.device("cpu"))
    epoch, batch = max(result.epochs_run - 1, result.best_epoch), cfg.train.eval_batch_size
    for s, name in enumerate(NAMES):
        assert set(summary["per_session"][name]) == {"train", "val", "test"}
        for split in ("train", "val", "test"):
            own = frames[split][session.frame_sessions[frames[split]] == s]
            idx = torch.from_numpy(own)
            expected = evaluate(model, data, idx, cfg.loss, epoch=epoch, batch_size=batch, seed=0)[0]
            got = summary["per_session"][name][split]
            for metric in ("loss", "pixel_mse", "label_r2", "tc"):
                assert got[metric] == pytest.approx(expected[metric], rel=1e-4, abs=1e-6)
    # the sessions' values differ from the whole split's, which covers both
    assert summary["per_session"]["mouse_a"]["val"]["pixel_mse"] != summary["metrics"]["val"]["pixel_mse"]
    # one session: summary.json as before, every frame in session 0
    one = replace(cfg, data={"path": str(two_sessions[0])})
    alone = load_session(one.data.path)
    fit(one.model, one.loss, one.train, alone, split_frames(alone, (3, 1, 1, 0), 0), tmp_path / "one", progress=False)
    assert "per_session" not in json.loads((tmp_path / "one" / "summary.json").read_text())
    assert load_latents(tmp_path / "one")["session"].tolist() == [0] * 100


def test_stage1_on_two_sessions_trains_splits_and_reports_each_session(two_sessions, tmp_path: Path, cli):
    config = two_session_study(tmp_path, two_sessions, epochs=2, alphas=(100.0,), n_unsup=(2,))
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    r = cli("stage1", "--config", config, "--storage", url, "--workers", "1")
    assert r.code == 0, r.err
    study = optuna.load_study(study_name="t-stage1", storage=open_database(url).storage)
    (trial,) = study.get_trials(states=(TrialState.COMPLETE,))
    run_dir = Path(trial.user_attrs["run_dir"])
    latents = load_latents(run_dir)
    session = load_session(two_sessions)
    # both sessions trained: latents of every frame of both, and each session has its own train/val/test trials
    assert len(latents["mu"]) == 180 and np.isfinite(latents["mu"]).all()
    assert latents["session"].tolist() == [0] * 100 + [1] * 80
    for s in range(2):
        trials = np.flatnonzero(session.trial_sessions == s)
        codes = [int(latents["split"][session.trial_starts[t]]) for t in trials]
        assert sorted(codes) == [0] * 6 + [1] * 2 + [2] * 2  # 3;1;1 of 10 trials, within the session
    # per-session attributes: the summary's per-session validation metrics
    per_session = json.loads((run_dir / "summary.json").read_text())["per_session"]
    for metric in ("label_r2", "pixel_mse"):
        recorded = trial.user_attrs[f"val_{metric}_by_session"]
        assert set(recorded) == set(NAMES)
        assert recorded == {name: pytest.approx(per_session[name]["val"][metric]) for name in NAMES}
    # the export shows them
    out = tmp_path / "export"
    assert cli("export", "--config", config, "--storage", url, "--stage", "1", "--out", out).code == 0
    with (out / "pareto.csv").open() as fh:
        (row,) = list(csv.DictReader(fh))
    assert json.loads(row["val_label_r2_by_session"]) == pytest.approx(trial.user_attrs["val_label_r2_by_session"])
    # the label report shows a validation trial of each session, titled with its session
    r = cli("report", "labels", "--config", config, "--storage", url, "--stage", "1", "--trial", trial.number)
    assert r.code == 0, r.err
    html = Path(r.out.strip()).read_text()
    for s, name in enumerate(NAMES):
        first = next(
            t
            for t in range(session.n_trials)
            if session.trial_sessions[t] == s and latents["split"][session.trial_starts[t]] == SPLIT_CODES["val"]
        )
        assert f'"{name}: {session.trial_names[first].removeprefix(name + "/")}"' in html
    # the trial's own diagnostics name the session too
    assert f'"{NAMES[0]}: trial_' in (run_dir / "diagnostics" / "labels.html").read_text()


def test_sessions_of_another_frame_size_are_refused_before_any_database(tmp_path: Path, cli):
    small = synth_session(tmp_path / "small.h5", size=32, trials=3, frames=4, seed=1)
    large = synth_session(tmp_path / "large.h5", size=64, trials=3, frames=4, seed=2)
    config = two_session_study(tmp_path, (small, large))
    line = one_line_error(cli("stage1", "--config", config, "--storage", f"sqlite:///{tmp_path / 's.db'}"))
    assert f"{small} and {large} differ in frame shape ((1, 32, 32) vs (1, 64, 64)" in line
    assert "import every session at one --size" in line
    assert not (tmp_path / "s.db").exists() and not (tmp_path / "runs").exists()
