"""Trace-driven streaming: a buffer-based ABR picks each segment's rung, stalls are counted.

The video is the evaluated clip played in a loop, cut into segments of
`segment_seconds` (frame i belongs to segment floor(i / rate / segment_seconds)). Each
codec's ladder holds its runs, one rung per bitrate: a segment of a rung costs the
run's measured file bitrate times the segment's length, and its frames show that run's
per-frame quality. The session lasts as long as the trace (whole segments).

The client (as in Pensieve's simulator, without its latency and noise): it fetches one
segment at a time over the trace's throughput; playback starts when the first segment
has arrived (the startup delay); a segment that takes longer than the buffer holds
stalls playback for the difference (a rebuffering event); the client waits while the
buffer is full (`max_buffer`, 30 s). The ABR is a `dash.abr` rule (`pmteval --abr`,
BBA by default), the rules the real DASH client uses.

Simplifications, stated: a rung switch is free (every segment decodable on its own, as
with closed GOPs; Promptus segments would need `pmtenc --segment-seconds`), and the
frames of a segment show the per-frame quality of the whole-clip encode.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction

from ..dash.abr import BBA, Observation, Rule
from .metrics import SevereRule, mean_metrics
from .traces import Trace

__all__ = ["MAX_BUFFER", "Rung", "Session", "simulate"]

MAX_BUFFER = 30.0   # seconds of video the client holds at most


@dataclass(frozen=True)
class Rung:
    """One encoding of the clip: its label, measured bitrate (bit/s) and per-frame metrics."""

    label: str
    bitrate: float
    frames: Sequence[dict]


@dataclass
class Session:
    """What a viewer of one codec's ladder got over one trace."""

    segments: int = 0
    startup_s: float = 0.0
    stall_s: float = 0.0
    stalls: int = 0
    switches: int = 0
    chosen: list[str] = field(default_factory=list)
    bits: float = 0.0
    shown: list[dict] = field(default_factory=list)   # per-frame metrics of every frame shown

    def report(self, segment_seconds: float, severe: SevereRule) -> dict:
        return {"segments": self.segments, "segment_seconds": segment_seconds,
                "mean_bitrate_bps": self.bits / (self.segments * segment_seconds),
                "startup_s": self.startup_s, "stall_s": self.stall_s, "stalls": self.stalls,
                "switches": self.switches, "frames_shown": len(self.shown), "mean": mean_metrics(self.shown),
                "severe_share": severe.share(self.shown), "chosen": self.chosen}


def simulate(ladder: Sequence[Rung], trace: Trace, rate: Fraction, *,
             segment_seconds: float = 1.0, segments: int | None = None, abr: Rule | None = None,
             max_buffer: float = MAX_BUFFER) -> Session:
    """Stream `ladder` (any order; frames at `rate` per second) over `trace`.

    `segments` defaults to as many as fit in the trace's length; `abr` is any `dash.abr`
    rule (BBA by default), fed the buffer and the throughput of every segment so far.
    """
    if not ladder:
        raise ValueError("an empty ladder")
    if segment_seconds <= 0 or max_buffer < segment_seconds:
        raise ValueError("segments must be positive and no longer than the buffer")
    rungs = sorted(ladder, key=lambda r: r.bitrate)
    rates = [r.bitrate for r in rungs]
    abr = abr or BBA()
    count = segments if segments is not None else max(1, math.floor(trace.seconds / segment_seconds))
    length = Fraction(str(segment_seconds))
    session = Session(segments=count)
    time = buffer = 0.0
    previous = None
    throughputs: list[float] = []
    for index in range(count):
        if index and buffer + segment_seconds > max_buffer:     # buffer full: wait for room
            wait = buffer + segment_seconds - max_buffer
            time += wait
            buffer -= wait
        choice = abr.choose(Observation(index + 1, buffer, tuple(throughputs)), rates) if index else 0
        rung = rungs[choice]
        bits = rung.bitrate * segment_seconds
        elapsed = trace.download_time(time, bits)
        throughputs.append(bits / elapsed)
        time += elapsed
        if index == 0:
            session.startup_s = elapsed
        elif elapsed > buffer:
            session.stall_s += elapsed - buffer
            session.stalls += 1
            buffer = 0.0
        else:
            buffer -= elapsed
        buffer += segment_seconds
        session.bits += bits
        session.switches += previous is not None and previous != choice
        previous = choice
        session.chosen.append(rung.label)
        first, end = math.ceil(index * length * rate), math.ceil((index + 1) * length * rate)
        session.shown += [rung.frames[frame % len(rung.frames)] for frame in range(first, end)]
    return session
