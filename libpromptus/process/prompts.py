"""The model-free part of the decoding process: factors to per-frame conditioning.

SPEC.md, "Decoding process", steps 1-3: dequantize each keyframe's 8-bit factors,
interpolate the factors linearly between consecutive keyframes, compose
`c = u @ v / sqrt(r)`. Written with operators that numpy arrays and torch tensors both
support, so the encoder's fitting loop can run the very same arithmetic with autograd.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from ..bitstream import Keyframe, Scene, Stream


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


def interpolated_conditioning(factors_a, factors_b, step: int, interval: int):
    """The [T, D] conditioning of frame a + `step` between keyframes a and b = a + `interval`
    (SPEC.md §8.3): each factor interpolated, then composed.

    Numpy or torch: the decoder runs it on dequantized factors, the encoder's fitting
    loop on fake-quantized ones with autograd, so the two compute the same values.
    """
    (u_a, v_a), (u_b, v_b) = factors_a, factors_b
    weight = interpolation_weight(step, interval)
    return compose(interpolate(u_a, u_b, weight), interpolate(v_a, v_b, weight))


#: A keyframe's dequantized factors (U [T, r], V [r, D]).
Factors = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Interval:
    """Frames that share one input latent (SPEC.md §8.7).

    Either a scene's first keyframe alone (`start` is None) or the frames a+1..b between
    keyframes a = `start` and b = `end`. Frame indices are within the stream.
    """

    start: int | None
    end: int
    _factors_a: tuple[np.ndarray, np.ndarray] | None
    _factors_b: tuple[np.ndarray, np.ndarray]

    @property
    def frames(self) -> range:
        return range(self.end, self.end + 1) if self.start is None else range(self.start + 1, self.end + 1)

    def conditioning(self, frame: int) -> np.ndarray:
        """The float32 [T, D] conditioning of `frame` (SPEC.md §8.2-8.3)."""
        if self.start is None:
            return compose(*self._factors_b)
        return interpolated_conditioning(self._factors_a, self._factors_b, frame - self.start,
                                         self.end - self.start).astype(np.float32, copy=False)


def closed_interval(previous: tuple[int, Factors] | None,
                    keyframe: Keyframe) -> tuple[Interval, tuple[int, Factors]]:
    """The interval `keyframe` closes after the scene's `previous` keyframe (frame index and
    factors; None for a scene's first keyframe), and what to pass as `previous` next."""
    factors = keyframe_factors(keyframe)
    if previous is None:
        interval = Interval(None, keyframe.frame_index, None, factors)
    else:
        interval = Interval(previous[0], keyframe.frame_index, previous[1], factors)
    return interval, (keyframe.frame_index, factors)


def scene_intervals(scene: Scene) -> Iterator[Interval]:
    """The intervals of a scene in decoding order."""
    previous = None
    for item in scene.keyframes:
        interval, previous = closed_interval(previous, item.unit)
        yield interval


def frame_conditioning(streams: Iterable[Stream]) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (display frame index in the file, conditioning float32 [T, D]) for every frame."""
    for stream in streams:
        for scene in stream.scenes:
            for interval in scene_intervals(scene):
                for frame in interval.frames:
                    yield stream.first_frame + frame, interval.conditioning(frame)
