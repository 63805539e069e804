"""What a GPU allows, with the GPU faked on a CPU machine: a torch without kernels for the GPU's
architecture, set_device and native bf16 asked of the worker's own GPU, compute modes from a
stand-in nvidia-smi (exclusive-process GPUs, MPS), and ``--gpus all``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

from psvae_opt.config import Config
from psvae_opt.errors import ConfigError
from psvae_opt.service import local_launcher
from psvae_opt.service.request import StageRequest
from psvae_opt.service.worker import WorkerRequest, worker_device
from psvae_opt.training import devices, gpus

NO_KERNEL = (
    "CUDA error: no kernel image is available for execution on the device\n"
    "CUDA kernel errors might be asynchronously reported"
)


def smi(folder: Path, modes: tuple[str, ...] = ("Default", "Default")) -> Path:
    """A stand-in nvidia-smi: the compute-mode query lists GPUs 0.. with ``modes``."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [f"{i}, GPU-{i}aaa-bbb, {mode}" for i, mode in enumerate(modes)]
    exe = folder / "nvidia-smi"
    exe.write_text(
        f"#!{sys.executable}\nimport sys\n"
        "if any(a.startswith('--query-gpu=index,uuid,compute_mode') for a in sys.argv):\n"
        f"    print({chr(10).join(rows)!r})\n"
        "else:\n    print('| NVIDIA-SMI 570.86.15    Driver Version: 570.86.15    CUDA Version: 12.8     |')\n"
    )
    exe.chmod(0o755)
    return folder


@pytest.fixture
def gpu_machine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """A CUDA torch seeing ``count`` GPUs of ``capability``; kernels fail with ``kernel_error``."""
    calls: dict[str, list] = {"set_device": [], "capability": []}

    def fake(count: int = 2, capability=(9, 0), kernel_error: str | None = None, modes=("Default", "Default")):
        def kernel(device: torch.device) -> None:
            if kernel_error:
                raise RuntimeError(kernel_error)

        def get_capability(device=None):
            calls["capability"].append(device)
            return capability

        monkeypatch.setattr(torch.version, "cuda", "13.0")
        monkeypatch.setattr(torch.cuda, "init", lambda: None)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # as a T4 answers
        monkeypatch.setattr(torch.cuda, "get_device_capability", get_capability)
        monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: ["sm_75", "sm_80", "sm_90", "sm_100", "sm_120"])
        monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls["set_device"].append(d))
        monkeypatch.setattr(gpus, "launch_tiny_kernel", kernel)
        gpus.check_kernels.cache_clear()
        monkeypatch.setenv("PATH", str(smi(tmp_path / "bin", modes)))
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
        monkeypatch.setenv("CUDA_MPS_PIPE_DIRECTORY", str(tmp_path / "no-mps"))
        monkeypatch.setenv("PSVAE_OPT_GPU_LOCKS", str(tmp_path / "locks"))
        return calls

    yield fake
    gpus.check_kernels.cache_clear()


def request(gpu: str) -> WorkerRequest:
    """A worker's request for ``--gpu gpu`` with the lock folder the fixture names."""
    return WorkerRequest(stages=(1,), gpu=gpu, gpu_locks=os.environ["PSVAE_OPT_GPU_LOCKS"])


def test_a_torch_without_kernels_for_the_gpu_is_refused_naming_the_build(gpu_machine):
    """A V100 (7.0) under a cu130 torch: CUDA starts and counts the GPU, the first kernel fails."""
    gpu_machine(count=1, capability=(7, 0), kernel_error=NO_KERNEL)
    assert devices.cuda_problem() is None  # the driver-level check alone sees nothing wrong
    with pytest.raises(ConfigError) as err:
        devices.resolve_device("cuda:0")
    assert str(err.value) == (
        f"train.device = 'cuda:0': this torch ({torch.__version__}, CUDA 13.0) has no kernels for cuda:0 "
        "(compute capability 7.0; it has sm_75, sm_80, sm_90, sm_100, sm_120); run `bash scripts/install.sh "
        "--torch cu126` (or install.sh on a GPU node, which picks the build itself)"
    )
    with pytest.raises(ConfigError, match=r"^train.device = 'auto': this torch .* has no kernels"):
        devices.resolve_device("auto")  # auto does not fall back silently to a CPU run either
    with pytest.raises(ConfigError, match=r"^GPU 0: this torch .* --torch cu126"):
        worker_device(request("0"), Config())


