"""Scalable rank rungs (ScalablePromptus): one nested-dropout fit at the top rank, its
lower rungs cut out without re-encoding, against a separate fit per rung.

    python benchmarks/scalable.py [--ranks 1,2,4] [--frames 24] [--size 64] [-g 4]
                                  [--iterations 40 --first-iterations 80] [--out FILE.json]

    pmtenc -i clip.y4m --model tiny --rank 4 --scalable top.pmt      (then bitstream.truncate_rank to 1, 2)
    pmtenc -i clip.y4m --model tiny --rank K rung-K.pmt               for each K

Each stream is decoded with pmtdec and compared with the clip (mean PSNR over frames);
encode times are wall-clock seconds of pmtenc, run one after another.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
from environment import environment, report

from libpromptus.bitstream import truncate_rank
from libpromptus.io.samples import write_sample
from libpromptus.process.quality import psnr

MODULE = [sys.executable, "-m"]


def encode(clip: Path, out: Path, rank: int, args, *extra: str) -> float:
    began = time.monotonic()
    subprocess.run([*MODULE, "libpromptus.cli.pmtenc", "-loglevel", "error", "-y", "-i", str(clip), "--model", "tiny",
                    "--rank", str(rank), "-g", str(args.g), "--iterations", str(args.iterations),
                    "--first-iterations", str(args.first_iterations), *extra, str(out)], check=True)
    return time.monotonic() - began


def quality(stream: Path, source: np.ndarray) -> float:
    frames = subprocess.run([*MODULE, "libpromptus.cli.pmtdec", "-loglevel", "error", "-i", str(stream), "-f",
                             "rawvideo", "-"], capture_output=True, check=True).stdout
    decoded = np.frombuffer(frames, np.uint8).reshape(source.shape)
    return round(float(np.mean([psnr(a, b) for a, b in zip(source, decoded)])), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranks", default="1,2,4")
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("-g", type=int, default=4)
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--first-iterations", type=int, default=80)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    ranks = sorted(int(r) for r in args.ranks.split(","))
    with tempfile.TemporaryDirectory() as folder:
        clip = Path(folder, "clip.y4m")
        write_sample(str(clip), args.frames, args.size, args.size)
        source = np.stack([f.to_ndarray(format="rgb24") for f in av.open(str(clip)).decode(video=0)])
        top = Path(folder, "scalable.pmt")
        scalable_s = encode(clip, top, ranks[-1], args, "--scalable")
        rungs = []
        separate_s = 0.0
        for rank in ranks:
            cut = Path(folder, f"cut-{rank}.pmt")
            with cut.open("wb") as sink:
                truncate_rank(top, sink, rank)
            own = Path(folder, f"own-{rank}.pmt")
            seconds = encode(clip, own, rank, args)
            separate_s += seconds
            rungs.append({"rank": rank, "truncated_bytes": cut.stat().st_size, "truncated_psnr_db": quality(cut, source),
                          "separate_bytes": own.stat().st_size, "separate_psnr_db": quality(own, source),
                          "separate_encode_s": round(seconds, 1)})
    result = {
        **environment("scalable", {"ranks": ranks, "frames": args.frames, "size": args.size, "g": args.g,
                                   "iterations": args.iterations, "first_iterations": args.first_iterations,
                                   "model": "tiny"}),
        "scalable_encode_s": round(scalable_s, 1),
        "separate_encodes_s": round(separate_s, 1),
        "encode_time_ratio": round(scalable_s / separate_s, 3),
        "rungs": rungs,
    }
    report(result, args.out)


if __name__ == "__main__":
    main()
