"""Training one PS-VAE: the run folder, determinism, resuming, NaN, the best checkpoint."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from psvae_opt.config import Config, dump_config, load_config, replace
from psvae_opt.data import load_session, split_frames, write_session
from psvae_opt.errors import ConfigError, TrainingError
from psvae_opt.training.loop import fit
from psvae_opt.training.run_folder import CSV_COLUMNS, METRIC_NAMES, read_metrics
from psvae_opt.training.trained import load_checkpoint
from tests.conftest import TINY_MODEL, random_frames


def run_fit(cfg: Config, out: Path, **kwargs):
    session = load_session(cfg.data.path)
    frames = split_frames(session, cfg.data.split_counts, cfg.data.data_seed)
    return fit(
        cfg.model, cfg.loss, cfg.train, session, frames, out, config_text=dump_config(cfg), progress=False, **kwargs
    )


@pytest.mark.slow  # trains a model
def test_run_folder_holds_config_metrics_checkpoint_and_latents(tiny_config: Config, tmp_path: Path):
    result = run_fit(tiny_config, tmp_path / "run")
    run = tmp_path / "run"
    assert load_config(run / "config.toml") == tiny_config
    with (run / "metrics.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [(int(r["epoch"]), r["split"]) for r in rows] == [(e, s) for e in range(3) for s in ("train", "val")]
    assert all(np.isfinite(float(r[m])) for r in rows for m in METRIC_NAMES)
    state = torch.load(run / "best.pt", weights_only=True)
    assert set(state) == {"model", "epoch"} and "rotation" in state["model"]
    latents = np.load(run / "latents.npz")
    session = load_session(tiny_config.data.path)
    assert latents["mu"].shape == (session.n_frames, session.n_labels + tiny_config.model.n_unsup)
    assert set(np.unique(latents["split"])) == {0, 1, 2}
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best_epoch"] == result.best_epoch
    assert set(summary["metrics"]) == {"train", "val", "test"}
    assert set(summary["metrics"]["val"]) == set(METRIC_NAMES)
    # the result hands back what the files hold, so the objective need not read them again
    assert result.summary == summary
    assert set(result.latents) == set(latents.files)
    for key in latents.files:
        np.testing.assert_array_equal(result.latents[key], latents[key])


@pytest.mark.slow  # trains a model
def test_latents_are_the_means_of_the_best_checkpoint(tiny_config: Config, tmp_path: Path):
    run_fit(tiny_config, tmp_path / "run")
    session = load_session(tiny_config.data.path)
    model = load_checkpoint(tmp_path / "run", tiny_config.model, session.frame_shape, session.n_labels)
    with torch.no_grad():
        mu, _ = model.encode(torch.from_numpy(session.images[:7]).float() / 255)
    np.testing.assert_allclose(np.load(tmp_path / "run" / "latents.npz")["mu"][:7], mu.numpy(), atol=1e-4)


@pytest.mark.slow  # trains a model
def test_same_seeds_same_numbers(tiny_config: Config, tmp_path: Path):
    run_fit(tiny_config, tmp_path / "a")
    run_fit(tiny_config, tmp_path / "b")
    assert (tmp_path / "a" / "metrics.csv").read_text() == (tmp_path / "b" / "metrics.csv").read_text()
    cfg = load_config(
        None,
        [
            f"data.path={tiny_config.data.path}",
            "data.split=3;1;1;0",
            *TINY_MODEL,
            "train.max_epochs=3",
            "train.batch_size=16",
            "loss.anneal_epochs=1",
            "train.learning_rate=1e-3",
            "train.model_seed=1",
        ],
    )
    run_fit(cfg, tmp_path / "c")
    assert (tmp_path / "a" / "metrics.csv").read_text() != (tmp_path / "c" / "metrics.csv").read_text()


@pytest.mark.slow  # trains a model
def test_a_stopped_run_resumes_from_its_last_epoch_and_ends_identical(tiny_config: Config, tmp_path: Path):
    full = run_fit(tiny_config, tmp_path / "full")
    done = []
    with pytest.raises(KeyboardInterrupt):  # stopped right after epoch 1
        run_fit(
            tiny_config, tmp_path / "cut", on_epoch=lambda e, rows: done.append(e), should_stop=lambda: len(done) >= 2
        )
    assert [r["epoch"] for r in read_metrics(tmp_path / "cut")] == [0, 0, 1, 1]
    assert torch.load(tmp_path / "cut" / "last.pt", weights_only=True)["epoch"] == 2
    resumed_epochs = []
    resumed = run_fit(tiny_config, tmp_path / "cut", on_epoch=lambda e, rows: resumed_epochs.append(e))
    assert resumed_epochs == [2]  # only the missing epoch ran
    assert (tmp_path / "full" / "metrics.csv").read_text() == (tmp_path / "cut" / "metrics.csv").read_text()
    assert resumed.metrics == full.metrics


@pytest.mark.slow  # trains a model
def test_a_run_stopped_mid_epoch_redoes_that_epoch_and_ends_identical(tiny_config: Config, tmp_path: Path):
    full = run_fit(tiny_config, tmp_path / "full")
    polls = []
    with pytest.raises(KeyboardInterrupt, match="stopped during epoch 1"):  # 7 batches an epoch
        run_fit(tiny_config, tmp_path / "cut", should_stop=lambda: polls.append(1) or len(polls) > 7 + 1 + 3)
    assert torch.load(tmp_path / "cut" / "last.pt", weights_only=True)["epoch"] == 1
    assert [r["epoch"] for r in read_metrics(tmp_path / "cut")] == [0, 0]
    resumed = run_fit(tiny_config, tmp_path / "cut")
    assert resumed.resumed_from == 1
    assert (tmp_path / "full" / "metrics.csv").read_text() == (tmp_path / "cut" / "metrics.csv").read_text()
    assert resumed.metrics == full.metrics


@pytest.mark.slow  # trains a model
def test_best_checkpoint_waits_for_the_end_of_annealing(tiny_h5: Path, tmp_path: Path):
    cfg = load_config(
        None,
        [
            f"data.path={tiny_h5}",
            "data.split=3;1;1;0",
            *TINY_MODEL,
            "train.max_epochs=4",
            "train.batch_size=16",
            "loss.anneal_epochs=4",  # BehaveNet's ramp: weights 1/3, 2/3, then full from epoch 2
            "train.learning_rate=1e-3",
        ],
    )
    result = run_fit(cfg, tmp_path / "run")
    assert result.best_epoch >= 2 and result.annealing_complete
    val = {r["epoch"]: r["loss"] for r in read_metrics(tmp_path / "run") if r["split"] == "val"}
    assert result.best_epoch == min((e for e in val if e >= 2), key=val.get)


@pytest.mark.slow  # trains a model
def test_a_run_too_short_to_anneal_keeps_its_last_epoch(tiny_h5: Path, tmp_path: Path):
    cfg = load_config(
        None,
        [
            f"data.path={tiny_h5}",
            "data.split=3;1;1;0",
            *TINY_MODEL,
            "train.max_epochs=2",
            "train.batch_size=16",
            "loss.anneal_epochs=10",
        ],
    )
    result = run_fit(cfg, tmp_path / "run")
    assert result.best_epoch == 1 and not result.annealing_complete


def test_a_nan_loss_stops_the_run_with_an_error(tmp_path: Path):
    frames = [random_frames(20, seed=i) for i in range(5)]
    huge = [np.full((20, 2), 1e20) for _ in range(5)]  # squares overflow float32
    path = write_session(tmp_path / "huge.h5", frames, huge)
    cfg = load_config(
        None, [f"data.path={path}", "data.split=3;1;1;0", *TINY_MODEL, "train.max_epochs=2", "train.batch_size=16"]
    )
    with pytest.raises(TrainingError, match=r"the training loss became (nan|inf) at epoch 0"):
        run_fit(cfg, tmp_path / "run")


def test_batch_larger_than_the_training_set_is_refused(tiny_h5: Path, tmp_path: Path):
    cfg = load_config(None, [f"data.path={tiny_h5}", "data.split=3;1;1;0", *TINY_MODEL, "train.batch_size=1000"])
    with pytest.raises(ConfigError, match="train.batch_size = 1000 exceeds the 120 training frames"):
        run_fit(cfg, tmp_path / "run")


@pytest.mark.slow  # trains a model
def test_cli_train_with_overrides(tiny_h5: Path, tmp_path: Path, cli):
    study = tmp_path / "s.toml"
    study.write_text(
        '[data]\npath = "nowhere.h5"\nsplit = "3;1;1;0"\n[model]\nchannels = [4, 8, 8, 8, 8]\n'
        "[train]\nbatch_size = 16\nmax_epochs = 50\n[loss]\nanneal_epochs = 0\n"
    )
    r = cli(
        "train",
        "--config",
        study,
        "--set",
        f"data.path={tiny_h5}",
        "--set",
        "train.max_epochs=2",
        "--out",
        tmp_path / "run",
        "--no-progress",
    )
    assert r.code == 0, r.err
    assert "best epoch" in r.out and "of 2" in r.out
    assert max(row["epoch"] for row in read_metrics(tmp_path / "run")) == 1


def test_cli_train_refuses_a_bad_key_in_one_line(tmp_path: Path, cli):
    from tests.conftest import one_line_error

    line = one_line_error(cli("train", "--config", tmp_path / "none.toml", "--out", tmp_path / "r"))
    assert "study file not found" in line
    line = one_line_error(
        cli("train", "--set", "train.epochs=3", "--config", "studies/demo.toml", "--out", tmp_path / "r")
    )
    assert "train.epochs: unknown key" in line


def test_evaluation_batches_are_random_draws_of_the_evaluated_frames():
    """Consecutive frames of a trial have overlapping posteriors: evaluated in consecutive
    chunks, ICMI would collapse and TC/DWKL inflate. Chunked evaluation must match one
    batch over every frame (where the estimate is exact) and keep the frames' order."""
    from psvae_opt.config import LossConfig
    from psvae_opt.model.network import PSVAE
    from psvae_opt.training.devices import DeviceData
    from psvae_opt.training.steps import evaluate

    torch.manual_seed(0)
    model = PSVAE((1, 16, 16), n_labels=2, n_unsup=2, channels=(4, 8), strides=(2, 2))
    with torch.no_grad():  # narrow posteriors, well separated means: a large ICMI
        model.to_logvar.bias.fill_(-6.0)
        model.to_logvar.weight.mul_(0.01)
        model.to_mean.weight.mul_(20.0)
    distinct = torch.randint(0, 256, (16, 1, 16, 16), dtype=torch.uint8)
    frames = distinct.repeat_interleave(32, dim=0)  # 16 "trials" of 32 identical frames
    n = len(frames)
    data = DeviceData(frames=frames, labels=torch.randn(n, 2), masks=torch.ones(n, 2), splits={})
    idx = torch.arange(n)
    loss_cfg = LossConfig(alpha=1.0, beta=1.0, anneal_epochs=0)
    whole, mu_whole, _, logvar_whole = evaluate(model, data, idx, loss_cfg, epoch=1, batch_size=n)
    chunked, mu_chunked, _, logvar_chunked = evaluate(model, data, idx, loss_cfg, epoch=1, batch_size=32)
    assert whole["icmi"] > 1.5  # log 16 = 2.77 at most: the 16 posteriors are told apart
    assert chunked["icmi"] == pytest.approx(whole["icmi"], abs=0.35)
    assert chunked["tc"] == pytest.approx(whole["tc"], abs=0.35)
    assert chunked["dwkl"] == pytest.approx(whole["dwkl"], abs=0.35)
    np.testing.assert_allclose(mu_chunked, mu_whole, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(logvar_chunked, logvar_whole, rtol=1e-4, atol=1e-4)


@pytest.mark.slow  # trains a model
def test_a_run_folder_is_not_resumed_with_another_configuration(tiny_config: Config, tmp_path: Path):
    run_fit(tiny_config, tmp_path / "run")
    other = load_config(
        None,
        [
            f"data.path={tiny_config.data.path}",
            "data.split=3;1;1;0",
            *TINY_MODEL,
            "train.max_epochs=4",
            "train.batch_size=16",
            "loss.anneal_epochs=1",
            "train.learning_rate=1e-3",
            "loss.beta=5",
        ],
    )
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()}
    with pytest.raises(TrainingError, match=r"holds a run of another configuration \(loss.beta differ\)"):
        run_fit(other, tmp_path / "run")
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()} == before  # config.toml too: untouched
    longer = load_config(
        None,
        [
            f"data.path={tiny_config.data.path}",
            "data.split=3;1;1;0",
            *TINY_MODEL,
            "train.max_epochs=4",
            "train.batch_size=16",
            "loss.anneal_epochs=1",
            "train.learning_rate=1e-3",
        ],
    )
    assert run_fit(longer, tmp_path / "run").resumed_from == 3  # more epochs of the same run: resumed


