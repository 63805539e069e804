"""Encoding throughput and peak memory of ``psvae-opt encode`` on videos of growing length.

Writes synthetic H.264 videos (a moving bright blob on a textured background, ``--width`` x
``--height`` at ``--fps``) of each length in ``--lengths``, a bundle of BehaveNet's network at
``--size`` (untrained: the cost does not depend on the weights), and encodes each video in a
fresh process (``--format npz,csv``). Reports per length the frames/s of the whole command
(decoding, resize, encoder and decoder, writing) and its peak resident memory (``ru_maxrss``):
memory flat in the length is what the streaming encoder promises.

    nice -n 10 python benchmarks/encode_memory.py                          # 1, 3 and 10 minutes at 30 fps
    python benchmarks/encode_memory.py --lengths 300,900 --json            # quick
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from machine import cpu_name

CHILD = """
import json, resource, sys, time
from psvae_opt.cli import main
start = time.perf_counter()
code = main(sys.argv[1:])
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"code": code, "seconds": seconds, "peak_bytes": peak}))
"""


def write_video(path: Path, n: int, width: int, height: int, fps: int) -> None:
    """``n`` frames of a blob circling over a fixed texture, H.264 (yuv420p, as cameras record)."""
    import av

    rng = np.random.default_rng(0)
    background = rng.integers(30, 90, (height, width), dtype=np.uint8)
    yy, xx = np.mgrid[0:height, 0:width]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "crf": "23"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(n):
            cx = width / 2 + width / 4 * np.cos(i / 20.0)
            cy = height / 2 + height / 4 * np.sin(i / 20.0)
            blob = ((xx - cx) ** 2 + (yy - cy) ** 2 < (min(width, height) / 10) ** 2) * 150
            frame = np.clip(background + blob, 0, 255).astype(np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="gray").reformat(format="yuv420p")))
        container.mux(stream.encode())


def write_bundle(folder: Path, size: int, channels: str | None) -> Path:
    from psvae_opt.config import dump_config, load_config
    from psvae_opt.data import load_session, synth_session
    from psvae_opt.inference import bundle
    from psvae_opt.training.steps import build_model

    h5 = synth_session(folder / "train.h5", size=size, trials=2, frames=5, seed=0)
    session = load_session(h5)
    cfg = load_config(None, [f"data.path={h5}", *([f"model.channels={channels}"] if channels else [])])
    network = build_model(cfg.model, session.frame_shape, session.n_labels, seed=0)

    def fill(staging: Path) -> dict:
        bundle.save_weights(network, staging)
        (staging / bundle.CONFIG).write_text(dump_config(cfg))
        return {
            "frame_shape": list(session.frame_shape), "label_names": list(session.label_names),
            "n_unsup": cfg.model.n_unsup, "label_means": np.asarray(session.attrs["label_means"]).tolist(),
            "label_stds": np.asarray(session.attrs["label_stds"]).tolist(), "study": "benchmark", "trial": 0,
        }  # fmt: skip

    return bundle.write_bundle(folder / "model", fill)


def measure(model: Path, video: Path, out: Path, batch_size: int) -> dict:
    args = ["encode", "--model", str(model), "--out", str(out), "--video", str(video), "--format", "npz,csv",
            "--no-progress", "--batch-size", str(batch_size)]  # fmt: skip
    done = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"encode failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ''}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lengths", default="1800,5400,18000", help="frames per video, comma-separated")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--fps", type=int, default=30)
    p.add_argument("--size", type=int, default=64, help="the model's frame size (default 64)")
    p.add_argument("--channels", help="model.channels (default: BehaveNet's)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--workdir", help="keep the videos and outputs here (default: a temporary folder)")
    p.add_argument("--json", action="store_true", help="one JSON line per length")
    args = p.parse_args(argv)
    lengths = [int(n) for n in args.lengths.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        model = write_bundle(work, args.size, args.channels)
        if not args.json:
            print(f"CPU: {cpu_name()}; {args.width}x{args.height} H.264 at {args.fps} fps -> {args.size}x{args.size}")
        for n in lengths:
            video = work / f"video_{n}.mp4"
            start = time.perf_counter()
            write_video(video, n, args.width, args.height, args.fps)
            written = time.perf_counter() - start
            result = measure(model, video, work / f"out_{n}", args.batch_size)
            row = {
                "frames": n, "minutes": n / args.fps / 60, "seconds": round(result["seconds"], 2),
                "frames_per_s": round(n / result["seconds"], 1), "peak_mb": round(result["peak_bytes"] / 2**20, 1),
                "video_mb": round(video.stat().st_size / 2**20, 1), "write_video_s": round(written, 1),
                "cpu": cpu_name(), "size": args.size,
            }  # fmt: skip
            if args.json:
                print(json.dumps(row), flush=True)
            else:
                print(f"{n:>7} frames ({row['minutes']:.1f} min): {row['frames_per_s']:>7.1f} frames/s, "
                      f"peak {row['peak_mb']:.0f} MB (video {row['video_mb']:.0f} MB)", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
