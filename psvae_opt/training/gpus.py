"""What a GPU itself allows, asked of the device a worker trains on: whether this torch has
kernels for it (one tiny kernel launched), whether it multiplies bf16 natively, and whether its
compute mode lets several processes share it (nvidia-smi; NVIDIA MPS)."""

from __future__ import annotations

import functools
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import torch

from psvae_opt.errors import ConfigError

NATIVE_BF16 = (8, 0)  # Ampere and later; a V100 (7.0) or T4 (7.5) emulates bf16, slower than fp32
# Compute modes in which a second process cannot open a context on the GPU (nvidia-smi's words)
EXCLUSIVE_MODES = ("Exclusive_Process", "Exclusive_Thread")
MPS_PIPE_ENV = "CUDA_MPS_PIPE_DIRECTORY"
MPS_DEFAULT_PIPE = "/tmp/nvidia-mps"


def launch_tiny_kernel(device: torch.device) -> None:
    """One elementwise kernel on ``device``, waited for: it fails where this torch has no code
    for the GPU's architecture ("no kernel image is available"), which ``torch.cuda.init()`` and
    ``device_count()`` never notice."""
    torch.full((1,), 1.0, device=device).add_(1.0).item()


# The CUDA builds PyTorch publishes for the pinned torch (constraints.txt), from its release
# compatibility matrix (RELEASE.md in the PyTorch repository: CUDA 12.6 and 13.0 for torch
# 2.12-2.14, 13.2 experimental; no 12.8 build of 2.13). The one declared list: scripts/install.sh's
# table, the Dockerfile, the README and the tests' wheel index may name only these
# (tests/test_install.py checks it, and that the pin is the version below). When the pin
# changes, update both from the matrix and https://download.pytorch.org/whl/cuXYZ/torch/.
PUBLISHED_FOR = "2.13.0"
PUBLISHED_CUDA_BUILDS = ("cu126", "cu130", "cu132")  # cu132: experimental, never chosen by install.sh


def build_for_capability(capability: tuple[int, int]) -> str:
    """The CUDA build of torch (a ``scripts/install.sh --torch`` value) with kernels for
    ``capability``: cu126 below 7.5 (a V100 is 7.0; CUDA 13 has no kernels for it), cu130 above
    (it needs a driver >= 580)."""
    return "cu126" if capability < (7, 5) else "cu130"


@functools.cache
def check_kernels(device: torch.device, what: str) -> None:
    """Refuse in one line a GPU this torch cannot run a kernel on, naming its capability and the
    build to install; checked once per device and process."""
    try:
        launch_tiny_kernel(device)
    except Exception as exc:  # torch raises RuntimeError or AcceleratorError for a failed launch
        first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
        major, minor = torch.cuda.get_device_capability(device)
        if "no kernel image" not in first and "not compatible" not in first:
            raise ConfigError(
                f"{what}: a first CUDA kernel failed on {device} ({first}); check `nvidia-smi` and the GPU's state"
            ) from None
        archs = ", ".join(torch.cuda.get_arch_list()) or "none"
        raise ConfigError(
            f"{what}: this torch ({torch.__version__}, CUDA {torch.version.cuda}) has no kernels for {device} "
            f"(compute capability {major}.{minor}; it has {archs}); run `bash scripts/install.sh --torch "
            f"{build_for_capability((major, minor))}` (or install.sh on a GPU node, which picks the build itself)"
        ) from None


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` (a CUDA device) multiplies bf16 natively: compute capability >= 8.0.

    ``torch.cuda.is_bf16_supported()`` also answers True where bf16 is only emulated (a T4), and
    for the current device rather than ``device``.
    """
    return torch.cuda.get_device_capability(device) >= NATIVE_BF16


def select(index: int) -> torch.device:
    """Make GPU ``index`` this process's current device (so that code using the current device,
    cuBLAS handles and any stray allocation land on it, not on GPU 0) and check its kernels."""
    torch.cuda.set_device(index)
    device = torch.device(f"cuda:{index}")
    check_kernels(device, f"GPU {index}")
    return device


def compute_modes() -> dict[str, str]:
    """nvidia-smi's compute mode of each GPU, by index and by UUID ({} without nvidia-smi)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return {}
    try:
        out = subprocess.run(
            [exe, "--query-gpu=index,uuid,compute_mode", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired):
        return {}
    modes = {}
    for line in out.stdout.splitlines() if out.returncode == 0 else ():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) == 3:
            modes[fields[0]] = modes[fields[1]] = fields[2]
    return modes


def mps_running(pipe: str | None = None) -> bool:
    """Whether an NVIDIA MPS control daemon answers here (its pipe folder, ``pipe``
    (``$CUDA_MPS_PIPE_DIRECTORY``, read by the command edge) else /tmp/nvidia-mps, holds
    ``control``): its clients share even an exclusive-process GPU, since MPS is the one process using it."""
    return (Path(pipe or MPS_DEFAULT_PIPE) / "control").exists()


def check_sharing(entries: Sequence[str], workers_per_gpu: int, what: str, mps_pipe: str | None = None) -> None:
    """Refuse ``workers_per_gpu`` > 1 on a GPU whose compute mode admits one process (without MPS),
    or any worker on a GPU in Prohibited mode; ``entries`` are CUDA_VISIBLE_DEVICES entries
    (indices or UUIDs, as nvidia-smi lists them)."""
    modes = compute_modes()
    for entry in entries:
        mode = modes.get(entry) or next((m for k, m in modes.items() if k.startswith(entry)), "")
        if mode == "Prohibited":
            raise ConfigError(f"{what}: GPU {entry} is in compute mode Prohibited: no process may use it")
        if workers_per_gpu > 1 and mode in EXCLUSIVE_MODES and not mps_running(mps_pipe):
            raise ConfigError(
                f"{what}: GPU {entry} is in compute mode {mode}: one process at a time, so {workers_per_gpu} "
                "workers on it would fail with 'busy or unavailable'; run one worker per GPU, or start NVIDIA MPS "
                "(nvidia-cuda-mps-control -d), through which several workers share it (README, 'Several workers "
                "on one GPU')"
            )
