"""Does fitting steer the tiny model? Encode held-out clips with and without fitting.

For each clip: `pmtenc --model tiny -b:v RATE` with the default iteration budget, and the
same with `--iterations 0 --first-iterations 0` (the factors stay at their Uniform[0, 1)
initialisation); both decoded by `pmtdec`, and PSNR measured on pmtdec's output against
the source (mean over frames of per-frame PSNR). The clips are procedural clips the tiny
model never saw in training (seeds from train_tiny.HELD_OUT_SEED up) and, when
../shared/reference/promptus-official is present, its real frames (out of distribution).
Prints one JSON object.

    python benchmarks/fitting_gain.py [--clips 3] [--frames 48] [--size 128] [-b:v 100k]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from environment import environment

from libpromptus.io.samples import write_y4m
from libpromptus.io.video_input import open_video, parse_size
from libpromptus.models.procedural import random_clip
from libpromptus.models.train_tiny import HELD_OUT_SEED
from libpromptus.process.quality import psnr

OFFICIAL = Path(__file__).resolve().parents[2] / "shared" / "reference" / "promptus-official"


def read_frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def cli(tool: str, *args: str) -> None:
    subprocess.run([sys.executable, "-m", f"libpromptus.cli.{tool}", "-nostats", *args], check=True,
                   stdout=subprocess.DEVNULL)


def encode_decode(source: str, folder: Path, name: str, bitrate: str, extra: list[str],
                  reference: list[np.ndarray]) -> dict:
    stream, decoded = folder / f"{name}.pmt", folder / f"{name}.y4m"
    started = time.perf_counter()
    cli("pmtenc", "-y", "--model", "tiny", "-i", source, "-b:v", bitrate, *extra, str(stream))
    encode_seconds = time.perf_counter() - started
    cli("pmtdec", "-y", "-i", str(stream), str(decoded))
    frames = read_frames(decoded)
    assert len(frames) == len(reference), (len(frames), len(reference))
    return {"bytes": stream.stat().st_size, "encode_seconds": round(encode_seconds, 1),
            "psnr_db": round(float(np.mean([psnr(a, b) for a, b in zip(frames, reference)])), 3)}


def measure(source: str, reference: list[np.ndarray], folder: Path, bitrate: str, extra: list[str]) -> dict:
    fitted = encode_decode(source, folder, "fitted", bitrate, extra, reference)
    unfitted = encode_decode(source, folder, "unfitted", bitrate, [*extra, "--iterations", "0",
                                                                    "--first-iterations", "0"], reference)
    return {"frames": len(reference), "size": f"{reference[0].shape[1]}x{reference[0].shape[0]}",
            "fitted": fitted, "iterations_0": unfitted,
            "gain_db": round(fitted["psnr_db"] - unfitted["psnr_db"], 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=3, help="held-out procedural clips")
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("-b:v", dest="bitrate", default="100k")
    parser.add_argument("--real-size", default="256x256", help="size the real frames are scaled to (-s)")
    args = parser.parse_args()
    results: dict = {"procedural": [], "real": {}}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for index in range(args.clips):
            seed = HELD_OUT_SEED + index
            frames, _ = random_clip(seed, args.frames, args.size, args.size)
            clip = folder / "clip.y4m"
            write_y4m(str(clip), frames)
            results["procedural"].append({"seed": seed, **measure(str(clip), frames, folder, args.bitrate, [])})
            print(json.dumps(results["procedural"][-1]), file=sys.stderr)
        for name in ("sky", "uvg"):
            pattern = OFFICIAL / name / "frames" / "%05d.png"
            if not (OFFICIAL / name / "frames").is_dir():
                results["real"][name] = "skipped: ../shared/reference/promptus-official is absent"
                continue
            scaled = folder / "scaled.y4m"
            reference = scaled_reference(str(pattern), args.real_size, scaled)
            results["real"][name] = measure(str(scaled), reference, folder, args.bitrate, [])
            print(json.dumps({name: results["real"][name]}), file=sys.stderr)
    gains = [r["gain_db"] for r in results["procedural"]]
    print(json.dumps({**environment("fitting_gain", vars(args)), "results": results,
                      "procedural_mean_gain_db": round(float(np.mean(gains)), 3),
                      "procedural_min_gain_db": round(float(np.min(gains)), 3)}, indent=2))


def scaled_reference(pattern: str, size: str, out: Path) -> list[np.ndarray]:
    """The real frames scaled to `size` by pmtenc's own input path (30 fps), written to `out` as y4m."""
    width, height = parse_size(size)
    with open_video(pattern, size=(width, height), fit="scale", rate=Fraction(30)) as video:
        frames = list(video.frames())
    write_y4m(str(out), frames)
    return frames


if __name__ == "__main__":
    main()
