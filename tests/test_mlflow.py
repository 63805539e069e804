"""study.mlflow_uri: every complete trial logged to MLflow; bad URIs and a missing extra refused in one line."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from psvae_opt.search.storage import open_database
from tests.conftest import one_line_error
from tests.test_search import study_file

EXTRA = ("mlflow", "optuna_integration")


@pytest.fixture
def mlflow_client(monkeypatch: pytest.MonkeyPatch):
    """A function: tracking URI -> MlflowClient (skipped only outside CI when the extra is missing)."""
    missing = [m for m in EXTRA if importlib.util.find_spec(m) is None]
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"{', '.join(missing)} not installed; pip install -c constraints.txt -e '.[mlflow]'")
        pytest.skip(f"{', '.join(missing)} not installed (the mlflow extra)")
    import mlflow

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # reading a file store needs it too
    return mlflow.MlflowClient


def _stage1(cli, tmp_path: Path, data: Path, uri: str):
    config = study_file(tmp_path, data, epochs=2, alphas=(50.0, 1000.0), n_unsup=(2,))
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    r = cli("stage1", "--config", config, "--storage", url, "--workers", "1", "--set", f"study.mlflow_uri={uri}")
    assert r.code == 0, r.err
    study = optuna.load_study(study_name="t-stage1", storage=open_database(url).storage)
    return study, study.get_trials(states=(TrialState.COMPLETE,))


@pytest.mark.slow
def test_each_complete_trial_is_one_mlflow_run_with_its_parameters_and_values(
    mlflow_client, tiny_h5: Path, tmp_path: Path, cli
):
    uri = f"file://{tmp_path / 'mlruns'}"
    study, trials = _stage1(cli, tmp_path, tiny_h5, uri)
    assert len(trials) == 2
    client = mlflow_client(uri)
    experiment = client.get_experiment_by_name("t-stage1")  # named after the study
    runs = {int(r.data.tags["number"]): r for r in client.search_runs([experiment.experiment_id])}
    assert sorted(runs) == sorted(t.number for t in trials)  # one run per complete trial
    for t in trials:
        run = runs[t.number]
        assert run.info.run_name == str(t.number) and run.data.tags["state"] == "COMPLETE"
        assert run.data.params == {k: str(t.params[k]) for k in ("alpha", "n_unsup", "seed")}
        # the stage's two objectives under their names, and the main metrics
        assert [run.data.metrics["pixel_mse"], run.data.metrics["label_mse"]] == pytest.approx(t.values)
        for key in ("val_label_r2", "val_icmi", "train_zu_corr", "mig", "test_label_mse"):
            assert run.data.metrics[key] == pytest.approx(t.user_attrs[key])
        assert run.data.tags["run_dir"] == t.user_attrs["run_dir"]  # user attributes as tags


@pytest.mark.slow
def test_an_unreachable_tracking_store_leaves_the_trials_complete(mlflow_client, tiny_h5: Path, tmp_path: Path, cli):
    study, trials = _stage1(cli, tmp_path, tiny_h5, "file:///proc/psvae-opt-mlruns")  # no folder can be made there
    assert len(trials) == 2 and not study.get_trials(states=(TrialState.FAIL,))
    log = (tmp_path / "runs" / "t-stage1" / "workers" / "worker-0.log").read_text()
    assert log.count(": on_complete hook failed (") == 2


def test_a_missing_mlflow_extra_is_refused_before_any_database(
    tiny_h5: Path, tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # what Python sees where mlflow is not installed
    config = study_file(tmp_path, tiny_h5)
    line = one_line_error(
        cli(
            "stage1",
            "--config",
            config,
            "--storage",
            f"sqlite:///{tmp_path / 's.db'}",
            "--set",
            f"study.mlflow_uri={tmp_path / 'mlruns'}",
        )
    )
    assert f"study.mlflow_uri = '{tmp_path / 'mlruns'}' needs the mlflow extra (" in line
    assert "pip install 'psvae-opt[mlflow]'" in line
    assert not (tmp_path / "s.db").exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("uri", ["sqlite:///mlflow.db", "ftp://host/mlruns"])
def test_a_tracking_uri_of_another_scheme_is_refused_in_one_line(uri: str, tiny_h5: Path, tmp_path: Path, cli):
    config = study_file(tmp_path, tiny_h5)
    line = one_line_error(cli("stage1", "--config", config, "--set", f"study.mlflow_uri={uri}"))
    assert f"study.mlflow_uri: '{uri}': give a local folder, file:///PATH or http(s)://HOST:PORT" in line
