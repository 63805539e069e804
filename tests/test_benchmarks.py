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


PHASES = (
    "machine", "step default", "workers eager", "workers compiled", "workers cuda-graphs", "epoch",
    "projection default", "projection best", "step compiled", "step compiled cuda-graphs", "step fp32",
    "step deterministic off", "memory", "kernels", "determinism", "resume",
)  # fmt: skip
HIDDEN = ("av", "optuna", "sqlalchemy", "plotly", "tqdm", "optuna_dashboard")  # not on a borrowed GPU node


@pytest.mark.slow
def test_the_gpu_check_runs_every_phase_in_order_within_its_budget_without_av_or_optuna(tmp_path: Path):
    """--quick --budget 60 on the CPU, in a Python where PyAV, optuna, SQLAlchemy, plotly and
    tqdm cannot be imported (as on a bare GPU image): every phase prints its line in the order
    of the issue, with its elapsed time, GPU-only ones "skipped: no CUDA", the whole within the
    budget (plus start-up), and $OUT gets the JSON copy."""
    import os
    import subprocess
    import time

    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(f"import sys\nfor name in {HIDDEN!r}:\n    sys.modules[name] = None\n")
    env = {**os.environ, "PYTHONPATH": str(shim), "OUT": str(tmp_path / "out")}
    hidden = subprocess.run([sys.executable, "-c", "import av"], env=env, capture_output=True, text=True)
    assert hidden.returncode != 0 and "halted; None in sys.modules" in hidden.stderr
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(script), "--quick", "--budget", "60", "--device", "cpu", "--dir", str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    wall = time.monotonic() - start
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert [line.split(":", 1)[0] for line in lines] == list(PHASES), done.stdout
    elapsed = [float(re.search(r"\[([\d.]+) s\]$", line).group(1)) for line in lines]
    assert elapsed == sorted(elapsed) and elapsed[-1] <= 60 + 5  # a fresh process's last run may end late
    assert wall <= 60 + 30, wall  # plus Python and torch starting, twice on a busy machine
    text = {line.split(":", 1)[0]: line.split(":", 1)[1] for line in lines}
    assert text["machine"].startswith(" none (device cpu)")
    for name in ("workers compiled", "workers cuda-graphs", "step compiled", "step compiled cuda-graphs", "memory"):
        assert text[name].startswith(" skipped: no CUDA"), name
    assert re.search(r"[\d.]+ ms/step, [\d,]+ frames/s", text["step default"])
    for name in PHASES[5:]:
        measured = not text[name].startswith((" skipped", " failed"))
        budget = (" skipped: no CUDA", " skipped: budget", " skipped: no step", " stopped at the budget")
        assert measured or text[name].startswith(budget), text
    saved = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert [entry["name"] for entry in saved] == list(PHASES)
    assert [entry["elapsed_s"] for entry in saved] == pytest.approx(elapsed, abs=0.06)


def test_the_gpu_check_projects_the_training_frames_of_the_split(capsys: pytest.CaptureFixture):
    import gpu_check

    report = gpu_check.Report(10)
    gpu_check.projection_phase(report, "default", 100_000.0, 0.1)
    hours = report.lines[-1]["gpu_hours"]
    assert hours == pytest.approx(24 * 200 * 80_000 / 100_000 * 1.1 / 3600)  # 80,000 of the 100,000 frames train
    assert "x 80,000 training frames at 100,000 frames/s" in capsys.readouterr().out


def test_a_worker_that_dies_is_a_line_with_its_reason(tmp_path: Path, monkeypatch, capsys: pytest.CaptureFixture):
    """A child that exits before it is ready (here: an unknown device) fails its phase in one
    line naming its exit code and last words; the check goes on."""
    import argparse

    import gpu_check

    report = gpu_check.Report(120)
    args = argparse.Namespace(device="nodevice", size="quick")
    assert report.phase("workers eager", 1, gpu_check.workers_phase, report, args, "fp32", None, [1], 0.9) is None
    (line,) = capsys.readouterr().out.splitlines()
    assert re.match(r"workers eager: failed: RuntimeError: a worker exited with code 1 before it was ready: \S", line)
    assert report.phase("later", 1, lambda: 7) == 7


def test_the_default_step_launches_well_under_the_old_count():
    """benchmarks/step_ops.py at 1x32x32 (the same layers as 1x128x128): main before the fused
    loss and the bf16 weight copies ran 316 operators (64 casts) in a bf16 step, 253 in fp32."""
    import step_ops

    bf16, fp32 = step_ops.count("bf16", 4, 32), step_ops.count("fp32", 4, 32)
    assert bf16["kernels"] <= 230 and bf16["casts"] <= 12, bf16["kernels"]
    assert fp32["kernels"] <= 220 and fp32["casts"] <= 1, fp32["kernels"]
    assert bf16["ops"].get("_fused_adam_") == 1 and "_foreach_copy_" in bf16["ops"]