@pytest.mark.slow  # trains a model
def test_an_early_stopped_run_stays_stopped_when_run_again(tiny_h5: Path, tmp_path: Path):
    # lr 0.5 diverges the validation loss after the first annealed epoch: patience 1 stops it
    args = [
        f"data.path={tiny_h5}",
        "data.split=3;1;1;0",
        *TINY_MODEL,
        "train.max_epochs=8",
        "train.batch_size=16",
        "loss.anneal_epochs=0",
        "train.learning_rate=3e-2",
        "train.patience=1",
    ]
    first = run_fit(load_config(None, args), tmp_path / "run")
    assert first.epochs_run < 8
    again = []
    second = run_fit(load_config(None, args), tmp_path / "run", on_epoch=lambda e, rows: again.append(e))
    assert again == [] and second.epochs_run == first.epochs_run and second.best_epoch == first.best_epoch


@pytest.mark.slow  # trains a model
def test_a_damaged_checkpoint_is_one_line(tiny_config: Config, tmp_path: Path, cli):
    from psvae_opt.errors import DataError

    run_fit(tiny_config, tmp_path / "run")
    latents = np.load(tmp_path / "run" / "latents.npz")
    assert latents["logvar"].shape == latents["mu"].shape and np.isfinite(latents["logvar"]).all()
    (tmp_path / "run" / "last.pt").write_bytes(b"\x80\x02 not a checkpoint")
    with pytest.raises(DataError, match=r"last.pt: cannot load the checkpoint .*the file is damaged"):
        run_fit(tiny_config, tmp_path / "run")
    (tmp_path / "run" / "best.pt").write_bytes(b"")
    from psvae_opt.training.trained import load_checkpoint

    with pytest.raises(DataError, match=r"best.pt: cannot load the checkpoint"):
        load_checkpoint(tmp_path / "run", tiny_config.model, (1, 32, 32), 4)


