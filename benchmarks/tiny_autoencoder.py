"""How well does the tiny model's autoencoder reconstruct frames? (PSNR, JSON on stdout)

Encodes frames with the shipped tiny latent encoder and decodes them with its decoder
(float32, CPU), as the first frame of every scene is coded: held-out procedural frames
(seeds from train_tiny.HELD_OUT_SEED up, the training distribution) at two sizes, and,
when ../shared/reference/promptus-official is present, its real 512x512 frames (out of
distribution). Per set: mean, minimum and maximum of the per-frame PSNR.

    python benchmarks/tiny_autoencoder.py [--clips 4] [--frames 40]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from environment import environment
from PIL import Image

from libpromptus.models import load_generator, load_latent_encoder
from libpromptus.models.procedural import random_clip
from libpromptus.models.train_tiny import HELD_OUT_SEED
from libpromptus.process.quality import psnr

OFFICIAL = Path(__file__).resolve().parents[2] / "shared" / "reference" / "promptus-official"


def reconstruct(frames: list[np.ndarray], encoder, decoder) -> list[float]:
    values = []
    for frame in frames:
        with torch.inference_mode():
            latent = encoder.encode(torch.from_numpy(frame)[None])
            image = decoder.decode(latent).sample
        pixels = ((image.clamp(-1, 1) + 1) / 2 * 255).floor().to(torch.uint8)[0].permute(1, 2, 0).numpy()
        values.append(psnr(pixels, frame))
    return values


def summary(values: list[float]) -> dict:
    return {"frames": len(values), "mean_psnr_db": round(float(np.mean(values)), 3),
            "min_psnr_db": round(float(np.min(values)), 3), "max_psnr_db": round(float(np.max(values)), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--frames", type=int, default=40)
    args = parser.parse_args()
    encoder = load_latent_encoder("tiny")
    decoder = load_generator("tiny").decoder
    results = {}
    for size in (128, 256):
        values = []
        for index in range(args.clips):
            frames, _ = random_clip(HELD_OUT_SEED + index, args.frames, size, size)
            values += reconstruct(frames, encoder, decoder)
        results[f"procedural_held_out_{size}x{size}"] = summary(values)
    for name in ("sky", "uvg"):
        folder = OFFICIAL / name / "frames"
        if not folder.is_dir():
            results[f"official_{name}"] = "skipped: ../shared/reference/promptus-official is absent"
            continue
        frames = [np.asarray(Image.open(path).convert("RGB")) for path in sorted(folder.glob("*.png"))]
        results[f"official_{name}_512x512"] = summary(reconstruct(frames, encoder, decoder))
    print(json.dumps({**environment("tiny_autoencoder", vars(args)), "results": results}, indent=2))


if __name__ == "__main__":
    main()
