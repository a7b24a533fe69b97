"""The model-free part of the decoding process: factors to per-frame conditioning.

SPEC.md, "Decoding process", steps 1-3: dequantize each keyframe's 8-bit factors,
interpolate the factors linearly between consecutive keyframes, compose
`c = u @ v / sqrt(r)`. Written with operators that numpy arrays and torch tensors both
support, so the encoder's fitting loop can run the very same arithmetic with autograd.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

import numpy as np

from .bitstream import Keyframe, Stream


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """`scale * (q - zero_point)` in binary32: one rounding, of an exact integer times scale."""
    return np.float32(scale) * (q.astype(np.float32) - np.float32(zero_point))


def keyframe_factors(keyframe: Keyframe) -> tuple[np.ndarray, np.ndarray]:
    """The dequantized factors (U [T, r], V [r, D]) of a keyframe, float32."""
    return (dequantize(keyframe.u, keyframe.u_scale, keyframe.u_zero_point),
            dequantize(keyframe.v, keyframe.v_scale, keyframe.v_zero_point))


def compose(u, v):
    """`u @ v / sqrt(r)`: the [T, D] conditioning of rank-r factors (numpy or torch)."""
    rank = u.shape[-1]
    return (u @ v) / math.sqrt(rank)


def interpolation_weight(step: int, interval: int) -> float:
    """Weight of the later keyframe for frame `a + step` of an interval `a -> a + interval`.

    Computed in binary64 and rounded once to binary32, as SPEC.md defines.
    """
    return float(np.float32(step / interval))


def interpolate(a, b, weight: float):
    """`(1 - weight) * a + weight * b` with the two weights rounded to binary32."""
    return float(np.float32(1.0 - weight)) * a + weight * b


def frame_conditioning(streams: Iterable[Stream]) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (display frame index, conditioning float32 [T, D]) for every frame, in order."""
    for stream in streams:
        for scene in stream.scenes:
            previous: tuple[int, np.ndarray, np.ndarray] | None = None
            for item in scene.keyframes:
                keyframe: Keyframe = item.unit
                u_b, v_b = keyframe_factors(keyframe)
                if previous is None:
                    yield stream.first_frame + keyframe.frame_index, compose(u_b, v_b)
                else:
                    start, u_a, v_a = previous
                    interval = keyframe.frame_index - start
                    for step in range(1, interval + 1):
                        w = interpolation_weight(step, interval)
                        c = compose(interpolate(u_a, u_b, w), interpolate(v_a, v_b, w))
                        yield stream.first_frame + start + step, c.astype(np.float32, copy=False)
                previous = (keyframe.frame_index, u_b, v_b)
