"""The throughput benchmark measures the trainer's real step on the real model."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from psvae_opt.devices import resolve_precision

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import train_throughput


def test_the_benchmark_reports_the_paper_model_and_a_rate(capsys: pytest.CaptureFixture):
    code = train_throughput.main(["--sizes", "64", "--steps", "1", "--warmup", "1", "--batch-size", "16", "--json"])
    assert code == 0
    (line,) = capsys.readouterr().out.splitlines()
    result = json.loads(line)
    assert result["frame"] == "1x64x64" and result["parameters"] == 8_716_821
    assert result["frames_per_s"] > 0 and result["ms_per_step"] > 0
    assert result["precision"] == resolve_precision("auto", torch.device("cpu")) and result["batch_size"] == 16
