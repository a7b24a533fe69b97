"""Matching a bitrate: the encoder rate target that makes the whole file land on it.

On clips of one or two seconds the encoders' own rate control misses by a lot (measured
at 100k/225k/540k on the 21-frame uvg clip at 512x512 and at 50k/100k/200k on two 60-frame
128x128 clips: x265 two-pass -2..+49 %, x264 two-pass -17..+27 %, x264 one-pass ABR
-50..-39 %, SVT-AV1 VBR -60..+70 %, VP9 VBR -40..+26 %): one intra frame and a few
dozen inter frames leave a rate control little to average over. Matched-bitrate comparisons need the file at the target, so the
encoder is run again with its rate target moved, a root search on
``log(measured / target)`` against ``log(encoder target)`` (secant steps; once the target
is bracketed, secant steps inside the bracket, or bisection when they stall on one side)
until the whole file is within `TOLERANCE` of the target or `MAX_ATTEMPTS` encodes are
spent. The closest file is kept either way and the attempts are reported: an encoder's
output can jump past the tolerance band (VP9 on a 1-s 128x128 clip: 115.7 kbit/s at any
target up to 393.5 kbit/s, 132.0 at 398.8), and then no target lands inside it.

An encoder may also refuse a target outright (`OutOfReach`): x265's second pass fails when
the target is far below what its first pass could code the clip in (on the uvg clip at
-b:v 40k the file stays at 46 to 52 kbit/s for targets from 20.5k down to 7.8k, and a
lower one fails to open). The search then stops and keeps the closest file it has: the
encoder's floor, a real rate-quality point, only off the target.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["MAX_ATTEMPTS", "TOLERANCE", "Attempt", "OutOfReach", "match_rate"]

TOLERANCE = 0.03        # the whole file within ±3 % of the target
MAX_ATTEMPTS = 8
_MAX_STEP = math.log(50)   # the encoder target stays within 1/50..50 times the target

T = TypeVar("T")


class OutOfReach(ValueError):
    """The encoder refused a rate target (raised by `match_rate`'s `encode`)."""


@dataclass(frozen=True)
class Attempt(Generic[T]):
    """One encode: the rate target the encoder got, the bitrate the file came out at."""

    encoder_bitrate: float
    bitrate: float
    result: T

    def error(self, target: float) -> float:
        """log(measured / target): 0 on target."""
        return math.log(self.bitrate / target)


def match_rate(encode: Callable[[float], tuple[float, T]], target: float, *, tolerance: float = TOLERANCE,
               max_attempts: int = MAX_ATTEMPTS) -> tuple[Attempt[T], list[Attempt[T]]]:
    """(closest attempt, all attempts) of `encode(encoder_bitrate) -> (file bitrate, result)`.

    `encode` raises `OutOfReach` for a target the encoder refuses: the search ends there with
    the closest attempt so far (and passes the error on when there is none)."""
    attempts: list[Attempt[T]] = []
    x = math.log(target)
    while True:
        try:
            bitrate, result = encode(math.exp(x))
        except OutOfReach:
            if not attempts:
                raise
            break
        attempts.append(Attempt(math.exp(x), bitrate, result))
        if abs(bitrate / target - 1) <= tolerance or len(attempts) >= max_attempts:
            break
        x_next = _next_guess(attempts, target)
        if any(abs(x_next - math.log(a.encoder_bitrate)) < 1e-3 for a in attempts):
            break       # the encoder's output no longer moves with its target
        x = x_next
    best = min(attempts, key=lambda a: abs(a.error(target)))
    return best, attempts


def _next_guess(attempts: list[Attempt], target: float) -> float:
    """The next log encoder target: a secant step, kept inside the bracket once there is one."""
    points = sorted((math.log(a.encoder_bitrate), a.error(target)) for a in attempts)
    below = [p for p in points if p[1] < 0]
    above = [p for p in points if p[1] > 0]
    if below and above:
        (x0, y0), (x1, y1) = max(below), min(above)   # the tightest bracket
        last, previous = (a.error(target) for a in attempts[-1:-3:-1])
        if x1 <= x0 or last * previous > 0:
            # not monotonic here, or the secant keeps landing on one side (a step in the
            # encoder's output): bisect the bracket
            return (x0 + x1) / 2
        guess = x0 - y0 * (x1 - x0) / (y1 - y0)
        margin = 0.1 * (x1 - x0)
        return min(max(guess, x0 + margin), x1 - margin)
    last = attempts[-1]
    x_last, y_last = math.log(last.encoder_bitrate), last.error(target)
    slope = 1.0               # file size proportional to the target, until two attempts tell otherwise
    if len(attempts) >= 2:
        previous = attempts[-2]
        dx = x_last - math.log(previous.encoder_bitrate)
        if dx != 0:
            slope = min(max((y_last - previous.error(target)) / dx, 0.2), 5.0)
    origin = math.log(target)
    return min(max(x_last - y_last / slope, origin - _MAX_STEP), origin + _MAX_STEP)
