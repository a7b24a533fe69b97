"""Network throughput traces: read, looked up by name, synthesised, and integrated.

Two file formats:

- throughput (`kbps`): one throughput value per line in kbit/s, each holding for one
  second (like the 2G/3G/4G traces of the Promptus paper); blank lines and `#` comments
  are skipped.
- Mahimahi (`mahimahi`, files named `*.up`, `*.down` or `*.mahi` in `auto`): one line per
  delivery opportunity of a 1500-byte packet, its time in milliseconds; the trace repeats
  after its last timestamp. It is turned into per-second throughput: packets at times
  in [1000·i, 1000·(i+1)) ms deliver their 12,000 bits in second i, over
  ceil(last / 1000) seconds.

Shipped traces (`SHIPPED`, `--trace 2g|3g|4g`) are synthetic, made by `synthesize` and
stored in `libpromptus/evaluation/traces/NAME.txt`: 120 seconds of a seeded first-order
autoregressive process in log throughput around a median (2G 110, 3G 400, 4G 1,500
kbit/s) with a spread and a chance per second of entering an outage at 5 % of the
median (2G 4 %, 3G 2 %, 4G 1 %). They are stand-ins with the character of those
networks, not measurements. A trace repeats from its start when a session outlasts it.
"""
from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

__all__ = ["PROFILES", "SHIPPED", "Trace", "load_trace", "read_mahimahi", "read_throughput", "synthesize",
           "write_throughput"]

MAHIMAHI_PACKET_BITS = 1500 * 8
MAHIMAHI_SUFFIXES = (".up", ".down", ".mahi")
FORMATS = ("auto", "kbps", "mahimahi")


@dataclass(frozen=True)
class Profile:
    """A synthetic network: median kbit/s, log-normal spread, AR(1) memory, outage chance."""

    median_kbps: float
    sigma: float
    memory: float
    outage: float
    seed: int


PROFILES = {
    "2g": Profile(110.0, 0.45, 0.8, 0.04, 2),
    "3g": Profile(400.0, 0.5, 0.8, 0.02, 3),
    "4g": Profile(1500.0, 0.5, 0.8, 0.01, 4),
}
SHIPPED = tuple(PROFILES)
SYNTHETIC_SECONDS = 120


@dataclass(frozen=True)
class Trace:
    """Throughput in bits per second, one value per second, repeating."""

    name: str
    bps: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.bps:
            raise ValueError(f"trace {self.name}: no throughput values")
        if any(not math.isfinite(v) or v < 0 for v in self.bps):
            raise ValueError(f"trace {self.name}: throughput values must be finite and not negative")
        if not any(self.bps):
            raise ValueError(f"trace {self.name}: the throughput is zero throughout")

    @property
    def seconds(self) -> int:
        return len(self.bps)

    def download_time(self, start: float, bits: float) -> float:
        """Seconds to receive `bits` starting at `start` (seconds from the trace's start)."""
        time, remaining = start, bits
        period_bits = sum(self.bps)
        whole = math.floor(remaining / period_bits) if remaining > period_bits else 0
        time += whole * len(self.bps)        # whole turns of the trace at once (long outages, huge segments)
        remaining -= whole * period_bits
        while remaining > 0:
            slot = math.floor(time)
            rate = self.bps[slot % len(self.bps)]
            available = (slot + 1 - time) * rate
            if rate > 0 and available >= remaining:
                return time + remaining / rate - start
            remaining -= available
            time = slot + 1
        return time - start


def read_throughput(path: str | os.PathLike, name: str | None = None) -> Trace:
    """A per-second throughput trace in kbit/s (see the module's docstring)."""
    values = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            values.append(float(text) * 1000)
        except ValueError:
            raise ValueError(f"{path}:{number}: not a throughput in kbit/s: {text!r}") from None
    return Trace(name or Path(path).stem, tuple(values))


def read_mahimahi(path: str | os.PathLike, name: str | None = None) -> Trace:
    """A Mahimahi packet-delivery trace, as per-second throughput (see the module's docstring)."""
    stamps = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        text = line.strip()
        if not text:
            continue
        if not text.isdigit():
            raise ValueError(f"{path}:{number}: not a Mahimahi timestamp in ms: {text!r}")
        stamps.append(int(text))
    if not stamps:
        raise ValueError(f"{path}: no packet timestamps")
    if any(b < a for a, b in itertools.pairwise(stamps)):
        raise ValueError(f"{path}: Mahimahi timestamps must not decrease")
    seconds = max(1, math.ceil(stamps[-1] / 1000))
    counts = np.bincount(np.minimum(np.array(stamps) // 1000, seconds - 1), minlength=seconds)
    return Trace(name or Path(path).name, tuple(float(c) * MAHIMAHI_PACKET_BITS for c in counts))


def load_trace(spec: str, fmt: str = "auto") -> Trace:
    """A shipped trace by name (`SHIPPED`) or a trace file in `fmt` (auto: by its suffix)."""
    if fmt not in FORMATS:
        raise ValueError(f"trace format {fmt!r}: one of {', '.join(FORMATS)}")
    if spec.lower() in PROFILES and not os.path.exists(spec):
        with resources.as_file(resources.files(__package__) / "traces" / f"{spec.lower()}.txt") as path:
            return read_throughput(path, spec.lower())
    if not os.path.isfile(spec):
        raise ValueError(f"--trace {spec}: no such file (shipped traces: {', '.join(SHIPPED)})")
    if fmt == "mahimahi" or (fmt == "auto" and spec.endswith(MAHIMAHI_SUFFIXES)):
        return read_mahimahi(spec)
    return read_throughput(spec)


def synthesize(name: str, seconds: int = SYNTHETIC_SECONDS) -> list[float]:
    """The shipped synthetic trace `name`, kbit/s per second (rounded to 0.1)."""
    profile = PROFILES[name]
    rng = np.random.default_rng(profile.seed)
    level = 0.0
    outage = 0
    values = []
    innovation = profile.sigma * math.sqrt(1 - profile.memory ** 2)   # keeps the log spread at sigma
    for _ in range(seconds):
        level = profile.memory * level + innovation * rng.standard_normal()
        if outage == 0 and rng.random() < profile.outage:
            outage = int(rng.integers(2, 6))
        factor = 0.05 if outage else math.exp(level)
        outage = max(0, outage - 1)
        values.append(round(profile.median_kbps * factor, 1))
    return values


def write_throughput(path: str | os.PathLike, name: str) -> None:
    """Write the shipped trace `name` (how libpromptus/evaluation/traces/*.txt were made)."""
    profile = PROFILES[name]
    header = (f"# synthetic {name.upper()}-like throughput, kbit/s, one value per second (not a measurement)\n"
              f"# made by libpromptus.evaluation.traces.write_throughput: AR(1) log-normal around a median of "
              f"{profile.median_kbps:g} kbit/s, sigma {profile.sigma:g}, memory {profile.memory:g}, outage chance "
              f"{profile.outage:g}/s (2-5 s at 5 % of the median), numpy default_rng({profile.seed})\n")
    Path(path).write_text(header + "".join(f"{v:g}\n" for v in synthesize(name)))
