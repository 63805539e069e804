"""Workers as a SLURM job array: the sbatch script's text, the script run by bash, and jobs on a
real one-node cluster (tests/slurmcluster.py)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from psvae_opt.config import SlurmConfig, dump_config, load_config
from psvae_opt.errors import ConfigError
from psvae_opt.service.slurm import DONE_STATES, FINISHED, batch_script, cancel, gpu_of_worker, submit, task_states

URL = "postgresql+psycopg://lab:s3cret-pw@db.example:5432/psvae"

# A stand-in worker: prints its arguments, notes SIGUSR1/SIGTERM in a file and exits 0 then;
# exits with --exit CODE at once when its --gpu index is --fail-gpu; else sleeps --sleep seconds.
WORKER = """
import os, signal, sys, time
from pathlib import Path
args = sys.argv[1:]
def opt(name, default=None):
    return args[args.index(name) + 1] if name in args else default
out = Path(opt("--out"))
tag = f"{os.environ.get('SLURM_ARRAY_TASK_ID', 'x')}-{os.getpid()}"
def stop(signum, frame):
    (out / f"{signal.Signals(signum).name}-{tag}").write_text(str(time.time()))
    sys.exit(0)
signal.signal(signal.SIGUSR1, stop)
signal.signal(signal.SIGTERM, stop)
env = os.environ
print("argv", *args, "threads", env.get("OMP_NUM_THREADS"), "ld", env.get("LD_LIBRARY_PATH", "-"), flush=True)
(out / f"ready-{tag}").write_text(os.environ.get("PSVAE_OPT_STORAGE", "unset"))
if opt("--gpu") is not None and opt("--gpu") == opt("--fail-gpu"):
    sys.exit(int(opt("--exit")))
if os.environ.get("SLURM_ARRAY_TASK_ID") == opt("--fail-task"):
    sys.exit(int(opt("--exit")))
time.sleep(float(opt("--sleep", "0")))
"""


@pytest.fixture
def worker(tmp_path: Path) -> list[str]:
    """An absolute worker command line whose files land in tmp_path/out."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    (tmp_path / "out").mkdir()
    return [sys.executable, str(script), "--out", str(tmp_path / "out")]


def script_for(cfg: SlurmConfig, tmp_path: Path, argv: list[str], n_tasks: int = 2, workers: int = 1) -> Path:
    path = tmp_path / "workers.sbatch"
    (tmp_path / "logs").mkdir(exist_ok=True)
    path.write_text(
        batch_script(
            cfg,
            job_name="demo-stage1",
            n_tasks=n_tasks,
            worker_argv=argv,
            workers_per_task=workers,
            log_dir=tmp_path / "logs",
            workdir=tmp_path,
        )
    )
    return path


def headers(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("#SBATCH")]


# --- the study file's [slurm] section -------------------------------------------------------


def test_every_slurm_key_is_set_by_set_and_survives_a_dump():
    cfg = load_config(
        None,
        [
            "slurm.partition=gpu,gpu-long",
            "slurm.time=1-12:00:00",
            "slurm.gpus_per_task=2",
            "slurm.workers_per_task=4",
            "slurm.cpus_per_task=16",
            "slurm.mem=64G",
            "slurm.signal_seconds=300",
            'slurm.extra=["--qos=high", "#SBATCH --account=lab"]',
            "slurm.gpu_type=h100",
            "slurm.gpu_option=gpus-per-task",
        ],
    )
    assert cfg.slurm == SlurmConfig(
        "gpu,gpu-long",
        "1-12:00:00",
        2,
        4,
        16,
        "64G",
        300,
        ("--qos=high", "#SBATCH --account=lab"),
        "h100",
        "gpus-per-task",
    )
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"slurm-dump-{os.getpid()}.toml"
    path.write_text(dump_config(cfg))
    try:
        assert load_config(path).slurm == cfg.slurm
    finally:
        path.unlink()
    assert load_config(None).slurm == SlurmConfig()  # every key has a default
    assert load_config(None, ["slurm.time=90"]).slurm.time == "90"  # a number is minutes, kept as sbatch text


