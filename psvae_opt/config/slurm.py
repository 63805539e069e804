"""The ``[slurm]`` section of a study file and the sbatch option grammar it is checked against:
the time-limit formats, the options psvae-opt writes itself, and how an entry of
``slurm.extra`` becomes a ``#SBATCH`` line. :mod:`psvae_opt.service.slurm` writes the job
script with these same rules, so a study file that loads is a script that sbatch accepts.

It sits in the config package (standard library only) because a study file is checked when it
is read, long before any SLURM command runs, and the layers let config import nothing above it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from psvae_opt.config.schema import require
from psvae_opt.errors import ConfigError

GPU_KEYS = "slurm.gpus_per_task (with slurm.gpu_type = 'h100' for a typed GRES, slurm.gpu_option)"
SLURM_TIME_FORMATS = "MINUTES, MINUTES:SECONDS, HOURS:MINUTES:SECONDS, DAYS-HOURS[:MINUTES[:SECONDS]] or UNLIMITED"
# sbatch options psvae-opt writes itself (value: the key that sets it, "" = not settable)
SLURM_OWN_OPTIONS = {
    "--array": "",
    "--output": "",
    "--error": "",
    "--signal": "slurm.signal_seconds",
    "--export": "",
    "--job-name": "",
    "--partition": "slurm.partition",
    "--time": "slurm.time",
    "--gres": GPU_KEYS,
    "--gpus-per-task": GPU_KEYS,
    "--cpus-per-task": "slurm.cpus_per_task",
    "--mem": "slurm.mem",
    "--gpus": GPU_KEYS,
    "--ntasks": "",
    "--nodes": "",
}
_SLURM_SHORT = {"-a": "--array", "-o": "--output", "-e": "--error", "-J": "--job-name", "-p": "--partition"}
_SLURM_SHORT |= {"-t": "--time", "-c": "--cpus-per-task", "-G": "--gpus", "-n": "--ntasks", "-N": "--nodes"}


def slurm_time_seconds(text: str) -> int | None:
    """Seconds of a SLURM time limit (sbatch --time), None for UNLIMITED/INFINITE; raises ValueError."""
    if text.upper() in ("UNLIMITED", "INFINITE"):
        return None
    days, _, rest = text.rpartition("-") if "-" in text else ("", "", text)
    parts = rest.split(":")
    if not (days.isdigit() or "-" not in text) or not all(p.isdigit() for p in parts) or not 1 <= len(parts) <= 3:
        raise ValueError(text)
    if days:  # DAYS-HOURS[:MINUTES[:SECONDS]]
        h, m, s = (list(map(int, parts)) + [0, 0])[:3]
        return ((int(days) * 24 + h) * 60 + m) * 60 + s
    if len(parts) == 3:
        h, m, s = map(int, parts)
    else:  # MINUTES or MINUTES:SECONDS
        h, m, s = 0, int(parts[0]), int(parts[1]) if len(parts) == 2 else 0
    return (h * 60 + m) * 60 + s


def slurm_extra_line(item: str) -> str:
    """An entry of slurm.extra as the #SBATCH line it becomes ("--qos=high" or "#SBATCH --qos=high")."""
    option = item.strip().removeprefix("#SBATCH").strip()
    name = option.split("=", 1)[0].split()[0] if option else ""
    name = _SLURM_SHORT.get(name[:2], name) if len(name) > 1 and name[1] != "-" else name
    if "\n" in item or "\r" in item or not name.startswith("-"):
        raise ConfigError(
            f'slurm.extra: {item!r} is not an sbatch option; give entries like "--qos=high" or "#SBATCH -A lab"'
        )
    if name in SLURM_OWN_OPTIONS:
        key = SLURM_OWN_OPTIONS[name]
        fix = f"set {key} instead" if key else "psvae-opt writes it itself"
        raise ConfigError(f"slurm.extra: {item!r}: {fix}")
    return f"#SBATCH {option}"


@dataclass(frozen=True)
class SlurmConfig:
    """How workers run as a SLURM job array (``--launcher slurm``); "" or 0 = the cluster's default."""

    partition: str = ""
    time: str | int = ""  # the time limit of each array task, in sbatch --time formats (a number: minutes)
    gpus_per_task: int = 1  # GPUs of each array task (0 = CPU-only tasks)
    workers_per_task: int = 1  # worker processes of each task, spread evenly over its GPUs
    cpus_per_task: int = 0  # 0 = 2 per worker (a core and autograd's backward thread)
    mem: str = ""  # memory of each task, e.g. "16G"; "" = sized from the dataset (psvae_opt.service.slurm)
    signal_seconds: int = 120  # USR1 this long before the time limit (or at preemption); 0 = none
    extra: tuple[str, ...] = ()  # further sbatch options, e.g. ["--qos=high", "#SBATCH --account=lab"]
    gpu_type: str = ""  # a typed GRES, e.g. "h100": --gres=gpu:h100:N ("" = any GPU)
    gpu_option: str = "gres"  # how GPUs are asked for: --gres=gpu:... or --gpus-per-task=...

    def __post_init__(self) -> None:
        object.__setattr__(self, "time", str(self.time))  # time = 90 in a study file: "90" minutes
        require(
            re.fullmatch(r"([\w.-]+(,[\w.-]+)*)?", self.partition) is not None,
            "slurm.partition",
            f"{self.partition!r} is not a partition name (or comma-separated names)",
        )
        try:
            limit = slurm_time_seconds(self.time) if self.time else None
        except ValueError:
            raise ConfigError(f"slurm.time: {self.time!r} is not {SLURM_TIME_FORMATS}") from None
        require(self.gpus_per_task >= 0, "slurm.gpus_per_task", "must be >= 0 (0 = CPU-only tasks)")
        require(self.workers_per_task >= 1, "slurm.workers_per_task", "must be >= 1")
        require(
            re.fullmatch(r"[\w.-]*", self.gpu_type) is not None,
            "slurm.gpu_type",
            f"{self.gpu_type!r} is not a GPU type such as h100 or a100_80gb",
        )
        require(
            self.gpu_option in ("gres", "gpus-per-task"),
            "slurm.gpu_option",
            f"{self.gpu_option!r} is not gres or gpus-per-task",
        )
        require(
            self.gpus_per_task == 0 or self.workers_per_task % self.gpus_per_task == 0,
            "slurm.workers_per_task",
            f"{self.workers_per_task} is not a multiple of slurm.gpus_per_task ({self.gpus_per_task}), "
            "so the GPUs would not get equal shares",
        )
        require(self.cpus_per_task >= 0, "slurm.cpus_per_task", "must be >= 0 (0 = 2 per worker)")
        require(
            re.fullmatch(r"(\d+[KMGTkmgt]?)?", self.mem) is not None,
            "slurm.mem",
            f"{self.mem!r} is not a memory size such as 16G or 16000M",
        )
        require(0 <= self.signal_seconds <= 65535, "slurm.signal_seconds", "must be in 0..65535 (0 = no signal)")
        require(
            not limit or self.signal_seconds < limit,
            "slurm.signal_seconds",
            f"{self.signal_seconds} s is not below the time limit slurm.time = {self.time!r}",
        )
        for item in self.extra:
            slurm_extra_line(item)
