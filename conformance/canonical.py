"""Tier 1 of the conformance suite: the canonical evaluation of every frame's conditioning.

SPEC.md §8.2 lets a decoder sum the products of `u @ v` in any order, so the composed
conditioning of two conforming decoders may differ in the last bits. Tier 1 checks it
exactly anyway, on one canonical evaluation that every platform with IEEE 754 binary32
arithmetic reproduces bit for bit (SPEC.md §8.2 and Annex B): dequantization and
interpolation as §8.1 and §8.3 fix them, then for every element

    s = u[t, 0] * v[0, d];  s = s + u[t, k] * v[k, d] for k = 1 .. r-1;  c[t, d] = s / binary32(sqrt(r))

with every product, sum and the quotient rounded to binary32 (no fused multiply-add).
The checksum is the md5 of every frame's conditioning, in display order, each value
rounded to binary16 and written little-endian.

numpy's float32 ufuncs round each operation separately and never fuse a multiply with
an add, so the loop over k below is the canonical order. This module needs numpy and
the bitstream reader only: no model, no torch, and nothing of libpromptus.process.prompts,
which it is a second implementation of.
"""
from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Iterator

import numpy as np

from ..bitstream import Keyframe, Stream

_F32 = np.float32


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """SPEC.md §8.1: `scale * (q - zero_point)`, the exact difference times scale, rounded once."""
    return _F32(scale) * (q.astype(_F32) - _F32(zero_point))


def factors(keyframe: Keyframe) -> tuple[np.ndarray, np.ndarray]:
    """The dequantized binary32 factors (U [T, r], V [r, D]) of a keyframe."""
    return (dequantize(keyframe.u, keyframe.u_scale, keyframe.u_zero_point),
            dequantize(keyframe.v, keyframe.v_scale, keyframe.v_zero_point))


def compose(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """SPEC.md §8.2 in the canonical order: k ascending from the first product, then one division."""
    rank = u.shape[1]
    total = u[:, 0:1] * v[0:1, :]
    for k in range(1, rank):
        total = total + u[:, k:k + 1] * v[k:k + 1, :]
    return total / _F32(math.sqrt(rank))


def interpolate(a: np.ndarray, b: np.ndarray, step: int, interval: int) -> np.ndarray:
    """SPEC.md §8.3: `w0 * a + w * b`, w = binary32(step / interval), w0 = binary32(1 - w)."""
    w = _F32(step / interval)
    w0 = _F32(1) - w
    return w0 * a + w * b


def stream_conditioning(stream: Stream) -> Iterator[np.ndarray]:
    """Yield the canonical binary32 conditioning [T, D] of every frame of a stream, in order."""
    for scene in stream.scenes:
        previous: tuple[int, tuple[np.ndarray, np.ndarray]] | None = None
        for item in scene.keyframes:
            keyframe: Keyframe = item.unit
            u_b, v_b = factors(keyframe)
            if previous is None:
                yield compose(u_b, v_b)
            else:
                start, (u_a, v_a) = previous
                interval = keyframe.frame_index - start
                for step in range(1, interval + 1):
                    yield compose(interpolate(u_a, u_b, step, interval), interpolate(v_a, v_b, step, interval))
            previous = (keyframe.frame_index, (u_b, v_b))


def latent_md5(streams: Iterable[Stream]) -> str:
    """The tier-1 latent checksum of a file: md5 of every scene's first-frame latent L
    (SPEC.md §5.2, §8.1) as little-endian binary32, row-major, scenes in file order.

    §8.1 makes every L exact (Q8 one product, DCT8 integer arithmetic and one rounding),
    so this is the bitstream layer's own `dequantized_latent`, compared bit for bit.
    """
    digest = hashlib.md5()
    for stream in streams:
        for scene in stream.scenes:
            digest.update(scene.start.unit.dequantized_latent().astype("<f4").tobytes())
    return digest.hexdigest()


def tier1_md5(streams: Iterable[Stream]) -> str:
    """The tier-1 checksum of a file: md5 of every frame's conditioning as little-endian binary16."""
    digest = hashlib.md5()
    for stream in streams:
        for conditioning in stream_conditioning(stream):
            digest.update(conditioning.astype("<f2").tobytes())
    return digest.hexdigest()
