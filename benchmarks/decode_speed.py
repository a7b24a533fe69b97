"""Decoding speed: frames per second of the whole decoding process at 512x512.

Prints one JSON object (device, versions, date, settings, numbers). Decodes a
synthetic rank-8 stream (keyframe every 10 frames) with the given model and engine at
each batch size, after a warm-up run over the same frames, and reports frames/s and, on CUDA,
peak GPU memory.

    python benchmarks/decode_speed.py [--model tiny|sd-turbo-random] [--engine torch|compiled|tensorrt]
        [--device auto] [--frames 20] [--batches 1,10,16] [--size 512]
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
from benchmark_models import NAMES, benchmark_generator
from libpromptus.bitstream import (
    Coding,
    Keyframe,
    LatentCodec,
    SceneStart,
    StreamWriter,
    read_streams,
)
from libpromptus.engines import create_engine

from libpromptus.decoder.decoder import check_model
from libpromptus.decoder.decoding import decode_frames
from libpromptus.process.profiles import PROFILES


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
    parser.add_argument("--model", choices=NAMES, default="tiny",
                        help="sd-turbo-random: SD-Turbo's architecture with random weights")
    parser.add_argument("--engine", default="torch")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--frames", type=int, default=20, help="frames timed per batch size (after warm-up)")
    parser.add_argument("--batches", default="1,10,16")
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()

    generator = benchmark_generator(args.model)
    engine = None
    results = []
    for batch in (int(b) for b in args.batches.split(",")):
        # a batch never spans two intervals (each interval starts from the previous one's
        # last latent), so batches above 10 get intervals of their own size
        interval = max(10, batch)
        first_timed = interval + 1   # frames from the second interval on are timed
        streams = synthetic_stream(generator.name, generator.identity(), args.size, first_timed + args.frames, interval)
        check_model(streams[0].header, generator)
        if engine is None:
            engine = create_engine(args.engine, generator, streams[0].header, device=args.device,
                                   precision=args.precision)
        # warm-up: the very frames timed below, so that every shape a compiled engine
        # meets is built before the clock starts
        list(decode_frames(streams, engine, batch=batch, start_frame=first_timed))
        if engine.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        count = sum(1 for _ in decode_frames(streams, engine, batch=batch, start_frame=first_timed))
        if engine.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        entry = {"batch": batch, "keyframe_interval": interval, "frames": count, "seconds": round(seconds, 3),
                 "fps": round(count / seconds, 3)}
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
        "settings": {"model": args.model, "engine": engine.name, "precision": str(engine.dtype),
                     "size": args.size, "rank": 8},
        "results": results,
    }, indent=2))


if __name__ == "__main__":
    main()
