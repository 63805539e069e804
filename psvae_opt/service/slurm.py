"""Workers on a SLURM cluster: one job array whose tasks each run worker processes.

:func:`batch_script` writes the sbatch script, :func:`submit` submits it, :func:`task_states`
and :func:`cancel` follow and stop its tasks. A task runs ``workers_per_task`` copies of the
worker command line; with GPUs, worker ``i`` of a task trains on the task's visible GPU
:func:`gpu_of_worker` ``(i)`` (workers spread evenly, neighbours share). SLURM sends the
task's batch shell SIGUSR1 ``slurm.signal_seconds`` before its time limit, and at preemption
where the cluster sends ``--signal`` signals then (``preempt_send_user_signal``); the shell
passes it (and SIGTERM, SIGINT) on to its workers and waits until they have exited, so they
can re-queue their trials; the task's exit code is its first failed worker's (0 when all
succeeded).

The storage URL may hold a password, so it is in neither the script nor any command line:
the submitting process has it in ``PSVAE_OPT_STORAGE``, which sbatch passes on to the tasks
(``--export=ALL``); the script drops the login node's ``LD_LIBRARY_PATH``. Tasks ask for
CPUs and memory sized per worker where the study file gives none (:func:`task_cpus`,
:func:`task_mem`); workers that share an exclusive-process GPU go through NVIDIA MPS.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from psvae_opt.config.slurm import SlurmConfig, slurm_extra_line
from psvae_opt.errors import ConfigError, first_line
from psvae_opt.search.storage import ENV_VAR

GPU_FLAG = "--gpu"  # the worker option that takes the index of a visible GPU (launchers pass it too)

TIMEOUT = 60.0  # seconds to wait for an answer of the SLURM controller
# Tasks in these states will not run again (FINISHED: left the queue, final state unknown)
DONE_STATES = frozenset(
    "COMPLETED FAILED CANCELLED TIMEOUT PREEMPTED NODE_FAIL OUT_OF_MEMORY BOOT_FAIL DEADLINE REVOKED FINISHED".split()
)
FINISHED = "FINISHED"


def gpu_of_worker(worker: int, workers_per_task: int, gpus_per_task: int) -> int:
    """The visible-GPU index of worker ``worker`` (0-based) of a task: ``worker // (w / g)``.

    ``workers_per_task`` is a multiple of ``gpus_per_task`` (checked by the config), so each
    GPU gets ``w / g`` workers: with 4 workers on 2 GPUs, workers 0, 1 take GPU 0 and 2, 3 GPU 1.
    """
    return worker * gpus_per_task // workers_per_task


CPUS_PER_WORKER = 2  # a core for the training loop, one for autograd's backward thread
WORKER_BASE_BYTES = 3 * 2**30  # host memory of a worker before its data: Python, torch, the CUDA runtime


def task_cpus(cfg: SlurmConfig, workers_per_task: int) -> int:
    """``slurm.cpus_per_task``, else :data:`CPUS_PER_WORKER` per worker (a cluster's default is
    often one core for the whole task)."""
    return cfg.cpus_per_task or CPUS_PER_WORKER * workers_per_task


def task_mem(cfg: SlurmConfig, workers_per_task: int, dataset_bytes: int) -> str:
    """``slurm.mem``, else enough host memory for the task's workers: each holds the whole dataset
    (``dataset_bytes``, frames and labels) in host memory, plus half again for transient copies,
    plus :data:`WORKER_BASE_BYTES`; whole GiB, rounded up. A cluster's DefMemPerCPU is often far
    less, and an OUT_OF_MEMORY kill spends the trials' crash budgets."""
    if cfg.mem:
        return cfg.mem
    per_worker = dataset_bytes + dataset_bytes // 2 + WORKER_BASE_BYTES
    return f"{-(-workers_per_task * per_worker // 2**30)}G"


def gpu_request(cfg: SlurmConfig) -> tuple[str, str] | None:
    """The sbatch option and value asking for the task's GPUs (None for CPU-only tasks):
    ``gres=gpu[:TYPE]:N`` or ``gpus-per-task=[TYPE:]N``."""
    if not cfg.gpus_per_task:
        return None
    typed = f"{cfg.gpu_type}:" if cfg.gpu_type else ""
    if cfg.gpu_option == "gpus-per-task":
        return "gpus-per-task", f"{typed}{cfg.gpus_per_task}"
    return "gres", f"gpu:{typed}{cfg.gpus_per_task}"


