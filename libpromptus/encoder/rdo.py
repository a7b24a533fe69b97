"""Rate-distortion decisions from trial encodes: rank, keyframe interval, refresh scenes and
keyframe placement chosen by what they measure, not by formula.

Before the encode, the first `lookahead` frames (the look-ahead window) are encoded
several times, cheaply: at a proxy size (the long side at most `PROXY_SIZE` pixels) and a
tenth of the iteration budget (at least 10 iterations), through the real `Encoder` (so each trial is closed loop
and decoded exactly as a decoder will). Each trial is one candidate:

- a keyframe interval g (the ladder 2, 3, 5, 8, 13, 21, … up to the window);
- refresh off, or on: every interval a scene of its own, a refresh scene start after
  each keyframe that ends an interval (its coded latent restarts the chain, which stops
  the drift that a long chain of generated keyframes accumulates);
- the largest rank whose estimated file fits -b:v at that structure (the byte model of
  `ratecontrol`, with the DCT8 latent's size measured on the first frame at full size).

Each trial's file is estimated from its measured structure: the keyframes and scene
starts it wrote (scene cuts included, which the byte model cannot foresee), counted at
the byte model's keyframe size and at the full-size latent's measured size, scaled from
the window to the input (a trial's own keyframe bytes are not used: at a tenth of the
iterations its factors code at more bits per symbol than the encode's will). That
estimate is then trimmed onto -b:v by the DCT8 step of the scene starts, the one knob
that is fine enough: each trial takes the finest step of `FILL_STEPS` (down to 0.01, up
to `MAX_FILL_STEP` or `--latent-step` if coarser, about 6 % apart) whose file still fits,
or the coarsest when none fits, found by bisection (`finest_fitting`; the latent is coded
once per step asked, for all trials together). The decision rule: among the candidates
whose trimmed file lands on -b:v (within 5 %, above or below; or below it even at the
finest step, which leaves the structure only shorter intervals to spend the rest on,
and the encode's rate control gives it those), the one of least measured distortion
(mean squared error of the trial's decoded frames). A candidate that measured less
distortion than that choice but missed the rate is tried again as its untried neighbour
(another rank or another interval) that the byte model, calibrated on its trial, predicts
closest to the budget, and the rule is applied again (at most `RETRY_ROUNDS` rounds: a
retry that misses is itself retried). This is the Lagrangian choice min D + λ·R with λ the
multiplier at which the rate constraint binds: every candidate is sized to fill the
budget, so D decides. A larger -b:v keeps every structure feasible at an equal or higher
rank (or a finer step) and adds shorter intervals and refreshes: the trials offer it
what a smaller one had, and more. The trials fit with `--latent-step`'s latent; a finer
step only improves on what they measured.

Adaptive placement (`--keyframes adaptive`): for the chosen structure, one more trial
places keyframes where interpolation fails (`AdaptivePlacement`): a span between two
keyframes costs the squared error of its frames against the straight blend of its ends
(nothing on still content, more the faster or less linearly it changes: motion, a
lighting change), and the window's keyframes, as many as uniform placement gives, go
where the spans' total cost is least. The same rule decides: it is used only when its
trial measures lower distortion than uniform placement and lands.

The encode then starts from the chosen rank, interval and step, and the rate controller
adapts the nominal interval after every keyframe from the real keyframes' bytes, with
the bytes of the scene cuts the chosen trial found ahead reserved (and, with refresh,
each interval's scene start and first keyframe counted); each later scene start takes
the step that lets the stream end on budget (`RateController.scene_start_target`).
"""
from __future__ import annotations

import dataclasses
import io
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..bitstream import StreamWriter
from .encoder import Encoder, SceneStartsByStep, frame_latent
from .ratecontrol import (
    INDEX_ENTRY,
    SCENE_START_OVERHEAD,
    RateController,
    estimate_bytes,
    fill_steps,
    finest_fitting,
    keyframe_bytes,
    refresh_bytes,
)

log = logging.getLogger("libpromptus")

