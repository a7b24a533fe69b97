"""A DASH rendition set of the sample clip, measured: each rendition's rate against its
target, its segments and their scene starts (the price of exact switching), its PSNR,
and a path that switches at every boundary decoded over HTTP against each segment's own
rendition.

    python benchmarks/dash_ladder.py [--rates 60k,120k,240k] [--seg-duration 2] [--frames 120] [--size 128]
                                     [--iterations 5 --first-iterations 10] [--out FILE.json]

    pmtenc -i sample.y4m --model tiny -f dash -b:v RATES -seg_duration S out/manifest.mpd
    pmtdec -i http://127.0.0.1:PORT/out/manifest.mpd --abr fixed:0,N-1,0,… -f rawvideo -
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
from environment import environment, report

from libpromptus.bitstream import read_streams
from libpromptus.dash.manifest import parse_mpd
from libpromptus.encoder.ratecontrol import parse_bitrate
from libpromptus.io.samples import write_sample
from libpromptus.process.quality import psnr

MODULE = [sys.executable, "-m"]


def decode(source: str, *args: str) -> np.ndarray:
    done = subprocess.run([*MODULE, "libpromptus.cli.pmtdec", "-loglevel", "error", "-i", source, *args, "-f",
                           "rawvideo", "-"], capture_output=True, check=True, env={**os.environ, "no_proxy": "127.0.0.1"})
    return np.frombuffer(done.stdout, np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="60k,120k,240k")
    parser.add_argument("--seg-duration", type=float, default=2.0)
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--first-iterations", type=int, default=10)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    targets = [parse_bitrate(r) for r in args.rates.split(",")]
    with tempfile.TemporaryDirectory() as folder:
        clip, out = Path(folder, "clip.y4m"), Path(folder, "out")
        out.mkdir()
        write_sample(str(clip), args.frames, args.size, args.size)
        source = np.stack([f.to_ndarray(format="rgb24") for f in av.open(str(clip)).decode(video=0)])
        began = time.monotonic()
        subprocess.run([*MODULE, "libpromptus.cli.pmtenc", "-loglevel", "error", "-i", str(clip), "--model", "tiny",
                        "-f", "dash", "-b:v", args.rates, "-seg_duration", str(args.seg_duration), "--iterations",
                        str(args.iterations), "--first-iterations", str(args.first_iterations),
                        str(out / "manifest.mpd")], check=True)
        encode_s = time.monotonic() - began
        presentation = parse_mpd((out / "manifest.mpd").read_text())
        shape = (-1, args.size, args.size, 3)
        renditions, own = [], []
        for rendition, target in zip(presentation.renditions, targets):
            parts = [out / presentation.init_url(rendition)] + [out / presentation.media_url(rendition, n)
                                                              for n in range(1, presentation.segment_count + 1)]
            whole = Path(folder, f"{rendition.id}.pmt")
            whole.write_bytes(b"".join(p.read_bytes() for p in parts))
            frames = decode(str(whole)).reshape(shape)
            own.append(frames)
            stream = read_streams(whole)[0]
            size = whole.stat().st_size
            rate = size * 8 / float(presentation.total_frames / presentation.rate)
            starts = [scene.start.size for scene in stream.scenes
                      if scene.first_frame % presentation.segment_frames == 0]
            renditions.append({
                "id": rendition.id, "target_bps": target, "mean_bps": round(rate, 1),
                "error_percent": round((rate / target - 1) * 100, 2), "bandwidth": rendition.bandwidth,
                "init_bytes": parts[0].stat().st_size, "segment_bytes": [p.stat().st_size for p in parts[1:]],
                "rank": int(stream.scenes[0].keyframes[0].unit.u.shape[1]),
                "keyframes": sum(len(s.keyframes) for s in stream.scenes), "scenes": len(stream.scenes),
                "segment_scene_start_bytes": starts, "scene_start_share_percent": round(sum(starts) / size * 100, 2),
                "psnr_db": round(float(np.mean([psnr(a, b) for a, b in zip(source, frames)])), 3)})
        count = presentation.segment_count
        top = len(renditions) - 1
        path = [0 if n % 2 == 0 else top for n in range(count)]
        server = subprocess.Popen([*MODULE, "http.server", "0", "--bind", "127.0.0.1", "--directory", folder],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        try:
            words = server.stdout.readline().decode().split()
            url = f"http://127.0.0.1:{words[words.index('port') + 1]}/out/manifest.mpd"
            got = decode(url, "--abr", "fixed:" + ",".join(map(str, path))).reshape(shape)
        finally:
            server.terminate()
            server.wait(timeout=10)
        length = presentation.segment_frames
        want = np.concatenate([own[r][n * length:(n + 1) * length] for n, r in enumerate(path)])
        finite = [psnr(a, b) for a, b in zip(got, want) if not np.array_equal(a, b)]
        result = {
            **environment("dash_ladder", {"rates": args.rates, "seg_duration": args.seg_duration,
                                          "frames": args.frames, "size": args.size, "iterations": args.iterations,
                                          "first_iterations": args.first_iterations, "model": "tiny"}),
            "encode_s": round(encode_s, 1),
            "segments": count, "segment_frames": length,
            "renditions": renditions,
            "switching_path": path,
            "switching_path_equals_renditions": bool(np.array_equal(got, want)),
            "switching_path_frames_identical": len(want) - len(finite),
            "switching_path_lowest_psnr_db_of_other_frames": min(finite, default=None),
        }
    report(result, args.out)


if __name__ == "__main__":
    main()
