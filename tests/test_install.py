"""scripts/install.sh picks the torch build for the machine: its choice, run as a dry run with
stand-in nvidia-smi executables and a wheel index served on the loopback address."""

from __future__ import annotations

import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from psvae_opt.training.gpus import PUBLISHED_CUDA_BUILDS, PUBLISHED_FOR, build_for_capability

REPO = Path(__file__).resolve().parents[1]
TORCH = re.search(r"^torch==(\S+)", (REPO / "constraints.txt").read_text(), re.M).group(1)
TOOLS = ("sed", "head", "timeout", "dirname", "id")  # what the script runs besides nvidia-smi and python


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory):
    """A wheel index on 127.0.0.1 with a torch page for the CPU build and each CUDA build PyTorch
    publishes for the pin (gpus.PUBLISHED_CUDA_BUILDS), and a cu128 page without it (as the real
    index, whose CUDA 12.8 builds stop before the pin); no wheels: the dry run only looks."""
    root = tmp_path_factory.mktemp("index")
    (root / "cu128" / "torch").mkdir(parents=True)
    (root / "cu128" / "torch" / "index.html").write_text("<a href='torch-2.11.0%2Bcu128-cp311.whl'>torch</a>")
    for tag in ("cpu", *PUBLISHED_CUDA_BUILDS):
        (root / tag / "torch").mkdir(parents=True)
        (root / tag / "torch" / "index.html").write_text(f"<a href='torch-{TORCH}+{tag}-cp311.whl'>torch</a>")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def machine(tmp_path: Path, smi: str | None) -> Path:
    """A PATH folder with the script's tools and, unless ``smi`` is None, a stand-in nvidia-smi
    (shell code); nothing else, so a real nvidia-smi of the test machine cannot interfere."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True)
    for tool in TOOLS:
        (bin_dir / tool).symlink_to(shutil.which(tool))
    if smi is not None:
        (bin_dir / "nvidia-smi").write_text(f"#!/bin/sh\n{smi}\n")
        (bin_dir / "nvidia-smi").chmod(0o755)
    return bin_dir


def driver(version: str = "570.86.15", caps: tuple[str, ...] | None = ("9.0",), cuda: str = "12.8") -> str:
    """nvidia-smi of driver ``version`` with GPUs of compute capabilities ``caps`` (None: a driver
    too old to answer the capability query); its header names the CUDA version ``cuda``."""
    query = (
        "; ".join(f"echo '{cap}'" for cap in caps)
        if caps is not None
        else "echo 'Field \"compute_cap\" is not a valid field to query.'; exit 2"
    )
    return (
        'case "$*" in *--query-gpu=compute_cap*) ' + query + "; exit 0 ;; esac\n"
        "echo '+-------------------------------------------------------------------------------+'\n"
        f"echo '| NVIDIA-SMI {version}    Driver Version: {version}    CUDA Version: {cuda}     |'"
    )


def dry_run(bin_dir: Path, index: str, args: tuple[str, ...] = (), **env: str) -> tuple[dict[str, str], str, int]:
    run_env = {
        "PATH": str(bin_dir),
        "HOME": os.environ.get("HOME", "/root"),
        "PYTHON": sys.executable,
        "PSVAE_OPT_INSTALL_DRY_RUN": "1",
        "PSVAE_OPT_TORCH_INDEX": index,
        **env,
    }
    out = subprocess.run(
        ["/bin/bash", str(REPO / "scripts" / "install.sh"), *args],
        env=run_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    fields = dict(line.split(": ", 1) for line in out.stdout.splitlines() if ": " in line)
    return fields, out.stderr, out.returncode


@pytest.mark.parametrize(
    "smi, build",
    [
        (None, "cpu"),  # no driver
        ("echo 'NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver.'; exit 9", "cpu"),
        (driver("570.86.15", ("9.0",)), "cu126"),  # R570: below CUDA 13's 580
        (driver("535.104.05", ("8.0",), cuda="12.2"), "cu126"),  # R535: a 12.x build (minor-version compatibility)
        (driver("550.54.15", ("9.0",), cuda="12.4"), "cu126"),
        (driver("525.60.13", ("8.6",), cuda="12.0"), "cu126"),
        (driver("580.65.06", ("9.0", "9.0"), cuda="13.0"), "cu130"),
        (driver("580.65.06", ("9.0", "7.0"), cuda="13.0"), "cu126"),  # a V100 among them: cu130 has no sm_70
        (driver("580.65.06", ("7.0",), cuda="13.0"), "cu126"),  # a V100
        (driver("575.51.03", ("6.0",), cuda="12.9"), "cu126"),  # a P100: only cu126 has Pascal kernels
        (driver("580.65.06", ("7.5",), cuda="13.0"), "cu130"),  # a T4
        (driver("550.54.15", None, cuda="12.4"), "cu126"),  # capability unknown: the widest build
    ],
)
def test_the_build_follows_the_driver(tmp_path: Path, index: str, smi: str | None, build: str):
    fields, err, code = dry_run(machine(tmp_path, smi), index)
    assert code == 0, err
    assert fields["build"] == build
    assert fields["pip"] == f"install --index-url {index}/{build} torch=={TORCH}+{build}"
    assert ("no NVIDIA driver" in err) == (build == "cpu")


def test_a_driver_older_than_every_build_is_refused(tmp_path: Path, index: str):
    fields, err, code = dry_run(machine(tmp_path, driver("470.82.01", ("8.0",), cuda="11.4")), index)
    assert code == 1 and not fields
    assert f"no CUDA build of torch {TORCH} runs here (driver 470, compute capability 8.0;" in err
    assert "set PSVAE_OPT_TORCH=cpu" in err
    fields, err, code = dry_run(machine(tmp_path / "kepler", driver("570.86.15", ("3.7",))), index)
    assert code == 1 and "compute capability 3.7" in err  # a K80: no build has its kernels


def test_a_login_node_without_driver_asks_for_the_build(tmp_path: Path, index: str):
    """A SLURM login node (sbatch, no driver) refuses to guess, since the GPU nodes run its .venv;
    --torch (or PSVAE_OPT_TORCH) chooses."""
    bin_dir = machine(tmp_path, None)
    (bin_dir / "sbatch").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "sbatch").chmod(0o755)
    fields, err, code = dry_run(bin_dir, index)
    assert code == 1 and not fields
    assert "no NVIDIA driver here, but sbatch is: on a SLURM login node choose the build" in err
    assert "--torch cu126" in err and "cu128" not in err
    fields, err, code = dry_run(bin_dir, index, args=("--torch", "cu126"))
    assert code == 0, err
    assert fields["build"] == "cu126" and fields["pip"] == f"install --index-url {index}/cu126 torch=={TORCH}+cu126"
    fields, err, code = dry_run(bin_dir, index, args=("test", "--torch=cpu"))
    assert code == 0 and fields["build"] == "cpu"
    # the tests and the demo run on this machine, so `install.sh test` (scripts/test.sh, CI) and
    # `install.sh here` (scripts/demo.sh) take the CPU build, and say how GPU nodes would get theirs
    for mode in ("test", "here"):
        fields, err, code = dry_run(bin_dir, index, args=(mode,))
        assert code == 0, err
        assert fields["build"] == "cpu" and "torch build cpu for this machine (no NVIDIA driver)" in err
        assert "install again with --torch cu126" in err
    _, err, code = dry_run(bin_dir, index, args=("--gpu",))
    assert code == 1 and "unknown argument --gpu" in err


@pytest.mark.parametrize(
    "choice, pip",
    [
        ("cu126", "install --index-url {index}/cu126 torch=={torch}+cu126"),
        ("cpu", "install --index-url {index}/cpu torch=={torch}+cpu"),
        ("pypi", "install -c constraints.txt torch"),
    ],
)
def test_the_variable_overrides_the_choice(tmp_path: Path, index: str, choice: str, pip: str):
    fields, err, code = dry_run(machine(tmp_path, driver()), index, PSVAE_OPT_TORCH=choice)
    assert code == 0, err
    assert fields["build"] == choice and fields["pip"] == pip.format(index=index, torch=TORCH)
    assert f"torch build {choice} (PSVAE_OPT_TORCH)" in err


def test_a_bad_override_is_refused(tmp_path: Path, index: str):
    for bad in ("cuda12", "cu128"):  # cu128: no such build of the pinned torch
        fields, err, code = dry_run(machine(tmp_path / bad, None), index, PSVAE_OPT_TORCH=bad)
        assert code == 1 and not fields
        assert f"--torch {bad}: torch {TORCH} is published for cpu and cu126 cu130 (as" in err


def test_an_unreachable_index_falls_back_to_pypi_at_once(tmp_path: Path):
    import socket

    with socket.socket() as s:  # a port nobody listens on: refused at once
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    fields, err, code = dry_run(machine(tmp_path, driver()), closed)
    assert code == 0, err
    assert fields["build"] == "cu126" and fields["pip"] == "install -c constraints.txt torch"
    assert f"the PyTorch index {closed}/cu126 cannot be reached: torch {TORCH} from PyPI instead" in err


def test_the_installed_torch_is_reported_and_kept_when_it_fits(tmp_path: Path, index: str):
    venv_python = REPO / ".venv" / "bin" / "python"
    if not venv_python.exists():
        pytest.skip("no .venv in the repository")
    from importlib.metadata import version

    installed = subprocess.run(
        [str(venv_python), "-c", "from importlib.metadata import version; print(version('torch'))"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    fields, err, code = dry_run(machine(tmp_path, None), index)
    assert code == 0 and fields["installed"] == installed
    expected = "keep" if installed.split("+")[0] == TORCH else "replace"
    assert fields["action"] == expected
    if installed.endswith("+cpu") and Path(sys.prefix) == REPO / ".venv":
        assert version("torch") == installed
        fields, _, _ = dry_run(machine(tmp_path / "gpu", driver()), index)
        assert fields["action"] == "replace"  # a CPU build where a driver is: replaced by the cu126 build


def table_builds() -> list[str]:
    """The tags of install.sh's TORCH_CUDA_BUILDS table."""
    table = re.search(r'^TORCH_CUDA_BUILDS="([^"]*)"', (REPO / "scripts" / "install.sh").read_text(), re.M).group(1)
    return [entry.split(":")[0] for entry in table.split()]