#: The long side of the trials' frames, in pixels.
PROXY_SIZE = 128
#: The trials' iteration budget: this fraction of the encode's (at least 1 iteration).
TRIAL_SHARE = 10
#: ... but never fewer iterations than this, unless the encode's own budget is smaller.
TRIAL_MIN_ITERATIONS = 10
#: Candidate keyframe intervals (Fibonacci-like, so a few trials cover 2..256).
INTERVAL_LADDER = (2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233)
#: A trial lands on -b:v when its measured bytes are within this share of the budget.
RATE_TOLERANCE = 0.05
#: Rounds of retries for structures that measured less distortion but missed the rate.
RETRY_ROUNDS = 3
#: Ranks the trials may use.
MAX_TRIAL_RANK = 32
#: Adaptive placement: the long side, in pixels, of the frames whose interpolation it measures.
PLACEMENT_SIZE = 32


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
    scenes: int                           # scene starts
    cuts: tuple[int, ...]                 # where scene cuts started scenes


@dataclass(frozen=True)
class Trial:
    """A candidate's measurement: the window's distortion, and the whole file's estimated bytes
    at `latent_step`, the scene starts' DCT8 step that trims it onto the budget."""

    candidate: Candidate
    estimated_bytes: int
    latent_step: float
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
    placement: AdaptivePlacement | None   # when adaptive placement was chosen

    @property
    def cuts(self) -> tuple[int, ...]:
        """The scene cuts the chosen trial found in the window (the rate control reserves their bytes)."""
        return self.chosen.run.cuts

    @property
    def latent_step(self) -> float:
        """The scene starts' DCT8 step that lands the chosen structure on the budget."""
        return self.chosen.latent_step


class AdaptivePlacement:
    """Keyframes where interpolating the frames fails: the next keyframe's distance from a
    keyframe, given the nominal interval.

    The window's frames, downscaled to `PLACEMENT_SIZE`, give each span between keyframes
    at a and b a cost: the squared error of frames a+1 … b-1 against the straight blend of
    frames a and b, the interpolation a decoder performs between its keyframes' prompts. A
    still stretch costs nothing at any length; motion, a lighting change or a cut costs
    more the longer the span. Over the window, the spans of least total cost are found by
    dynamic programming, as many as uniform placement at the nominal interval gives (so the
    file keeps its size), each at most `max_interval` frames: long where the frames are
    still, short where they move, a keyframe where motion starts. With `refresh` each span
    is a scene of its own (the next one starts on the frame after). Past the window the
    nominal interval is kept.
    """

    def __init__(self, frames: Sequence[np.ndarray], max_interval: int, *, refresh: bool) -> None:
        height, width = frames[0].shape[:2]
        scale = min(1.0, PLACEMENT_SIZE / max(width, height))
        small = downscale(frames, max(1, round(width * scale)), max(1, round(height * scale)))
        pixels = np.stack(small).reshape(len(small), -1).astype(np.float64)
        self.last = len(frames) - 1
        self.longest = max(1, min(max_interval, self.last))
        self.gap = 1 if refresh else 0
        #: span_cost[a, length]: the cost of keyframes at a and a + length (inf past the window)
        self.span_cost = np.full((len(frames), self.longest + 1), np.inf)
        for a in range(len(frames)):
            for length in range(min(self.longest, self.last - a) + 1):
                blend = np.linspace(0.0, 1.0, length + 1)[1:-1, None]
                predicted = (1 - blend) * pixels[a] + blend * pixels[a + length]
                self.span_cost[a, length] = float(((pixels[a + 1:a + length] - predicted) ** 2).mean(axis=1).sum())
        self._window_plans: dict[int, dict[int, int]] = {}        # nominal -> the plan from frame 0

    def spans(self, keyframe: int, count: int) -> list[int]:
        """The span lengths of least total cost from `keyframe` to the window's last frame:
        `count` spans, or as many as fit when fewer do."""
        last, gap, longest = self.last, self.gap, self.longest
        # best[k][a]: the least cost of k spans from keyframe a to the last frame; first[k][a]: its first span
        best = np.full((count + 1, last + 2), np.inf)
        first = np.zeros((count + 1, last + 2), dtype=np.int64)
        for a in range(last, keyframe - 1, -1):
            if 0 < last - a <= longest or (gap and a == last):
                best[1, a], first[1, a] = self.span_cost[a, last - a], last - a
            for k in range(2, count + 1):
                for length in range(1, min(longest, last - a - gap) + 1):
                    cost = self.span_cost[a, length] + best[k - 1, a + length + gap]
                    if cost < best[k, a]:
                        best[k, a], first[k, a] = cost, length
        feasible = [k for k in range(1, count + 1) if np.isfinite(best[k, keyframe])]
        k, a, lengths = (feasible[-1] if feasible else 0), keyframe, []
        while k >= 1:
            lengths.append(int(first[k, a]))
            a, k = a + lengths[-1] + gap, k - 1
        return lengths

    def plan(self, keyframe: int, nominal: int) -> dict[int, int]:
        """Keyframe -> the span after it, for the spans of least cost from `keyframe` to the
        window's end, as many as uniform placement at `nominal` gives there."""
        frames = self.last - keyframe + self.gap                  # with refresh: whole scenes
        plan, start = {}, keyframe
        for length in self.spans(keyframe, math.ceil(frames / (nominal + self.gap))):
            plan[start] = length
            start += length + self.gap
        return plan

    def __call__(self, start: int, nominal: int) -> int:
        """The interval after the keyframe at `start` - 1: the window's plan from its first
        frame at `nominal` while the keyframes follow it (so the window keeps uniform
        placement's keyframe count), else a plan from this keyframe (after a change of the
        nominal interval, or a scene cut). A function of its arguments alone, so a resumed
        encode places its keyframes as the uninterrupted one did."""
        keyframe = start - 1
        if keyframe >= self.last:
            return nominal
        if nominal not in self._window_plans:
            self._window_plans[nominal] = self.plan(0, nominal)
        length = self._window_plans[nominal].get(keyframe)
        if length is None:
            length = self.plan(keyframe, nominal).get(keyframe, nominal)
        return max(1, length)


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


