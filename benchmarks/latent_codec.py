"""Scene latents at 512²: today's q8 against a candidate transform coder, bytes against quality.

    python benchmarks/latent_codec.py [--steps 0.005,0.01,0.02,0.04,0.08,0.12] [--out FILE.json]

Groundwork for issue 18 item 3 ("a scene latent in a third of the bytes"), to choose a
design by measurement before it is specified. For each first frame (the official sky and
uvg first frames when ../shared/reference/promptus-official is present, and held-out
procedural frames (`libpromptus.models.procedural`, seeds from `HELD_OUT_SEED`), all 512×512) the tiny model's latent
encoder gives the latent L [4, 64, 64]; each codec's reconstruction of L goes through the
tiny model's latent decoder, and PSNR is against the source frame (`reference_psnr` is L
itself, uncoded: the ceiling).

- `q8`: SPEC.md's Q8 scene latent, entropy coded exactly as the format does
  (`bitstream.entropy.encode_symbols` per channel plane), bytes as written.
- `dct(step)`: the candidate. Each channel in 8×8 blocks, orthonormal DCT-II, each
  coefficient divided by `step × (1 + u + v)` (a ramp quantization matrix) and rounded;
  the coefficients of one zigzag band group of one channel form one symbol block (offset
  by 128), coded by the same `encode_symbols`; a group whose values do not fit in a byte
  is coded as two byte planes of int16 instead (`wide_groups` counts them). Bytes are
  those blocks plus 4 bytes of step per channel; the reconstruction is the inverse
  transform of the dequantized coefficients.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from environment import environment, report
from scipy.fft import dctn, idctn

from libpromptus.bitstream import Coding, LatentCodec
from libpromptus.bitstream.entropy import encode_symbols
from libpromptus.models import load_generator, load_latent_encoder
from libpromptus.models.procedural import random_clip
from libpromptus.models.train_tiny import HELD_OUT_SEED
from libpromptus.process.quality import psnr
from libpromptus.process.quantization import scene_start

OFFICIAL = Path(__file__).resolve().parents[2] / "shared" / "reference" / "promptus-official"
SIZE, BLOCK = 512, 8
#: Zigzag index ranges of the 8×8 block's 64 coefficients coded as one symbol block each.
BAND_GROUPS = ((0, 1), (1, 3), (3, 6), (6, 10), (10, 15), (15, 21), (21, 28), (28, 36), (36, 64))


def zigzag() -> list[tuple[int, int]]:
    """The 8×8 positions in JPEG's zigzag order."""
    return sorted(((u, v) for u in range(BLOCK) for v in range(BLOCK)),
                  key=lambda p: (p[0] + p[1], p[1] if (p[0] + p[1]) % 2 else p[0]))


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


def q8(latent: np.ndarray) -> tuple[int, np.ndarray]:
    unit = scene_start(0, latent, LatentCodec.Q8, Coding.ENTROPY)
    size = sum(len(encode_symbols(plane)) for plane in unit.latent) + 5 * len(unit.latent)
    return size, unit.dequantized_latent()


def group_bytes(values: np.ndarray) -> tuple[int, bool]:
    """The coded size of one band group's integers, and whether it needed int16's two planes."""
    if values.min() >= -128 and values.max() <= 127:
        return len(encode_symbols((values + 128).astype(np.uint8))), False
    wide = (values + 32768).astype(np.uint16)
    return len(encode_symbols((wide & 0xFF).astype(np.uint8))) + len(encode_symbols((wide >> 8).astype(np.uint8))), True


def dct(latent: np.ndarray, step: float) -> tuple[int, np.ndarray, int]:
    channels, height, width = latent.shape
    order = zigzag()
    ramp = step * (1 + np.add.outer(np.arange(BLOCK), np.arange(BLOCK))).astype(np.float32)
    blocks = latent.reshape(channels, height // BLOCK, BLOCK, width // BLOCK, BLOCK).transpose(0, 1, 3, 2, 4)
    coefficients = dctn(blocks, axes=(3, 4), norm="ortho")
    quantized = np.round(coefficients / ramp).astype(np.int64)
    size, wide_groups = 4 * channels, 0
    for c in range(channels):
        for start, end in BAND_GROUPS:
            coded, wide = group_bytes(np.concatenate([quantized[c, :, :, u, v].ravel() for u, v in order[start:end]]))
            size += coded
            wide_groups += wide
    restored = idctn(quantized * ramp, axes=(3, 4), norm="ortho")
    return size, restored.transpose(0, 1, 3, 2, 4).reshape(channels, height, width).astype(np.float32), wide_groups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default="0.005,0.01,0.02,0.04,0.08,0.12")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    steps = [float(s) for s in args.steps.split(",")]
    torch.manual_seed(0)
    generator, encoder = load_generator("tiny"), load_latent_encoder("tiny")
    results = {}
    for name, image in frames().items():
        latent = encoder.encode(torch.from_numpy(np.ascontiguousarray(image))[None])[0].numpy()
        entry = {"reference_psnr": round(psnr(decode(generator, latent), image), 3)}
        size, restored = q8(latent)
        entry["q8"] = {"bytes": size, "psnr": round(psnr(decode(generator, restored), image), 3)}
        for step in steps:
            size, restored, wide_groups = dct(latent, step)
            entry[f"dct({step:g})"] = {"bytes": size, "psnr": round(psnr(decode(generator, restored), image), 3),
                                       "wide_groups": wide_groups}
        results[name] = entry
    summary = {codec: {"mean_bytes": round(float(np.mean([r[codec]["bytes"] for r in results.values()]))),
                       "mean_psnr_loss_vs_q8_db": round(float(np.mean([r["q8"]["psnr"] - r[codec]["psnr"]
                                                                       for r in results.values()])), 3)}
               for codec in next(iter(results.values())) if codec != "reference_psnr"}
    result = environment("latent_codec", {"size": SIZE, "steps": steps, "band_groups": BAND_GROUPS,
                                          "official_frames": OFFICIAL.exists()})
    result.update(frames=results, summary=summary)
    report(result, args.out)


if __name__ == "__main__":
    main()
