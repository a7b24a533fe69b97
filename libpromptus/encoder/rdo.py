"""Rate-distortion decisions from trial encodes: rank, keyframe interval, refresh scenes and
keyframe placement chosen by what they measure, not by formula.

Before the encode, the first `lookahead` frames (the look-ahead window) are encoded
several times, cheaply: at a proxy size (the long side at most `PROXY_SIZE` pixels) and a
tenth of the iteration budget, through the real `Encoder` (so each trial is closed loop
and decoded exactly as a decoder will). Each trial is one candidate:

- a keyframe interval g (the ladder 2, 3, 5, 8, 13, 21, … up to the window);
- refresh off, or on: every interval a scene of its own, a refresh scene start after
  each keyframe that ends an interval (its coded latent restarts the chain, which stops
  the drift that a long chain of generated keyframes accumulates);
- the largest rank whose estimated file fits -b:v at that structure (the byte model of
  `ratecontrol`, with the DCT8 latent's size measured on the first frame at full size).

Each trial's bytes are measured, not modelled: its keyframe units (whose size does not
depend on the frame size), its scene starts at the full-size latent's measured size,
scaled from the window to the input. The decision rule: among the candidates whose
measured file lands on -b:v (within 5 %, above or below), the one of least measured distortion (mean squared
error of the trial's decoded frames). This is the Lagrangian choice min D + λ·R with λ
the multiplier at which the rate constraint binds: every candidate is sized to fill the
budget, so D decides. A larger -b:v keeps every structure feasible at an equal or
higher rank and adds shorter intervals and refreshes: the trials offer it what a smaller
one had, and more. What the chosen structure leaves of the budget is then spent on the
first-frame latents: the finest DCT8 step of `FILL_STEPS` (never coarser than
`--latent-step`) whose measured file still fits.

Adaptive placement (`--keyframes adaptive`): for the chosen structure, one more trial
places keyframes by the content: each frame's weight is its mean absolute change from
the frame before (motion, lighting) plus a floor, and each interval is cut where its
weight reaches the nominal interval's share, so keyframes are dense where frames change
and sparse where they do not. The same rule decides: it is used only when its trial
measures lower distortion than uniform placement.

The rate controller still adapts the nominal interval after every keyframe to land on
-b:v (its estimate of refresh scene starts still to come included).
"""
from __future__ import annotations

import dataclasses
import io
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..bitstream import LatentCodec, StreamWriter
from ..bitstream.syntax import encode_payload
from ..process.quantization import scene_start
from .encoder import Encoder, frame_latent
from .ratecontrol import (
    INDEX_ENTRY,
    SCENE_START_OVERHEAD,
    RateController,
    estimate_bytes,
    keyframe_bytes,
)

log = logging.getLogger("libpromptus")

#: The long side of the trials' frames, in pixels.
PROXY_SIZE = 128
#: The trials' iteration budget: this fraction of the encode's (at least 1 iteration).
TRIAL_SHARE = 10
#: Candidate keyframe intervals (Fibonacci-like, so a few trials cover 2..256).
INTERVAL_LADDER = (2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233)
#: A trial lands on -b:v when its measured bytes are within this share of the budget.
RATE_TOLERANCE = 0.05
#: Ranks the trials may use.
MAX_TRIAL_RANK = 32
#: Adaptive placement: a frame's weight floor, as a share of the mean change, and how far an
#: interval may stretch or shrink from the nominal one.
WEIGHT_FLOOR = 0.1
STRETCH = 4


@dataclass(frozen=True)
class Candidate:
    """One trial's settings: interval, refresh (every interval a scene), rank, placement."""

    interval: int
    refresh: bool
    rank: int
    adaptive: bool = False

    def describe(self) -> str:
        return (f"rank {self.rank} -g {self.interval}{' refresh' if self.refresh else ''}"
                f"{' adaptive' if self.adaptive else ''}")