def _count_saves(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The checkpoint files the trainer writes, in order (written for real, names noted)."""
    from psvae_opt.training import checkpoints

    names: list[str] = []
    real = checkpoints.save_atomic

    def noted(obj, path, *rest):
        names.append(Path(path).name)
        return real(obj, path, *rest)

    monkeypatch.setattr(checkpoints, "save_atomic", noted)
    return names


def test_checkpoints_are_written_at_most_every_checkpoint_seconds(
    tiny_config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A full last.pt each epoch costs NFS a large share of an epoch: once at the end instead."""
    names = _count_saves(monkeypatch)
    cfg = replace(tiny_config, train={"checkpoint_seconds": 3600})
    result = run_fit(cfg, tmp_path / "run")
    assert names == ["best.pt", "last.pt"]  # once, when training ended
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["epoch"] == 3
    assert torch.load(tmp_path / "run" / "best.pt", weights_only=True)["epoch"] == result.best_epoch
    names.clear()
    run_fit(replace(tiny_config, train={"checkpoint_seconds": 0}), tmp_path / "every")
    assert names.count("last.pt") == 3  # 0: every epoch, as before
    assert (tmp_path / "run" / "metrics.csv").read_text() == (tmp_path / "every" / "metrics.csv").read_text()


@pytest.mark.parametrize("polls", [7 + 1 + 1, 7 + 1 + 4, 2 * (7 + 1)])  # epoch 1 at batch 0, batch 3; after epoch 1
def test_a_stop_between_checkpoints_saves_at_once_and_resumes_exactly(
    tiny_config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, polls: int
):
    cfg = replace(tiny_config, train={"checkpoint_seconds": 3600})
    full = run_fit(cfg, tmp_path / "full")
    names = _count_saves(monkeypatch)
    seen = []
    with pytest.raises(KeyboardInterrupt):
        run_fit(cfg, tmp_path / "cut", should_stop=lambda: seen.append(1) or len(seen) >= polls)
    assert names[-1] == "last.pt" and names.count("last.pt") == 1  # written by the stop itself
    state = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)
    assert (state["epoch"], state["batch"]) == {9: (1, 0), 12: (1, 3), 16: (2, 0)}[polls]
    resumed = run_fit(cfg, tmp_path / "cut")
    assert (tmp_path / "full" / "metrics.csv").read_text() == (tmp_path / "cut" / "metrics.csv").read_text()
    assert resumed.metrics == full.metrics


