"""The GPU code paths (bf16 autocast, channels-last, torch.compile, CUDA devices): their CPU
equivalents run everywhere; the `gpu` tests run where CUDA is available."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from psvae_opt.config import Config, replace
from psvae_opt.errors import ConfigError
from psvae_opt.model.network import PSVAE
from psvae_opt.service.gpu_slots import claim_gpu
from psvae_opt.training import gpus
from psvae_opt.training.devices import resolve_device
from psvae_opt.training.run_folder import read_metrics
from tests.test_trainer import run_fit


def test_channels_last_computes_the_same_model():
    torch.manual_seed(0)
    model = PSVAE((1, 64, 64), 4, 2, channels=(8, 8, 16, 16, 16))
    x = torch.rand(5, 1, 64, 64)
    plain = model(x, sample=False)
    model.to(memory_format=torch.channels_last)
    fast = model(x.contiguous(memory_format=torch.channels_last), sample=False)
    assert torch.allclose(plain.x_hat, fast.x_hat, atol=1e-5)
    assert torch.allclose(plain.mu, fast.mu, atol=1e-5)


def test_bf16_autocast_trains_with_float32_master_weights(tiny_config: Config, tmp_path: Path):
    cfg = replace(tiny_config, train={"precision": "bf16"})
    result = run_fit(cfg, tmp_path / "bf16")
    assert all(np.isfinite(v) for m in result.metrics.values() for v in m.values())
    state = torch.load(tmp_path / "bf16" / "best.pt", weights_only=True)["model"]
    assert all(t.dtype == torch.float32 for t in state.values() if t.is_floating_point())
    fp32 = run_fit(tiny_config, tmp_path / "fp32")
    # reduced precision changes the numbers a little, not the picture
    assert result.metrics["val"]["pixel_mse"] == pytest.approx(fp32.metrics["val"]["pixel_mse"], rel=0.1)


def test_asking_for_a_missing_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ConfigError, match=r"^train.device = 'cuda': CUDA is not usable here: .*; .*scripts/install.sh"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"  # auto falls back to the CPU silently


@pytest.mark.gpu
def test_training_on_the_gpu_with_bf16_channels_last_and_compile(tiny_config: Config, tmp_path: Path):
    cfg = replace(tiny_config, train={"device": "cuda", "precision": "bf16", "compile": True})
    result = run_fit(cfg, tmp_path / "gpu")
    assert all(np.isfinite(v) for m in result.metrics.values() for v in m.values())
    assert len(read_metrics(tmp_path / "gpu")) == 2 * cfg.train.max_epochs


@pytest.mark.gpu
def test_same_seeds_same_numbers_on_the_gpu(tiny_config: Config, tmp_path: Path):
    cfg = replace(tiny_config, train={"device": "cuda"})
    run_fit(cfg, tmp_path / "a")
    run_fit(cfg, tmp_path / "b")
    assert (tmp_path / "a" / "metrics.csv").read_text() == (tmp_path / "b" / "metrics.csv").read_text()


def test_auto_precision_is_bf16_where_the_hardware_has_it(tmp_path: Path):
    from psvae_opt.training.devices import cpu_has_bf16, resolve_precision

    with_bf16, without = tmp_path / "a", tmp_path / "b"
    with_bf16.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16 avx512_vnni\n")
    without.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n")
    assert cpu_has_bf16(with_bf16) and not cpu_has_bf16(without) and not cpu_has_bf16(tmp_path / "none")
    assert resolve_precision("auto", torch.device("cpu")) == ("bf16" if cpu_has_bf16() else "fp32")
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16"
    assert resolve_precision("fp32", torch.device("cpu")) == "fp32"
    assert resolve_precision("fp32", torch.device("cuda")) == "fp32"
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        assert resolve_precision("auto", torch.device("cuda")) == "bf16"


def test_workers_that_see_every_gpu_take_different_ones(tmp_path: Path):
    """--gpu auto: each live worker holds one GPU slot; a dead worker's slot is free again."""
    import subprocess
    import sys

    code = (
        "import sys; from psvae_opt.service.gpu_slots import claim_gpu; "
        f"gpu, lock = claim_gpu(2, {str(tmp_path)!r}); print(gpu, flush=True); sys.stdin.read()"
    )

    def start() -> tuple[subprocess.Popen, int]:
        proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        return proc, int(proc.stdout.readline())

    workers = [start() for _ in range(3)]
    assert [gpu for _, gpu in workers] == [0, 1, 0]  # slot 0 of each GPU, then slot 1 of GPU 0
    assert (tmp_path / "gpu0.slot1.lock").exists()
    workers[1][0].kill()  # the worker on GPU 1 dies: its lock goes with it
    workers[1][0].wait()
    replacement = start()
    assert replacement[1] == 1
    for proc, _ in [*workers, replacement]:
        proc.kill()
        proc.wait()