def test_another_kernel_failure_is_named_as_it_is(gpu_machine):
    gpu_machine(count=1, kernel_error="CUDA error: an illegal memory access was encountered")
    with pytest.raises(ConfigError, match=r"a first CUDA kernel failed on cuda \(CUDA error: an illegal memory"):
        devices.resolve_device("cuda")


def test_a_worker_makes_its_gpu_the_current_device(gpu_machine):
    calls = gpu_machine(count=2)
    cfg, _ = worker_device(request("1"), Config())
    assert cfg.train.device == "cuda:1"
    assert calls["set_device"] == [1]
    cfg, lock = worker_device(request("auto"), Config())
    assert calls["set_device"] == [1, int(cfg.train.device.split(":")[1])]
    lock.close()


@pytest.mark.parametrize(
    "capability, expected", [((7, 0), "fp32"), ((7, 5), "fp32"), ((8, 0), "bf16"), ((9, 0), "bf16")]
)
def test_native_bf16_is_asked_of_the_training_device(gpu_machine, capability: tuple[int, int], expected: str):
    """A T4 (7.5) answers is_bf16_supported() with True, but only emulates bf16: auto picks fp32 there."""
    calls = gpu_machine(count=2, capability=capability)
    assert devices.resolve_precision("auto", torch.device("cuda:1")) == expected
    assert calls["capability"] == [torch.device("cuda:1")]
    assert devices.resolve_precision("bf16", torch.device("cuda:1")) == "bf16"  # an explicit choice stands


def test_gpus_all_takes_every_visible_gpu(gpu_machine, monkeypatch: pytest.MonkeyPatch, cli):
    gpu_machine(count=3)
    assert local_launcher.local_devices(StageRequest(stage=1, config_path="x", gpus=("all",))) == ["0", "1", "2"]
    gpu_machine(count=2)  # CUDA_VISIBLE_DEVICES=4,6, as the command edge reads it
    visible = StageRequest(stage=1, config_path="x", gpus=("all",), cuda_visible="4,6")
    assert local_launcher.local_devices(visible) == ["4", "6"]


def test_gpus_all_is_accepted_on_the_command_line(tmp_path: Path, cli):
    """Refused before as not a list of digits; now it reaches the CUDA check (no GPU here)."""
    result = cli(
        "stage1", "--config", "studies/demo.toml", "--storage", f"sqlite:///{tmp_path / 'a.db'}", "--gpus", "all"
    )
    assert result.code != 0
    assert "give GPU indices" not in result.err
    assert "--gpus all: CUDA is not usable here" in result.err
    assert not (tmp_path / "a.db").exists()


def test_workers_sharing_an_exclusive_gpu_are_refused_unless_mps_runs(gpu_machine, tmp_path: Path):
    gpu_machine(count=2, modes=("Default", "Exclusive_Process"))
    one_each = StageRequest(stage=1, config_path="x", gpus=("0", "1"))
    assert local_launcher.local_devices(one_each) == ["0", "1"]  # one worker per GPU: fine
    mps = tmp_path / "no-mps"  # the pipe folder the fixture names ($CUDA_MPS_PIPE_DIRECTORY)
    two_each = StageRequest(stage=1, config_path="x", gpus=("0", "1"), workers_per_gpu=2, mps_pipe=str(mps))
    with pytest.raises(ConfigError) as err:
        local_launcher.local_devices(two_each)
    assert str(err.value).startswith(
        "--gpus 0,1 with 4 workers: GPU 1 is in compute mode Exclusive_Process: one process at a time, so 2 workers "
        "on it would fail with 'busy or unavailable'; run one worker per GPU, or start NVIDIA MPS"
    )
    assert local_launcher.local_devices(StageRequest(stage=1, config_path="x", gpus=("0",), workers_per_gpu=2))
    mps.mkdir()  # an MPS daemon now answers there
    (mps / "control").write_text("")
    assert local_launcher.local_devices(two_each) == ["0", "1"]


def test_a_prohibited_gpu_is_refused(gpu_machine):
    gpu_machine(count=1, modes=("Prohibited",))
    with pytest.raises(ConfigError, match="GPU 0 is in compute mode Prohibited"):
        local_launcher.local_devices(StageRequest(stage=1, config_path="x", gpus=("0",)))


def test_auto_workers_take_one_slot_of_an_exclusive_gpu(gpu_machine):
    """``--gpu auto`` (compose replicas): a second worker on an exclusive GPU stops in one line
    instead of failing in CUDA and being restarted."""
    gpu_machine(count=1, modes=("Exclusive_Process",))
    _, first = worker_device(request("auto"), Config())
    with pytest.raises(ConfigError, match=r"all 1 slots of the 1 GPUs are held"):
        worker_device(request("auto"), Config())
    first.close()