def candidates(control: RateController, *, frames: int, scene_bytes: int) -> list[tuple[Candidate, int]]:
    """Every (candidate, estimated bytes) that fits -b:v over `frames`: per structure, the
    largest rank (sizes grow with the rank, so the search stops at the first that does not fit)."""
    budget = control.bitrate * frames / float(control.rate) / 8
    found: list[tuple[Candidate, int]] = []
    for interval in (g for g in INTERVAL_LADDER if g < max(frames, 2) and g <= control.max_interval):
        for refresh in (False, True)[:1 + (interval + 1 < frames)]:
            best = None
            for rank in range(1, MAX_TRIAL_RANK + 1):
                candidate = Candidate(interval, refresh, rank)
                size = model_bytes(candidate, control, frames=frames, scene_bytes=scene_bytes)
                if size > budget:
                    break
                best = (candidate, size)
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

    def run(self, candidate: Candidate, placement: AdaptivePlacement | None = None) -> TrialRun:
        """Encode the window as `candidate` says (its keyframes placed by `placement` when given) and measure it."""
        settings = dataclasses.replace(self.settings, rank=candidate.rank, interval=candidate.interval,
                                       refresh=candidate.refresh)
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
                        summary.scenes, tuple(summary.cuts))


def trial_iterations(iterations: int) -> int:
    """A trial's share of an iteration budget: a tenth, but at least TRIAL_MIN_ITERATIONS (or the
    whole budget when it is smaller): a fit of one or two iterations measures the starting
    point, not the structure."""
    return min(iterations, max(TRIAL_MIN_ITERATIONS, iterations // TRIAL_SHARE))


def latent_bytes(setup, frame: np.ndarray) -> Callable[[float], int]:
    """step -> the full-size scene start of `frame` in the encode's latent codec at that
    DCT8 step, with its unit overhead (what each scene start costs); coded once per step asked."""
    latent = frame_latent(setup.latent_encoder, setup.header, frame).numpy()
    starts = SceneStartsByStep(0, latent, setup.settings)
    return lambda step: starts.size(step) + SCENE_START_OVERHEAD


def counted_bytes(run: TrialRun, rank: int, scene_bytes: int, *, control: RateController, scale: float) -> int:
    """The whole file's bytes from a trial's measured structure, scaled from the window to the
    input: everything but keyframes and scene starts as the rate control estimates it, the
    trial's keyframes (their count, at the byte model's size for `rank`) and its scene starts
    (their count, at `scene_bytes` each), with their index entries.

    The keyframes are counted, not weighed: a trial fits a tenth of the iterations, and its
    factors, nearer their uniform start, code at more bits per symbol than the encode's will
    (on the sample clip the trial's own keyframe bytes overstated the file by 28 %, the byte
    model by 17 %; the rate control corrects the rest from the real keyframes as it goes)."""
    header = control.header
    fixed = control.fixed_bytes - control.latent_bytes
    per_keyframe = keyframe_bytes(rank, header.cond_tokens, header.cond_dim)
    units = len(run.keyframes) * per_keyframe + run.scenes * scene_bytes + INDEX_ENTRY * (len(run.keyframes) + run.scenes)
    return round(fixed + scale * units)


def trimmed(run: TrialRun, rank: int, steps: Sequence[float], scene_bytes: Callable[[float], int], *,
            control: RateController, scale: float, budget: float) -> tuple[int, float]:
    """(estimated bytes, step) of a trial's file at the finest of `steps` (coarsest first)
    whose file fits the budget, or at the coarsest when none fits; `scene_bytes` gives a
    scene start's bytes at a step (`latent_bytes`)."""
    def estimate(step: float) -> int:
        return counted_bytes(run, rank, scene_bytes(step), control=control, scale=scale)

    step = finest_fitting(steps, lambda s: estimate(s) <= budget)
    return estimate(step), step


def lands(trial: Trial, budget: float, finest: float) -> bool:
    """Whether a trial's file lands on the budget: within RATE_TOLERANCE of it, above or
    below, or below it even at the finest step (`finest`). Such a structure has nothing
    left to spend on but shorter intervals, and the encode's rate control spends the
    rest on those; what is left is less than a rank's worth (a candidate is the largest
    rank that fits), and a denser structure of its own is a candidate of its own."""
    ratio = trial.estimated_bytes / budget
    return abs(ratio - 1) <= RATE_TOLERANCE or (ratio < 1 and trial.latent_step <= finest)


def choose(trials: Sequence[Trial], budget: float, finest: float) -> Trial:
    """The least distortion among the trials that land on the budget (fewer bytes at a tie);
    when none lands, the one closest to it."""
    landing = [t for t in trials if lands(t, budget, finest)] or \
        [min(trials, key=lambda t: abs(t.estimated_bytes - budget))]
    return min(landing, key=lambda t: (t.mse, t.estimated_bytes))


def model_bytes(candidate: Candidate, control: RateController, *, frames: int, scene_bytes: int) -> int:
    """The byte model's whole-file size for `candidate` (`refresh_bytes` or `estimate_bytes`)."""
    header = control.header
    if candidate.refresh:
        return refresh_bytes(candidate.rank, candidate.interval, frames=frames, fixed_bytes=control.fixed_bytes,
                             scene_bytes=scene_bytes, cond_tokens=header.cond_tokens, cond_dim=header.cond_dim)
    return estimate_bytes(candidate.rank, candidate.interval, frames=frames, fixed_bytes=control.fixed_bytes,
                          cond_tokens=header.cond_tokens, cond_dim=header.cond_dim)


def retry(trial: Trial, measured: int, control: RateController, *, frames: int, scene_bytes: int,
          budget: float, tried: set[Candidate]) -> Candidate | None:
    """The neighbour of `trial`'s candidate (another rank, or another interval), not yet
    `tried`, predicted to come closest to the budget; None when no neighbour is predicted
    closer than the candidate itself.

    The prediction is the byte model calibrated on the trial: what it measured (`measured`
    bytes at the asked latent step) over what the model said, beyond the fixed bytes. That
    ratio carries what the model cannot know: the fit's symbol statistics, the scene cuts.
    """
    fixed = control.fixed_bytes
    candidate = trial.candidate
    ratio = (measured - fixed) / max(1, model_bytes(candidate, control, frames=frames, scene_bytes=scene_bytes) - fixed)
    longest = min(control.max_interval, frames - (2 if candidate.refresh else 1))
    neighbours = [dataclasses.replace(candidate, rank=rank) for rank in range(1, MAX_TRIAL_RANK + 1)] + \
        [dataclasses.replace(candidate, interval=interval) for interval in range(2, longest + 1)]

    def miss(other: Candidate) -> float:
        size = fixed + ratio * (model_bytes(other, control, frames=frames, scene_bytes=scene_bytes) - fixed)
        return abs(size - budget)

    untried = [other for other in neighbours if other not in tried]
    closest = min(untried, key=lambda other: (miss(other), other.interval, other.rank), default=None)
    return closest if closest is not None and miss(closest) < miss(candidate) else None


def decide(setup, window: Sequence[np.ndarray], *, frames: int, adaptive: bool) -> Decision:
    """Trial-encode the window for every candidate that fits, trim each trial's file onto
    the budget with the scene starts' DCT8 step, and choose by the rule above.

    `frames` is the whole input's length (the window's when unknown): candidates are sized
    for it, the trials measured on the window.
    """
    control = setup.rate_control
    asked = setup.settings.latent_step
    steps = fill_steps(asked, setup.settings.latent_codec)
    scene_bytes = latent_bytes(setup, window[0])
    found = candidates(control, frames=frames, scene_bytes=scene_bytes(asked))
    if not found:
        choice = control.choose()
        found = [(Candidate(choice.interval, False, choice.rank), choice.estimated_bytes)]
    runner = TrialEncoder(setup, window)
    scale = frames / len(window)
    budget = control.bitrate * frames / float(control.rate) / 8

    def measure(candidate: Candidate, placement: AdaptivePlacement | None = None) -> Trial:
        run = runner.run(candidate, placement)
        trial = Trial(candidate, *trimmed(run, candidate.rank, steps, scene_bytes, control=control, scale=scale,
                                           budget=budget),
                      run=run)
        log.debug("trial %s: %.2f dB, %d bytes at latent step %g", candidate.describe(), trial.psnr,
                  trial.estimated_bytes, trial.latent_step)
        return trial

    trials = [measure(candidate) for candidate, _ in found]
    finest = steps[-1]
    best = choose(trials, budget, finest)
    # a structure that measured less distortion but missed the rate: its neighbour predicted to land
    # (the byte model knows neither the fit's symbol statistics nor the cuts; the measurement does)
    retried: set[Candidate] = set()
    for _ in range(RETRY_ROUNDS):
        pending = [t for t in trials if t.mse < best.mse and not lands(t, budget, finest) and t.candidate not in retried]
        for trial in pending:
            retried.add(trial.candidate)
            other = retry(trial, counted_bytes(trial.run, trial.candidate.rank, scene_bytes(asked), control=control,
                                               scale=scale), control,
                          frames=frames, scene_bytes=scene_bytes(asked), budget=budget,
                          tried={t.candidate for t in trials})
            if other is not None:
                trials.append(measure(other))
        best = choose(trials, budget, finest)
    placement = None
    if adaptive and len(window) > best.candidate.interval:
        placement = AdaptivePlacement(runner.frames, setup.max_interval, refresh=best.candidate.refresh)
        trials.append(measure(dataclasses.replace(best.candidate, adaptive=True), placement))
        if trials[-1].mse < best.mse and lands(trials[-1], budget, finest):
            best = trials[-1]
        else:
            placement = None
    log.info("rate-distortion trials (%d, window of %d frames at %dx%d): chose %s, %.2f dB; latent step %g",
             len(trials), len(window), runner.header.width, runner.header.height, best.candidate.describe(),
             best.psnr, best.latent_step)
    return Decision(best, tuple(trials), placement)