def batch_script(
    cfg: SlurmConfig,
    *,
    job_name: str,
    n_tasks: int,
    worker_argv: Sequence[str],
    workers_per_task: int,
    log_dir: Path,
    workdir: Path,
    dataset_bytes: int = 0,
) -> str:
    """The sbatch script of a job array of ``n_tasks`` tasks, each running ``workers_per_task``
    copies of ``worker_argv`` (absolute paths, no storage URL).

    Logs: ``log_dir/JOBID_TASK.log`` for the task's shell, ``log_dir/JOBID_TASK.wI.log`` for its
    worker I. With ``cfg.gpus_per_task`` > 0 each worker gets ``--gpu N`` (:func:`gpu_of_worker`).
    CPUs and memory not given are sized per worker (:func:`task_cpus`, :func:`task_mem` of
    ``dataset_bytes``, the bytes of the session's frames and labels).
    """
    _check_paths(worker_argv, log_dir, workdir)
    if n_tasks < 1:
        raise ConfigError(f"--workers {n_tasks}: a SLURM job array needs at least one task")
    if workers_per_task < 1 or (cfg.gpus_per_task and workers_per_task % cfg.gpus_per_task):
        raise ConfigError(
            f"slurm.workers_per_task = {workers_per_task}: give a multiple of slurm.gpus_per_task "
            f"({cfg.gpus_per_task}) so that every GPU gets the same number of workers"
        )
    name = re.sub(r"[^\w.-]", "_", job_name) or "psvae-opt"
    header = [
        f"#SBATCH --job-name={name}",
        f"#SBATCH --array=0-{n_tasks - 1}",
        f"#SBATCH --output={log_dir}/%A_%a.log",
        "#SBATCH --nodes=1",
        "#SBATCH --ntasks=1",
        "#SBATCH --export=ALL",
    ]
    if cfg.signal_seconds:
        header.append(f"#SBATCH --signal=B:USR1@{cfg.signal_seconds}")
    optional = {"partition": cfg.partition, "time": cfg.time}
    optional |= dict(filter(None, [gpu_request(cfg)]))
    optional |= {
        "cpus-per-task": task_cpus(cfg, workers_per_task),
        "mem": task_mem(cfg, workers_per_task, dataset_bytes),
    }
    header += [f"#SBATCH --{key}={value}" for key, value in optional.items() if value]
    header += [slurm_extra_line(item) for item in cfg.extra]
    gpus = " ".join(str(gpu_of_worker(i, workers_per_task, cfg.gpus_per_task)) for i in range(workers_per_task))
    worker = " ".join(shlex.quote(a) for a in worker_argv)
    return _TEMPLATE.format(
        header="\n".join(header),
        workdir=shlex.quote(str(workdir)),
        log_dir=shlex.quote(str(log_dir)),
        storage_env=ENV_VAR,
        n_workers=workers_per_task,
        worker=worker,
        gpu_flag=GPU_FLAG if cfg.gpus_per_task else "",
        gpus=gpus if cfg.gpus_per_task else "",
        shared=int(bool(cfg.gpus_per_task) and workers_per_task > cfg.gpus_per_task),
        one_each=" ".join(map(str, range(cfg.gpus_per_task))),
    )


