"""Rate choice for adaptive streaming: which rendition to fetch for the next segment.

Each rule sees the client's state (`Observation`: the segment number, the buffer in
seconds, the throughputs measured so far) and the renditions' bandwidths, lowest first,
and returns an index into them. The same rules drive the real client (`dash.client`)
and pmteval's trace simulation (`evaluation.abr`).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Observation:
    """What a rule knows before fetching segment `number` (from 1)."""

    number: int
    buffer_s: float
    throughputs_bps: Sequence[float] = field(default_factory=tuple)


@dataclass(frozen=True)
class BBA:
    """Buffer-based choice (Huang et al., SIGCOMM 2014; Pensieve's BB: reservoir 5 s,
    cushion 10 s): the lowest rate while the buffer is below the reservoir, the highest
    above reservoir + cushion, and in between the highest rate at or below one rising
    linearly with the buffer."""

    reservoir: float = 5.0
    cushion: float = 10.0

    def choose(self, seen: Observation, rates: Sequence[float]) -> int:
        buffer = seen.buffer_s
        if buffer <= self.reservoir:
            return 0
        if buffer >= self.reservoir + self.cushion:
            return len(rates) - 1
        allowed = rates[0] + (rates[-1] - rates[0]) * (buffer - self.reservoir) / self.cushion
        return max(i for i, rate in enumerate(rates) if rate <= allowed)

    def __str__(self) -> str:
        return f"bba:{self.reservoir:g}:{self.cushion:g}"


@dataclass(frozen=True)
class Throughput:
    """Rate-based choice (as dash.js's throughput rule): the highest rate at or below
    `safety` times the harmonic mean of the last `window` segments' throughputs; the
    lowest before anything was measured."""

    safety: float = 0.9
    window: int = 3

    def choose(self, seen: Observation, rates: Sequence[float]) -> int:
        recent = list(seen.throughputs_bps)[-self.window:]
        if not recent:
            return 0
        estimate = self.safety * len(recent) / sum(1 / max(t, 1e-9) for t in recent)
        return max((i for i, rate in enumerate(rates) if rate <= estimate), default=0)

    def __str__(self) -> str:
        return "throughput"


@dataclass(frozen=True)
class Fixed:
    """A path fixed in advance: `path[n − 1]` for segment n, the last entry after its end."""

    path: tuple[int, ...]

    def check(self, renditions: int) -> None:
        """Refuse a path through renditions that do not exist, before anything is fetched."""
        for choice in self.path:
            if not 0 <= choice < renditions:
                raise ValueError(f"--abr fixed: rendition {choice} does not exist (the MPD has {renditions})")

    def choose(self, seen: Observation, rates: Sequence[float]) -> int:
        return self.path[min(seen.number, len(self.path)) - 1]

    def __str__(self) -> str:
        return "fixed:" + ",".join(map(str, self.path))


Rule = BBA | Throughput | Fixed


def parse_rule(text: str) -> Rule:
    """`bba`, `bba:RESERVOIR:CUSHION` (seconds), `throughput`, or `fixed:I[,J,…]` (indices
    into the renditions by rising bandwidth, one per segment, the last one repeated)."""
    name, _, rest = text.partition(":")
    try:
        if name == "bba" and (not rest or rest.count(":") == 1):
            return BBA(*(float(v) for v in rest.split(":"))) if rest else BBA()
        if name == "throughput" and not rest:
            return Throughput()
        if name == "fixed" and rest:
            return Fixed(tuple(int(v) for v in rest.split(",")))
    except (TypeError, ValueError):
        pass
    raise ValueError(f"--abr {text}: expected bba, bba:RESERVOIR:CUSHION, throughput or fixed:I[,J,...]")
