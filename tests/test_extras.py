"""A missing optional extra: every format, importer and option that needs one is refused in one
line naming the extra and its pip command, before any work is done and with nothing written.

Each case hides one module of an extra from Python (``sys.modules[name] = None`` is what an
import sees where a package is not installed) and runs the command as a user would.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

from psvae_opt.errors import EXTRAS, MissingExtraError, missing_modules, require_extra
from tests.conftest import one_line_error
from tests.test_data_pose_files import write_pose_nwb, write_slp
from tests.test_inference import make_bundle
from tests.test_search import study_file

ROOT = Path(__file__).resolve().parents[1]
# pip distribution name -> the top-level module it installs
MODULE_OF = {"sleap-io": "sleap_io", "ndx-pose": "ndx_pose", "optuna-integration": "optuna_integration"}
MODULE_OF["mlflow-skinny"] = "mlflow"


def pip_line(extra: str) -> str:
    return f"pip install 'psvae-opt[{extra}]'"


def test_the_extras_table_is_pyprojects():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    declared = {
        name: {MODULE_OF.get(d, d) for d in (re.split(r"[<>=!~\[ ]", dep)[0] for dep in deps)}
        for name, deps in extras.items()
        if name != "test"
    }
    assert declared == {name: set(modules) for name, modules in EXTRAS.items()}


def test_require_extra_names_the_missing_module_and_the_pip_command(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "pynwb", None)
    assert missing_modules(["pynwb", "numpy", "no_such_module_here", "no_such.child"]) == [
        "pynwb",
        "no_such_module_here",
        "no_such.child",
    ]
    with pytest.raises(MissingExtraError) as caught:
        require_extra("nwb output", "poses", ("pynwb",))
    assert str(caught.value) == f"nwb output needs the poses extra (pynwb is not installed): {pip_line('poses')}"
    require_extra("npz output", "poses", ("numpy",))  # installed: no error


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from psvae_opt.data import synth_session

    return synth_session(tmp_path_factory.mktemp("data") / "s.h5", size=32, trials=5, frames=10, seed=2)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory, session: Path) -> Path:
    return make_bundle(tmp_path_factory.mktemp("bundle") / "model", session)


@pytest.mark.parametrize("module", ["pynwb"])
def test_nwb_output_without_the_extra_is_refused_before_the_model_loads(
    module: str, tmp_path: Path, session: Path, bundle: Path, cli, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setitem(sys.modules, module, None)
    out = tmp_path / "encoded"
    for extra_args in ([], ["--nwb-source", str(session)]):
        line = one_line_error(
            cli("encode", "--model", bundle, "--out", out, session, "--format", "npz,nwb", *extra_args)
        )
        assert line == f"psvae-opt: error: nwb output needs the poses extra ({module} is not installed): " + pip_line(
            "poses"
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no --out, no staging folder


def test_nwb_source_needs_nwb_among_the_formats(tmp_path: Path, session: Path, bundle: Path, cli):
    line = one_line_error(cli("encode", "--model", bundle, "--out", tmp_path / "o", session, "--nwb-source", session))
    assert line.endswith("--nwb-source: give --format with nwb (the file the latents are appended to)")
    assert not (tmp_path / "o").exists()


def _slp(tmp_path: Path) -> Path:
    xy = np.random.default_rng(10).uniform(0, 30, (4, 1, 2, 2))
    return write_slp(tmp_path / "p.slp", xy, np.ones((4, 1, 2)), tracks=None)


def _nwb(tmp_path: Path) -> Path:
    xy = np.random.default_rng(11).uniform(0, 30, (6, 2, 2))
    return write_pose_nwb(tmp_path / "p.nwb", {"pe": (xy, None)}, timestamps=np.arange(6) / 30)


@pytest.mark.parametrize(
    "module, make, fmt",
    [("sleap_io", _slp, "sleap-slp"), ("pynwb", _nwb, "nwb"), ("ndx_pose", _nwb, "nwb")],
)
def test_a_pose_file_whose_reader_needs_the_extra_is_refused_before_any_file_is_read(
    module, make, fmt, tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch
):
    labels = make(tmp_path)
    monkeypatch.setitem(sys.modules, module, None)
    video = tmp_path / "missing.mp4"  # never opened: the labels are checked first
    line = one_line_error(cli("data", "import", "--video", video, "--labels", labels, "--out", tmp_path / "o.h5"))
    assert line == (
        f"psvae-opt: error: {labels}: reading {fmt} files needs the poses extra ({module} is not installed): "
        + pip_line("poses")
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [labels.name]


def test_with_two_views_the_second_files_extra_is_checked_before_the_first_is_read(
    tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch
):
    csv = tmp_path / "a.csv"
    # a DeepLabCut CSV whose first row is damaged: reading it first would refuse that instead
    csv.write_text("scorer,me,me,me\nbodyparts,nose,nose,nose\ncoords,x,y,likelihood\n0,1\n")
    slp = _slp(tmp_path)
    monkeypatch.setitem(sys.modules, "sleap_io", None)
    top, side = tmp_path / "top.mp4", tmp_path / "side.mp4"  # never opened
    args = ("data", "import", "--video", top, "--video", side, "--labels", csv, "--labels", slp)
    line = one_line_error(cli(*args, "--out", tmp_path / "o.h5"))
    assert "reading sleap-slp files needs the poses extra (sleap_io is not installed)" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "p.slp"]


@pytest.mark.parametrize("module", ["mlflow", "optuna_integration"])
def test_mlflow_logging_without_the_extra_is_refused_before_any_database(
    module: str, tiny_h5: Path, tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setitem(sys.modules, module, None)
    config = study_file(tmp_path, tiny_h5)
    uri = tmp_path / "mlruns"
    db = tmp_path / "s.db"
    line = one_line_error(
        cli("stage1", "--config", config, "--storage", f"sqlite:///{db}", "--set", f"study.mlflow_uri={uri}")
    )
    assert line == (
        f"psvae-opt: error: study.mlflow_uri = '{uri}' needs the mlflow extra ({module} is not installed): "
        + pip_line("mlflow")
    )
    assert not db.exists() and not (tmp_path / "runs").exists() and not uri.exists()


def test_a_compressed_deeplabcut_h5_without_the_extra_is_one_line(tmp_path: Path):
    import pandas as pd

    columns = pd.MultiIndex.from_product([["me"], ["nose"], ["x", "y", "likelihood"]])
    pd.DataFrame(np.ones((3, 3)), columns=columns).to_hdf(
        tmp_path / "b.h5", key="df_with_missing", format="table", complib="blosc", complevel=5
    )
    # a fresh interpreter: once hdf5plugin is imported, its filters stay registered in the process
    code = (
        "import sys; sys.modules['hdf5plugin'] = None\n"
        "from psvae_opt.cli import main\n"
        "sys.exit(main(['data', 'import', '--video', 'v.mp4', '--labels', 'b.h5', '--out', 'o.h5']))"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.splitlines() == [
        "psvae-opt: error: b.h5: the DataFrame is compressed with blosc (32001), which needs the poses extra to "
        "decode: pip install 'psvae-opt[poses]', or save it with complib='zlib' or as CSV"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.h5"]


COVERED = {"pynwb", "sleap_io", "ndx_pose", "mlflow", "optuna_integration", "hdf5plugin"}


def test_every_module_of_every_extra_has_a_case_above():
    assert COVERED == {m for modules in EXTRAS.values() for m in modules}