@dataclass(frozen=True)
class TrialRun:
    """What one trial encode of the window measured."""

    mse: float                            # mean squared error of the window's decoded frames
    keyframes: tuple[int, ...]            # keyframe positions
    keyframe_bytes: int                   # the keyframe units' bytes (the same at the proxy size as at full size)
    scenes: int                           # scene starts


@dataclass(frozen=True)
class Trial:
    """A candidate's measurement: the whole file's estimated bytes and the window's distortion."""

    candidate: Candidate
    estimated_bytes: int
    run: TrialRun

    @property
    def mse(self) -> float:
        return self.run.mse

    @property
    def keyframes(self) -> tuple[int, ...]:
        return self.run.keyframes

    @property
    def psnr(self) -> float:
        return 10 * math.log10(255 ** 2 / self.mse) if self.mse > 0 else math.inf


@dataclass(frozen=True)
class Decision:
    """What the trials chose, with every trial for `--stats` and the log."""

    chosen: Trial
    trials: tuple[Trial, ...]
    weights: tuple[float, ...] | None     # per frame of the window, when adaptive placement was chosen
    latent_step: float                    # the DCT8 step that fills the budget (never coarser than asked)

    def placement(self, max_interval: int) -> AdaptivePlacement | None:
        return None if self.weights is None else AdaptivePlacement(self.weights, max_interval)


