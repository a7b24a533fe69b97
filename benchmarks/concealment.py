"""What does error concealment cost? Damage one unit of an encoded clip, decode, compare.

Encodes the README sample (48 frames 128x128, a scene cut at frame 32) with the tiny
model at 100 kbit/s (`--stream`/`--source` reuse an encoded stream and its source),
decodes it undamaged, then for each case flips one byte of one unit, checks that the
strict reader refuses the stream (crc_mismatch), decodes it with concealment
(`libpromptus.bitstream.concealment`, as `pmtdec --conceal`) and compares frame by frame with the
undamaged decode and with the source: the frames that differ, and PSNR (mean over frames
of per-frame PSNR) of the concealed frames and of the frames that follow from them
through the latent chain, against the undamaged decode and against the source, beside
the undamaged decode's own PSNR on the same frames. Prints one JSON object.

Cases: the keyframe nearest the middle of each scene (not its first or last), the last keyframe of the first scene, each
scene start (the first one conceals from a zero latent), and the middle keyframe of the
first scene again with its size field damaged instead of its payload (resynchronisation).

    python benchmarks/concealment.py [--frames 48] [--size 128] [-b:v 100k] [--iterations N]
                                     [--first-iterations N] [--stream S.pmt --source S.y4m]
"""
from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from environment import environment
from libpromptus.bitstream import (
    InvalidDataError,
    Keyframe,
    SceneStart,
    read_streams,
    read_units,
)
from libpromptus.bitstream.concealment import read_concealed
from libpromptus.engines import create_engine

from libpromptus.decoder.decoding import decode_frames
from libpromptus.encoder.ratecontrol import parse_bitrate
from libpromptus.io.samples import write_sample
from libpromptus.io.video_input import open_video
from libpromptus.models import load_generator
from libpromptus.process.quality import psnr


def decode(streams, engine) -> np.ndarray:
    return np.stack([frame.image for frame in decode_frames(streams, engine)])


def mean_psnr(a: np.ndarray, b: np.ndarray, frames: list[int]) -> float | None:
    """Mean per-frame PSNR over `frames` (None for no frames; inf when all are equal)."""
    if not frames:
        return None
    value = float(np.mean([psnr(a[f], b[f]) for f in frames]))
    return value if np.isinf(value) else round(value, 3)


