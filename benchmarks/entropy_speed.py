"""Speed and rate of the coded_symbols entropy coder on rank-8 prompt factors.

Prints one JSON object: keyframes (one U [77x8] block plus one V [8x1024] block)
decoded per second on one core, bits per symbol for U and V, and the saving against
raw bytes. Uses the official Promptus prompts when ../shared/reference is present
(and torch can read them), otherwise seeded synthetic Gaussian factors of the same
shape; the "data" field says which.

    python benchmarks/entropy_speed.py [--seconds S]
"""
from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from libpromptus.bitstream import entropy

OFFICIAL = Path(__file__).resolve().parents[2] / "shared" / "reference" / "promptus-official"
CLIPS = ("sky", "uvg")


def official_keyframes() -> dict[str, list[tuple[np.ndarray, np.ndarray]]] | None:
    """{clip: [(U, V), ...]} from the official prompt files, or None if unavailable."""
    try:
        import torch
    except ImportError:
        return None
    clips = {}
    for clip in CLIPS:
        files = sorted((OFFICIAL / clip / "prompts_rank8_interval10").glob("frame_*.prompt"))
        if not files:
            return None
        clips[clip] = []
        for path in files:
            d = torch.load(path, weights_only=True, map_location="cpu")
            clips[clip].append((d["U"].numpy().copy(), d["V"].numpy().copy()))
    return clips


def synthetic_keyframes() -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """Seeded Gaussian stand-ins: 2 clips x 15 keyframes, U ~ N(120, 20), V ~ N(128, 32)."""
    rng = np.random.default_rng(2024)
    def q(mean: float, std: float, shape: tuple[int, int]) -> np.ndarray:
        return np.clip(np.rint(rng.normal(mean, std, shape)), 0, 255).astype(np.uint8)
    return {clip: [(q(120, 20, (77, 8)), q(128, 32, (8, 1024))) for _ in range(15)] for clip in CLIPS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="minimum decode timing duration")
    args = parser.parse_args()

    pinned = False
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        pinned = True

    clips = official_keyframes()
    source = f"official prompts ({', '.join(CLIPS)}; rank 8, interval 10)"
    if clips is None:
        clips, source = synthetic_keyframes(), "synthetic seeded Gaussian U[77x8], V[8x1024]"

    per_clip = {}
    blocks = []
    totals = {"U": [0, 0], "V": [0, 0]}                 # [raw bytes, coded bytes]
    for clip, keyframes in clips.items():
        raw = {"U": 0, "V": 0}
        coded = {"U": 0, "V": 0}
        for u, v in keyframes:
            bu, bv = entropy.encode_symbols(u), entropy.encode_symbols(v)
            blocks.append((bu, u.size, bv, v.size))
            for name, a, b in (("U", u, bu), ("V", v, bv)):
                raw[name] += a.size
                coded[name] += len(b)
                totals[name][0] += a.size
                totals[name][1] += len(b)
        per_clip[clip] = {
            "keyframes": len(keyframes),
            "raw_bytes": raw["U"] + raw["V"],
            "coded_bytes": coded["U"] + coded["V"],
            "saving_U": round(1 - coded["U"] / raw["U"], 4),
            "saving_V": round(1 - coded["V"] / raw["V"], 4),
            "saving_total": round(1 - (coded["U"] + coded["V"]) / (raw["U"] + raw["V"]), 4),
        }

    # Decode timing; the per-parameter model cache is cleared for every keyframe so each
    # block pays for its frequency table, as in a real stream.
    decoded = 0
    start = time.perf_counter()
    while True:
        for bu, nu, bv, nv in blocks:
            entropy._coder_model.cache_clear()
            entropy.decode_symbols(bu, 0, nu)
            entropy.decode_symbols(bv, 0, nv)
        decoded += len(blocks)
        elapsed = time.perf_counter() - start
        if elapsed >= args.seconds:
            break

    raw_all = totals["U"][0] + totals["V"][0]
    coded_all = totals["U"][1] + totals["V"][1]
    print(json.dumps({
        "benchmark": "entropy_speed",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "constriction": importlib.metadata.version("constriction"),
        "pinned_to_one_core": pinned,
        "data": source,
        "keyframes_decoded_per_second": round(decoded / elapsed, 1),
        "bits_per_symbol_U": round(8 * totals["U"][1] / totals["U"][0], 4),
        "bits_per_symbol_V": round(8 * totals["V"][1] / totals["V"][0], 4),
        "saving_vs_raw": round(1 - coded_all / raw_all, 4),
        "per_clip": per_clip,
    }, indent=2))


if __name__ == "__main__":
    main()
