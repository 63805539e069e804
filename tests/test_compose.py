"""docker-compose.yml: valid, and its services run the CLI commands the tests run natively."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from psvae_opt.cli import build_parser

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def compose() -> dict:
    if not shutil.which("docker-compose"):
        if os.environ.get("CI"):
            pytest.fail("docker-compose is not installed; scripts/system-deps.sh installs it")
        pytest.skip("docker-compose is not installed")
    import yaml

    env = dict(os.environ, POSTGRES_PASSWORD="from-the-environment")
    out = subprocess.run(
        ["docker-compose", "-f", str(REPO / "docker-compose.yml"), "config"], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)  # the file as compose resolved it (anchors, variables)


def test_the_compose_file_validates_and_needs_a_password():
    if not shutil.which("docker-compose"):
        pytest.skip("docker-compose is not installed")
    env = {k: v for k, v in os.environ.items() if k != "POSTGRES_PASSWORD"}
    out = subprocess.run(
        ["docker-compose", "-f", str(REPO / "docker-compose.yml"), "config", "-q"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode != 0 and "set POSTGRES_PASSWORD" in out.stderr
    env["POSTGRES_PASSWORD"] = "x"
    assert (
        subprocess.run(["docker-compose", "-f", str(REPO / "docker-compose.yml"), "config", "-q"], env=env).returncode
        == 0
    )


def _psvae_commands(service: dict) -> list[list[str]]:
    command = service["command"]
    if service.get("entrypoint") == ["sh", "-c"]:
        return [shlex.split(part)[1:] for part in " ".join(command).split("&&")]
    return [list(command)]


def test_every_service_command_is_a_valid_psvae_opt_command(compose: dict):
    parser = build_parser()
    commands = {name: _psvae_commands(s) for name, s in compose["services"].items() if name != "postgres"}
    assert [c[0] for c in commands["init"]] == ["data", "stage1", "stage2", "export", "export"]
    assert commands["worker"][0][:1] == ["worker"] and commands["dashboard"][0][:1] == ["dashboard"]
    for name, cmds in commands.items():
        for argv in cmds:
            args = parser.parse_args(argv)  # exits (fails the test) on an unknown option
            assert callable(args.run), (name, argv)
    synth = parser.parse_args(commands["init"][0])
    assert synth.if_missing and synth.out == "demo/demo.h5"  # the demo study's data.path, written once
    init = parser.parse_args(commands["init"][1])
    assert (init.workers, init.wait) == (0, True)  # creates and queues; the workers train
    worker = parser.parse_args(commands["worker"][0])
    assert worker.gpu == "auto" and worker.stage == [1, 2]


def test_services_are_wired_for_a_gpu_server(compose: dict):
    services = compose["services"]
    pg = services["postgres"]
    assert pg["environment"]["POSTGRES_PASSWORD"] == "from-the-environment"
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    assert any(str(v).startswith("pgdata:/var/lib/postgresql/data") for v in pg["volumes"])  # a named volume
    for name in ("postgres", "dashboard"):
        for port in services[name]["ports"]:
            host_ip = port.get("host_ip") if isinstance(port, dict) else port.split(":")[0]
            assert host_ip == "127.0.0.1", (name, port)
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    # every replica sees every GPU (compose cannot hand replicas different ones); --gpu auto
    # spreads them, through lock files on a folder all workers of the host share
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    assert services["worker"]["environment"]["PSVAE_OPT_GPU_LOCKS"].startswith("/work/demo/")
    assert any(str(v).endswith(":/work/demo") or "/work/demo" in str(v) for v in services["worker"]["volumes"])
    assert "ports" not in services["worker"]  # workers scale: nothing to collide on
    for name in ("init", "worker", "dashboard"):
        url = services[name]["environment"]["PSVAE_OPT_STORAGE"]
        assert url == "postgresql+psycopg://psvae:from-the-environment@postgres:5432/psvae"
    assert "pgdata" in compose["volumes"]
    for name in ("init", "worker", "dashboard"):  # one OpenMP thread per core of the host in every replica, else
        assert services[name]["environment"]["OMP_NUM_THREADS"] == "2"
    assert services["init"]["init"] is True  # its own entrypoint (sh -c) bypasses the image's init


def test_the_image_runs_psvae_opt_under_an_init():
    """PID 1 of a container gets no default signal handling and must reap orphans: tini, not Python."""
    text = (REPO / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["/usr/bin/tini", "--", "psvae-opt"]' in text
    install = next(line for line in text.splitlines() if "apt-get install" in line)
    assert "tini" in install.split()
