"""No wrong answer from a broken run (issue 16): paths from the database and the study file,
foreign studies, read-only commands, and the one-line refusals."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from psvae_opt.config import dump_config, load_config, load_config_text
from psvae_opt.errors import ConfigError, StorageError
from psvae_opt.reports import dashboard
from psvae_opt.search.objective import run_dir_of
from psvae_opt.search.storage import open_database
from tests.conftest import one_line_error, run_cli_unprivileged


def tiny_study_file(tmp_path: Path, data: Path, name: str = "t") -> Path:
    path = tmp_path / "study.toml"
    path.write_text(
        f'[study]\nname = "{name}"\nruns_dir = "{tmp_path / "runs"}"\n'
        f'[data]\npath = "{data}"\nsplit = "3;1;1;0"\n'
        "[model]\nchannels = [4, 8, 8, 8, 8]\n"
        "[train]\nmax_epochs = 2\nbatch_size = 16\n"
        "[stage1]\nalphas = [50.0]\nn_unsup = [2]\n"
    )
    return path


@pytest.mark.parametrize("name", ["../../escaped", "a/b", "two\nlines", "..", ".hidden", "with space", "x" * 101])
def test_unsafe_study_names_are_refused(name: str, tmp_path: Path, cli):
    r = cli("stage1", "--config", tiny_study_file(tmp_path, tmp_path / "no.h5"), "--set", f"study.name={name!r}")
    assert "study.name" in one_line_error(r)
    assert not (tmp_path / "runs").exists() and not list(tmp_path.glob("*.db"))


def test_the_written_config_escapes_every_string():
    text = 'a "quoted" \\ back\nslash\ttab\x00nul\x7fdel\u00e9\U0001f600'
    cfg = load_config(None, ["data.path='x'"])
    cfg = load_config_text(dump_config(cfg).replace('path = "x"', f"path = {_quoted(text)}"), "t")
    assert cfg.data.path == text
    assert load_config_text(dump_config(cfg), "again") == cfg


def _quoted(text: str) -> str:
    from psvae_opt.config.study_file import toml_string

    return toml_string(text)


@pytest.mark.parametrize("key", ["../../../../../somewhere", "..", "a/b", "", "x\ny"])
def test_a_run_key_from_the_database_cannot_lead_outside_the_runs_folder(key: str, tmp_path: Path):
    cfg = load_config(None, [f"study.runs_dir='{tmp_path / 'runs'}'"])
    with pytest.raises(StorageError, match="run_key"):
        run_dir_of(cfg, 1, 3, key)
    assert run_dir_of(cfg, 1, 3, "20261205-131214") == tmp_path / "runs" / "psvae-stage1" / "20261205-131214" / (
        "trial_0003"
    )


def test_a_recorded_artifact_folder_must_lie_in_the_runs_folder(tmp_path: Path):
    cfg = load_config(None, [f"study.runs_dir='{tmp_path / 'runs'}'"])
    study = optuna.create_study(directions=["minimize", "minimize"])
    study.set_user_attr(dashboard.ARTIFACT_ATTR, str(tmp_path / "runs" / "artifacts"))
    assert dashboard.artifact_dir([study], cfg, writing=True) == tmp_path / "runs" / "artifacts"
    study.set_user_attr(dashboard.ARTIFACT_ATTR, str(tmp_path / "runs" / ".." / "elsewhere"))
    with pytest.raises(StorageError, match="outside"):
        dashboard.artifact_dir([study], cfg, writing=True)  # a worker uploads nowhere else
    # the operator's own choice ($PSVAE_OPT_ARTIFACTS, read at the command edge)
    assert dashboard.artifact_dir([study], cfg, str(tmp_path / "elsewhere"), writing=True) == tmp_path / "elsewhere"


def test_a_worker_refuses_a_tampered_run_key_before_any_trial(tiny_h5: Path, tmp_path: Path, cli):
    url = f"sqlite:///{tmp_path / 's.db'}"
    config = tiny_study_file(tmp_path, tiny_h5)
    assert cli("stage1", "--config", config, "--storage", url, "--workers", "0").code == 0
    study = optuna.load_study(study_name="t-stage1", storage=open_database(url).storage)
    study.set_user_attr("run_key", "../../../../../somewhere")
    r = cli("worker", "--config", config, "--storage", url, "--stage", "1")
    assert "run_key" in one_line_error(r)
    assert [t.state for t in study.get_trials()] == [optuna.trial.TrialState.WAITING]
    assert not list(tmp_path.parent.glob("somewhere*")) and not list((tmp_path / "runs").glob("*/*/trial_*"))


def test_config_error_names_the_key():
    with pytest.raises(ConfigError, match="study.name"):
        load_config(None, ["study.name='a\nb'"])


@pytest.mark.parametrize(
    "directions, attrs, why",
    [
        (["maximize", "maximize"], {}, "directions are maximize, maximize"),
        (["minimize"], {}, "directions are minimize"),
        (["minimize", "minimize"], {"stage": 2, "run_key": "k"}, "stage-2 study"),
        (["minimize", "minimize"], {}, "not psvae-opt's study attributes"),
    ],
)
def test_a_foreign_study_of_the_same_name_is_refused(directions, attrs, why, tmp_path: Path, cli, tiny_h5: Path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    foreign = optuna.create_study(storage=open_database(url).storage, study_name="t-stage1", directions=directions)
    for key, value in attrs.items():
        foreign.set_user_attr(key, value)
    foreign.add_trial(optuna.trial.create_trial(values=[1.0] * len(directions)))
    config = tiny_study_file(tmp_path, tiny_h5)
    for args in (["stage1", "--workers", "0"], ["export", "--stage", "1", "--out", tmp_path / "out"], ["status"]):
        line = one_line_error(cli(*args, "--config", config, "--storage", url))
        assert "'t-stage1'" in line and why in line
    assert len(foreign.get_trials()) == 1 and foreign.user_attrs == attrs  # nothing queued or recorded
    assert not (tmp_path / "out").exists()


def _journal_mode(path: Path) -> str:
    import sqlite3

    with sqlite3.connect(path) as conn:
        return conn.execute("PRAGMA journal_mode").fetchone()[0]


def test_read_only_commands_refuse_an_empty_file_and_create_nothing(tmp_path: Path, cli):
    db = tmp_path / "empty.db"
    db.touch()
    url = f"sqlite:///{db}"
    for args in (
        ["status"],
        ["export", "--stage", "1", "--out", tmp_path / "out"],
        ["report", "curves", "--stage", "1"],
    ):
        line = one_line_error(cli(*args, "--storage", url, "--config", tiny_study_file(tmp_path, tmp_path / "x.h5")))
        assert "no psvae-opt studies" in line, line
    assert db.stat().st_size == 0 and not (tmp_path / "out").exists()


def test_status_and_export_change_nothing_in_the_database(tiny_h5: Path, tmp_path: Path, cli):
    import hashlib
    import sqlite3

    path = tmp_path / "s.db"
    url, config = f"sqlite:///{path}", tiny_study_file(tmp_path, tiny_h5)
    queue = run_cli_unprivileged(["stage1", "--config", config, "--storage", url, "--workers", "0"], cwd=tmp_path)
    assert queue.code == 0, queue.err
    with sqlite3.connect(path) as conn:  # a database that is not in WAL mode (an older version's)
        conn.execute("PRAGMA journal_mode=DELETE")
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    r = cli("status", "--config", config, "--storage", url)
    assert r.code == 0 and "waiting 1" in r.out
    one_line_error(cli("export", "--config", config, "--storage", url, "--stage", "1", "--out", tmp_path / "out"))
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before and _journal_mode(path) == "delete"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("s.db")) == ["s.db"]


def test_status_reads_a_database_in_a_folder_it_cannot_write(tiny_h5: Path, tmp_path: Path, cli):
    folder = tmp_path / "ro"
    folder.mkdir()
    url, config = f"sqlite:///{folder / 's.db'}", tiny_study_file(tmp_path, tiny_h5)
    queue = run_cli_unprivileged(["stage1", "--config", config, "--storage", url, "--workers", "0"], cwd=tmp_path)
    assert queue.code == 0, queue.err
    assert _journal_mode(folder / "s.db") == "wal"
    folder.chmod(0o555)
    try:
        r = run_cli_unprivileged(["status", "--config", config, "--storage", url], cwd=tmp_path)
    finally:
        folder.chmod(0o755)
    assert r.code == 0 and "stage 1: t-stage1: waiting 1" in r.out, r.err


@pytest.mark.slow
def test_read_only_commands_create_no_tables_in_an_empty_postgres_database(postgres, tmp_path: Path, cli):
    import psycopg

    with psycopg.connect(f"host=127.0.0.1 port={postgres.port} user=postgres dbname=postgres", autocommit=True) as c:
        c.execute("DROP DATABASE IF EXISTS i16_empty")
        c.execute("CREATE DATABASE i16_empty")
    url = postgres.url.rsplit("/", 1)[0] + "/i16_empty"
    config = tiny_study_file(tmp_path, tmp_path / "x.h5")
    for args in (["status"], ["export", "--stage", "1", "--out", tmp_path / "out"]):
        assert "no psvae-opt studies" in one_line_error(cli(*args, "--storage", url, "--config", config))
    with psycopg.connect(f"host=127.0.0.1 port={postgres.port} user=postgres dbname=i16_empty") as conn:
        tables = conn.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema='public'").fetchone()
    assert tables == (0,)


def test_a_password_on_the_command_line_is_warned_about_and_never_shown(tmp_path: Path, cli, caplog):
    config = tiny_study_file(tmp_path, tmp_path / "x.h5")
    r = cli("status", "--config", config, "--storage", "postgresql+psycopg://u:s3cret@127.0.0.1:1/db")
    assert "s3cret" not in one_line_error(r) + r.out + caplog.text
    assert "PSVAE_OPT_STORAGE or the password in ~/.pgpass" in caplog.text
    caplog.clear()
    cli("status", "--config", config, "--storage", "postgresql+psycopg://u@127.0.0.1:1/db")
    assert "~/.pgpass" not in caplog.text


def _nothing_created(tmp_path: Path) -> None:
    assert not list(tmp_path.glob("*.db")) and not (tmp_path / "runs").exists()


def test_a_study_file_that_is_a_folder_or_not_utf8_is_one_line(tmp_path: Path, cli):
    assert "a folder, not a study file" in one_line_error(cli("stage1", "--config", tmp_path, "--workers", "0"))
    latin = tmp_path / "latin.toml"
    latin.write_bytes('[study]\nname = "caf\xe9"\n'.encode("latin-1"))
    assert "not a UTF-8 text file" in one_line_error(cli("status", "--config", latin))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latin.toml"]


def test_a_malformed_cuda_device_is_one_line(tmp_path: Path, cli):
    config = tiny_study_file(tmp_path, tmp_path / "x.h5")
    for device in ("cuda:x", "cuda:", "cuda:0x"):
        line = one_line_error(cli("stage1", "--config", config, "--workers", "0", "--set", f"train.device='{device}'"))
        assert "train.device" in line
    _nothing_created(tmp_path)


def test_a_runs_dir_that_cannot_hold_folders_is_refused_before_the_database(tiny_h5: Path, tmp_path: Path, cli):
    config = tiny_study_file(tmp_path, tiny_h5)
    (tmp_path / "afile").write_text("")
    url = f"sqlite:///{tmp_path / 's.db'}"
    for runs_dir, why in ((tmp_path / "afile", "is a file"), (tmp_path / "afile" / "sub", "is a file")):
        r = cli(
            "stage1", "--config", config, "--storage", url, "--workers", "0", "--set", f"study.runs_dir='{runs_dir}'"
        )
        assert why in one_line_error(r)
    r = cli(
        "stage1",
        "--config",
        config,
        "--storage",
        url,
        "--workers",
        "0",
        "--set",
        f"study.runs_dir='{tmp_path / ('r' * 300)}'",
    )
    assert "exceeds the file system's" in one_line_error(r)
    _nothing_created(tmp_path)


def test_a_bad_heartbeat_variable_is_refused_by_the_launcher(tiny_h5: Path, tmp_path: Path, cli, monkeypatch):
    monkeypatch.setenv("PSVAE_OPT_HEARTBEAT", "abc")
    url = f"sqlite:///{tmp_path / 's.db'}"
    line = one_line_error(cli("stage1", "--config", tiny_study_file(tmp_path, tiny_h5), "--storage", url))
    assert "PSVAE_OPT_HEARTBEAT='abc'" in line
    _nothing_created(tmp_path)


def test_status_into_a_closed_pipe_ends_quietly(tiny_h5: Path, tmp_path: Path):
    import subprocess
    import sys

    config, url = tiny_study_file(tmp_path, tiny_h5), f"sqlite:///{tmp_path / 's.db'}"
    assert run_cli_unprivileged(["stage1", "--config", config, "--storage", url, "--workers", "0"], tmp_path).code == 0
    status = f"{sys.executable} -m psvae_opt.cli status --config {config} --storage {url}"
    # the reader is gone before the first line: `head -c 0` exits at once
    r = subprocess.run(
        ["bash", "-c", f"{status} | (exec 0<&-; sleep 0); echo ${{PIPESTATUS[0]}} >&2"],
        capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[1],
    )  # fmt: skip
    assert "Traceback" not in r.stderr and "BrokenPipeError" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines()[-1] in ("0", "141")


def test_the_cause_of_a_failed_commit_is_shown_not_optunas_wrapper():
    import sqlalchemy

    from psvae_opt.search.storage import error_line

    cause = sqlalchemy.exc.OperationalError("COMMIT", {}, Exception("server closed the connection unexpectedly"))
    try:
        try:
            raise cause
        except sqlalchemy.exc.OperationalError as exc:
            raise optuna.exceptions.StorageInternalError(
                "An exception is raised during the commit. This typically happens due to invalid data in the commit, "
                "e.g. exceeding max length."
            ) from exc
    except optuna.exceptions.StorageInternalError as wrapped:
        assert error_line(wrapped) == "server closed the connection unexpectedly"


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, tiny_h5: Path) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("finished")
    config = tiny_study_file(root, tiny_h5)
    url = f"sqlite:///{root / 's.db'}"
    r = run_cli_unprivileged(["stage1", "--config", config, "--storage", url, "--workers", "1"], root)
    assert r.code == 0, r.err
    return config, url


@pytest.mark.slow
@pytest.mark.parametrize(
    "command, options",
    [
        ("traversal", ["--steps", "1"]),
        ("traversal", ["--frame", "100000"]),
        ("traversal", ["--frame", "-1"]),
        ("movie", ["--steps", "1"]),
        ("movie", ["--frames", "100000"]),
        ("movie", ["--fps", "0"]),
        ("labels", ["--trials", "999"]),
        ("labels", ["--labels", "no_such_label"]),
    ],
)
def test_a_refused_report_option_leaves_no_out_folder(command, options, finished, tmp_path: Path, cli):
    config, url = finished
    out = tmp_path / "new" / "reports"
    r = cli("report", command, "--config", config, "--storage", url, "--stage", "1", "--out", out, *options)
    one_line_error(r)
    assert not (tmp_path / "new").exists()
