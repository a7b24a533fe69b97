"""Peak memory of pmtdec against the length of its input: the same stream once and
concatenated many times, and entropy-coded "bombs" (SPEC.md §12) whose keyframes each
declare factors of the largest rank in a few bytes.

    python benchmarks/decode_memory.py STREAM.pmt [--copies 200] [--repeats 3] [--model tiny --force-model] [--out FILE.json]

Each case runs pmtdec in a fresh process and records its peak resident set size (the
largest `ru_maxrss` of the command's processes), `--repeats` times for the STREAM cases,
whose peak varies from run to run with the C allocator's reuse of freed blocks:
- `file-1x`, `file-Nx`: STREAM decoded from a file, and N copies of it concatenated,
  decoded from the start of the last copy (`--start-frame`): pmtdec checks the whole file
  first, then seeks, so both decode the same frames after reading 1× or N× the bytes;
- `pipe-1x`: STREAM from a pipe, decoded whole;
- `bomb-K-pipe`, `bomb-K-file`: a tiny-model stream of STREAM's size with K keyframes
  `--bomb-spacing` frames apart (so the engine runs full batches, as on STREAM), each
  with factors of the largest rank the conditioning allows (77: 84,777 symbols, 0.34 MB
  as float32) entropy-coded in a few bytes, decoded whole from a pipe and from a file,
  for K = 1 and K = 100;
- `hostile-100-keyframes`: the fuzzing suite's `factors-at-caps-100-keyframes` (100
  keyframes of 512×4096 rank-255 factors in 41 bytes each, then cut short), refused.
"""
from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from environment import environment, report

from libpromptus.bitstream import Coding, Keyframe, LatentCodec, StreamWriter, read_streams
from libpromptus.conformance import seeded
from libpromptus.conformance.fuzzing import hostile_streams

#: The largest rank of the tiny model's 77×1024 conditioning (SPEC.md §10: rank ≤ cond_tokens).
RANK = 77
#: Runs a shell command and prints the largest resident set size of its processes, in KiB.
MEASURE = ("import resource, subprocess, sys; status = subprocess.run(['bash', '-c', sys.argv[1]]).returncode; "
           "print(status, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


def bomb(keyframes: int, width: int, height: int, spacing: int) -> bytes:
    """A `width`×`height` tiny-model stream: one scene, then `keyframes` keyframes
    `spacing` frames apart, each with rank-77 factors of constant symbols (coded in a few
    bytes each)."""
    header = seeded.tiny_header(width, height, frame_count=keyframes * spacing + 1)
    rng = np.random.RandomState(0)
    sink = io.BytesIO()
    with StreamWriter(sink, header) as writer:
        writer.write(seeded.scene_start(rng, header, 0, codec=LatentCodec.Q8))
        writer.write(seeded.keyframe(rng, header, 0, RANK, coding=Coding.ENTROPY))
        for frame in range(spacing, keyframes * spacing + 1, spacing):
            writer.write(Keyframe(frame_index=frame, coding=Coding.ENTROPY,
                                  u=np.full((header.cond_tokens, RANK), 129, np.uint8),
                                  v=np.full((RANK, header.cond_dim), 127, np.uint8),
                                  u_scale=np.float32(0.05), u_zero_point=128, v_scale=np.float32(0.05),
                                  v_zero_point=128))
    return sink.getvalue()


def measure(command: str, repeats: int = 1) -> dict:
    """Runs `command` `repeats` times: its exit statuses, peak RSS per run and their median."""
    runs = []
    for _ in range(repeats):
        start = time.monotonic()
        done = subprocess.run([sys.executable, "-c", MEASURE, command], capture_output=True, text=True, check=True)
        status, kib = map(int, done.stdout.split())
        runs.append((status, round(kib / 1024, 1), round(time.monotonic() - start, 1)))
    return {"command": command, "exit_status": sorted({status for status, _, _ in runs}),
            "peak_rss_mb": [mb for _, mb, _ in runs], "median_peak_rss_mb": float(np.median([mb for _, mb, _ in runs])),
            "seconds": [seconds for _, _, seconds in runs]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stream", type=Path)
    parser.add_argument("--copies", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bomb-spacing", type=int, default=10)
    parser.add_argument("--model", default=None)
    parser.add_argument("--force-model", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    pmtdec = f"{sys.executable} -m libpromptus.cli.pmtdec -loglevel error"
    model = (f" --model {args.model}" if args.model else "") + (" --force-model" if args.force_model else "")
    data = args.stream.read_bytes()
    streams = read_streams(args.stream, values=False)
    frames = sum(stream.frame_count for stream in streams)
    width, height = streams[0].header.width, streams[0].header.height
    cases = {}
    with tempfile.TemporaryDirectory() as folder:
        one, many = Path(folder, "one.pmt"), Path(folder, "many.pmt")
        one.write_bytes(data)
        many.write_bytes(data * args.copies)
        cases["file-1x"] = measure(f"{pmtdec} -i {one}{model} -f rawvideo - > /dev/null", args.repeats)
        cases[f"file-{args.copies}x"] = measure(f"{pmtdec} -i {many}{model} --start-frame "
                                                f"{frames * (args.copies - 1)} -f rawvideo - > /dev/null", args.repeats)
        cases["pipe-1x"] = measure(f"cat {one} | {pmtdec} -i -{model} -f rawvideo - > /dev/null", args.repeats)
        for keyframes in (1, 100):
            path = Path(folder, f"bomb-{keyframes}.pmt")
            path.write_bytes(bomb(keyframes, width, height, args.bomb_spacing))
            cases[f"bomb-{keyframes}-pipe"] = measure(f"cat {path} | {pmtdec} -i - -f rawvideo - > /dev/null")
            cases[f"bomb-{keyframes}-file"] = measure(f"{pmtdec} -i {path} -f rawvideo - > /dev/null")
            cases[f"bomb-{keyframes}-file"]["bytes"] = cases[f"bomb-{keyframes}-pipe"]["bytes"] = path.stat().st_size
        hostile = {case.name: case for case in hostile_streams()}["factors-at-caps-100-keyframes"]
        path = Path(folder, "hostile.pmt")
        path.write_bytes(hostile.data)
        cases["hostile-100-keyframes"] = measure(f"{pmtdec} -i {path} {Path(folder, 'out.mkv')} 2> /dev/null")
    settings = {"stream": args.stream.name, "stream_bytes": len(data), "stream_frames": frames,
                "copies": args.copies, "repeats": args.repeats, "bomb_spacing": args.bomb_spacing,
                "model": args.model, "force_model": args.force_model}
    result = {**environment("decode_memory", settings), "cases": cases}
    report(result, args.out)


if __name__ == "__main__":
    main()