def test_gpu_auto_without_a_gpu_is_a_clear_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="no CUDA GPU is visible"):
        claim_gpu(0, tmp_path)


def test_gpu_auto_with_an_unusable_lock_folder_is_a_clear_error(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match=r"cannot use the lock folder .*file/locks .*; set PSVAE_OPT_GPU_LOCKS"):
        claim_gpu(1, blocker / "locks")


# --- which GPUs a launcher hands its workers -----------------------------------------------


def test_gpus_index_the_devices_the_launcher_sees():
    from psvae_opt.training.devices import visible_devices

    assert visible_devices(["1"], "3,5") == ["5"]
    assert visible_devices(["0", "1", "0"], "3,5") == ["3", "5", "3"]
    assert visible_devices(["1", "0"], None) == ["1", "0"]  # no CUDA_VISIBLE_DEVICES: physical indices
    uuids = "GPU-8d2f1c3a-0000-1111-2222-333344445555,MIG-0b1c2d3e-4444-5555-6666-777788889999"
    assert visible_devices(["1"], uuids) == [uuids.split(",")[1]]
    assert visible_devices(["0"], "2,-1,3") == ["2"]  # CUDA stops reading at the first invalid entry
    with pytest.raises(
        ConfigError, match=r"^--gpus 2: 2 is not the index of a visible GPU; .*=3,5 shows 2 \(indices 0..1\)$"
    ):
        visible_devices(["2"], "3,5")
    with pytest.raises(ConfigError, match=r"^--gpus 0,3: 3 is not the index"):
        visible_devices(["0", "3"], "0,-1,2,3")
    for hidden in ("", "-1", "none"):
        with pytest.raises(ConfigError, match=f"^--gpus 0: CUDA_VISIBLE_DEVICES={hidden!r} hides every GPU"):
            visible_devices(["0"], hidden)


# --- why CUDA does not work (the probe faked: torch's build, its CUDA start, nvidia-smi) --------


def nvidia_smi(folder: Path, cuda: str | None = "12.8", code: int = 0, text: str = "") -> Path:
    """A stand-in nvidia-smi printing the driver's table header (or ``text``) and exiting ``code``."""
    folder.mkdir(exist_ok=True)
    header = (
        f"| NVIDIA-SMI 570.86.15    Driver Version: 570.86.15    CUDA Version: {cuda}     |" if cuda else "no version"
    )
    exe = folder / "nvidia-smi"
    exe.write_text(f"#!{sys.executable}\nimport sys\nprint({text or header!r})\nsys.exit({code})\n")
    exe.chmod(0o755)
    return folder


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """A torch built for CUDA 12.8 whose start fails as told; nvidia-smi only where the test puts one."""

    def fake(init_error: str | None = None, count: int = 0, path: Path | None = None) -> None:
        def init() -> None:
            if init_error:
                raise RuntimeError(init_error)

        monkeypatch.setattr(torch.version, "cuda", "12.8")
        monkeypatch.setattr(torch.cuda, "init", init)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
        monkeypatch.setattr(gpus, "launch_tiny_kernel", lambda device: None)  # a GPU whose kernels run
        gpus.check_kernels.cache_clear()
        monkeypatch.setenv("PATH", str(path or tmp_path / "empty"))
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)

    return fake


