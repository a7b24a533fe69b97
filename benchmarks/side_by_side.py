"""The README's demo, pictured: source frames above the frames pmtdec decodes (PNG), with PSNR.

Runs the README's main job (the 48-frame 128x128 sample clip, `pmtenc --model tiny
-b:v 100k`, `pmtdec`) in a temporary folder and writes one PNG: the source on the top
row, pmtdec's output on the bottom row, every `--step` frames. Prints one JSON object
(bitrate, per-frame PSNR) on stdout.

    python benchmarks/side_by_side.py [--out benchmarks/results/demo_side_by_side.png] [--step 8]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import av
import numpy as np
from environment import environment
from PIL import Image

from libpromptus.io.samples import sample_frames, write_sample
from libpromptus.process.quality import psnr

DEFAULT_OUT = Path("benchmarks/results/demo_side_by_side.png")   # relative: the JSON names it as given


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--step", type=int, default=8, help="show every STEP-th frame")
    parser.add_argument("--scale", type=int, default=2, help="pixel magnification of the picture")
    parser.add_argument("-b:v", dest="bitrate", default="100k")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_sample(str(folder / "sample.y4m"))
        for command in (["pmtenc", "-y", "-nostats", "--model", "tiny", "-i", "sample.y4m", "-b:v", args.bitrate,
                         "sample.pmt"],
                        ["pmtdec", "-y", "-nostats", "-i", "sample.pmt", "sample_decoded.y4m"]):
            subprocess.run([sys.executable, "-m", f"libpromptus.cli.{command[0]}", *command[1:]], cwd=folder,
                           check=True, stdout=subprocess.DEVNULL)
        with av.open(str(folder / "sample_decoded.y4m")) as container:
            decoded = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
        size = (folder / "sample.pmt").stat().st_size
    source = sample_frames()
    shown = range(0, len(source), args.step)
    picture = np.concatenate([np.concatenate([source[i] for i in shown], 1),
                              np.concatenate([decoded[i] for i in shown], 1)], 0)
    image = Image.fromarray(picture)
    image = image.resize((image.width * args.scale, image.height * args.scale), Image.NEAREST)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    image.save(args.out)
    values = [round(psnr(a, b), 2) for a, b in zip(source, decoded)]
    print(json.dumps({**environment("side_by_side", {k: str(v) for k, v in vars(args).items()}),
                      "png": str(args.out), "frames_shown": list(shown), "bytes": size,
                      "bitrate_bps": round(size * 8 * 30 / len(source)), "mean_psnr_db": round(float(np.mean(values)), 3),
                      "psnr_db": values}, indent=2))


if __name__ == "__main__":
    main()