@pytest.mark.parametrize(
    "override, message",
    [
        ("slurm.partition=a b", "slurm.partition: 'a b' is not a partition name"),
        ("slurm.time=1h", "slurm.time: '1h' is not MINUTES"),
        ("slurm.time=-5", "slurm.time: '-5' is not MINUTES"),
        ('slurm.time="1:2:3:4"', "slurm.time: '1:2:3:4' is not MINUTES"),
        ("slurm.gpus_per_task=-1", "slurm.gpus_per_task: must be >= 0"),
        ("slurm.workers_per_task=0", "slurm.workers_per_task: must be >= 1"),
        ("slurm.cpus_per_task=-2", "slurm.cpus_per_task: must be >= 0"),
        ("slurm.mem=16GB", "slurm.mem: '16GB' is not a memory size"),
        ("slurm.signal_seconds=70000", "slurm.signal_seconds: must be in 0..65535"),
        ("slurm.gpu_type=h100:2", "slurm.gpu_type: 'h100:2' is not a GPU type"),
        ("slurm.gpu_option=gpus", "slurm.gpu_option: 'gpus' is not gres or gpus-per-task"),
        ('slurm.extra=["qos=high"]', "slurm.extra: 'qos=high' is not an sbatch option"),
        ('slurm.extra=["--array=0-9"]', "slurm.extra: '--array=0-9': psvae-opt writes it itself"),
        ('slurm.extra=["-t 60"]', "slurm.extra: '-t 60': set slurm.time instead"),
        (
            'slurm.extra=["#SBATCH --gres=gpu:a100:1"]',
            "slurm.extra: '#SBATCH --gres=gpu:a100:1': set slurm.gpus_per_task (with slurm.gpu_type = 'h100'",
        ),
        (
            'slurm.extra=["--qos=high\\n#SBATCH --array=1"]',
            "slurm.extra: '--qos=high\\n#SBATCH --array=1' is not an sbatch",
        ),
        ('slurm.extra="--qos=high"', "slurm.extra: expected a list of str"),
    ],
)
def test_bad_slurm_values_are_refused_naming_the_key(override: str, message: str):
    with pytest.raises(ConfigError, match="^" + re.escape(message)) as err:
        load_config(None, [override])
    assert "\n" not in str(err.value)


def test_gpu_shares_and_the_time_limit_are_checked_together():
    with pytest.raises(ConfigError, match=r"slurm.workers_per_task: 3 is not a multiple of slurm.gpus_per_task \(2\)"):
        load_config(None, ["slurm.gpus_per_task=2", "slurm.workers_per_task=3"])
    with pytest.raises(
        ConfigError, match="slurm.signal_seconds: 120 s is not below the time limit slurm.time = '2:00'"
    ):
        load_config(None, ['slurm.time="2:00"'])  # MINUTES:SECONDS: two minutes, 120 s
    assert load_config(None, ['slurm.time="2:01"', "slurm.gpus_per_task=0", "slurm.workers_per_task=3"])


# --- the script's text ----------------------------------------------------------------------


