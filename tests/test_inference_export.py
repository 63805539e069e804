"""`psvae-opt model export` of a trained trial, and the round trip through a fresh process without
the study database: the bundle encodes its training session to the run folder's latents."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from optuna.distributions import CategoricalDistribution, IntDistribution
from optuna.trial import create_trial

from psvae_opt.config import dump_config, load_config
from psvae_opt.data import load_session, split_frames
from psvae_opt.search.objective import fit_attributes, latent_attributes
from psvae_opt.search.recommendation import recommend_stage2
from psvae_opt.training.loop import fit
from psvae_opt.training.run_folder import load_latents, read_summary
from tests.conftest import one_line_error

pytestmark = pytest.mark.slow  # trains a model

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory: pytest.TempPathFactory, tiny_h5: Path) -> Path:
    """A stage-2 study in SQLite: one trained trial (beta 1) and one untrained trial (beta 5) beside it."""
    folder = tmp_path_factory.mktemp("study")
    cfg = load_config(
        None,
        [
            f"data.path={tiny_h5}",
            "data.split=3;1;1;0",
            # trained enough that the latents depend on the frames (the tiny model's barely do after
            # 2 epochs, which would let a wrong pixel scaling pass the 1e-5 round trip)
            "model.channels=[8, 16, 16, 16, 16]",
            "loss.alpha=100",
            "train.max_epochs=6",
            "train.batch_size=16",
            "loss.anneal_epochs=1",
            "train.learning_rate=1e-3",
            "study.name=tiny",
            f"study.runs_dir={folder / 'runs'}",
        ],
    )
    (folder / "study.toml").write_text(dump_config(cfg))
    session = load_session(tiny_h5)
    run_dir = folder / "runs" / "trial_0000"
    frames = split_frames(session, cfg.data.split_counts, cfg.data.data_seed)
    result = fit(cfg.model, cfg.loss, cfg.train, session, frames, run_dir, config_text=dump_config(cfg), progress=False)
    attrs = {**fit_attributes(result, 0), **latent_attributes(session, load_latents(run_dir), 0.25)}
    attrs.update(run_dir=str(run_dir), config=dump_config(cfg))
    study = optuna.create_study(
        storage=f"sqlite:///{folder / 'db.sqlite'}", study_name="tiny-stage2", directions=["minimize", "minimize"]
    )
    study.set_user_attr("stage", 2)
    study.set_user_attr("run_key", "20261205-000000")  # psvae-opt's own study attributes (check_own)
    dists = {"beta": CategoricalDistribution([1.0, 5.0]), "seed": IntDistribution(0, 4)}
    trained = [attrs["train_zu_corr"], attrs["val_pixel_mse"]]
    study.add_trial(
        create_trial(params={"beta": 1.0, "seed": 0}, distributions=dists, values=trained, user_attrs=attrs)
    )
    other = {**attrs, "train_zu_corr": 2.0, "collapsed": True, "run_dir": str(folder / "runs" / "none")}
    study.add_trial(
        create_trial(params={"beta": 5.0, "seed": 0}, distributions=dists, values=[2.0, 1.0], user_attrs=other)
    )
    assert recommend_stage2(study).trial == 0
    return folder


def _export(cli, folder: Path, out: Path, *more: str):
    return cli(
        "model", "export", "--config", folder / "study.toml", "--storage", f"sqlite:///{folder / 'db.sqlite'}",
        "--out", out, *more,
    )  # fmt: skip


@pytest.fixture(scope="module")
def exported(study_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from psvae_opt.cli import main

    out = tmp_path_factory.mktemp("bundle") / "model"
    args = [
        "model",
        "export",
        "--config",
        study_dir / "study.toml",
        "--storage",
        f"sqlite:///{study_dir / 'db.sqlite'}",
    ]
    assert main([str(a) for a in [*args, "--out", out]]) == 0
    return out


def test_the_bundle_describes_the_recommended_trial(exported: Path, study_dir: Path):
    info = json.loads((exported / "bundle.json").read_text())
    run_dir = study_dir / "runs" / "trial_0000"
    assert (info["trial"], info["beta"], info["alpha"], info["model_seed"]) == (0, 1.0, 100.0, 0)
    summary = read_summary(run_dir)["metrics"]
    assert set(info["metrics"]) == {"train", "val", "test"}
    for split, values in summary.items():
        assert info["metrics"][split] == pytest.approx(values)
    assert [row["beta"] for row in info["stage_table"]] == [1.0, 5.0]
    assert info["label_names"] == ["paw_front_x", "paw_hind_x", "paw_front_y", "paw_hind_y"]
    assert info["frame_shape"] == [1, 32, 32] and info["data_fingerprint"]["files"][0]["frames"] == 200
    state = torch.load(exported / "weights.pt", weights_only=True)
    best = torch.load(run_dir / "best.pt", weights_only=True)
    assert all(torch.equal(state["model"][k], best["model"][k]) for k in best["model"])
    card = (exported / "model_card.md").read_text()
    assert "alpha = 100, beta = 1, model seed 0" in card and "| 5 | 1 | 1 |" in card
    assert "![traversal.png](traversal.png)" in card
    assert (exported / "traversal.png").stat().st_size > 0 and (exported / "traversal.mp4").stat().st_size > 0


def test_round_trip_in_a_fresh_process_without_the_database(
    exported: Path, study_dir: Path, tiny_h5: Path, tmp_path: Path
):
    moved = tmp_path / "db-away.sqlite"
    os.replace(study_dir / "db.sqlite", moved)  # the database is gone while the bundle is used
    try:
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "PSVAE_OPT_STORAGE": "postgresql+psycopg://nobody@127.0.0.1:1/none",
        }
        code = (
            "import sys, numpy as np, psvae_opt\n"
            "from psvae_opt.data import load_session\n"
            "m = psvae_opt.load_model(sys.argv[1])\n"
            "np.save(sys.argv[3], m.encode(load_session(sys.argv[2]).images))\n"
        )
        subprocess.run([sys.executable, "-c", code, exported, tiny_h5, tmp_path / "api.npy"], env=env, check=True)
        cli = [
            sys.executable,
            "-m",
            "psvae_opt.cli",
            "encode",
            "--model",
            str(exported),
            "--out",
            str(tmp_path / "enc"),
        ]
        done = subprocess.run([*cli, str(tiny_h5), "--no-progress"], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    finally:
        os.replace(moved, study_dir / "db.sqlite")
    latents = load_latents(study_dir / "runs" / "trial_0000")
    assert latents["mu"].std(0).max() > 1e-2  # the latents move with the frames: 1e-5 is a real test
    assert np.abs(np.load(tmp_path / "api.npy") - latents["mu"]).max() < 1e-5
    with np.load(tmp_path / "enc" / "tiny.npz") as f:
        assert np.abs(f["mean"] - latents["mu"]).max() < 1e-5
        assert np.abs(np.log(f["variance"]) - latents["logvar"]).max() < 1e-4
        assert np.abs(f["labels_z"] - latents["y_hat"]).max() < 1e-5


def test_export_refusals_write_nothing(study_dir: Path, tmp_path: Path, cli):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    assert "holds other files" in one_line_error(_export(cli, study_dir, busy))
    assert [p.name for p in busy.iterdir()] == ["notes.txt"]
    assert "no such finished trial" in one_line_error(_export(cli, study_dir, tmp_path / "a", "--trial", "7"))
    assert "holds no best.pt" in one_line_error(
        _export(cli, study_dir, tmp_path / "a", "--trial", "1")
    )  # no run folder
    line = one_line_error(
        cli("model", "export", "--config", study_dir / "study.toml", "--storage", f"sqlite:///{tmp_path}/none.db",
            "--out", tmp_path / "a")
    )  # fmt: skip
    assert "no study database" in line
    assert not (tmp_path / "a").exists() and not (tmp_path / "none.db").exists()
    assert not list(tmp_path.glob(".a.*"))


def test_export_again_replaces_an_earlier_bundle(study_dir: Path, tmp_path: Path, cli):
    out = tmp_path / "model"
    assert _export(cli, study_dir, out).code == 0
    (out / "weights.pt").write_bytes(b"stale")
    assert _export(cli, study_dir, out).code == 0
    assert torch.load(out / "weights.pt", weights_only=True)["model"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
