"""TensorBoard event files written by hand, read back with TensorBoard's own reader."""

from __future__ import annotations

from pathlib import Path

import pytest

from psvae_opt.data import load_session, split_frames
from psvae_opt.training.event_log import EventLog, crc32c
from psvae_opt.training.loop import fit
from psvae_opt.training.run_folder import METRIC_NAMES, read_metrics


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_crc32c_check_values():
    assert crc32c(b"123456789") == 0xE3069283  # the check value of CRC-32C
    assert crc32c(b"") == 0


def test_a_fit_writes_one_point_per_epoch_and_metric(tiny_config, tmp_path: Path):
    session = load_session(tiny_config.data.path)
    frames = split_frames(session, tiny_config.data.split_counts, tiny_config.data.data_seed)
    run = tmp_path / "run"
    fit(tiny_config.model, tiny_config.loss, tiny_config.train, session, frames, run, progress=False)
    got = scalars(run)
    assert set(got) == {f"{split}/{m}" for split in ("train", "val") for m in METRIC_NAMES}
    rows = read_metrics(run)
    for split in ("train", "val"):
        for m in METRIC_NAMES:
            expected = [(r["epoch"], r[m]) for r in rows if r["split"] == split]
            assert [s for s, _ in got[f"{split}/{m}"]] == [0, 1, 2]
            assert [v for _, v in got[f"{split}/{m}"]] == pytest.approx([v for _, v in expected], rel=1e-6, nan_ok=True)


def test_a_resumed_run_rewrites_its_curves_from_metrics_csv(tmp_path: Path):
    run = tmp_path / "run"
    run.mkdir()
    log = EventLog(run, ("loss",))
    for epoch in range(3):  # a killed attempt logged epochs 0-2 but saved only 0-1
        log.add_epoch(epoch, {"train": {"loss": 10.0 - epoch}})
    (run / "metrics.csv").write_text("epoch,split,loss\n0,train,10.0\n1,train,9.0\n")
    resumed = EventLog(run, ("loss",))
    resumed.rewrite(run / "metrics.csv")
    resumed.add_epoch(2, {"train": {"loss": 7.5}})
    assert len(list(run.glob("events.out.tfevents.*"))) == 1
    assert scalars(run) == {"train/loss": [(0, 10.0), (1, 9.0), (2, 7.5)]}