def test_a_stop_during_the_end_of_run_work_leaves_at_once_and_the_rerun_only_evaluates(
    tiny_config: Config, tmp_path: Path
):
    """A preemption's grace time is short: the evaluation of every split and the latents wait."""
    full = run_fit(tiny_config, tmp_path / "full")
    seen = []
    training_polls = 3 * (7 + 1)
    with pytest.raises(KeyboardInterrupt, match="end-of-run evaluation"):
        run_fit(tiny_config, tmp_path / "cut", should_stop=lambda: seen.append(1) or len(seen) > training_polls)
    assert not (tmp_path / "cut" / "summary.json").exists()
    assert torch.load(tmp_path / "cut" / "last.pt", weights_only=True)["epoch"] == 3
    epochs = []
    resumed = run_fit(tiny_config, tmp_path / "cut", on_epoch=lambda e, rows: epochs.append(e))
    assert epochs == [] and resumed.resumed_from == 3
    assert resumed.metrics == full.metrics


def test_autotuning_is_on_by_default_and_off_on_request(tiny_config: Config, tmp_path: Path):
    """cuDNN picks its fastest deterministic convolution by timing (train.autotune, default on);
    train.autotune = false keeps bit-identical runs across processes."""
    run_fit(tiny_config, tmp_path / "a")
    assert torch.backends.cudnn.benchmark is True and torch.backends.cudnn.deterministic is True
    run_fit(replace(tiny_config, train={"autotune": False}), tmp_path / "b")
    assert torch.backends.cudnn.benchmark is False
    assert (tmp_path / "a" / "metrics.csv").read_text() == (tmp_path / "b" / "metrics.csv").read_text()  # on a CPU