def test_every_key_is_rendered_and_paths_are_absolute(tmp_path: Path):
    cfg = SlurmConfig("gpu", "2-00:00:00", 2, 4, 8, "32G", 300, ("--qos=high", "#SBATCH --account=lab"))
    argv = ["/opt/venv/bin/python", "-m", "psvae_opt.cli", "worker", "--config", "/data/my study.toml", "--stage", "1"]
    text = batch_script(
        cfg,
        job_name="my study/stage1",
        n_tasks=5,
        worker_argv=argv,
        workers_per_task=4,
        log_dir=Path("/data/runs/logs"),
        workdir=Path("/data/work dir"),
    )
    assert text.startswith("#!/bin/bash\n")
    assert headers(text) == [
        "#SBATCH --job-name=my_study_stage1",
        "#SBATCH --array=0-4",
        "#SBATCH --output=/data/runs/logs/%A_%a.log",
        "#SBATCH --nodes=1",
        "#SBATCH --ntasks=1",
        "#SBATCH --export=ALL",
        "#SBATCH --signal=B:USR1@300",
        "#SBATCH --partition=gpu",
        "#SBATCH --time=2-00:00:00",
        "#SBATCH --gres=gpu:2",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=32G",
        "#SBATCH --qos=high",
        "#SBATCH --account=lab",
    ]
    assert "cd '/data/work dir' || exit 1" in text
    assert "/opt/venv/bin/python -m psvae_opt.cli worker --config '/data/my study.toml' --stage 1" in text
    assert "export TZ=UTC" in text and "trap 'forward USR1' USR1" in text
    assert "PSVAE_OPT_STORAGE" in text and "--export=ALL" in text.split("#SBATCH --account=lab")[1]  # the comment
    assert "--storage" not in text and "://" not in text


def test_defaults_leave_partition_time_and_gpus_to_the_cluster(tmp_path: Path, worker: list[str]):
    text = script_for(SlurmConfig(gpus_per_task=0, signal_seconds=0), tmp_path, worker).read_text()
    assert not any(
        h.split("=")[0] in ("#SBATCH --partition", "#SBATCH --time", "#SBATCH --gres", "#SBATCH --signal")
        for h in headers(text)
    )
    assert "gpus=()" in text and "--gpu" not in text


def test_cpus_and_memory_are_sized_per_worker_from_the_dataset():
    """A cluster's default is often one core and a small DefMemPerCPU for the whole task: each
    worker gets 2 CPUs and the dataset once and a half plus 3 GiB."""
    kwargs = dict(job_name="s", n_tasks=1, worker_argv=["/usr/bin/python3"], log_dir=Path("/l"), workdir=Path("/w"))
    text = batch_script(
        SlurmConfig(gpus_per_task=2, workers_per_task=4), workers_per_task=4, dataset_bytes=10 * 2**30, **kwargs
    )
    assert "#SBATCH --cpus-per-task=8" in headers(text)
    assert "#SBATCH --mem=72G" in headers(text)  # 4 x (15 + 3) GiB
    text = batch_script(SlurmConfig(), workers_per_task=1, dataset_bytes=2**30 + 1, **kwargs)
    assert "#SBATCH --cpus-per-task=2" in headers(text) and "#SBATCH --mem=5G" in headers(text)  # 4.5 GiB up
    given = SlurmConfig(cpus_per_task=3, mem="9000M")
    text = batch_script(given, workers_per_task=1, dataset_bytes=50 * 2**30, **kwargs)
    assert "#SBATCH --cpus-per-task=3" in headers(text) and "#SBATCH --mem=9000M" in headers(text)


def test_the_stage_sizes_memory_from_its_own_dataset(tiny_config):
    from psvae_opt.data import load_session, session_bytes
    from psvae_opt.service.request import StageRequest
    from psvae_opt.service.slurm_launcher import slurm_script

    session = load_session(tiny_config.data.path)
    assert session_bytes(tiny_config.data.path) == session.images.nbytes + session.labels.nbytes + session.masks.nbytes
    script, _ = slurm_script(StageRequest(stage=1, config_path="/x/s.toml", launcher="slurm"), tiny_config)
    assert "#SBATCH --mem=4G" in headers(script)  # 3 GiB and 1.5 x 0.2 MB, rounded up


