"""Does warm-starting a keyframe from the previous keyframe's factors converge faster?

Encodes the procedural sample clip twice with the same iteration budget, with and without
`--warm-start`, and prints one JSON object: per run, the mean best loss of the keyframes
after a scene's first (the ones warm-starting affects), the mean PSNR of the decoded
frames, the encode time, and the loss curve (mean over keyframes of the loss at each
iteration).

    python benchmarks/warm_start.py [--model tiny] [--frames 30] [--size 64] [--iterations 20]
"""
from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import io
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from libpromptus import encode
from libpromptus.io.samples import write_sample


def run(clip: Path, out: Path, warm: bool, args) -> dict:
    curves: dict[int, list[float]] = {}

    def on_iteration(keyframe: int, iteration: int, loss: float) -> None:
        curves.setdefault(keyframe, []).append(loss)

    stats = io.StringIO()
    start = time.perf_counter()
    result = encode(str(clip), str(out), overwrite=True, model=args.model, rank=args.rank, interval=args.interval,
                    iterations=args.iterations, first_iterations=args.iterations, scene_threshold=None,
                    warm_start=warm, stats=stats, on_iteration=on_iteration)
    seconds = time.perf_counter() - start
    records = [json.loads(line) for line in stats.getvalue().splitlines()]
    later = [r for r in records if r["frames"][0] != r["keyframe"]]
    later_curves = np.array([curves[r["keyframe"]] for r in later])
    return {
        "warm_start": warm,
        "mean_best_loss_later_keyframes": round(float(np.mean([r["loss"] for r in later])), 5),
        "mean_psnr_db": round(float(np.mean([p for r in records for p in r["psnr"]])), 4),
        "encode_seconds": round(seconds, 2),
        "bytes": result.bytes,
        "loss_curve_later_keyframes": [round(float(v), 5) for v in later_curves.mean(0)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--interval", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        clip = Path(folder) / "clip.y4m"
        write_sample(str(clip), args.frames, args.size, args.size)
        runs = [run(clip, Path(folder) / f"{warm}.pmt", warm, args) for warm in (False, True)]
    print(json.dumps({
        "benchmark": "warm_start",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": "cpu", "platform": platform.platform(),
        "versions": {name: importlib.metadata.version(name) for name in ("torch", "diffusers", "libpromptus")},
        "settings": {k: v for k, v in vars(args).items()},
        "runs": runs,
    }, indent=2))


if __name__ == "__main__":
    main()
