"""Scene latents at 512²: Q8 against DCT8 (SPEC.md §4.2), bytes against decoded quality.

    python benchmarks/latent_codec.py [--steps 0.01,0.02,0.05,0.1,0.2] [--out FILE.json]

Issue 18 item 3 ("a scene latent in a third of the bytes"). For each first frame (the
official sky and uvg first frames when ../shared/reference/promptus-official is
present, and held-out procedural frames (`libpromptus.models.procedural`, seeds from
`HELD_OUT_SEED`), all 512×512) the tiny model's latent encoder gives the latent L
[4, 64, 64]; each codec's scene start unit is written by the library's serializer
(`bytes` is its whole payload), its latent decoded as a decoder does
(`SceneStart.dequantized_latent`) and passed through the tiny model's latent decoder;
PSNR is against the source frame (`reference_psnr` is L itself, uncoded: the ceiling).
`dct8(s)` is DCT8 at step s times each channel's standard deviation (pmtenc
`--latent-step s`).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from environment import environment, report

from libpromptus.bitstream import Coding, LatentCodec
from libpromptus.bitstream.syntax import encode_payload
from libpromptus.models import load_generator, load_latent_encoder
from libpromptus.models.procedural import random_clip
from libpromptus.models.train_tiny import HELD_OUT_SEED
from libpromptus.process.quality import psnr
from libpromptus.process.quantization import scene_start

OFFICIAL = Path(__file__).resolve().parents[2] / "shared" / "reference" / "promptus-official"
SIZE = 512


def frames() -> dict[str, np.ndarray]:
    """The 512² first frames: official (when present) and held-out procedural ones."""
    import av

    found = {}
    for name in ("sky", "uvg"):
        first = OFFICIAL / name / "frames" / "00000.png"
        if first.exists():
            with av.open(str(first)) as container:
                image = next(container.decode(video=0)).to_ndarray(format="rgb24")
            found[f"official-{name}"] = image[:SIZE, :SIZE]
    for seed in (HELD_OUT_SEED, HELD_OUT_SEED + 1, HELD_OUT_SEED + 2):
        found[f"procedural-{seed}"] = random_clip(seed, 1, SIZE, SIZE)[0][0]
    return found


def decode(generator, latent: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        image = generator.decoder.decode(torch.from_numpy(latent[None]).float()).sample[0]
    return ((image.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()


def coded(latent: np.ndarray, codec: LatentCodec, **options) -> tuple[int, np.ndarray]:
    """The payload bytes of the scene start unit and the latent a decoder reconstructs from it."""
    unit = scene_start(0, latent, codec, Coding.ENTROPY, **options)
    return len(encode_payload(unit)), unit.dequantized_latent()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default="0.01,0.02,0.05,0.1,0.2")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    steps = [float(s) for s in args.steps.split(",")]
    torch.manual_seed(0)
    generator, encoder = load_generator("tiny"), load_latent_encoder("tiny")
    results = {}
    for name, image in frames().items():
        latent = encoder.encode(torch.from_numpy(np.ascontiguousarray(image))[None])[0].numpy()
        entry = {"reference_psnr": round(psnr(decode(generator, latent), image), 3),
                 "channel_std": [round(float(c.std()), 4) for c in latent]}
        size, restored = coded(latent, LatentCodec.Q8)
        entry["q8"] = {"bytes": size, "psnr": round(psnr(decode(generator, restored), image), 3)}
        for step in steps:
            size, restored = coded(latent, LatentCodec.DCT8, latent_step=step)
            entry[f"dct8({step:g})"] = {"bytes": size, "psnr": round(psnr(decode(generator, restored), image), 3)}
        results[name] = entry
    codecs = [codec for codec in next(iter(results.values())) if codec not in ("reference_psnr", "channel_std")]
    summary = {codec: {"mean_bytes": round(float(np.mean([r[codec]["bytes"] for r in results.values()]))),
                       "max_bytes": max(r[codec]["bytes"] for r in results.values()),
                       "mean_psnr_loss_vs_q8_db": round(float(np.mean([r["q8"]["psnr"] - r[codec]["psnr"]
                                                                       for r in results.values()])), 3),
                       "max_psnr_loss_vs_q8_db": round(max(r["q8"]["psnr"] - r[codec]["psnr"]
                                                           for r in results.values()), 3)}
               for codec in codecs}
    result = environment("latent_codec", {"size": SIZE, "steps": steps, "official_frames": OFFICIAL.exists()})
    result.update(frames=results, summary=summary)
    report(result, args.out)


if __name__ == "__main__":
    main()