# {placeholders} are filled by batch_script; ${...} and $(( )) are the shell's.
_TEMPLATE = """#!/bin/bash
# psvae-opt workers, one SLURM job array: each task runs {n_workers} worker process(es).
{header}
#
# The study's storage URL (it may hold a password) is not in this file: sbatch passes the
# submitting environment on (--export=ALL), and with it {storage_env}.
set -u
export TZ=UTC PYTHONUNBUFFERED=1
# --export=ALL brought the login node's library path: torch's wheels carry their own CUDA
# libraries, and a login node's (older) ones found first would break them
unset LD_LIBRARY_PATH
cd {workdir} || exit 1
if [ -z "${{{storage_env}:-}}" ]; then
  echo "psvae-opt: {storage_env} is not set in the environment sbatch passed on; submit with it set" >&2
  exit 2
fi
task="${{SLURM_ARRAY_JOB_ID:-${{SLURM_JOB_ID:-0}}}}_${{SLURM_ARRAY_TASK_ID:-0}}"
cpus="${{SLURM_CPUS_PER_TASK:-${{SLURM_CPUS_ON_NODE:-1}}}}"
n_workers={n_workers}
gpus=({gpus})
mps=""
# Workers sharing a GPU in an exclusive compute mode: all but one would fail with "busy or
# unavailable". Use the node's MPS daemon, or start one for this task, or else one worker per GPU.
if [ {shared} = 1 ] && nvidia-smi --query-gpu=compute_mode --format=csv,noheader 2>/dev/null | grep -q Exclusive; then
  if [ -e "${{CUDA_MPS_PIPE_DIRECTORY:-/tmp/nvidia-mps}}/control" ]; then
    echo "task $task: exclusive-process GPUs, shared through the node's MPS daemon"
  elif command -v nvidia-cuda-mps-control >/dev/null 2>&1; then
    export CUDA_MPS_PIPE_DIRECTORY="${{TMPDIR:-/tmp}}/psvae-opt-mps-$task"
    export CUDA_MPS_LOG_DIRECTORY="$CUDA_MPS_PIPE_DIRECTORY.log"
    mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
    nvidia-cuda-mps-control -d && mps=1
    echo "task $task: exclusive-process GPUs: started an MPS daemon so that $n_workers workers share them"
  else
    gpus=({one_each})
    echo "task $task: exclusive-process GPUs and no MPS: ${{#gpus[@]}} worker(s), one per GPU, instead of $n_workers"
    n_workers=${{#gpus[@]}}
  fi
fi
threads=$(( cpus / n_workers )); [ "$threads" -ge 1 ] || threads=1
pids=()
forward() {{
  echo "task $task got SIG$1: passing it on to its workers (pids ${{pids[*]:-}})"
  [ ${{#pids[@]}} -eq 0 ] || kill -s "$1" "${{pids[@]}}" 2>/dev/null
}}
trap 'forward USR1' USR1
trap 'forward TERM' TERM
trap 'forward INT' INT
for (( i = 0; i < n_workers; i++ )); do
  gpu=()
  [ ${{#gpus[@]}} -eq 0 ] || gpu=({gpu_flag} "${{gpus[$i]}}")
  # ${{a[@]+"${{a[@]}}"}}: an empty array under set -u, also in bash before 4.4
  OMP_NUM_THREADS=$threads {worker} ${{gpu[@]+"${{gpu[@]}}"}} >{log_dir}/"$task.w$i.log" 2>&1 &
  pids+=($!)
  echo "task $task: worker $i (pid $!) ${{gpu[*]:-}}"
done
status=0
for (( i = 0; i < n_workers; i++ )); do
  # a trapped signal ends `wait` early (status > 128) while the worker still runs: wait again
  while :; do
    wait "${{pids[$i]}}"
    code=$?
    [ "$code" -gt 128 ] && kill -0 "${{pids[$i]}}" 2>/dev/null || break
  done
  echo "task $task: worker $i exited with $code"
  [ "$status" -ne 0 ] || status=$code
done
[ -z "$mps" ] || echo quit | nvidia-cuda-mps-control
exit "$status"
"""


def _check_paths(worker_argv: Sequence[str], log_dir: Path, workdir: Path) -> None:
    """The script runs elsewhere, in another folder: every path must be absolute; no URL in it."""
    if not worker_argv or not os.path.isabs(worker_argv[0]):
        raise ValueError(f"worker_argv must start with an absolute executable path, got {list(worker_argv)[:1]}")
    for flag, value in zip(worker_argv, worker_argv[1:]):
        if flag in ("--config", "--data") and not os.path.isabs(value):
            raise ValueError(f"worker_argv: {flag} {value!r} must be an absolute path")
    for arg in worker_argv:
        if arg == "--storage" or re.match(r"[A-Za-z][\w+.-]*://", arg):
            raise ValueError("worker_argv must not hold the storage URL: the tasks read it from " + ENV_VAR)
    for what, path in (("log_dir", log_dir), ("workdir", workdir)):
        if not Path(path).is_absolute():
            raise ValueError(f"{what} must be an absolute path, got {path}")
    if re.search(r"[\s%]", str(log_dir)):
        raise ConfigError(f"log folder {log_dir}: #SBATCH lines cannot hold spaces or '%'; use a folder without")