@pytest.mark.parametrize(
    "cfg, line",
    [
        (SlurmConfig(gpus_per_task=2, gpu_type="h100", workers_per_task=2), "#SBATCH --gres=gpu:h100:2"),
        (SlurmConfig(gpus_per_task=1, gpu_option="gpus-per-task"), "#SBATCH --gpus-per-task=1"),
        (
            SlurmConfig(gpus_per_task=1, gpu_type="a100_80gb", gpu_option="gpus-per-task"),
            "#SBATCH --gpus-per-task=a100_80gb:1",
        ),
        (SlurmConfig(gpus_per_task=1), "#SBATCH --gres=gpu:1"),
    ],
)
def test_typed_gres_and_gpus_per_task(cfg: SlurmConfig, line: str):
    kwargs = dict(job_name="s", n_tasks=1, worker_argv=["/usr/bin/python3"], log_dir=Path("/l"), workdir=Path("/w"))
    gpu_lines = [h for h in headers(batch_script(cfg, workers_per_task=cfg.workers_per_task, **kwargs)) if "gpu" in h]
    assert gpu_lines == [line]


@pytest.mark.parametrize(
    "bad, error",
    [
        ({"worker_argv": ["python", "-m", "psvae_opt.cli"]}, "absolute executable"),
        ({"worker_argv": ["/usr/bin/python3", "worker", "--config", "studies/demo.toml"]}, "--config"),
        ({"worker_argv": ["/usr/bin/python3", "worker", "--storage", "x"]}, "storage URL"),
        ({"worker_argv": ["/usr/bin/python3", "worker", URL]}, "storage URL"),
        ({"log_dir": Path("logs")}, "log_dir must be an absolute path"),
        ({"workdir": Path(".")}, "workdir must be an absolute path"),
    ],
)
def test_relative_paths_and_urls_are_refused(bad: dict, error: str):
    kwargs = dict(
        job_name="s",
        n_tasks=1,
        worker_argv=["/usr/bin/python3"],
        workers_per_task=1,
        log_dir=Path("/l"),
        workdir=Path("/w"),
    )
    with pytest.raises(ValueError, match=error):
        batch_script(SlurmConfig(), **{**kwargs, **bad})


def test_bad_task_counts_and_log_folders_are_one_line_errors():
    kwargs = dict(job_name="s", worker_argv=["/usr/bin/python3"], log_dir=Path("/l"), workdir=Path("/w"))
    with pytest.raises(ConfigError, match="--workers 0: a SLURM job array needs at least one task"):
        batch_script(SlurmConfig(), n_tasks=0, workers_per_task=1, **kwargs)
    with pytest.raises(ConfigError, match=r"slurm.workers_per_task = 3: give a multiple of slurm.gpus_per_task \(2\)"):
        batch_script(SlurmConfig(gpus_per_task=2, workers_per_task=2), n_tasks=1, workers_per_task=3, **kwargs)
    with pytest.raises(ConfigError, match="log folder /my logs: #SBATCH lines cannot hold spaces"):
        batch_script(SlurmConfig(), n_tasks=1, workers_per_task=1, **{**kwargs, "log_dir": Path("/my logs")})


