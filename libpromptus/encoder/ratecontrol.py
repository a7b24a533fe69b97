"""Rate control: pick the rank and keyframe interval that fit a bitrate (`-b:v`), and
adapt the interval as the encode goes (`RateController` holds every such decision).

Every byte of the file counts: signature, sequence header, metadata, each scene's
first-frame latent, every keyframe unit, the index and the end-of-stream unit. Factor
bytes are estimated from the entropy coder's typical rate on fitted prompts (SPEC.md §9;
measured on the official prompts: 5.9 bits per U symbol, 7.07 per V symbol), so the
achieved rate lands within a few percent; the encoder reports the exact figure.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction

from ..bitstream import LatentCodec, SequenceHeader
from ..bitstream.framing import PREFIX_SIZE
from ..bitstream.limits import MAX_KEYFRAME_INTERVAL

log = logging.getLogger("libpromptus")

#: Bytes of a keyframe unit beyond its factor symbols: unit header, size, CRC, the
#: keyframe fields and two coded_symbols headers.
KEYFRAME_OVERHEAD = 1 + 3 + 4 + 16 + 2 * 8
U_BITS_PER_SYMBOL = 5.9
V_BITS_PER_SYMBOL = 7.07
INDEX_ENTRY = 13
#: Estimates of the bytes besides keyframes: the sequence header, the encoder's metadata,
#: a scene start's fields around its latent, the index unit's framing with the
#: end-of-stream unit, and a margin.
SEQUENCE_HEADER_BYTES = 100
METADATA_BYTES = 200
SCENE_START_OVERHEAD = 64
CLOSING_BYTES = 18
MARGIN_BYTES = 8
#: Bits per value of a first-frame latent by latent codec (8-bit entropy coded: about 7; DCT8
#: at its default step: 2.0, benchmarks/latent_codec.py). After the first scene start the
#: interval adaptation counts the bytes actually written.
LATENT_BITS = {"q8": 7, "f16": 16, "f32": 32, "dct8": 2}
#: Without -b:v: the official rank and keyframe interval.
OFFICIAL_RANK, OFFICIAL_INTERVAL = 8, 10
#: Frames the rate-distortion trials encode (`-rc-lookahead`; encoder.rdo).
LOOKAHEAD = 60
#: The length the rank and interval are chosen for when the input's is unknown (a pipe, a live source).
ASSUMED_SECONDS = 10
#: The paper's ladder is rank 4..32, interval 2..10. The search keeps to intervals 2..10
#: (many small keyframes let the encoder's interval adaptation hit the rate closely) and
#: goes down to rank 1; only when nothing fits there does it try intervals up to 30.
RANKS = range(1, 33)
LADDER_INTERVALS = range(2, 11)
INTERVALS = range(2, 31)


#: DCT8 steps that trim a file onto the budget, coarsest first: a geometric ladder from
#: MAX_FILL_STEP down to MIN_FILL_STEP, STEPS_PER_DECADE to a decade (neighbours about 6 %
#: apart: a 512x512 scene start's bytes change by about 3.5 % between them, 2 % of a
#: 100 kbit/s budget over 0.7 s, where a ladder of 19 % steps moved 5 % and left the sky clip
#: 6 % short). The rate-distortion trials take one for the encode, and each later scene start
#: one for what is left of the budget; both bisect the ladder (`finest_fitting`).
#: 0.1 decodes within 0.11 dB of q8 on average (benchmarks/results/latent-codec-cpu.json),
#: 0.05 within 0.04 dB: MAX_FILL_STEP is the coarsest the trimming takes unless --latent-step is.
MAX_FILL_STEP = 0.1
MIN_FILL_STEP = 0.01
STEPS_PER_DECADE = 40
FILL_STEPS = tuple(float(f"{MAX_FILL_STEP * (MIN_FILL_STEP / MAX_FILL_STEP) ** (k / STEPS_PER_DECADE):.4g}")
                   for k in range(STEPS_PER_DECADE + 1))


def fill_steps(asked: float, latent_codec: LatentCodec) -> list[float]:
    """The steps a file may be trimmed with, coarsest first: `FILL_STEPS` up to MAX_FILL_STEP
    or `asked`, whichever is coarser, and `asked` itself; only `asked` when the latent codec
    has no step (q8, f16, f32)."""
    if latent_codec != LatentCodec.DCT8:
        return [asked]
    return sorted({asked, *(s for s in FILL_STEPS if s <= max(asked, MAX_FILL_STEP))}, reverse=True)


@dataclass(frozen=True)
class RateChoice:
    rank: int
    interval: int
    estimated_bytes: int


def keyframe_bytes(rank: int, cond_tokens: int = 77, cond_dim: int = 1024) -> float:
    """Estimated size of one entropy-coded keyframe unit of the given rank."""
    return KEYFRAME_OVERHEAD + rank * (cond_tokens * U_BITS_PER_SYMBOL + cond_dim * V_BITS_PER_SYMBOL) / 8


def keyframe_count(frames: int, interval: int) -> int:
    """Keyframes of a scene of `frames` frames: 0, g, 2g, …, and the last frame."""
    return 1 + math.ceil((frames - 1) / interval)


def estimate_bytes(rank: int, interval: int, *, frames: int, fixed_bytes: int, cond_tokens: int = 77,
                   cond_dim: int = 1024) -> int:
    """Whole-file size for one scene of `frames` frames; `fixed_bytes` is everything but keyframes."""
    count = keyframe_count(frames, interval)
    return round(fixed_bytes + count * (keyframe_bytes(rank, cond_tokens, cond_dim) + INDEX_ENTRY))


def refresh_structure(frames: int, interval: int) -> tuple[int, int]:
    """(scenes, keyframes) of `frames` frames when every interval is a scene of its own:
    scenes of interval + 1 frames, two keyframes each (one when a scene is a single frame)."""
    length = interval + 1
    scenes = math.ceil(frames / length)
    return scenes, 2 * scenes - (1 if frames % length == 1 else 0)


def remaining_structure(frames: int, interval: int, *, refresh: bool, cuts: Sequence[int] = ()) -> tuple[int, int]:
    """(scene starts after the first, keyframes) of the `frames` frames from a scene start on,
    a keyframe every `interval`: with refresh every interval a scene, else one scene up to
    each cut (`cuts`: offsets from the scene start, 0 < cut < frames)."""
    if refresh:
        scenes, keyframes = refresh_structure(frames, interval)
        return scenes - 1, keyframes
    bounds = [0, *sorted(cuts), frames]
    return len(cuts), sum(keyframe_count(end - start, interval) for start, end in zip(bounds, bounds[1:]))


def refresh_bytes(rank: int, interval: int, *, frames: int, fixed_bytes: int, scene_bytes: int,
                  cond_tokens: int = 77, cond_dim: int = 1024) -> int:
    """Whole-file size when every interval of `interval` frames is a scene of its own
    (`fixed_bytes` holds the first scene start): scenes of interval + 1 frames, each a
    scene start of `scene_bytes` and two keyframes (one when a scene is a single frame)."""
    scenes, keyframes = refresh_structure(frames, interval)
    per_keyframe = keyframe_bytes(rank, cond_tokens, cond_dim) + INDEX_ENTRY
    return round(fixed_bytes + (scenes - 1) * (scene_bytes + INDEX_ENTRY) + keyframes * per_keyframe)


def choose(target_bits_per_second: float, *, frames: int, rate: float, fixed_bytes: int, cond_tokens: int = 77,
           cond_dim: int = 1024) -> RateChoice:
    """The (rank, interval) whose estimated size is largest without exceeding the target.

    Intervals of the paper's ladder (2..10) are tried first; at equal size the smaller
    interval wins (the paper's preference). When nothing fits even at interval 30, the
    smallest possible stream (rank 1, interval 30) is chosen.
    """
    budget = target_bits_per_second * frames / rate / 8
    for intervals in (LADDER_INTERVALS, INTERVALS):
        best: RateChoice | None = None
        for interval in intervals:
            for rank in RANKS:
                size = estimate_bytes(rank, interval, frames=frames, fixed_bytes=fixed_bytes,
                                      cond_tokens=cond_tokens, cond_dim=cond_dim)
                if size <= budget and (best is None or size > best.estimated_bytes):
                    best = RateChoice(rank, interval, size)
        if best is not None:
            return best
    interval = INTERVALS[-1]
    return RateChoice(1, interval, estimate_bytes(1, interval, frames=frames, fixed_bytes=fixed_bytes,
                                                  cond_tokens=cond_tokens, cond_dim=cond_dim))


class RateController:
    """Every rate decision of one encode at `bitrate` bits/s.

    Before the first frame, `choose` picks the rank and interval whose estimated file
    fits, and `warn_if_below_floor` says when even a stream of no keyframes would exceed
    the target; after each keyframe, `next_interval` spreads what is left of the budget.
    `frames` is the input's length, None when unknown (a pipe, a live source).
    """

    def __init__(self, bitrate: float, header: SequenceHeader, *, frames: int | None, latent_codec: str = "dct8",
                 max_interval: int = MAX_KEYFRAME_INTERVAL) -> None:
        self.bitrate = bitrate
        self.header = header
        self.frames = frames
        self.max_interval = max_interval
        self.rate = Fraction(header.fps_num, header.fps_den)
        channels, height, width = header.latent_shape
        #: the first scene start's estimated bytes
        self.latent_bytes = round(channels * height * width * LATENT_BITS[latent_codec] / 8 + SCENE_START_OVERHEAD)
        #: everything but the keyframes: prefix, header, metadata, one first-frame latent, closing units
        self.fixed_bytes = (PREFIX_SIZE + SEQUENCE_HEADER_BYTES + METADATA_BYTES + self.latent_bytes + CLOSING_BYTES
                            + MARGIN_BYTES)

    @property
    def planned_frames(self) -> int:
        """The frames the rank and interval are chosen for: the input's, else `ASSUMED_SECONDS` of them."""
        return self.frames or round(ASSUMED_SECONDS * self.rate)

    def floor_bps(self) -> float:
        """The bitrate of a stream of `planned_frames` with no keyframes: -b:v below it cannot be met."""
        return self.fixed_bytes * 8 * float(self.rate) / self.planned_frames

    def warn_if_below_floor(self) -> None:
        floor = self.floor_bps()
        if floor > self.bitrate:
            log.warning("-b:v %s is below what %d frames cost before any keyframe (the first-frame latent and "
                        "headers alone: %.1f kbit/s), so the file will exceed it; a longer clip or a smaller -s "
                        "lowers that floor", describe_bitrate(self.bitrate), self.planned_frames, floor / 1000)

    def choose(self) -> RateChoice:
        """The rank and interval to start with (`choose` of the module, for this encode)."""
        return choose(self.bitrate, frames=self.planned_frames, rate=float(self.rate), fixed_bytes=self.fixed_bytes,
                      cond_tokens=self.header.cond_tokens, cond_dim=self.header.cond_dim)

    def next_interval(self, keyframe_size: int, frames_done: int, *, bytes_written: int, keyframes: int,
                      scenes: int, extra_per_interval: int = 0, reserved: int = 0) -> int:
        """The interval that spends what is left of the budget evenly.

        The budget is `bitrate` over the input's length; what is spent counts every byte
        written so far plus the index entries and closing units still to come, and the
        `reserved` bytes of what is known to come (scene cuts ahead). The next
        intervals are assumed to cost what the last keyframe did, plus `extra_per_interval`
        (with refresh scenes: the scene start and first keyframe that follow each
        interval but the last, with their index entries). Without a known length, the budget is spent
        per frame as it comes.
        """
        per_frame = self.bitrate / (self.header.fps_num / self.header.fps_den) / 8
        spent = bytes_written + INDEX_ENTRY * keyframes + INDEX_ENTRY * scenes + CLOSING_BYTES + reserved
        extra = extra_per_interval + 2 * INDEX_ENTRY if extra_per_interval else 0
        cost = keyframe_size + INDEX_ENTRY + extra
        total = self.frames
        if total is None or total <= frames_done:
            wanted = math.ceil((spent + cost) / per_frame - frames_done)
        else:
            # intervals the rest of the budget pays for; the last one is followed by no refresh
            affordable = round((per_frame * total - spent + extra) / cost)
            wanted = math.ceil((total - frames_done) / affordable) if affordable > 0 else self.max_interval
        return max(1, min(self.max_interval, wanted))

    def scene_start_target(self, index: int, *, interval: int, refresh: bool, cuts: Sequence[int], floor: float,
                           keyframe_size: int, scene_size: int, bytes_written: int, keyframes: int,
                           scenes: int) -> float:
        """The bytes the scene start of frame `index` may take so that the stream ends on budget.

        The budget to the input's end, paced evenly per frame, less what was written (with
        the index entries and closing units to come) and what is still to come, planned at
        `interval` (`remaining_structure`: refresh scenes, or the scene `cuts` ahead), its
        keyframes at `keyframe_size` (the last one's) and its later scene starts at
        `scene_size` (the plan's). With refresh, while even `floor` (the coarsest DCT8
        step's size) does not fit, the plan's interval is lengthened up to `max_interval`:
        a refresh scene the budget cannot pay for is one `next_interval` will not give
        either, and planning for it would starve this scene start for bytes that are then
        never spent. Without a known length the scene start paces to its scene's expected
        end: an interval and its closing frame, two keyframes.

        Each later scene start's DCT8 step follows this target (`finest_fitting`): the
        keyframes' real sizes, which the plan could only estimate, are settled where a
        knob is fine enough.
        """
        per_frame = self.bitrate / (self.header.fps_num / self.header.fps_den) / 8
        spent = bytes_written + INDEX_ENTRY * (keyframes + scenes + 1) + CLOSING_BYTES
        if self.frames is None or self.frames <= index:
            return per_frame * (index + interval + 1) - spent - 2 * (keyframe_size + INDEX_ENTRY)
        rest = self.frames - index
        ahead = [cut - index for cut in cuts if index < cut < self.frames]
        for planned in range(interval, max(interval, self.max_interval) + 1):
            scenes_ahead, keyframes_ahead = remaining_structure(rest, planned, refresh=refresh, cuts=ahead)
            target = (per_frame * self.frames - spent - keyframes_ahead * (keyframe_size + INDEX_ENTRY)
                      - scenes_ahead * (scene_size + INDEX_ENTRY))
            if target >= floor or not refresh:
                break
        return target


def finest_fitting(steps: Sequence[float], fits: Callable[[float], bool]) -> float:
    """The finest of `steps` (coarsest first) that `fits`, else the coarsest, by bisection.

    A finer step codes a latent in more bytes, so `fits` holds from the coarsest step down
    to some step and not beyond: bisection asks it about log2(len(steps)) times (each ask
    codes a latent) where a scan would ask once per step. Were the sizes not monotonic
    somewhere, the step returned still fits; a finer one might too."""
    if not fits(steps[0]):
        return steps[0]
    low, high = 0, len(steps)            # steps[low] fits; none from steps[high] on is known to
    while high - low > 1:
        middle = (low + high) // 2
        if fits(steps[middle]):
            low = middle
        else:
            high = middle
    return steps[low]


def parse_bitrate(text: str) -> float:
    """FFmpeg-style bitrate: "225k", "1.5M", "90000" -> bits per second.

    The figure is scaled in decimal, so "1.001k" is 1001 (not 1000.9999999999999, as a
    float product would give) and `describe_bitrate` writes every value back exactly.
    """
    units = {"k": 3, "K": 3, "m": 6, "M": 6}
    number, exponent = (text[:-1], units[text[-1]]) if text and text[-1] in units else (text, 0)
    try:
        value = float(Decimal(number).scaleb(exponent))
    except (InvalidOperation, ValueError):
        raise ValueError(f"-b:v {text}: not a bitrate (e.g. 225k)") from None
    if not value > 0:
        raise ValueError(f"-b:v {text}: must be positive")
    return value


def describe_bitrate(bits_per_second: float) -> str:
    """A bitrate written the way `-b:v` takes it: 1 -> "1", 800 -> "800", 100_000 -> "100k",
    1_500_000 -> "1.5M", 123_456 -> "123.456k".

    Messages quote the user's -b:v back in this form (a rounded "%.1fk" showed -b:v 1 as
    "0.0k"). The unit is the largest that keeps the figure at least 1, and the figure is the
    value's shortest exact decimal, so `parse_bitrate` reads the text back as the same number.
    """
    exact = Decimal(repr(float(bits_per_second)))
    for suffix, exponent in (("M", 6), ("k", 3)):
        if exact >= 10 ** exponent:
            return f"{exact.scaleb(-exponent).normalize():f}{suffix}"
    return f"{exact.normalize():f}"
