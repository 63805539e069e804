"""The benchmarks: the throughput of the trainer's real step; reconstruction quality on real data."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from psvae_opt.training.devices import resolve_precision

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import mirror_mouse
import train_throughput


def test_the_benchmark_reports_the_paper_model_and_a_rate(capsys: pytest.CaptureFixture):
    code = train_throughput.main(["--sizes", "64", "--steps", "1", "--warmup", "1", "--batch-size", "16", "--json"])
    assert code == 0
    (line,) = capsys.readouterr().out.splitlines()
    result = json.loads(line)
    assert result["frame"] == "1x64x64" and result["parameters"] == 8_716_821
    assert result["frames_per_s"] > 0 and result["ms_per_step"] > 0
    assert result["precision"] == resolve_precision("auto", torch.device("cpu")) and result["batch_size"] == 16


def test_the_mirror_mouse_benchmark_prints_label_r2_and_pixel_mse(tiny_h5: Path, capsys: pytest.CaptureFixture):
    code = mirror_mouse.main(
        [
            "--data",
            str(tiny_h5),
            "--epochs",
            "2",
            "--alpha",
            "500",
            "--seed",
            "3",
            "--set",
            "data.split=3;1;1;0",
            "--set",
            "model.channels=[4, 8, 8, 8, 8]",
            "--set",
            "train.batch_size=16",
            "--json",
        ]
    )
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    figures = json.loads(lines[-1])
    assert figures["epochs"] == 2 and figures["alpha"] == 500.0 and figures["model_seed"] == 3
    assert figures["cpu"] and figures["seconds"] > 0
    for split in ("val", "test"):
        (row,) = [line for line in lines if line.startswith(f"{split} ")]
        printed = re.search(r"label_r2 (\S+)\s+pixel_mse (\S+)\s+label_mse (\S+).*pooled label R\^2 (\S+)\)", row)
        r2, pixel, label, pooled = (float(v) for v in printed.groups())
        assert r2 == pytest.approx(figures[f"{split}_label_r2"], abs=1e-4)
        assert pixel == pytest.approx(figures[f"{split}_pixel_mse"], abs=1e-5)
        assert label == pytest.approx(figures[f"{split}_label_mse"], abs=1e-4)
        assert pooled == pytest.approx(figures[f"{split}_label_r2_pooled"], abs=1e-4)
        assert 0 < pixel < 0.25 and label > 0 and r2 <= 1


def test_behavenets_pooled_r2_counts_the_spread_between_label_means():
    y = np.array([[0.0, 10.0], [1.0, 11.0], [2.0, 12.0]])
    y_hat = y + np.array([[0.5], [-0.5], [0.0]])
    # pooled: mean 6, total 36+25+16+16+25+36 = 154, residual 4 x 0.25 = 1; per label 1 - 0.5 / 2 = 0.75
    assert mirror_mouse.pooled_r2(y, y_hat, np.ones_like(y)) == pytest.approx(1 - 1 / 154)
    mask = np.array([[1, 1], [1, 1], [1, 0]])  # the last entry of label 2 is masked: mean 24/5
    total = sum((v - 4.8) ** 2 for v in (0, 1, 2, 10, 11))
    assert mirror_mouse.pooled_r2(y, y_hat, mask) == pytest.approx(1 - 1 / total)


def test_the_gpu_benchmark_runs_on_the_cpu_and_prints_a_table(capsys: pytest.CaptureFixture):
    """Its --quick mode on the CPU: every section of the table, and the projection from it."""
    import gpu_throughput

    from psvae_opt.config import ModelConfig
    from psvae_opt.model.network import count_parameters
    from psvae_opt.training.steps import build_model

    argv = ["--device", "cpu", "--quick", "--variants", "fp32", "bf16 channels-last", "--multi-models", "demo"]
    assert gpu_throughput.main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    table = [[cell.strip() for cell in line.strip("|").split("|")] for line in out if line.startswith("|")]
    assert table[0] == ["section", "model", "variant", "batch", "workers", "frames/s", "ms/step", "note"]
    rows = {(r[0], r[1], r[2], int(r[3]), int(r[4])): r for r in table[1:]}
    expected = {
        *((s, m, v, 8, 1) for s in ("single",) for m in ("behavenet", "demo") for v in ("fp32", "bf16 channels-last")),
        ("batch", "behavenet", "bf16 channels-last", 4, 1),
        ("batch", "demo", "bf16 channels-last", 4, 1),
        ("gpu", "demo", "bf16 channels-last", 8, 1),
        ("gpu", "demo", "bf16 channels-last", 8, 2),
    }
    assert set(rows) == expected
    rate = {key: float(r[5].replace(",", "")) for key, r in rows.items()}
    assert all(v > 0 for v in rate.values())
    for key, r in rows.items():  # ms per step of one worker = 1000 x batch x workers / summed frames/s
        assert float(r[6]) == pytest.approx(1000 * key[3] * key[4] / rate[key], rel=0.6 / rate[key] + 0.01)
    for name, (shape, channels) in gpu_throughput.MODELS.items():
        params = count_parameters(build_model(ModelConfig(channels=channels), shape, 4, seed=0))
        assert rows[("single", name, "fp32", 8, 1)][7] == f"{params:,} parameters"
    assert rows[("single", "behavenet", "fp32", 8, 1)][7] == "8,746,005 parameters"  # BehaveNet's 1x128x128 network
    (line,) = [line for line in out if line.startswith("projection:")]
    total, best, hours, need = re.search(
        r"= ([\d,]+) frames / ([\d,]+) frames/s .* = ([\d.]+) h on one GPU \(target 1.5 h needs ([\d,]+) frames/s\)",
        line,
    ).groups()
    total, best, need = (int(v.replace(",", "")) for v in (total, best, need))
    assert total == 24 * 200 * 100_000 and need == round(total / 5400)
    behavenet = max(v for k, v in rate.items() if k[1] == "behavenet" and k[0] != "batch")
    assert best == round(behavenet)
    assert float(hours) == pytest.approx(total / behavenet / 3600, rel=0.6 / behavenet + 0.01)