def test_the_gpu_index_rule():
    """Worker i of a task trains on visible GPU i // (workers / gpus): neighbours share a GPU."""
    assert [gpu_of_worker(i, 4, 2) for i in range(4)] == [0, 0, 1, 1]
    assert [gpu_of_worker(i, 6, 3) for i in range(6)] == [0, 0, 1, 1, 2, 2]
    assert [gpu_of_worker(i, 2, 2) for i in range(2)] == [0, 1]
    assert [gpu_of_worker(i, 3, 1) for i in range(3)] == [0, 0, 0]
    assert [gpu_of_worker(i, 8, 4) for i in range(8)] == [i // 2 for i in range(8)]


# --- the script run by bash (the environment a task gets, faked) ----------------------------


def run_locally(script: Path, tmp_path: Path, **env: str) -> subprocess.Popen:
    task_env = dict(
        os.environ, SLURM_ARRAY_JOB_ID="77", SLURM_ARRAY_TASK_ID="3", SLURM_CPUS_PER_TASK="8", PSVAE_OPT_STORAGE=URL
    )
    return subprocess.Popen(["bash", str(script)], env={**task_env, **env}, cwd="/", stdout=subprocess.PIPE, text=True)


def test_each_worker_gets_its_gpu_threads_and_the_first_failure_is_the_exit_code(tmp_path: Path, worker: list[str]):
    cfg = SlurmConfig(gpus_per_task=2, workers_per_task=4)
    script = script_for(cfg, tmp_path, [*worker, "--fail-gpu", "1", "--exit", "3"], workers=4)
    proc = run_locally(script, tmp_path)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 3, out
    logs = [(tmp_path / "logs" / f"77_3.w{i}.log").read_text().split() for i in range(4)]
    assert [log[log.index("--gpu") + 1] for log in logs] == ["0", "0", "1", "1"]
    assert all(log[log.index("threads") + 1] == "2" for log in logs)  # 8 CPUs / 4 workers
    assert "task 77_3: worker 2 exited with 3" in out and "task 77_3: worker 0 exited with 0" in out
    assert sorted(p.read_text() for p in (tmp_path / "out").glob("ready-*")) == [URL] * 4  # from the environment


def test_the_login_nodes_library_path_stays_behind(tmp_path: Path, worker: list[str]):
    """--export=ALL passes the login node's LD_LIBRARY_PATH (an older CUDA, say): the task drops it."""
    script = script_for(SlurmConfig(gpus_per_task=0), tmp_path, worker)
    proc = run_locally(script, tmp_path, LD_LIBRARY_PATH="/opt/cuda-11.2/lib64")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    words = (tmp_path / "logs" / "77_3.w0.log").read_text().split()
    assert words[words.index("ld") + 1] == "-"


def fake_gpu_node(folder: Path, mode: str, mps: bool) -> dict[str, str]:
    """PATH with a stand-in nvidia-smi reporting ``mode`` for every GPU and, with ``mps``, an
    nvidia-cuda-mps-control that notes how it was called."""
    folder.mkdir()
    (folder / "nvidia-smi").write_text(f"#!/bin/sh\necho {mode}\necho {mode}\n")
    if mps:
        (folder / "nvidia-cuda-mps-control").write_text(f'#!/bin/sh\necho "$* $(cat)" >> {folder}/mps-calls\n')
    for exe in folder.iterdir():
        exe.chmod(0o755)
    return {"PATH": f"{folder}:{os.environ['PATH']}", "TMPDIR": str(folder)}


@pytest.mark.parametrize(
    "mode, mps, workers", [("Default", False, 4), ("Exclusive_Process", False, 2), ("Exclusive_Process", True, 4)]
)
def test_workers_share_an_exclusive_gpu_only_through_mps(
    tmp_path: Path, worker: list[str], mode: str, mps: bool, workers: int
):
    cfg = SlurmConfig(gpus_per_task=2, workers_per_task=4)
    script = script_for(cfg, tmp_path, worker, workers=4)
    env = fake_gpu_node(tmp_path / "bin", mode, mps)
    proc = run_locally(script, tmp_path, **env)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    logs = sorted((tmp_path / "logs").glob("77_3.w*.log"))
    assert len(logs) == workers
    gpus = [log.read_text().split() for log in logs]
    assert sorted(w[w.index("--gpu") + 1] for w in gpus) == (["0", "0", "1", "1"] if workers == 4 else ["0", "1"])
    calls = (tmp_path / "bin" / "mps-calls").read_text().splitlines() if mps else []
    assert [c.strip() for c in calls] == (["-d", "quit"] if mps and mode != "Default" else [])
    if workers == 2:
        assert "exclusive-process GPUs and no MPS: 2 worker(s), one per GPU, instead of 4" in out


def test_without_the_storage_variable_a_task_stops_at_once(tmp_path: Path, worker: list[str]):
    script = script_for(SlurmConfig(gpus_per_task=0), tmp_path, worker)
    env = {k: v for k, v in os.environ.items() if k != "PSVAE_OPT_STORAGE"}
    out = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "PSVAE_OPT_STORAGE is not set" in out.stderr
    assert not list((tmp_path / "out").iterdir())


@pytest.mark.parametrize("sig", [signal.SIGUSR1, signal.SIGTERM])
def test_the_shell_passes_signals_on_and_waits_for_its_workers(tmp_path: Path, worker: list[str], sig: signal.Signals):
    script = script_for(SlurmConfig(gpus_per_task=0), tmp_path, [*worker, "--sleep", "60"], workers=2)
    proc = run_locally(script, tmp_path)
    deadline = time.monotonic() + 30
    while len(list((tmp_path / "out").glob("ready-*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out  # the workers exited 0 after their handlers ran
    assert len(list((tmp_path / "out").glob(f"{sig.name}-*"))) == 2
    assert f"got SIG{sig.name.removeprefix('SIG')}" in out and out.count("exited with 0") == 2


# --- a real cluster -------------------------------------------------------------------------


def wait_for(job: str, n_tasks: int, until, timeout: float = 90) -> dict[int, str]:
    deadline = time.monotonic() + timeout
    while True:
        states = task_states(job, n_tasks)
        if until(states) or time.monotonic() > deadline:
            return states
        time.sleep(0.5)


def all_done(states: dict[int, str]) -> bool:
    return all(s in DONE_STATES for s in states.values())


@pytest.mark.slurm
@pytest.mark.slow
def test_an_array_runs_every_task_and_reports_how_each_ended(slurm, tmp_path: Path, worker: list[str]):
    cfg = SlurmConfig(gpus_per_task=0, cpus_per_task=1, workers_per_task=2)
    script = script_for(cfg, tmp_path, [*worker, "--fail-task", "1", "--exit", "3"], n_tasks=2, workers=2)
    assert URL not in script.read_text()
    job = submit(script, env={"PSVAE_OPT_STORAGE": URL})
    assert job.isdigit()
    states = wait_for(job, 2, all_done)
    assert states == {0: "COMPLETED", 1: "FAILED"}  # task 1's workers exited 3
    ready = sorted((tmp_path / "out").glob("ready-*"))
    assert sorted(p.name.split("-")[1] for p in ready) == ["0", "0", "1", "1"]  # 2 workers in each task
    assert {p.read_text() for p in ready} == {URL}  # sbatch passed the environment on
    assert "worker 1 exited with 3" in (tmp_path / "logs" / f"{job}_1.log").read_text()
    assert (tmp_path / "logs" / f"{job}_0.w1.log").read_text().startswith("argv --out")


@pytest.mark.slurm
@pytest.mark.slow
def test_cancelling_one_task_then_the_job(slurm, tmp_path: Path, worker: list[str]):
    cfg = SlurmConfig(gpus_per_task=0, cpus_per_task=1)
    job = submit(script_for(cfg, tmp_path, [*worker, "--sleep", "120"]), env={"PSVAE_OPT_STORAGE": URL})
    assert wait_for(job, 2, lambda s: list(s.values()) == ["RUNNING", "RUNNING"]) == {0: "RUNNING", 1: "RUNNING"}
    # RUNNING is the batch shell; a worker signalled before its handlers are set dies without a
    # trace (on a busy 2-core CI machine that took over a second), so wait until both are ready
    deadline = time.monotonic() + 60
    while len(list((tmp_path / "out").glob("ready-*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    cancel(job, task=1)
    states = wait_for(job, 2, lambda s: s[1] in DONE_STATES)
    assert states == {0: "RUNNING", 1: "CANCELLED"}
    cancel(job)
    assert wait_for(job, 2, all_done) == {0: "CANCELLED", 1: "CANCELLED"}
    assert len(list((tmp_path / "out").glob("SIGTERM-*"))) == 2  # each worker got SIGTERM and could re-queue
    assert task_states("999999", 2) == {0: FINISHED, 1: FINISHED}  # long gone (or never there)


@pytest.mark.slurm
@pytest.mark.slow
def test_a_task_hears_usr1_before_its_time_limit(slurm, tmp_path: Path, worker: list[str]):
    # 2 min limit, USR1 80 s before it: due 40 s in; slurmctld sends it up to 30 s early
    cfg = SlurmConfig(time="2", signal_seconds=80, gpus_per_task=0, cpus_per_task=1)
    job = submit(script_for(cfg, tmp_path, [*worker, "--sleep", "150"], n_tasks=1), env={"PSVAE_OPT_STORAGE": URL})
    states = wait_for(job, 1, all_done, timeout=150)
    assert states == {0: "COMPLETED"}  # the worker stopped on USR1 and exited 0, before the limit
    (got,) = (tmp_path / "out").glob("SIGUSR1-0-*")
    (ready,) = (tmp_path / "out").glob("ready-0-*")
    assert 0 < float(got.read_text()) - ready.stat().st_mtime < 60
    assert "got SIGUSR1: passing it on" in (tmp_path / "logs" / f"{job}_0.log").read_text()


@pytest.mark.slurm
@pytest.mark.slow
def test_a_preempted_task_hears_usr1_first(slurm, tmp_path: Path, worker: list[str]):
    """The cluster's urgent partition preempts its default one (send_user_signal, 10 s grace)."""
    cpus = int(subprocess.run(["nproc"], capture_output=True, text=True).stdout)
    cfg = SlurmConfig(gpus_per_task=0, cpus_per_task=cpus)
    job = submit(script_for(cfg, tmp_path, [*worker, "--sleep", "120"], n_tasks=1), env={"PSVAE_OPT_STORAGE": URL})
    assert wait_for(job, 1, lambda s: s[0] == "RUNNING") == {0: "RUNNING"}
    urgent = subprocess.run(
        [
            *("sbatch", "--parsable", f"--partition={slurm.urgent}", f"--cpus-per-task={cpus}"),
            *(f"--output={tmp_path}/urgent.log", "--wrap", "true"),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    states = wait_for(job, 1, all_done, timeout=60)
    assert states[0] in ("CANCELLED", "PREEMPTED", "COMPLETED"), states
    assert len(list((tmp_path / "out").glob("SIGUSR1-*"))) == 1
    assert "got SIGUSR1" in (tmp_path / "logs" / f"{job}_0.log").read_text()
    # it ran once the preempted task was gone (a job that is no array is task 0)
    assert wait_for(urgent, 1, lambda s: s[0] in DONE_STATES) == {0: "COMPLETED"}


@pytest.mark.slurm
def test_submission_errors_are_one_line(slurm, tmp_path: Path, worker: list[str]):
    script = script_for(SlurmConfig(partition="nope", gpus_per_task=0), tmp_path, worker)
    with pytest.raises(ConfigError, match=r"^sbatch refused .*workers.sbatch: sbatch: error: .*[Pp]artition") as err:
        submit(script, env={"PSVAE_OPT_STORAGE": URL})
    assert "\n" not in str(err.value)


def test_without_slurm_clients_each_call_says_what_to_do(
    tmp_path: Path, worker: list[str], monkeypatch: pytest.MonkeyPatch
):
    script = script_for(SlurmConfig(), tmp_path, worker)
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch, squeue, scancel there
    with pytest.raises(ConfigError, match="^sbatch not found: run on a SLURM login node or use --launcher local$"):
        submit(script)
    with pytest.raises(ConfigError, match="^squeue not found: run on a SLURM login node"):
        task_states("1")
    with pytest.raises(ConfigError, match="^scancel not found: run on a SLURM login node"):
        cancel("1", task=0)
