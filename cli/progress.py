"""Progress reporting: a bar on a terminal, and FFmpeg's `-progress` key=value blocks.

`-progress pipe:1` (or `pipe:2`, or a file name) receives blocks like FFmpeg's:
`frame=…`, `fps=…`, `out_time_us=…`, `out_time=HH:MM:SS.micro`, `speed=…x`, then
`progress=continue`, and `progress=end` once the job is done; a block is written at
most every half second and once at the end. A decoder adds `latency_s` (the last frame's
output time minus the arrival of the keyframe that closed its interval) and
`latency_max_s` (the largest so far): what a live receiver lags behind its input.
"""
from __future__ import annotations

import sys
import time
from fractions import Fraction
from typing import TextIO

from tqdm import tqdm

from ..io.pipes import is_stdout

PERIOD_S = 0.5


class Progress:
    """Counts frames and reports them to a terminal bar and/or a -progress target."""

    def __init__(self, total: int | None, rate: Fraction, *, target: str | None, bar: bool) -> None:
        self._rate = rate
        self._start = time.monotonic()
        self._last_report = 0.0
        self.frames = 0
        self._latency: float | None = None     # the last frame's: output time minus its keyframe's arrival
        self._max_latency = 0.0
        self._bar = tqdm(total=total, unit="frame", file=sys.stderr, dynamic_ncols=True) if bar else None
        self._owned = False
        self._target: TextIO | None = None
        if target is not None and is_stdout(target):
            self._target = sys.stdout
        elif target == "pipe:2":
            self._target = sys.stderr
        elif target is not None:
            self._target = open(target, "w")  # noqa: SIM115 - closed in close()
            self._owned = True

    def note(self, text: str) -> None:
        """Show `text` beside the bar (e.g. the keyframe being fitted, its loss)."""
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=False)

    def advance(self, count: int = 1, *, arrived: float | None = None) -> None:
        """`count` more frames out; `arrived`: when the last one's keyframe was read
        (`time.monotonic()`), for the live latency the blocks report."""
        self.frames += count
        if arrived is not None:
            self._latency = time.monotonic() - arrived
            self._max_latency = max(self._max_latency, self._latency)
        if self._bar is not None:
            self._bar.update(count)
        now = time.monotonic()
        if self._target is not None and now - self._last_report >= PERIOD_S:
            self._report("continue")
            self._last_report = now

    def _report(self, state: str) -> None:
        elapsed = max(time.monotonic() - self._start, 1e-9)
        out_time_us = int(self.frames * 1_000_000 * self._rate.denominator / self._rate.numerator)
        seconds, micro = divmod(out_time_us, 1_000_000)
        self._target.write(
            f"frame={self.frames}\nfps={self.frames / elapsed:.2f}\nout_time_us={out_time_us}\n"
            f"out_time={seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}.{micro:06d}\n"
            f"speed={out_time_us / 1e6 / elapsed:.3g}x\n"
            + (f"latency_s={self._latency:.3f}\nlatency_max_s={self._max_latency:.3f}\n"
               if self._latency is not None else "")
            + f"progress={state}\n")
        self._target.flush()

    def close(self, *, finished: bool) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._target is not None:
            if finished:
                self._report("end")
            if self._owned:
                self._target.close()