def _run(argv: list[str], env: Mapping[str, str] | None, what: str) -> subprocess.CompletedProcess:
    """A SLURM client command; its absence or silence is a one-line error."""
    try:
        return subprocess.run(
            argv, env=dict(os.environ, **(env or {})), capture_output=True, text=True, timeout=TIMEOUT
        )
    except FileNotFoundError:
        raise ConfigError(f"{argv[0]} not found: run on a SLURM login node or use --launcher local") from None
    except subprocess.TimeoutExpired:
        raise ConfigError(
            f"{what}: {argv[0]} did not answer within {TIMEOUT:.0f} s; is the SLURM controller up (sinfo)?"
        ) from None


def submit(script_path: Path, env: Mapping[str, str] | None = None, tasks: int | None = None) -> str:
    """Submit a batch script (``sbatch --parsable``); returns the job id.

    ``env`` adds variables to this process's environment for sbatch (and so for the tasks,
    which get sbatch's whole environment): pass the storage URL as ``{"PSVAE_OPT_STORAGE": url}``.
    ``tasks`` replaces the script's ``--array`` by ``0-(tasks-1)`` (sbatch's own options
    override the script's ``#SBATCH`` lines).
    """
    array = [f"--array=0-{tasks - 1}"] if tasks else []
    out = _run(["sbatch", "--parsable", "--export=ALL", *array, str(script_path)], env, "submitting the workers")
    if out.returncode != 0:
        raise ConfigError(f"sbatch refused {script_path}: {first_line(out.stderr)}")
    job_id = out.stdout.strip().split(";")[0]  # "JOBID" or "JOBID;CLUSTER"
    if not job_id.isdigit():
        raise ConfigError(f"sbatch answered {out.stdout.strip()!r} instead of a job id")
    return job_id


def task_states(job_id: str, n_tasks: int | None = None) -> dict[int, str]:
    """State of each task of a job array: task index -> SLURM state (PENDING, RUNNING,
    COMPLETED, FAILED, CANCELLED, TIMEOUT, ...).

    squeue knows queued and running tasks and, for ``MinJobAge`` (default 300 s), finished
    ones; sacct (where the cluster keeps accounting) knows finished ones for good. A task that
    neither knows has left the queue: with ``n_tasks`` given, such tasks are reported as
    ``FINISHED`` (done, final state unknown). See :data:`DONE_STATES`. A job that is no
    array is task 0.
    """
    states = _sacct_states(job_id)
    out = _run(
        ["squeue", "--array", "--states=all", "--noheader", "--format=%i|%T", f"--jobs={job_id}"],
        None,
        "reading the queue",
    )
    if out.returncode != 0 and "Invalid job id" not in out.stderr:
        raise ConfigError(f"squeue failed for job {job_id}: {first_line(out.stderr)}")
    states |= _parse_states(out.stdout if out.returncode == 0 else "", job_id)
    for task in range(n_tasks or 0):
        states.setdefault(task, FINISHED)
    return dict(sorted(states.items()))


def _sacct_states(job_id: str) -> dict[int, str]:
    """Task states from accounting; {} where the cluster has none (sacct fails or is missing)."""
    try:
        out = subprocess.run(
            ["sacct", "--noheader", "--parsable2", "--allocations", "--format=JobID,State", f"--jobs={job_id}"],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return {}
    return _parse_states(out.stdout, job_id) if out.returncode == 0 else {}


def _parse_states(text: str, job_id: str) -> dict[int, str]:
    """Lines "JOBID_TASK|STATE ..." -> {TASK: STATE} (sacct writes "CANCELLED by 0"); a job
    that is no array is task 0."""
    states = {}
    for line in text.splitlines():
        ident, _, state = line.partition("|")
        match = re.fullmatch(rf"{re.escape(job_id)}(?:_(\d+))?", ident.strip())
        if match and state.strip():
            states[int(match.group(1) or 0)] = state.split()[0].rstrip("+")
    return states


def cancel(job_id: str, task: int | None = None) -> None:
    """Cancel a whole job array, or one of its tasks (SIGTERM to its workers, which re-queue
    their trials, then SIGKILL after the cluster's KillWait)."""
    target = job_id if task is None else f"{job_id}_{task}"
    out = _run(["scancel", target], None, f"cancelling {target}")
    if out.returncode != 0:
        raise ConfigError(f"scancel {target} failed: {first_line(out.stderr)}")
