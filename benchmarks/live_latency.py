"""Live decoding latency: `pmtdec -i - -f rawvideo -` fed a stream through a pipe that
delivers it as a live sender would, timed frame by frame on the receiver's side.

    python benchmarks/live_latency.py STREAM.pmt [--model tiny --force-model] [--paced | --stall-after B --stall S]

`--paced` releases each unit when a live encoder could have sent it: a keyframe of
display frame f at f / fps seconds after the start (an encoder emits keyframe b once frame
b is captured), everything before it with it. `--stall-after B --stall S` sends B bytes,
stops for S seconds, then sends the rest (a network stall). The JSON gives the first
frame's latency from the start of sending, each frame's lag behind its own release (paced),
the steady-state lag (median over the second half), and whether the frames equal a decode
of the whole file.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from environment import environment

from libpromptus.bitstream import Keyframe, read_streams, read_units


def release_schedule(data: bytes, paced: bool, stall_after: int | None, stall: float) -> list[tuple[float, int]]:
    """(seconds after the start, bytes sent by then) steps for the sender."""
    if not paced:
        return [(0.0, stall_after), (stall, len(data))] if stall_after is not None else [(0.0, len(data))]
    header = read_streams(io.BytesIO(data))[0].header
    fps = header.fps_num / header.fps_den
    steps = [(item.unit.frame_index / fps, item.offset + item.size)
             for item in read_units(io.BytesIO(data)) if isinstance(item.unit, Keyframe)]
    steps.append((steps[-1][0], len(data)))      # the index and end-of-stream unit with the last keyframe
    return steps


def send(pipe, data: bytes, schedule: list[tuple[float, int]], start: float) -> None:
    sent = 0
    try:
        for when, upto in schedule:
            delay = start + when - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            pipe.write(data[sent:upto])
            pipe.flush()
            sent = upto
    finally:
        pipe.close()


def decode(stream: Path, args, schedule: list[tuple[float, int]] | None) -> tuple[list[float], bytes]:
    """Run pmtdec on the stream (through the schedule, or from the file); frame arrival times and bytes."""
    header = read_streams(stream)[0].header
    frame_size = header.width * header.height * 3
    command = [sys.executable, "-m", "libpromptus.cli.pmtdec", "-loglevel", "error", "-i",
               "-" if schedule is not None else str(stream), "-f", "rawvideo", "-"]
    if args.model:
        command[3:3] = ["--model", args.model]
    if args.force_model:
        command.insert(3, "--force-model")
    process = subprocess.Popen(command, stdin=subprocess.PIPE if schedule is not None else None,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    start = time.monotonic()
    sender = None
    if schedule is not None:
        sender = threading.Thread(target=send, args=(process.stdin, stream.read_bytes(), schedule, start))
        sender.start()
    times, frames = [], bytearray()
    while True:
        chunk = process.stdout.read(frame_size)
        if not chunk:
            break
        frames += chunk
        times.append(time.monotonic() - start)
    errors = process.stderr.read().decode()
    process.wait(timeout=600)
    if sender is not None:
        sender.join(timeout=600)
    if process.returncode != 0:
        raise SystemExit(f"pmtdec failed: {errors.strip()}")
    return times, bytes(frames)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stream", type=Path)
    parser.add_argument("--model", default=None)
    parser.add_argument("--force-model", action="store_true")
    parser.add_argument("--paced", action="store_true", help="release units at the stream's frame rate")
    parser.add_argument("--stall-after", type=int, default=None, metavar="BYTES")
    parser.add_argument("--stall", type=float, default=20.0, metavar="SECONDS")
    parser.add_argument("--output", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    data = args.stream.read_bytes()
    schedule = release_schedule(data, args.paced, args.stall_after, args.stall)
    reference_times, reference = decode(args.stream, args, None)
    times, frames = decode(args.stream, args, schedule)
    header = read_streams(args.stream)[0].header
    fps = header.fps_num / header.fps_den
    result = environment("live_latency", {"stream": args.stream.name, "bytes": len(data), "model": args.model,
                                          "paced": args.paced, "stall_after": args.stall_after,
                                          "stall_s": args.stall if args.stall_after is not None else None})
    result.update({
        "frames": len(times),
        "identical_to_file_decode": frames == reference,
        "md5": hashlib.md5(frames).hexdigest(),
        "first_frame_s": round(times[0], 3) if times else None,
        "last_frame_s": round(times[-1], 3) if times else None,
        "file_decode_s": round(reference_times[-1], 3) if reference_times else None,
        "frame_s": [round(t, 3) for t in times],
    })
    if args.paced and times:
        lags = [t - index / fps for index, t in enumerate(times)]
        result["lag_s"] = [round(lag, 3) for lag in lags]
        result["steady_state_lag_s"] = round(statistics.median(lags[len(lags) // 2:]), 3)
    if args.stall_after is not None:
        result["frames_before_stall_ended"] = sum(1 for t in times if t < args.stall)
    text = json.dumps(result, indent=1)
    print(text)
    if args.output is not None:
        args.output.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
