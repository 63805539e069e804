"""Study files: parsing, validation with key paths, --set overrides, round trip."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from psvae_opt.config import Config, dump_config, load_config, load_config_text, parse_override, replace, toml_string
from psvae_opt.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_defaults_are_behavenets_architecture_and_the_guides_grids():
    cfg = load_config(None)
    assert cfg.model.channels == (32, 64, 128, 256, 512)
    assert cfg.model.strides == (2, 2, 2, 2, 5)
    assert cfg.model.kernel_size == 5
    assert cfg.stage1.alphas == (50.0, 100.0, 500.0, 1000.0)
    assert cfg.stage2.betas == (1.0, 5.0, 10.0, 20.0)
    assert cfg.train.learning_rate == 1e-4
    assert cfg.loss.anneal_epochs == 100
    assert cfg.data.split_counts == (8, 1, 1, 0)


def test_dump_then_load_gives_the_same_config(tmp_path: Path):
    cfg = load_config(None, ["model.n_unsup=3", "loss.alpha=50", 'data.path=x y/"q".h5', "stage1.n_unsup=[2, 4]"])
    path = tmp_path / "c.toml"
    path.write_text(dump_config(cfg))
    assert load_config(path) == cfg


@pytest.mark.parametrize(
    "text",
    ["plain", 'say "hi"', "C:\\runs\\new", "two\nlines\r\n", "tab\there", "bell\x07 del\x7f nul\x00", "é 名 🐭", ""],
)
def test_every_string_is_written_as_toml_that_reads_back_identical(text: str):
    assert tomllib.loads(f"v = {toml_string(text)}")["v"] == text


def test_a_config_with_awkward_strings_reads_back_unchanged():
    awkward = 'a "b"\n\tc\\d\x01'  # quotes, newline, tab, backslash, a control character
    cfg = replace(load_config(None), study={"runs_dir": "runs\nold"}, data={"path": awkward})
    assert load_config_text(dump_config(cfg), "test") == cfg


@pytest.mark.parametrize("study", sorted((REPO / "studies").glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_study_file_parses(study: Path):
    assert isinstance(load_config(study), Config)


def test_unknown_key_is_refused_with_its_path(tmp_path: Path):
    path = tmp_path / "bad.toml"
    path.write_text("[model]\nchanels = [1, 2]\n")
    with pytest.raises(ConfigError, match=r"bad.toml: model.chanels: unknown key \(known: .*channels"):
        load_config(path)


def test_unknown_section_is_refused(tmp_path: Path):
    path = tmp_path / "bad.toml"
    path.write_text("[modle]\nn_unsup = 2\n")
    with pytest.raises(ConfigError, match=r"modle: unknown key"):
        load_config(path)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.max_epochs=ten", r"train.max_epochs: expected int, got str 'ten'"),
        ("train.max_epochs=2.5", r"train.max_epochs: expected int, got float 2.5"),
        ('model.channels=[8, "x"]', r"model.channels\[1\]: expected int, got str"),
        ("model.channels=8", r"model.channels: expected a list of int, got int 8"),
        ("train.deterministic=1", r"train.deterministic: expected bool, got int 1"),
        ("model.strides=[2, 2]", r"model.strides: has 2 entries but model.channels has 5"),
        ('loss.kl_estimator="exact"', r"loss.kl_estimator: 'exact' is not one of mss, mws"),
        ('data.split="8;1"', r"data.split: '8;1' is not 'train;val;test;gap'"),
        ('stage1.sampler="random"', r"stage1.sampler: 'random' is not one of grid, tpe, nsga2"),
        ("train.model_seed=-1", r"train.model_seed: must be >= 0"),
        ("data.data_seed=-2", r"data.data_seed: must be >= 0"),
        ("stage1.model_seed=-1", r"stage1.model_seed: must be >= 0"),
    ],
)
def test_wrong_values_are_refused_with_their_path(override: str, message: str):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_overrides_parse_toml_values_and_keep_bare_strings():
    assert parse_override("data.path=FILE.h5") == (["data", "path"], "FILE.h5")
    assert parse_override("train.max_epochs=7") == (["train", "max_epochs"], 7)
    assert parse_override("loss.alpha=1e3") == (["loss", "alpha"], 1000.0)
    assert parse_override("stage1.n_unsup=[2,3]") == (["stage1", "n_unsup"], [2, 3])
    cfg = load_config(None, ["data.path=FILE.h5", "train.max_epochs=7", "loss.alpha=500"])
    assert (cfg.data.path, cfg.train.max_epochs, cfg.loss.alpha) == ("FILE.h5", 7, 500.0)


def test_overrides_apply_on_top_of_the_file(tmp_path: Path):
    path = tmp_path / "c.toml"
    path.write_text("[train]\nmax_epochs = 100\nbatch_size = 32\n")
    cfg = load_config(path, ["train.max_epochs=3"])
    assert (cfg.train.max_epochs, cfg.train.batch_size) == (3, 32)


@pytest.mark.parametrize("text", ["max_epochs=3", "train=3", "a.b.c=1", ".x=1"])
def test_malformed_overrides_are_refused(text: str):
    with pytest.raises(ConfigError, match="--set"):
        load_config(None, [text])


def test_missing_and_invalid_files_are_refused(tmp_path: Path):
    with pytest.raises(ConfigError, match="study file not found"):
        load_config(tmp_path / "none.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