def test_every_build_named_is_published_for_the_pinned_torch():
    """The declared list is the pinned torch's (a new pin fails here until the list is updated),
    install.sh's table holds only its builds, and no file that advises a build names another."""
    assert TORCH == PUBLISHED_FOR, "constraints.txt pins another torch: update PUBLISHED_CUDA_BUILDS and the table"
    assert table_builds() and set(table_builds()) <= set(PUBLISHED_CUDA_BUILDS), table_builds()
    assert "cu126" in table_builds()  # the build of V100s and drivers 525-579
    named = {
        name: set(re.findall(r"\bcu\d{3}\b", (REPO / name).read_text()))
        for name in (
            "scripts/install.sh",
            "Dockerfile",
            "docker-compose.yml",
            "README.md",
            "psvae_opt/training/gpus.py",
        )
    }
    assert all(tags and tags <= set(PUBLISHED_CUDA_BUILDS) for tags in named.values()), named
    assert {build_for_capability(c) for c in ((5, 0), (6, 0), (7, 0), (7, 5), (9, 0), (12, 0))} <= set(table_builds())
    assert build_for_capability((7, 0)) == "cu126" and build_for_capability((9, 0)) == "cu130"


def test_a_build_missing_from_the_index_is_refused_before_pip(tmp_path: Path, index: str, monkeypatch):
    """A table naming a build the index does not publish for the pin stops in one line (not pip's
    "No matching distribution"): here install.sh with cu128 added, as it was."""
    script = (REPO / "scripts" / "install.sh").read_text()
    changed = re.sub(
        r'^TORCH_CUDA_BUILDS="[^"]*"', 'TORCH_CUDA_BUILDS="cu126:525:5.0 cu128:525:7.0"', script, flags=re.M
    )
    copy = tmp_path / "repo"
    (copy / "scripts").mkdir(parents=True)
    (copy / "scripts" / "install.sh").write_text(changed)
    shutil.copy(REPO / "constraints.txt", copy / "constraints.txt")
    monkeypatch.setattr(sys.modules[__name__], "REPO", copy)
    fields, err, code = dry_run(machine(tmp_path, driver("550.54.15", ("9.0",), cuda="12.4")), index)
    assert code == 1 and not fields.get("pip"), (fields, err)
    assert f"the PyTorch index {index}/cu128 lists no torch {TORCH}+cu128" in err
