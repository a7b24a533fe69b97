"""Adaptive keyframe placement against uniform, on a clip that is still and then moves fast.

    python benchmarks/adaptive_keyframes.py [--frames 48] [--size 128] [--bitrate 150k] [--out FILE.json]

Issue 18 item 2. The clip (`libpromptus.models.procedural.still_then_moving_clip`, seed 11)
holds still for its first half and then moves `--speed` times as fast as the procedural
clips. It is encoded twice with the tiny model at the same -b:v, rate-distortion trials on
(the default), once with `--keyframes adaptive` (the default) and once with `--keyframes
uniform`; each file is decoded and compared with the source. The JSON has each encode's
keyframe positions and scene starts (as `pmtprobe` lists them), bytes, PSNR, and the
trials' decision. With `--out`, the two streams are kept beside it (FILE-adaptive.pmt,
FILE-uniform.pmt) and the keyframe positions are those `pmtprobe -of json` lists.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from environment import environment, report

from libpromptus import encode
from libpromptus.api import open as open_stream
from libpromptus.bitstream import read_streams
from libpromptus.encoder.ratecontrol import parse_bitrate
from libpromptus.io.samples import write_y4m
from libpromptus.models.procedural import still_then_moving_clip
from libpromptus.process.quality import psnr

SEED = 11


def run(clip: Path, source: list[np.ndarray], out: Path, bitrate: float, keyframes: str, iterations: int,
        first_iterations: int) -> dict:
    started = time.perf_counter()
    result = encode(str(clip), str(out), overwrite=True, model="tiny", bitrate=bitrate, keyframes=keyframes,
                    iterations=iterations, first_iterations=first_iterations, scene_threshold=None)
    seconds = time.perf_counter() - started
    [stream] = read_streams(out)
    probed = json.loads(subprocess.run([sys.executable, "-m", "libpromptus.cli.pmtprobe", "-of", "json", str(out)],
                                       check=True, capture_output=True).stdout)
    with open_stream(out) as container:
        decoded = [frame.image for frame in container.decode(model="tiny")]
    errors = [np.mean((a.astype(np.float64) - b) ** 2) for a, b in zip(decoded, source)]
    settings = dict(stream.metadata)["settings"]
    return {"keyframes": [k["frame_index"] for k in probed["keyframes"]],
            "scenes": [s.first_frame for s in stream.scenes], "bytes": out.stat().st_size,
            "bitrate_bps": round(result.bitrate_bps), "rank": result.rank, "settings": settings,
            "psnr": round(10 * np.log10(255 ** 2 / np.mean(errors)), 3),
            "psnr_still_half": round(float(np.mean([psnr(a, b) for a, b in zip(decoded[:len(source) // 2],
                                                                           source[:len(source) // 2])])), 3),
            "psnr_moving_half": round(float(np.mean([psnr(a, b) for a, b in zip(decoded[len(source) // 2:],
                                                                            source[len(source) // 2:])])), 3),
            "encode_s": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--speed", type=float, default=6.0)
    parser.add_argument("--bitrate", default="150k")
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--first-iterations", type=int, default=100)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    source = still_then_moving_clip(SEED, args.frames, args.size, args.size, still=args.frames // 2, speed=args.speed)
    results = {}
    with tempfile.TemporaryDirectory() as work:
        clip = Path(work) / "clip.y4m"
        write_y4m(str(clip), source)
        for keyframes in ("adaptive", "uniform"):
            stream = Path(work) / f"{keyframes}.pmt"
            results[keyframes] = run(clip, source, stream, parse_bitrate(args.bitrate), keyframes, args.iterations,
                                     args.first_iterations)
            if args.out:
                shutil.copyfile(stream, args.out.with_name(f"{args.out.stem}-{keyframes}.pmt"))
    adaptive, uniform = results["adaptive"], results["uniform"]
    half = args.frames // 2
    summary = {
        "keyframes_in_still_half": {k: sum(1 for f in r["keyframes"] if f < half) for k, r in results.items()},
        "keyframes_in_moving_half": {k: sum(1 for f in r["keyframes"] if f >= half) for k, r in results.items()},
        "psnr_gain_db": round(adaptive["psnr"] - uniform["psnr"], 3),
        "bytes_ratio": round(adaptive["bytes"] / uniform["bytes"], 4),
    }
    result = environment("adaptive_keyframes", {"seed": SEED, "frames": args.frames, "size": args.size,
                                                "speed": args.speed, "still": half, "bitrate": args.bitrate,
                                                "iterations": args.iterations,
                                                "first_iterations": args.first_iterations})
    result.update(results=results, summary=summary)
    report(result, args.out)


if __name__ == "__main__":
    main()