def cases(data: bytes) -> list[tuple[str, str, int, int]]:
    """(name, what, unit offset, offset of the byte to flip) for every case."""
    units = list(read_units(io.BytesIO(data)))
    starts = [u for u in units if isinstance(u.unit, SceneStart)]
    out = []
    for number, start in enumerate(starts):
        scene_keyframes = [u for u in units if isinstance(u.unit, Keyframe) and u.offset > start.offset
                           and (number + 1 == len(starts) or u.offset < starts[number + 1].offset)]
        inner = scene_keyframes[1:-1] or scene_keyframes
        centre = (scene_keyframes[0].unit.frame_index + scene_keyframes[-1].unit.frame_index) / 2
        middle = min(inner, key=lambda u: abs(u.unit.frame_index - centre))
        frame = middle.unit.frame_index
        out.append((f"keyframe_mid_scene_{number}", f"keyframe {frame}, a payload byte", middle.offset,
                    middle.offset + middle.size // 2))
        if number == 0:
            last = scene_keyframes[-1]
            what = f"keyframe {last.unit.frame_index} (the scene's last), a payload byte"
            out.append(("keyframe_end_of_scene_0", what, last.offset, last.offset + last.size // 2))
            out.append(("keyframe_size_field_scene_0", f"keyframe {frame}, its unit_size field", middle.offset,
                        middle.offset + 1))
        out.append((f"scene_start_{number}", f"scene start of frame {start.unit.first_frame}, a payload byte",
                    start.offset, start.offset + start.size // 2))
    return out


def measure(data: bytes, source: np.ndarray, clean: np.ndarray, engine, case) -> dict:
    name, what, unit_offset, flipped = case
    damaged = bytearray(data)
    damaged[flipped] ^= 0x55
    damaged = bytes(damaged)
    try:
        read_streams(io.BytesIO(damaged))
        strict = "accepted"
    except InvalidDataError as err:
        strict = err.code
    streams, report = read_concealed(io.BytesIO(damaged))
    started = time.perf_counter()
    frames = decode(streams, engine)
    seconds = time.perf_counter() - started
    concealed = list(report.frames)
    follow = sorted({f for record in report.concealed for f in record.follow} - set(concealed))
    differing = [f for f in range(len(clean)) if not np.array_equal(frames[f], clean[f])]
    return {
        "case": name, "damage": what, "unit_offset": unit_offset, "flipped_byte": flipped,
        "strict_decoder": strict,
        "report": [record.describe() for record in report.concealed] + list(report.notes),
        "frames": len(frames),
        "concealed_frames": concealed, "follow_frames": follow,
        "differing_frames": differing, "differing_count": len(differing),
        "identical_outside_concealed_and_follow": set(differing) <= set(concealed) | set(follow),
        "concealed_psnr_vs_clean_db": mean_psnr(frames, clean, concealed),
        "concealed_psnr_vs_source_db": mean_psnr(frames, source, concealed),
        "clean_psnr_vs_source_same_frames_db": mean_psnr(clean, source, concealed),
        "follow_psnr_vs_clean_db": mean_psnr(frames, clean, follow),
        "follow_psnr_vs_source_db": mean_psnr(frames, source, follow),
        "clean_follow_psnr_vs_source_db": mean_psnr(clean, source, follow),
        "decode_seconds": round(seconds, 1),
        "_frames": frames,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("-b:v", dest="bitrate", default="100k")
    parser.add_argument("--iterations", type=int, default=None, help="default: the tiny model's (100)")
    parser.add_argument("--first-iterations", type=int, default=None, help="default: the tiny model's (300)")
    parser.add_argument("--stream", type=Path, help="an encoded stream to use instead of encoding (needs --source)")
    parser.add_argument("--source", type=Path, help="the video --stream was encoded from")
    args = parser.parse_args()
    settings = vars(args) | {"stream": str(args.stream) if args.stream else None,
                             "source": str(args.source) if args.source else None}
    with tempfile.TemporaryDirectory() as tmp:
        source_path, stream_path = args.source, args.stream
        encode_seconds = None
        if stream_path is None:
            from libpromptus import encode

            source_path, stream_path = Path(tmp) / "sample.y4m", Path(tmp) / "sample.pmt"
            write_sample(str(source_path), args.frames, args.size, args.size)
            started = time.perf_counter()
            encode(str(source_path), str(stream_path), model="tiny", bitrate=parse_bitrate(args.bitrate),
                   iterations=args.iterations, first_iterations=args.first_iterations)
            encode_seconds = round(time.perf_counter() - started, 1)
        data = stream_path.read_bytes()
        with open_video(str(source_path)) as reader:
            source = np.stack(list(reader.frames()))
    streams = read_streams(io.BytesIO(data))
    engine = create_engine("torch", load_generator("tiny"), streams[0].header, device="cpu")
    clean = decode(streams, engine)
    results = [measure(data, source, clean, engine, case) for case in cases(data)]
    by_name = {r["case"]: r for r in results}
    payload, size_field = by_name["keyframe_mid_scene_0"], by_name["keyframe_size_field_scene_0"]
    size_field["same_frames_as_payload_damage"] = bool(np.array_equal(payload["_frames"], size_field["_frames"]))
    for result in results:
        del result["_frames"]
    stream = streams[0]
    print(json.dumps({
        **environment("concealment", settings),
        "stream": {
            "frames": stream.frame_count, "bytes": len(data),
            "bitrate_bps": round(len(data) * 8 * stream.header.fps_num / (stream.header.fps_den * stream.frame_count)),
            "encode_seconds": encode_seconds,
            "scenes": [{"first_frame": s.first_frame, "keyframes": [k.unit.frame_index for k in s.keyframes],
                        "rank": s.keyframes[0].unit.rank} for s in stream.scenes],
            "clean_psnr_vs_source_db": mean_psnr(clean, source, list(range(len(clean)))),
        },
        "cases": results,
    }, indent=2))


if __name__ == "__main__":
    main()