def test_the_eager_forward_loss_function_gives_the_trainers_numbers(tiny_config: Config, tmp_path: Path):
    """The function train.compile compiles (model and loss together, annealing weights as
    tensors) is the trainer's eager step, number for number, when run uncompiled."""
    from psvae_opt.model.losses import anneal_weights, psvae_loss, term_weights
    from psvae_opt.training.steps import build_model, make_forward_loss

    torch.manual_seed(0)
    model = build_model(tiny_config.model, (1, 32, 32), 4, seed=0)
    x, y, mask = torch.rand(16, 1, 32, 32), torch.randn(16, 4), torch.ones(16, 4)
    cfg = replace(tiny_config, loss={"anneal_epochs": 10, "beta": 5.0})
    forward = make_forward_loss(cfg.loss, 1000, "fp32", None)
    for epoch in (0, 3, 9):
        torch.manual_seed(1)
        together = forward(model, x, y, mask, epoch)
        torch.manual_seed(1)
        out = model(x)
        kappa, beta_e = anneal_weights(epoch, 10, 5.0)
        weights = term_weights(cfg.loss.alpha, kappa, beta_e, 16, 32 * 32, 4)
        alone = psvae_loss(x, y, mask, out, weights=weights, n_frames=1000)
        assert all(torch.equal(a, b) for a, b in zip(together, alone))


@pytest.mark.slow
def test_compiled_and_eager_training_agree(tiny_config: Config, tmp_path: Path):
    """train.compile: the same code paths compiled (inductor on the CPU) give the same metrics,
    to float rounding (fused kernels sum in another order)."""
    cfg = replace(tiny_config, train={"max_epochs": 2})
    eager = run_fit(cfg, tmp_path / "eager")
    compiled = run_fit(replace(cfg, train={"compile": True}), tmp_path / "compiled")
    assert compiled.best_epoch == eager.best_epoch
    diffs = {
        (split, name): abs(compiled.metrics[split][name] - value) / max(abs(value), 1.0)
        for split, values in eager.metrics.items()
        for name, value in values.items()
    }
    # zu_corr, a correlation over the few frames of a split, moves most (0.008 here); every other
    # metric within 0.1% (2 epochs of a 4..8-channel model on 32x32 frames, 2 CPU cores)
    assert max(d for (_, name), d in diffs.items() if name != "zu_corr") < 2e-3, diffs
    assert max(d for (_, name), d in diffs.items() if name == "zu_corr") < 0.03, diffs
