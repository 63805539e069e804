"""The GPU code paths (bf16 autocast, channels-last, torch.compile, CUDA devices): their CPU
equivalents run everywhere; the `gpu` tests run where CUDA is available."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from psvae_opt.config import Config, replace
from psvae_opt.devices import claim_gpu, resolve_device
from psvae_opt.errors import ConfigError
from psvae_opt.model import PSVAE
from psvae_opt.runs import read_metrics
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
    with pytest.raises(ConfigError, match="train.device = 'cuda' but no CUDA GPU is visible"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"


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
    from psvae_opt.devices import cpu_has_bf16, resolve_precision

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
        "import sys; from psvae_opt.devices import claim_gpu; "
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
