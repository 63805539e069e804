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


@pytest.mark.slow
def test_the_gpu_check_runs_its_cpu_parts_and_prints_one_line_each(capsys: pytest.CaptureFixture, tmp_path: Path):
    """--quick on the CPU: the same code as on a GPU, tiny sizes, no compile."""
    import gpu_check

    assert gpu_check.main(["--quick", "--device", "cpu", "--dir", str(tmp_path), "--workers", "1", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    lines = {line.split(":", 1)[0]: line.split(":", 1)[1] for line in out}
    assert lines["gpu"].startswith(" none (device cpu)")
    assert re.search(r"largest relative difference 0.00e\+00 \(within 0.001\)", lines["determinism"])
    assert lines["resume"].endswith("largest relative difference 0.00e+00 (identical)")  # the trainer's exact resume
    steps = {k: v for k, v in lines.items() if k.startswith("step ")}
    assert set(steps) == {
        "step default", "step autotune off", "step fp32", "step bf16", "step bf16 batch 32", "step bf16 batch 64",
        "step compiled", "step compiled cuda-graphs",
    }  # fmt: skip
    rates = {}
    for name, text in steps.items():
        if "skipped" in text:
            continue
        ms, rate, batch = re.search(
            r"([\d.]+) ms/step, ([\d,]+) frames/s, GPU busy - \(\w+, batch (\d+)\)", text
        ).groups()
        rates[name] = float(rate.replace(",", ""))
        assert rates[name] == pytest.approx(1000 * int(batch) / float(ms), rel=0.02)
    assert "skipped (--quick)" in steps["step compiled"]
    epoch, evaluation, share = re.search(
        r"training 80,000 frames ([\d.]+) s; evaluation ([\d.]+) s \((\d+)%\)", lines["epoch"]
    ).groups()
    assert float(epoch) == pytest.approx(80_000 / rates["step default"], rel=0.02)
    assert int(share) == round(100 * float(evaluation) / float(epoch))
    summed = [float(v.replace(",", "")) for v in re.findall(r"\d: ([\d,]+)", lines["workers"])]
    assert len(summed) == 2 and all(v > 0 for v in summed)
    hours = float(re.search(r"= ([\d.]+) GPU-hours", lines["projection"]).group(1))
    best = max(max(summed), rates["step default"])
    assert hours == pytest.approx(24 * 200 * 100_000 / best * (1 + float(evaluation) / float(epoch)) / 3600, rel=0.02)
