"""Scalable rank rungs (ScalablePromptus): one nested-dropout fit at the top rank, its
lower rungs cut out without re-encoding, against a separate fit per rung.

    python benchmarks/scalable.py [--ranks 1,2,4] [--frames 24] [--size 64] [-g 4]
                                  [--iterations 40 --first-iterations 80] [--seg-duration 0.4] [--out FILE.json]

    pmtenc -i clip.y4m --model tiny --rank 4 --scalable top.pmt      (then bitstream.truncate_rank to 1, 2)
    pmtenc -i clip.y4m --model tiny --rank K rung-K.pmt               for each K
    pmtenc -i clip.y4m --model tiny -f dash --rank 1,2,4 [--scalable] -seg_duration 0.4 out/manifest.mpd

Each stream is decoded with pmtdec and compared with the clip (mean PSNR over frames);
encode times are wall-clock seconds of pmtenc, run one after another. The scalable
stream's keyframes are LAYERED (one coded block per rank component): `layered_bytes`
against `entropy_bytes` (the same symbols coded as one block per factor) is the price of
the layout. The two DASH encodes give the same figures for a rendition set: the
scalable one's renditions must be the `truncate_rank` cuts of its top rendition.
"""
from __future__ import annotations

import argparse
import dataclasses
import io
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
from environment import environment, report

from libpromptus.bitstream import Coding, EndOfStream, Index, Keyframe, StreamWriter, read_units, truncate_rank
from libpromptus.io.samples import write_sample
from libpromptus.process.quality import psnr

MODULE = [sys.executable, "-m"]


def encode(clip: Path, out: Path, rank: int, args, *extra: str) -> float:
    began = time.monotonic()
    subprocess.run([*MODULE, "libpromptus.cli.pmtenc", "-loglevel", "error", "-y", "-i", str(clip), "--model", "tiny",
                    "--rank", str(rank), "-g", str(args.g), "--iterations", str(args.iterations),
                    "--first-iterations", str(args.first_iterations), *extra, str(out)], check=True)
    return time.monotonic() - began


def as_entropy_coded(stream: Path) -> int:
    """Bytes of `stream` with its keyframes coded as one block per factor (ENTROPY), version 1.0."""
    writer = None
    for item in read_units(stream):
        unit = item.unit
        if writer is None:
            writer = StreamWriter(io.BytesIO(), unit)
        elif isinstance(unit, Keyframe):
            writer.write(dataclasses.replace(unit, coding=Coding.ENTROPY))
        elif not isinstance(unit, (Index, EndOfStream)):     # close() writes them anew
            writer.write(unit)
    return writer.close()


def dash(clip: Path, out: Path, ranks: list[int], args, *extra: str) -> tuple[float, list[int]]:
    """Encode a rendition set; return the seconds and each rendition's bytes (init + media segments)."""
    began = time.monotonic()
    subprocess.run([*MODULE, "libpromptus.cli.pmtenc", "-loglevel", "error", "-y", "-i", str(clip), "--model", "tiny",
                    "-f", "dash", "--rank", ",".join(map(str, ranks)), "-g", str(args.g), "-seg_duration",
                    str(args.seg_duration), "--iterations", str(args.iterations), "--first-iterations",
                    str(args.first_iterations), *extra, str(out / "manifest.mpd")], check=True)
    seconds = time.monotonic() - began
    sizes = [sum(p.stat().st_size for p in out.glob(f"*-stream{number}*")) for number in range(len(ranks))]
    return seconds, sizes


def assembled(out: Path, number: int) -> bytes:
    """Rendition `number` of a DASH output as one stream: its init segment and every media segment."""
    return (out / f"init-stream{number}.pmt").read_bytes() + b"".join(
        path.read_bytes() for path in sorted(out.glob(f"chunk-stream{number}-*.pmt")))


def keyframes(data: bytes) -> list[tuple[int, bytes, bytes]]:
    return [(item.unit.frame_index, item.unit.u.tobytes(), item.unit.v.tobytes())
            for item in read_units(io.BytesIO(data)) if isinstance(item.unit, Keyframe)]


def cuts_match(out: Path, ranks: list[int]) -> bool:
    """Whether each rendition's keyframes are those of the top rendition cut to its rank."""
    whole = assembled(out, ranks.index(max(ranks)))
    for number, rank in enumerate(ranks):
        cut = io.BytesIO()
        truncate_rank(io.BytesIO(whole), cut, rank)
        if keyframes(cut.getvalue()) != keyframes(assembled(out, number)):
            return False
    return True


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
    parser.add_argument("--seg-duration", type=float, default=0.4)
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
        layered_bytes, entropy_bytes = top.stat().st_size, as_entropy_coded(top)
        scalable_dash = Path(folder, "dash-scalable")
        separate_dash = Path(folder, "dash-separate")
        dash_scalable_s, dash_scalable_bytes = dash(clip, scalable_dash, ranks, args, "--scalable")
        dash_separate_s, dash_separate_bytes = dash(clip, separate_dash, ranks, args)
        matched = cuts_match(scalable_dash, ranks)
    result = {
        **environment("scalable", {"ranks": ranks, "frames": args.frames, "size": args.size, "g": args.g,
                                   "iterations": args.iterations, "first_iterations": args.first_iterations,
                                   "model": "tiny"}),
        "scalable_encode_s": round(scalable_s, 1),
        "separate_encodes_s": round(separate_s, 1),
        "encode_time_ratio": round(scalable_s / separate_s, 3),
        "rungs": rungs,
        "layered_bytes": layered_bytes,
        "entropy_bytes": entropy_bytes,
        "layered_overhead": round(layered_bytes / entropy_bytes - 1, 4),
        "dash": {"seg_duration": args.seg_duration,
                 "scalable_encode_s": round(dash_scalable_s, 1), "separate_encode_s": round(dash_separate_s, 1),
                 "encode_time_ratio": round(dash_scalable_s / dash_separate_s, 3),
                 "scalable_rendition_bytes": dash_scalable_bytes, "separate_rendition_bytes": dash_separate_bytes,
                 "renditions_are_cuts_of_the_top": matched},
    }
    report(result, args.out)


if __name__ == "__main__":
    main()
