"""Decoding speed: frames per second of the whole decoding process at 512x512.

Prints one JSON object (device, versions, date, settings, numbers). Decodes a
synthetic rank-8 stream (keyframe every 10 frames) with the given model and engine at
batch 1 and batch 10, after one warm-up interval, and reports frames/s and, on CUDA,
peak GPU memory.

    python benchmarks/decode_speed.py [--model tiny] [--engine torch] [--device auto]
        [--frames 20] [--batches 1,10] [--size 512]
"""
from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import io
import json
import platform
import time

import numpy as np
import torch

from libpromptus.api import check_model
from libpromptus.bitstream import Coding, Keyframe, LatentCodec, SceneStart, StreamWriter, read_streams
from libpromptus.decoding import decode_frames
from libpromptus.engines import create_engine
from libpromptus.models import load_generator
from libpromptus.profiles import PROFILES


def synthetic_stream(model: str, model_hash: bytes, size: int, frames: int, interval: int = 10,
                     rank: int = 8) -> list:
    """A seeded stream of `frames` frames for `model`'s profile, pinned to its weights."""
    profile = PROFILES[model]
    header = profile.sequence_header(width=size, height=size, fps_num=30, fps_den=1, frame_count=frames,
                                     model_hash=model_hash)
    rng = np.random.default_rng(0)
    sink = io.BytesIO()
    with StreamWriter(sink, header) as writer:
        latent = rng.standard_normal(header.latent_shape).astype(np.float32)
        writer.write(SceneStart(0, LatentCodec.F32, Coding.RAW, latent))
        for index in [*range(0, frames - 1, interval), frames - 1]:
            writer.write(Keyframe(index, Coding.RAW, rng.integers(0, 256, (header.cond_tokens, rank), np.uint8),
                                  rng.integers(0, 256, (rank, header.cond_dim), np.uint8), 0.02, 128, 0.1, 128))
    sink.seek(0)
    return read_streams(sink)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--engine", default="torch")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--frames", type=int, default=20, help="frames timed per batch size (after warm-up)")
    parser.add_argument("--batches", default="1,10")
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()

    generator = load_generator(args.model)
    warmup = 11
    streams = synthetic_stream(generator.name, generator.identity(), args.size, warmup + args.frames)
    check_model(streams[0].header, generator)
    engine = create_engine(args.engine, generator, streams[0].header, device=args.device, precision=args.precision)
    results = []
    for batch in (int(b) for b in args.batches.split(",")):
        list(decode_frames(streams, engine, batch=batch, frame_count=warmup))
        if engine.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        count = sum(1 for _ in decode_frames(streams, engine, batch=batch, start_frame=warmup))
        if engine.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        entry = {"batch": batch, "frames": count, "seconds": round(seconds, 3), "fps": round(count / seconds, 3)}
        if engine.device.type == "cuda":
            entry["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
        results.append(entry)
    device = engine.device
    print(json.dumps({
        "benchmark": "decode_speed",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "cpu_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "versions": {name: importlib.metadata.version(name) for name in ("torch", "diffusers", "libpromptus")},
        "settings": {"model": generator.name, "engine": engine.name, "precision": str(engine.dtype),
                     "size": args.size, "rank": 8, "keyframe_interval": 10},
        "results": results,
    }, indent=2))


if __name__ == "__main__":
    main()