def test_this_machine_cpu_build_is_named():
    from psvae_opt.training.devices import cuda_problem

    if torch.version.cuda is not None:
        pytest.skip("this torch has CUDA")
    assert cuda_problem() == f"this torch ({torch.__version__}) is built without CUDA"


def test_each_cause_of_unusable_cuda_is_named(fake_cuda, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from psvae_opt.training.devices import cuda_problem

    no_driver = (
        "Found no NVIDIA driver on your system. Please check that you have an NVIDIA GPU\nand installed a driver"
    )
    fake_cuda(init_error=no_driver)
    assert cuda_problem() == "no NVIDIA driver (nvidia-smi not found)"
    fake_cuda(
        init_error=no_driver,
        path=nvidia_smi(
            tmp_path / "a", code=9, text="NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver."
        ),
    )
    assert cuda_problem() == (
        "the NVIDIA driver does not answer (nvidia-smi: NVIDIA-SMI has failed because it couldn't communicate "
        "with the NVIDIA driver.)"
    )
    old = "The NVIDIA driver on your system is too old (found version 12040)."
    fake_cuda(init_error=old, path=nvidia_smi(tmp_path / "b", cuda="12.4"))
    assert cuda_problem() == "the NVIDIA driver supports CUDA up to 12.4, older than this torch's CUDA 12.8"
    fake_cuda(
        init_error="CUDA error: out of memory\nCUDA kernel errors might be reported", path=nvidia_smi(tmp_path / "c")
    )
    assert cuda_problem() == "CUDA failed to start (CUDA error: out of memory)"
    fake_cuda(count=0, path=nvidia_smi(tmp_path / "d", cuda="13.0"))
    assert cuda_problem() == "no CUDA GPU is visible"
    fake_cuda(count=2)
    assert cuda_problem() is None  # usable: nvidia-smi is not even asked
    for hidden in ("", "-1"):
        assert cuda_problem(hidden) == f"CUDA_VISIBLE_DEVICES={hidden!r} hides every GPU"
    assert cuda_problem("0") is None


def test_require_cuda_names_what_asked_the_cause_and_the_fix(fake_cuda, tmp_path: Path):
    from psvae_opt.training.devices import require_cuda

    fake_cuda(init_error="The NVIDIA driver on your system is too old", path=nvidia_smi(tmp_path / "a", cuda="11.8"))
    with pytest.raises(ConfigError) as err:
        require_cuda("--gpus 0,1")
    assert str(err.value) == (
        "--gpus 0,1: CUDA is not usable here: the NVIDIA driver supports CUDA up to 11.8, older than this torch's "
        "CUDA 12.8; update the driver, or run `bash scripts/install.sh` on this machine (it installs the torch "
        "build its driver supports)"
    )
    fake_cuda(count=1)
    require_cuda("--gpus 0")  # usable: no error


def test_cuda_devices_resolve_only_where_they_exist(fake_cuda, tmp_path: Path):
    fake_cuda(count=2)
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(ConfigError, match=r"^train.device = 'cuda:2': this process sees 2 GPU\(s\) \(cuda:0..cuda:1\)"):
        resolve_device("cuda:2")
    fake_cuda(init_error="Found no NVIDIA driver on your system.")
    with pytest.raises(ConfigError, match=r"^train.device = 'cuda:0': CUDA is not usable here: no NVIDIA driver"):
        resolve_device("cuda:0")
    assert resolve_device("auto") == torch.device("cpu")


def test_frames_too_large_for_the_free_gpu_memory_are_refused(monkeypatch: pytest.MonkeyPatch, tiny_h5: Path):
    from psvae_opt.data import load_session, split_frames
    from psvae_opt.training.devices import GPU_MEMORY_MARGIN, check_gpu_memory, to_device

    gib = 2**30
    free = {"bytes": 3 * gib}
    asked = []

    def mem_get_info(device):
        asked.append(device)
        return free["bytes"], 80 * gib

    monkeypatch.setattr(torch.cuda, "mem_get_info", mem_get_info)
    cuda = torch.device("cuda:1")
    check_gpu_memory(gib - 1, cuda)  # 1 GiB + the 2 GiB margin fit in 3 GiB
    with pytest.raises(ConfigError) as err:
        check_gpu_memory(int(1.5 * gib), cuda, what="the dataset mouse.h5")
    assert str(err.value) == (
        "the dataset mouse.h5 needs 1.5 GiB on cuda:1 plus 2 GiB to train, but only 3.0 GiB of its 80.0 GiB are free; "
        "run fewer workers per GPU, a smaller dataset (data synth --size), or use a larger GPU"
    )
    assert asked == [cuda, cuda]
    check_gpu_memory(10**15, torch.device("cpu"))  # the CPU is not checked
    assert len(asked) == 2

    session = load_session(tiny_h5)
    frames = split_frames(session, (3, 1, 1, 0), 0)
    need = session.images.nbytes + session.labels.nbytes + session.masks.nbytes + sum(v.nbytes for v in frames.values())
    free["bytes"] = GPU_MEMORY_MARGIN + need - 1  # one byte short
    with pytest.raises(ConfigError, match=rf"^the dataset {tiny_h5} needs 0.0 GiB on cuda:1 .*only 2.0 GiB"):
        to_device(session, frames, cuda)  # refused before any copy (this machine has no GPU to copy to)
    free["bytes"] += 1
    if not torch.cuda.is_available():  # it fits: the copy itself is tried, and fails without CUDA
        with pytest.raises((RuntimeError, AssertionError)) as copy:
            to_device(session, frames, cuda)
        assert not isinstance(copy.value, ConfigError) and len(asked) == 4


# --- GPU lock files ------------------------------------------------------------------------


def test_a_planted_symlink_is_neither_followed_nor_truncated(tmp_path: Path):
    victim = tmp_path / "precious.txt"
    victim.write_text("do not touch\n")
    locks = tmp_path / "locks"
    locks.mkdir()
    (locks / "gpu0.slot0.lock").symlink_to(victim)
    with pytest.raises(
        ConfigError, match=r"^--gpu auto: .*gpu0.slot0.lock is a symbolic link, not a lock file; remove it"
    ):
        claim_gpu(2, locks)
    assert victim.read_text() == "do not touch\n"
    (locks / "gpu0.slot0.lock").unlink()
    gpu, fh = claim_gpu(2, locks)
    assert gpu == 0 and (locks / "gpu0.slot0.lock").read_text() == f"{os.getpid()}\n"
    assert stat.S_IMODE((locks / "gpu0.slot0.lock").stat().st_mode) == 0o600
    fh.close()


def test_a_held_lock_file_keeps_its_content(tmp_path: Path):
    """The second claimant opens the first one's file without truncating it, and moves on."""
    import subprocess

    code = "from psvae_opt.service.gpu_slots import claim_gpu; "
    code += f"g, fh = claim_gpu(1, {str(tmp_path)!r}); print(g, flush=True); input()"
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "0"
        gpu, fh = claim_gpu(1, tmp_path)
        assert gpu == 0 and (tmp_path / "gpu0.slot1.lock").exists()
        assert (tmp_path / "gpu0.slot0.lock").read_text() == f"{holder.pid}\n"
        fh.close()
    finally:
        holder.kill()
        holder.wait()


def test_the_default_lock_folder_is_private_to_the_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import psvae_opt.service.gpu_slots as devices

    base = tmp_path / "gpu-locks"
    monkeypatch.setattr(devices, "DEFAULT_GPU_LOCKS", str(base))
    folder = Path(f"{base}-{os.getuid()}")
    gpu, fh = claim_gpu(1)
    assert gpu == 0 and stat.S_IMODE(folder.stat().st_mode) == 0o700 and (folder / "gpu0.slot0.lock").exists()
    fh.close()
    folder.chmod(0o777)  # as if another user had made it, open to all
    with pytest.raises(ConfigError, match=rf"^--gpu auto: the lock folder {folder} is writable by other users"):
        claim_gpu(1)
    folder.chmod(0o700)
    folder.rename(tmp_path / "elsewhere")
    folder.symlink_to(tmp_path / "elsewhere")  # a planted link to a folder
    with pytest.raises(ConfigError, match=rf"^--gpu auto: the lock folder {folder} is a symbolic link"):
        claim_gpu(1)
