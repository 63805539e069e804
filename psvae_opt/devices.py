"""Where training runs: the device (and which GPU a worker takes), its precision, frames held
on it, the CPU allocator."""

from __future__ import annotations

import ctypes
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import torch
from torch import Tensor

from psvae_opt.data import Session
from psvae_opt.errors import ConfigError


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


GPU_LOCKS_ENV = "PSVAE_OPT_GPU_LOCKS"
DEFAULT_GPU_LOCKS = "/tmp/psvae-opt-gpu-locks"


def claim_gpu(n_gpus: int, lock_dir: str | Path | None = None, slots: int = 16) -> tuple[int, IO[str]]:
    """Pick a GPU for this process: the first one no other worker of this machine holds.

    Workers that all see every GPU (``docker compose --scale worker=N`` cannot give replicas
    different devices) take slot 0 of GPU 0, 1, ... in turn, then slot 1 of each, so N
    workers spread evenly. A slot is a lock file held (``flock``) for the life of the
    process: a worker that dies frees its GPU. ``lock_dir`` (default
    ``$PSVAE_OPT_GPU_LOCKS``, else /tmp/psvae-opt-gpu-locks) must be shared by the workers
    of one machine and by no other machine.

    Returns:
        (GPU index, the open lock file: keep it open while the GPU is in use).
    """
    if n_gpus < 1:
        raise ConfigError("--gpu auto: no CUDA GPU is visible to this worker")
    folder = Path(lock_dir or os.environ.get(GPU_LOCKS_ENV) or DEFAULT_GPU_LOCKS)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return _take_slot(folder, n_gpus, slots)
    except OSError as exc:
        raise ConfigError(
            f"--gpu auto: cannot use the lock folder {folder} ({exc.strerror}); set {GPU_LOCKS_ENV}"
        ) from None


def _take_slot(folder: Path, n_gpus: int, slots: int) -> tuple[int, IO[str]]:
    import fcntl

    for slot in range(slots):
        for gpu in range(n_gpus):
            fh = (folder / f"gpu{gpu}.slot{slot}.lock").open("w")
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.close()
                continue
            fh.write(f"{os.getpid()}\n")
            fh.flush()
            return gpu, fh
    raise ConfigError(f"--gpu auto: all {slots} slots of the {n_gpus} GPUs are held (lock files in {folder})")


def resolve_device(name: str) -> torch.device:
    """ "auto" is the first GPU when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device = {name!r} but no CUDA GPU is visible; use auto or cpu")
    return device


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
    multiplies bf16 natively: a GPU that supports it, or a CPU with AVX512-BF16 or AMX;
    fp32 elsewhere.

    On a 2-core AVX512-BF16 CPU, bf16 trains BehaveNet's 1x128x128 network 1.8 times as fast
    as fp32 (benchmarks/train_throughput.py).
    """
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device.type == "cpu" and cpu_has_bf16() else "fp32"


def to_device(session: Session, split_frames: dict[str, np.ndarray], device: torch.device) -> DeviceData:
    """Copy frames (as uint8), labels and split indices to ``device`` once."""
    return DeviceData(
        frames=torch.from_numpy(session.images).to(device),
        labels=torch.from_numpy(session.labels).to(device),
        masks=torch.from_numpy(session.masks).to(device),
        splits={k: torch.from_numpy(v).to(device) for k, v in split_frames.items()},
    )


def autocast(device: torch.device, precision: str):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
