"""Fitting speed: milliseconds per frame-iteration of the encoder's hot loop, and peak memory.

Fits one keyframe interval as the encoder does (`fitting.fit_keyframe` through the
engine's differentiable `forward`, the interval's frames batched, 8-bit fake
quantization, the loss α·MSE + (1−α)·perceptual + 0.1·mean|c|) for a fixed number of
iterations after a warm-up, and reports milliseconds per iteration and per
frame-iteration (iteration time / frames in the batch), and on CUDA the peak memory.
Prints one JSON object.

    python benchmarks/fitting_speed.py [--model tiny|sd-turbo-random] [--device auto]
        [--precision auto] [--size 512] [--interval 10] [--rank 8] [--iterations 10]
"""
from __future__ import annotations

import argparse
import json
import time

import torch
from benchmark_models import NAMES, benchmark_generator
from environment import environment
from libpromptus.engines import create_engine

from libpromptus.encoder.fitting import FitSettings, fit_keyframe
from libpromptus.encoder.losses import fitting_loss, make_perceptual_loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=NAMES, default="tiny")
    parser.add_argument("--engine", default="torch", choices=("torch", "compiled"))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto", help="auto: bf16 on CUDA (as pmtenc), fp32 on the CPU")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--interval", type=int, default=10)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--perceptual", default="ms-ssim")
    args = parser.parse_args()

    generator = benchmark_generator(args.model)
    header = generator.profile.sequence_header(width=args.size, height=args.size, fps_num=30, fps_den=1,
                                               frame_count=0, model_hash=generator.identity())
    precision = args.precision
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_available() and args.device != "cpu" else "auto"
    engine = create_engine(args.engine, generator, header, device=args.device, precision=precision)
    device = engine.device
    perceptual = make_perceptual_loss(args.perceptual, device)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(1, *header.latent_shape, generator=g).to(device)
    targets = (torch.rand(args.interval, 3, args.size, args.size, generator=g) * 2 - 1).to(device)
    previous = (torch.rand(header.cond_tokens, args.rank, generator=g).to(device),
                torch.rand(args.rank, header.cond_dim, generator=g).to(device))

    def loss(images, target, prompts):
        return fitting_loss(images, target, prompts, perceptual)

    def run(iterations: int) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fit_keyframe(engine.forward, z, targets, loss, rank=args.rank, cond_shape=(header.cond_tokens, header.cond_dim),
                     previous=previous, interval=args.interval, settings=FitSettings(iterations),
                     generator=torch.Generator().manual_seed(1))
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    run(2)                                   # warm-up (and compilation for --engine compiled)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    seconds = run(args.iterations)
    per_iteration = seconds / args.iterations * 1000
    result = {"iterations": args.iterations, "frames_per_iteration": args.interval,
              "ms_per_iteration": round(per_iteration, 2),
              "ms_per_frame_iteration": round(per_iteration / args.interval, 2)}
    if device.type == "cuda":
        result["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    settings = {**vars(args), "engine": engine.name, "precision": str(engine.dtype)}
    print(json.dumps({**environment("fitting_speed", settings, device=str(device)), "results": result}, indent=2))


if __name__ == "__main__":
    main()