class AdaptivePlacement:
    """The next keyframe's distance from frame `start`, given the nominal interval.

    The interval ends at the first frame where the weights since `start` reach `nominal`
    times the window's mean weight, between nominal / STRETCH and nominal × STRETCH
    frames (and `max_interval`). Past the window the nominal interval is kept.
    """

    def __init__(self, weights: Sequence[float], max_interval: int) -> None:
        self.weights = np.asarray(weights, dtype=np.float64)
        self.mean = float(self.weights.mean())
        self.max_interval = max_interval

    def __call__(self, start: int, nominal: int) -> int:
        if start >= len(self.weights):
            return nominal
        low, high = max(1, nominal // STRETCH), min(self.max_interval, nominal * STRETCH)
        cumulative = np.cumsum(self.weights[start:start + high])
        reached = np.nonzero(cumulative >= nominal * self.mean)[0]
        length = int(reached[0]) + 1 if reached.size else (high if start + high <= len(self.weights) else nominal)
        return max(low, min(high, length))


def motion_weights(frames: Sequence[np.ndarray]) -> tuple[float, ...]:
    """Per frame: mean absolute change from the frame before (0 for the first), plus a floor
    of WEIGHT_FLOOR × the mean change, so that still stretches still count."""
    changes = [0.0] + [float(np.abs(b.astype(np.int16) - a.astype(np.int16)).mean())
                       for a, b in zip(frames, frames[1:])]
    floor = WEIGHT_FLOOR * float(np.mean(changes)) + 1e-6
    return tuple(c + floor for c in changes)


def proxy_size(width: int, height: int) -> tuple[int, int]:
    """The trials' frame size: the same aspect, the long side at most PROXY_SIZE."""
    scale = min(1.0, PROXY_SIZE / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def downscale(frames: Sequence[np.ndarray], width: int, height: int) -> list[np.ndarray]:
    """Area-averaged copies of uint8 frames [H, W, 3] at width × height."""
    if frames[0].shape[:2] == (height, width):
        return list(frames)
    stacked = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float()
    small = torch.nn.functional.interpolate(stacked, size=(height, width), mode="area")
    return list(small.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy())


def refresh_bytes(rank: int, interval: int, *, frames: int, fixed_bytes: int, scene_bytes: int, header) -> int:
    """Whole-file size when every interval of `interval` frames is a scene of its own
    (`fixed_bytes` holds the first scene start): scenes of interval + 1 frames, each a
    scene start and two keyframes (one when a scene is a single frame)."""
    length = interval + 1
    scenes = math.ceil(frames / length)
    keyframes = 2 * scenes - (1 if frames % length == 1 else 0)
    per_keyframe = keyframe_bytes(rank, header.cond_tokens, header.cond_dim) + INDEX_ENTRY
    return round(fixed_bytes + (scenes - 1) * (scene_bytes + INDEX_ENTRY) + keyframes * per_keyframe)


def candidates(control: RateController, *, frames: int, scene_bytes: int) -> list[tuple[Candidate, int]]:
    """Every (candidate, estimated bytes) that fits -b:v over `frames`: per structure, the largest rank."""
    header = control.header
    budget = control.bitrate * frames / float(control.rate) / 8
    fixed = control.fixed_bytes
    found: list[tuple[Candidate, int]] = []
    for interval in (g for g in INTERVAL_LADDER if g < max(frames, 2) and g <= control.max_interval):
        for refresh in (False, True)[:1 + (interval + 1 < frames)]:
            best = None
            for rank in range(1, MAX_TRIAL_RANK + 1):
                if refresh:
                    size = refresh_bytes(rank, interval, frames=frames, fixed_bytes=fixed, scene_bytes=scene_bytes,
                                         header=header)
                else:
                    size = estimate_bytes(rank, interval, frames=frames, fixed_bytes=fixed,
                                          cond_tokens=header.cond_tokens, cond_dim=header.cond_dim)
                if size <= budget:
                    best = (Candidate(interval, refresh, rank), size)
            if best is not None:
                found.append(best)
    return found


class TrialEncoder:
    """Runs trial encodes of the look-ahead window at the proxy size through the real `Encoder`."""

    def __init__(self, setup, frames: Sequence[np.ndarray]) -> None:
        from ..engines import create_engine

        from .job import FITTING_ENGINE

        self.setup = setup
        header = setup.header
        width, height = proxy_size(header.width, header.height)
        self.header = setup.generator.profile.sequence_header(
            width=width, height=height, fps_num=header.fps_num, fps_den=header.fps_den, frame_count=len(frames),
            model_hash=header.model_hash)
        self.frames = downscale(frames, width, height)
        self.engine = create_engine(FITTING_ENGINE, setup.generator, self.header, device=setup.engine.device.type,
                                    precision=setup.precision)
        base = setup.settings
        self.settings = dataclasses.replace(base, first_iterations=trial_iterations(base.first_iterations),
                                            iterations=trial_iterations(base.iterations))

    def run(self, candidate: Candidate, weights: Sequence[float] | None = None) -> TrialRun:
        """Encode the window as `candidate` says (placed by `weights` when given) and measure it."""
        settings = dataclasses.replace(self.settings, rank=candidate.rank, interval=candidate.interval,
                                       refresh=candidate.refresh)
        placement = None if weights is None else AdaptivePlacement(weights, self.setup.max_interval)
        writer = StreamWriter(io.BytesIO(), self.header, write_index=False,
                              minor=self.setup.stream_minor_version)
        encoder = Encoder(writer, self.engine, self.setup.latent_encoder, self.setup.perceptual, settings,
                          placement=placement)
        for frame in self.frames:
            encoder.push(frame)
        summary = encoder.finish()
        errors = [255 ** 2 / 10 ** (p / 10) if math.isfinite(p) else 0.0
                  for report in summary.keyframes for p in report.psnr]
        return TrialRun(float(np.mean(errors)), tuple(report.frame_index for report in summary.keyframes),
                        sum(report.bytes for report in summary.keyframes), summary.scenes)


def trial_iterations(iterations: int) -> int:
    """A trial's share of an iteration budget: a tenth, at least one unless the budget is 0 (no fitting)."""
    return 0 if iterations == 0 else max(1, iterations // TRIAL_SHARE)


#: DCT8 steps the fill may take, finest last (each at most the encode's own `--latent-step`).
FILL_STEPS = (0.05, 0.04, 0.03, 0.02, 0.015, 0.01)


def latent_bytes(setup, frame: np.ndarray, steps: Sequence[float]) -> dict[float, int]:
    """Per step: the full-size scene start of `frame` in the encode's latent codec, with its
    unit overhead (what each scene start costs)."""
    settings = setup.settings
    latent = frame_latent(setup.latent_encoder, setup.header, frame).numpy()
    return {step: len(encode_payload(scene_start(0, latent, settings.latent_codec, settings.coding,
                                                 latent_step=step))) + SCENE_START_OVERHEAD for step in steps}


def measured_bytes(run: TrialRun, scene_bytes: int, *, control: RateController, scale: float) -> int:
    """The whole file's bytes from a trial's measured units, scaled from the window to the input:
    everything but keyframes and scene starts as the rate control estimates it, plus the
    trial's keyframes, and its scene starts at `scene_bytes` each, with their index entries."""
    fixed = control.fixed_bytes - control.latent_bytes
    units = run.keyframe_bytes + run.scenes * scene_bytes + INDEX_ENTRY * (len(run.keyframes) + run.scenes)
    return round(fixed + scale * units)


def lands(trial: Trial, budget: float) -> bool:
    """Whether a trial's measured file is within RATE_TOLERANCE of the budget, above or below."""
    return abs(trial.estimated_bytes / budget - 1) <= RATE_TOLERANCE


def decide(setup, window: Sequence[np.ndarray], *, frames: int, adaptive: bool) -> Decision:
    """Trial-encode the window for every candidate that fits and choose by the rule above;
    then fill what the chosen structure leaves of the budget with a finer DCT8 step.

    `frames` is the whole input's length (the window's when unknown): candidates are sized
    for it, the trials measured on the window.
    """
    control = setup.rate_control
    asked = setup.settings.latent_step
    fillable = setup.settings.latent_codec == LatentCodec.DCT8
    steps = sorted({asked, *(s for s in FILL_STEPS if s < asked and fillable)}, reverse=True)
    sizes = latent_bytes(setup, window[0], steps)
    found = candidates(control, frames=frames, scene_bytes=sizes[asked])
    if not found:
        choice = control.choose()
        found = [(Candidate(choice.interval, False, choice.rank), choice.estimated_bytes)]
    runner = TrialEncoder(setup, window)
    scale = frames / len(window)
    trials = []
    for candidate, _ in found:
        run = runner.run(candidate)
        trials.append(Trial(candidate, measured_bytes(run, sizes[asked], control=control, scale=scale), run))
        log.debug("trial %s: %.2f dB, %d bytes", candidate.describe(), trials[-1].psnr, trials[-1].estimated_bytes)
    budget = control.bitrate * frames / float(control.rate) / 8
    # the byte model sized the candidates; their measured bytes decide what fits (within the rate's 5 %)
    fits = [t for t in trials if lands(t, budget)] or \
        [min(trials, key=lambda t: abs(t.estimated_bytes - budget))]
    best = min(fits, key=lambda t: (t.mse, t.estimated_bytes))
    weights = None
    if adaptive and len(window) > best.candidate.interval:
        weights = motion_weights(runner.frames)
        candidate = dataclasses.replace(best.candidate, adaptive=True)
        run = runner.run(candidate, weights)
        trials.append(Trial(candidate, measured_bytes(run, sizes[asked], control=control, scale=scale), run))
        if run.mse < best.mse and lands(trials[-1], budget):
            best = trials[-1]
        else:
            weights = None
    fitting = [s for s in steps if measured_bytes(best.run, sizes[s], control=control, scale=scale) <= budget]
    step = fitting[-1] if fitting else asked
    log.info("rate-distortion trials (%d, window of %d frames at %dx%d): chose %s, %.2f dB; latent step %g",
             len(trials), len(window), runner.header.width, runner.header.height, best.candidate.describe(),
             best.psnr, step)
    return Decision(best, tuple(trials), weights, step)
