"""Where training runs: the device (whether CUDA works and why not), its precision, frames held
on it, the CPU allocator. Which GPU a worker takes is the worker's: :mod:`psvae_opt.service.gpu_slots`."""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from psvae_opt.data import Session
from psvae_opt.errors import ConfigError, first_line
from psvae_opt.training import gpus


@dataclass(frozen=True)
class DeviceData:
    """A session's arrays on the training device, held once.

    Attributes:
        frames: (T, C, H, W) uint8.
        labels: (T, L) float32; masks: (T, L) float32.
        splits: split name -> (N_split,) int64 frame indices, on the device.
    """

    frames: Tensor
    labels: Tensor
    masks: Tensor
    splits: dict[str, Tensor]

    def batch(self, idx: Tensor, channels_last: bool) -> tuple[Tensor, Tensor, Tensor]:
        """Frames scaled to [0, 1], labels and masks of the frames ``idx``."""
        x = self.frames.index_select(0, idx).float().div_(255.0)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, self.labels.index_select(0, idx), self.masks.index_select(0, idx)


def tune_cpu_allocator() -> bool:
    """Keep freed memory in the process instead of returning it to the kernel (glibc only).

    glibc serves blocks above 32 MB (every large activation of a 128x128 batch) with a fresh
    mmap, and the kernel zeroes new pages on first touch; at 1x128x128 on 2 CPU cores that
    was about a fifth of a training step. With mmap off and trimming raised, freed
    activations are reused. Call once per training process; returns whether it applied.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # mallopt parameter numbers from <malloc.h>
    return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))


def visible_devices(requested: Sequence[str], inherited: str | None) -> list[str]:
    """The CUDA_VISIBLE_DEVICES entry of each GPU index of ``--gpus`` (as parsed into strings).

    Indices count the GPUs the launcher itself sees: with ``inherited`` (its own
    CUDA_VISIBLE_DEVICES) "3,5", index 1 is device "5"; entries may be UUIDs (GPU-..., MIG-...),
    which pass through. Without ``inherited`` (None) the indices are the physical ones.
    """
    if inherited is None:
        return list(requested)
    visible = parse_visible(inherited)
    if not visible:
        raise ConfigError(
            f"--gpus {','.join(requested)}: CUDA_VISIBLE_DEVICES={inherited!r} hides every GPU from this launcher; "
            "unset it or list the GPUs to use there"
        )
    for index in requested:
        if not index.isdigit() or int(index) >= len(visible):
            raise ConfigError(
                f"--gpus {','.join(requested)}: {index} is not the index of a visible GPU; "
                f"CUDA_VISIBLE_DEVICES={inherited} shows {len(visible)} (indices 0..{len(visible) - 1})"
            )
    return [visible[int(i)] for i in requested]


def parse_visible(value: str) -> list[str]:
    """CUDA_VISIBLE_DEVICES as CUDA reads it: entries up to the first invalid one (so "-1"
    or "" hide every GPU); an entry is an index or a UUID (GPU-..., MIG-...)."""
    entries = []
    for entry in (e.strip() for e in value.split(",")):
        if not (entry.isdigit() or entry.startswith(("GPU-", "MIG-"))):
            break
        entries.append(entry)
    return entries


def _nvidia_smi() -> tuple[tuple[int, int] | None, str | None]:
    """The CUDA version the driver supports (from nvidia-smi's header), or the problem."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None, "no NVIDIA driver (nvidia-smi not found)"
    try:
        out = subprocess.run([exe], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"nvidia-smi did not run ({exc})"
    if out.returncode != 0:
        first = first_line(out.stdout + out.stderr, "no output")
        return None, f"the NVIDIA driver does not answer (nvidia-smi: {first})"
    match = re.search(r"CUDA Version:\s*(\d+)\.(\d+)", out.stdout)
    return ((int(match.group(1)), int(match.group(2))) if match else None), None


def _diagnose(cuda_visible: str | None = None) -> tuple[str, str] | None:
    """(cause, fix) when CUDA is not usable here, else None; ``cuda_visible``: this process's
    CUDA_VISIBLE_DEVICES when the caller knows it (a value that hides every GPU is named)."""
    reinstall = "run `bash scripts/install.sh` on this machine (it installs the torch build its driver supports)"
    cpu = "or train on the CPU (no --gpus/--gpu, train.device = auto or cpu)"
    if torch.version.cuda is None:
        return f"this torch ({torch.__version__}) is built without CUDA", f"{reinstall}, {cpu}"
    if cuda_visible is not None and not parse_visible(cuda_visible):
        return f"CUDA_VISIBLE_DEVICES={cuda_visible!r} hides every GPU", "unset it or list the GPUs to use"
    init_error = None
    try:
        torch.cuda.init()
        if torch.cuda.device_count() > 0:
            return None
    except Exception as exc:  # torch raises RuntimeError, AssertionError or AcceleratorError here
        init_error = first_line(exc)
    driver, problem = _nvidia_smi()
    if problem:
        return problem, f"run on a machine with an NVIDIA GPU and driver, {cpu}"
    built = tuple(int(p) for p in torch.version.cuda.split(".")[:2])
    if driver is not None and driver < built:
        return (
            f"the NVIDIA driver supports CUDA up to {driver[0]}.{driver[1]}, older than this torch's CUDA "
            f"{torch.version.cuda}",
            f"update the driver, or {reinstall}",
        )
    if init_error:
        return f"CUDA failed to start ({init_error})", "check `nvidia-smi` and the GPU's state"
    return "no CUDA GPU is visible", "check `nvidia-smi` and CUDA_VISIBLE_DEVICES"


def cuda_problem(cuda_visible: str | None = None) -> str | None:
    """None when CUDA is usable in this process, else why not, in words: torch built without
    CUDA, no NVIDIA driver, a driver older than torch's CUDA, no GPU visible, or the error of
    CUDA's start. ``cuda_visible``: as for :func:`require_cuda`."""
    found = _diagnose(cuda_visible)
    return found[0] if found else None


def require_cuda(what: str, cuda_visible: str | None = None) -> None:
    """Raise a one-line ConfigError naming ``what`` asked for a GPU, the cause and the fix.

    ``cuda_visible``: the process's CUDA_VISIBLE_DEVICES, which the command edge reads
    (:mod:`psvae_opt.commands.environment`); without it a value that hides every GPU is
    reported as no GPU visible.
    """
    found = _diagnose(cuda_visible)
    if found:
        raise ConfigError(f"{what}: CUDA is not usable here: {found[0]}; {found[1]}")


def resolve_device(name: str) -> torch.device:
    """ "auto" is the first GPU when CUDA is usable, else the CPU, silently (a study file that
    runs anywhere); "cuda" and "cuda:N" refuse to start without a usable GPU N, naming why.
    Either way a GPU must run one kernel of this torch (:func:`~psvae_opt.training.gpus.check_kernels`)."""
    if name == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if device.type == "cuda":
            gpus.check_kernels(device, "train.device = 'auto'")
        return device
    device = torch.device(name)
    if device.type == "cuda":
        require_cuda(f"train.device = {name!r}")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ConfigError(
                f"train.device = {name!r}: this process sees {count} GPU(s) (cuda:0..cuda:{count - 1}); "
                "check CUDA_VISIBLE_DEVICES"
            )
        gpus.check_kernels(device, f"train.device = {name!r}")
    return device


GPU_MEMORY_MARGIN = 2 * 2**30  # bytes kept free for training: weights, Adam, activations, cuDNN workspaces


def check_gpu_memory(n_bytes: int, device: torch.device, what: str = "the dataset") -> None:
    """Refuse (one line) to copy ``n_bytes`` onto a GPU that has not that much free plus
    :data:`GPU_MEMORY_MARGIN`.

    Free memory is what the device reports now (``torch.cuda.mem_get_info``): workers that
    start together all see the same, so the check catches a dataset too large for the GPU's
    share, not every race.
    """
    if device.type != "cuda":
        return
    free, total = torch.cuda.mem_get_info(device)
    if n_bytes + GPU_MEMORY_MARGIN > free:
        gib = 2**30
        raise ConfigError(
            f"{what} needs {n_bytes / gib:.1f} GiB on {device} plus {GPU_MEMORY_MARGIN / gib:.0f} GiB to train, "
            f"but only {free / gib:.1f} GiB of its {total / gib:.1f} GiB are free; run fewer workers per GPU, "
            "a smaller dataset (data synth --size), or use a larger GPU"
        )


def cpu_has_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether the CPU multiplies bf16 natively (AVX512-BF16 or AMX), per its feature flags.

    Without them oneDNN emulates bf16, slower than fp32.
    """
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> str:
    """ "auto" is bf16 autocast (fp32 weights, optimizer and loss) where the hardware
    multiplies bf16 natively: a GPU of compute capability >= 8.0 (asked of ``device`` itself), or
    a CPU with AVX512-BF16 or AMX; fp32 elsewhere (a V100 or T4 would emulate it, slower than fp32).

    On a 2-core AVX512-BF16 CPU, bf16 trains BehaveNet's 1x128x128 network 1.8 times as fast
    as fp32 (benchmarks/train_throughput.py).
    """
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if gpus.native_bf16(device) else "fp32"
    return "bf16" if device.type == "cpu" and cpu_has_bf16() else "fp32"


def to_device(session: Session, split_frames: dict[str, np.ndarray], device: torch.device) -> DeviceData:
    """Copy frames (as uint8), labels and split indices to ``device`` once (on a GPU, after
    :func:`check_gpu_memory`)."""
    arrays = [session.images, session.labels, session.masks, *split_frames.values()]
    check_gpu_memory(sum(a.nbytes for a in arrays), device, what=f"the dataset {session.path}")
    return DeviceData(
        frames=torch.from_numpy(session.images).to(device),
        labels=torch.from_numpy(session.labels).to(device),
        masks=torch.from_numpy(session.masks).to(device),
        splits={k: torch.from_numpy(v).to(device) for k, v in split_frames.items()},
    )


def autocast(device: torch.device, precision: str):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
