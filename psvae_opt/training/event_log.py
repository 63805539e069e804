"""Training curves in TensorBoard's event-file format, written without TensorBoard.

Each run folder gets one ``events.out.tfevents.*`` file with a scalar per epoch, split and
metric (tags ``train/pixel_mse``, ``val/label_r2``, ...), so ``tensorboard --logdir RUNS_DIR``
shows every trial of every study side by side while they train.

The format is TensorFlow's record file: each record is its length (uint64, little-endian), a
masked CRC-32C of the length, the payload and a masked CRC-32C of the payload; each payload
is an ``Event`` protocol buffer. Only the few fields a scalar needs are encoded here (field
numbers from tensorflow/core/util/event.proto and summary.proto), which keeps TensorBoard and
protobuf out of the install.

``metrics.csv`` stays the run's record: a resumed run rewrites its event file from it, so the
curves hold each epoch once even when a killed attempt had logged epochs it never saved.
"""

from __future__ import annotations

import csv
import socket
import struct
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

FILE_VERSION = b"brain.Event:2"


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1  # Castagnoli polynomial, reflected
        table.append(c)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of ``data``."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _event(wall_time: float, step: int, body: bytes) -> bytes:
    return b"\x09" + struct.pack("<d", wall_time) + b"\x10" + _varint(step) + body


def scalar_event(tag: str, value: float, step: int, wall_time: float) -> bytes:
    """An Event with one scalar: Summary.Value{tag: 1, simple_value: 2 (float)} in Event.summary (5)."""
    summary_value = _field(1, tag.encode()) + b"\x15" + struct.pack("<f", value)
    return _event(wall_time, step, _field(5, _field(1, summary_value)))


def record(payload: bytes) -> bytes:
    """One TFRecord: length, masked CRC of the length, payload, masked CRC of the payload."""
    length = struct.pack("<Q", len(payload))
    return length + struct.pack("<I", _masked(crc32c(length))) + payload + struct.pack("<I", _masked(crc32c(payload)))


class EventLog:
    """The event file of one run folder; :meth:`add_epoch` appends an epoch's scalars."""

    def __init__(self, run_dir: str | Path, metric_names: tuple[str, ...]) -> None:
        self.run_dir, self.metric_names = Path(run_dir), metric_names
        self.path: Path | None = None

    def _open(self) -> None:
        """Start a new file (older ones of this run are replaced by it)."""
        for old in self.run_dir.glob("events.out.tfevents.*"):
            old.unlink()
        self.path = self.run_dir / f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}"
        self.path.write_bytes(record(_event(time.time(), 0, _field(3, FILE_VERSION))))

    def rewrite(self, metrics_csv: Path) -> None:
        """Start a new file holding every row of the run's ``metrics.csv`` (after a resume)."""
        self._open()
        if not metrics_csv.exists():
            return
        with metrics_csv.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        self._append(
            (int(r["epoch"]), r["split"], {m: float(r[m]) for m in self.metric_names if r.get(m) not in (None, "")})
            for r in rows
        )

    def add_epoch(self, epoch: int, rows: Mapping[str, Mapping[str, float]]) -> None:
        """Append one epoch: ``rows`` is {split: {metric: value}}."""
        if self.path is None:
            self._open()
        self._append((epoch, split, values) for split, values in rows.items())

    def _append(self, rows: Iterable[tuple[int, str, Mapping[str, float]]]) -> None:
        now = time.time()
        data = b"".join(
            record(scalar_event(f"{split}/{m}", float(values[m]), epoch, now))
            for epoch, split, values in rows
            for m in self.metric_names
            if m in values
        )
        with self.path.open("ab") as fh:  # type: ignore[union-attr]
            fh.write(data)
