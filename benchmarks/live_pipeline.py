"""The live pipeline of README "Live streaming", timed: a y4m clip piped into pmtenc,
whose units pmtdec decodes from a pipe while the encode goes on.

    python benchmarks/live_pipeline.py [--frames 24] [--size 64] [-g 4] [--out FILE.json]

    cat clip.y4m | pmtenc -i - --model tiny -g 4 -f pmt - | pmtdec -i - -f rawvideo -

The units between the two are also recorded, then decoded again from that file; the JSON
gives when each frame left pmtdec and when pmtenc finished (seconds from the start), and
whether the pipeline's frames equal the file decode's.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from environment import environment, report

from libpromptus.io.samples import write_sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("-g", type=int, default=4)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    module = [sys.executable, "-m"]
    frame_bytes = args.size * args.size * 3
    with tempfile.TemporaryDirectory() as folder:
        clip, recorded = Path(folder, "clip.y4m"), Path(folder, "live.pmt")
        write_sample(str(clip), args.frames, args.size, args.size)
        start = time.monotonic()
        with clip.open("rb") as source:
            encoder = subprocess.Popen([*module, "libpromptus.cli.pmtenc", "-loglevel", "error", "-i", "-", "--model",
                                        "tiny", "-g", str(args.g), "-f", "pmt", "-"], stdin=source,
                                       stdout=subprocess.PIPE)
        decoder = subprocess.Popen([*module, "libpromptus.cli.pmtdec", "-loglevel", "error", "-i", "-", "-f",
                                    "rawvideo", "-"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        units_sent: list[float] = []
        encoder_done: list[float] = []

        def relay() -> None:
            """pmtenc's units to pmtdec (and to `recorded`), as they come."""
            with recorded.open("wb") as copy:
                while chunk := encoder.stdout.read1(65536):
                    units_sent.append(round(time.monotonic() - start, 2))
                    copy.write(chunk)
                    decoder.stdin.write(chunk)
                    decoder.stdin.flush()
            decoder.stdin.close()
            encoder.wait()
            encoder_done.append(round(time.monotonic() - start, 2))

        relaying = threading.Thread(target=relay)
        relaying.start()
        frame_times, frames = [], bytearray()
        while chunk := decoder.stdout.read(frame_bytes):
            frame_times.append(round(time.monotonic() - start, 2))
            frames.extend(chunk)
        relaying.join()
        decoder.wait()
        file_decode = subprocess.run([*module, "libpromptus.cli.pmtdec", "-loglevel", "error", "-i", str(recorded),
                                      "-f", "rawvideo", "-"], capture_output=True, check=True).stdout
        result = {
            **environment("live_pipeline", {"frames": args.frames, "size": args.size, "g": args.g, "model": "tiny"}),
            "encoder_exit_status": encoder.returncode,
            "decoder_exit_status": decoder.returncode,
            "encoder_finished_s": encoder_done[0],
            "first_unit_s": units_sent[0] if units_sent else None,
            "first_frame_s": frame_times[0] if frame_times else None,
            "last_frame_s": frame_times[-1] if frame_times else None,
            "frames_before_encoder_finished": sum(t < encoder_done[0] for t in frame_times),
            "frame_times_s": frame_times,
            "stream_bytes": recorded.stat().st_size,
            "frames_equal_file_decode": bytes(frames) == file_decode and len(frame_times) == args.frames,
        }
    report(result, args.out)


if __name__ == "__main__":
    main()
