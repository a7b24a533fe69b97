"""The encoder: frames in, `.pmt` units out, closed loop with the decoding process.

`Encoder` takes frames one at a time (`push`) and writes units as keyframes are fitted.
Everything it fits against is exactly what a decoder will reconstruct: the coded
(quantized) first-frame latent, the 8-bit factors, the generated latent of each previous
keyframe, the interval's frames generated in the decoder's batches. Scene cuts start a
new scene with a fresh first-frame latent and a scene-cut marker.
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TextIO

import numpy as np
import torch

from ..bitstream import (
    Coding,
    Keyframe,
    LatentCodec,
    SceneCut,
    SceneStart,
    SequenceHeader,
    StreamWriter,
)
from ..bitstream.syntax import encode_payload
from ..decoder.decoding import generate_interval, input_latent
from ..engines import DEFAULT_BATCH, Engine
from ..process.noise import noise_tensor
from ..process.prompts import closed_interval, compose, keyframe_factors
from ..process.quality import psnr
from ..process.quantization import DEFAULT_LATENT_STEP, quantize_u8, scene_start
from .fitting import FitSettings, fit_keyframe
from .losses import PerceptualLoss, fitting_loss, temporal_smoothness
from .ratecontrol import INDEX_ENTRY, RateController, fill_steps, finest_fitting


@dataclass(frozen=True)
class EncoderSettings:
    """How to encode; defaults are the official Promptus settings where they exist."""

    rank: int = 8
    interval: int = 10                        # keyframe interval (-g)
    first_iterations: int = 10_000           # a scene's first keyframe
    iterations: int = 1_500                  # later keyframes
    learning_rate: float = 0.1
    alpha: float = 0.8                       # MSE weight; 1 - alpha goes to the perceptual term
    prompt_weight: float = 0.1               # weight of mean(|c|)
    scene_threshold: float | None = 0.3      # normalised latent distance that starts a scene; None: off
    latent_codec: LatentCodec = LatentCodec.DCT8
    latent_step: float = DEFAULT_LATENT_STEP  # DCT8: the step, times each latent channel's standard deviation
    coding: Coding = Coding.ENTROPY
    warm_start: bool = False                 # start each keyframe from the previous one's factors
    patience: int | None = None              # stop a keyframe after this many iterations without improvement
    temporal_beta: float | None = None       # the paper's beta*D + (1-beta)*||c_t - c_t-1||; None: off (official)
    seed: int = 0
    batch: int = DEFAULT_BATCH               # frames per engine call, as the decoder will generate them
    scalable: bool = False                   # nested dropout: every rank prefix of a keyframe is a rung
    refresh: bool = False                    # every interval a scene of its own: a refresh scene start after each

    @property
    def keyframe_coding(self) -> Coding:
        """LAYERED for a scalable encode (every rank prefix of a keyframe is a byte prefix), else `coding`."""
        return Coding.LAYERED if self.scalable else self.coding


@dataclass
class KeyframeReport:
    """What `--stats` records per keyframe."""

    frame_index: int
    first_frame: int
    iterations: int
    loss: float
    psnr: list[float]
    bytes: int
    scene: int


@dataclass
class EncodeSummary:
    frames: int = 0
    scenes: int = 0
    keyframes: list[KeyframeReport] = field(default_factory=list)
    bytes: int = 0
    cuts: list[int] = field(default_factory=list)   # the frames where a scene cut started a scene


def stats_psnr(values: list[float]) -> list[float | None]:
    """Per-frame PSNRs as `--stats` records them: 4 decimals, null for identical frames (JSON has no infinity)."""
    return [round(p, 4) if math.isfinite(p) else None for p in values]


def pad_to(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pad on the right and bottom by repeating the last column and row (SPEC.md §8.8)."""
    return np.pad(frame, ((0, height - frame.shape[0]), (0, width - frame.shape[1]), (0, 0)), mode="edge")


def frame_latent(latent_encoder, header: SequenceHeader, frame: np.ndarray) -> torch.Tensor:
    """The generator's latent [C, H, W] (on the CPU) of a source frame padded to the coded size."""
    padded = torch.from_numpy(pad_to(frame, header.coded_height, header.coded_width))[None]
    return latent_encoder.encode(padded)[0].cpu()


class SceneStartsByStep:
    """Frame `index`'s scene start unit in the encode's latent codec at each DCT8 step, with
    its payload's bytes (what the rate control and the rate-distortion trials weigh), coded
    when a step is first asked for: they bisect a ladder of steps (`finest_fitting`)."""

    def __init__(self, index: int, latent: np.ndarray, settings: EncoderSettings) -> None:
        self._index, self._latent, self._settings = index, latent, settings
        self._coded: dict[float, tuple[SceneStart, int]] = {}

    def _get(self, step: float) -> tuple[SceneStart, int]:
        if step not in self._coded:
            settings = self._settings
            unit = scene_start(self._index, self._latent, settings.latent_codec, settings.coding, latent_step=step)
            self._coded[step] = unit, len(encode_payload(unit))
        return self._coded[step]

    def unit(self, step: float) -> SceneStart:
        return self._get(step)[0]

    def size(self, step: float) -> int:
        """The unit's payload bytes at `step`."""
        return self._get(step)[1]


def check_frame(header: SequenceHeader, frame: np.ndarray, index: int) -> None:
    """Refuse a frame that is not uint8 [height, width, 3] of the stream's size."""
    if frame.shape != (header.height, header.width, 3) or frame.dtype != np.uint8:
        raise ValueError(f"frame {index} is {frame.shape} {frame.dtype}, not ({header.height}, {header.width}, 3)")


def scene_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Scale-free latent distance of two frames: 0 for equal latents, about 2 for unrelated ones."""
    spread = 0.5 * (float(a.var()) + float(b.var())) + 1e-8
    return float(((a - b) ** 2).mean()) / spread


class Encoder:
    """Encodes pushed frames into a StreamWriter, keyframe by keyframe.

    `engine` comes from `engines.create_engine` (one whose `forward` is differentiable:
    the fitting runs through it); `rate_control`, when given, adapts the keyframe interval
    after every keyframe to hit its bitrate, with bytes reserved for the scene cuts that
    the rate-distortion trials found ahead (`planned_cuts`, frame indices); `placement`,
    when given, turns that interval (or -g) into the next keyframe's distance from where
    the content needs it (`rdo.AdaptivePlacement`).
    """

    def __init__(self, writer: StreamWriter, engine: Engine, latent_encoder, perceptual: PerceptualLoss,
                 settings: EncoderSettings, *, rate_control: RateController | None = None,
                 planned_cuts: Sequence[int] = (), stats: TextIO | None = None,
                 placement: Callable[[int, int], int] | None = None,
                 on_iteration: Callable[[int, int, float], None] | None = None,
                 on_keyframe: Callable[[KeyframeReport], None] | None = None,
                 on_checkpoint: Callable[[dict, dict[str, np.ndarray]], None] | None = None) -> None:
        self.header: SequenceHeader = writer.header
        self._writer = writer
        self._engine = engine
        self._latent_encoder = latent_encoder
        self._perceptual = perceptual
        self.settings = settings
        self._rate_control = rate_control
        self._planned_cuts = tuple(planned_cuts)
        self._stats = stats
        self._on_iteration = on_iteration
        self._on_keyframe = on_keyframe
        self._on_checkpoint = on_checkpoint
        self._placement = placement
        self._refresh_due = False                     # the next frame starts a refresh scene
        self._anchor: torch.Tensor | None = None     # keyframe a's conditioning, for the temporal term
        self._device = engine.device
        self._noise = torch.from_numpy(noise_tensor(self.header)).to(self._device)
        self._rng = torch.Generator().manual_seed(settings.seed)
        self.summary = EncodeSummary()
        self._pending: list[np.ndarray] = []          # frames after the last keyframe
        self._last_pending = -1                       # display index of the last pending frame
        self._previous_key: tuple[int, Keyframe] | None = None
        self._scene_start_bytes = 0                   # the last scene start unit's size at --latent-step (the plan's)
        self._previous_latent: torch.Tensor | None = None   # P, the generated latent of the last keyframe
        self._last_scene_latent: torch.Tensor | None = None
        self._next_frame = 0
        self._interval = settings.interval
        self._nominal_interval = settings.interval    # before placement: -g or the rate control's
        self._fit_settings_first = FitSettings(settings.first_iterations, settings.learning_rate, 300,
                                               patience=settings.patience, nested=settings.scalable)
        self._fit_settings = FitSettings(settings.iterations, settings.learning_rate, 20, patience=settings.patience,
                                         nested=settings.scalable)

    @property
    def writer(self) -> StreamWriter:
        """Where the units go."""
        return self._writer

    # ------------------------------------------------------------------ input

    def push(self, frame: np.ndarray) -> None:
        """Add the next source frame (uint8 [height, width, 3])."""
        check_frame(self.header, frame, self._next_frame)
        index = self._next_frame
        self._next_frame += 1
        latent = frame_latent(self._latent_encoder, self.header, frame)
        if self._previous_key is None and not self._pending:
            self._start_scene(index, frame, latent, cut=False)
            return
        if self.settings.scene_threshold is not None and \
                scene_distance(latent, self._last_scene_latent) > self.settings.scene_threshold:
            if self._pending:
                self._close_interval()
            self._start_scene(index, frame, latent, cut=True)
            return
        if self._refresh_due:
            self._start_scene(index, frame, latent, cut=False)
            return
        self._last_scene_latent = latent
        self._pending.append(frame)
        self._last_pending = index
        if len(self._pending) >= self._interval:
            self._close_interval()

    def finish(self) -> EncodeSummary:
        """Fit the last keyframe (the last frame) and close the stream."""
        if self._pending:
            self._close_interval()
        self.summary.frames = self._next_frame
        self.summary.bytes = self._writer.close()
        return self.summary

    # ------------------------------------------------------------------ scenes and keyframes

    def _scene_start(self, index: int, latent: torch.Tensor) -> tuple[SceneStart, int]:
        """The scene start unit of frame `index`: at `--latent-step`, except that with a rate
        control every scene start after the first takes the DCT8 step whose size lets the
        stream end on budget (`RateController.scene_start_target`), with what is still to
        come planned at the nominal interval: refresh scenes (as many as the budget pays
        for), or the scene cuts the trials found. Without an input length it paces to this
        scene's expected end (an interval and its closing frame).

        Also returns how many bytes more than at `--latent-step` the unit's payload took:
        the intervals are planned with scene starts at the plan's step, and only what the
        plan could not foresee goes to the step (two knobs chasing one budget would
        otherwise trade scenes for finer latents)."""
        settings = self.settings
        values = latent.numpy()
        steps = fill_steps(settings.latent_step, settings.latent_codec)
        control = self._rate_control
        if control is None or self.summary.scenes == 0 or len(steps) == 1:
            return scene_start(index, values, settings.latent_codec, settings.coding,
                               latent_step=settings.latent_step), 0
        starts = SceneStartsByStep(index, values, settings)
        target = control.scene_start_target(index, interval=self._nominal_interval, refresh=settings.refresh,
                                            cuts=self._planned_cuts, floor=starts.size(steps[0]),
                                            keyframe_size=self.summary.keyframes[-1].bytes,
                                            scene_size=self._scene_start_bytes, bytes_written=self._writer.size,
                                            keyframes=len(self.summary.keyframes), scenes=self.summary.scenes)
        step = finest_fitting(steps, lambda s: starts.size(s) <= target)
        return starts.unit(step), starts.size(step) - starts.size(settings.latent_step)

    def _start_scene(self, index: int, frame: np.ndarray, latent: torch.Tensor, *, cut: bool) -> None:
        unit, excess = self._scene_start(index, latent)
        if cut:
            self._writer.write(SceneCut(index))
            self.summary.cuts.append(index)
        self._scene_start_bytes = self._writer.write(unit) - excess
        self._refresh_due = False
        self.summary.scenes += 1
        self._last_scene_latent = latent
        self._previous_latent = torch.from_numpy(unit.dequantized_latent()[None]).to(self._device)
        self._previous_key = None
        self._pending = [frame]
        self._last_pending = index
        self._close_interval()

    def _targets(self, frames: list[np.ndarray]) -> torch.Tensor:
        stacked = torch.from_numpy(np.stack(frames)).to(self._device)
        return stacked.permute(0, 3, 1, 2).float() / 127.5 - 1.0

    def _loss(self, images: torch.Tensor, targets: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
        h = self.header
        cropped = images[:, :, : h.height, : h.width]
        loss = fitting_loss(cropped, targets, prompts, self._perceptual, alpha=self.settings.alpha,
                            prompt_weight=self.settings.prompt_weight)
        beta = self.settings.temporal_beta
        if beta is None or self._anchor is None:
            return loss
        return beta * loss + (1 - beta) * temporal_smoothness(prompts, self._anchor, reduction="none")

    def _close_interval(self) -> None:
        """Fit the keyframe at the last pending frame through all pending frames, write it,
        and advance the latent chain exactly as the decoder will."""
        h = self.header
        frames = self._pending
        end = self._last_pending
        start = None if self._previous_key is None else self._previous_key[0]
        interval = 1 if start is None else end - start
        previous_factors = None
        if start is not None:
            u_a, v_a = keyframe_factors(self._previous_key[1])
            previous_factors = (torch.from_numpy(u_a).to(self._device), torch.from_numpy(v_a).to(self._device))
        z = input_latent(h, self._previous_latent, self._noise)
        self._anchor = None if previous_factors is None else compose(*previous_factors)
        init = previous_factors if (self.settings.warm_start and previous_factors is not None) else None
        settings = self._fit_settings_first if start is None else self._fit_settings

        def report(iteration: int, loss: float) -> None:
            if self._on_iteration is not None:
                self._on_iteration(end, iteration, loss)

        result = fit_keyframe(self._engine.forward, z, self._targets(frames), self._loss,
                              rank=self.settings.rank, cond_shape=(h.cond_tokens, h.cond_dim),
                              previous=previous_factors, interval=interval, settings=settings,
                              generator=self._rng, init=init, on_iteration=report)
        u_q, u_scale, u_zero = quantize_u8(result.u.cpu().numpy())
        v_q, v_scale, v_zero = quantize_u8(result.v.cpu().numpy())
        keyframe = Keyframe(end, self.settings.keyframe_coding, u_q, v_q, u_scale, u_zero, v_scale, v_zero)
        size = self._writer.write(keyframe)
        images, latent = self._reconstruct(keyframe, start, z)
        self._previous_latent = latent
        self._previous_key = (end, keyframe)
        report_entry = KeyframeReport(end, end if start is None else start + 1, result.iterations, result.loss,
                                      [psnr(img[: h.height, : h.width], src) for img, src in zip(images, frames)],
                                      size, self.summary.scenes - 1)
        self.summary.keyframes.append(report_entry)
        if self._stats is not None:
            self._stats.write(json.dumps({
                "keyframe": report_entry.frame_index, "frames": [report_entry.first_frame, end],
                "scene": report_entry.scene, "iterations": report_entry.iterations, "loss": report_entry.loss,
                "bytes": size, "psnr": stats_psnr(report_entry.psnr)}) + "\n")
            self._stats.flush()
        if self._on_keyframe is not None:
            self._on_keyframe(report_entry)
        self._pending = []
        self._refresh_due = self.settings.refresh and start is not None
        if self._rate_control is not None:
            # with refresh, each interval also pays for the scene start after it and that scene's first keyframe;
            # a cut ahead costs a scene start and two keyframes (the one it forces before it and the scene's first)
            extra = self._scene_start_bytes + size if self.settings.refresh else 0
            cuts_ahead = sum(1 for cut in self._planned_cuts if cut > end)
            self._nominal_interval = self._rate_control.next_interval(
                size, end + 1, bytes_written=self._writer.size, keyframes=len(self.summary.keyframes),
                scenes=self.summary.scenes, extra_per_interval=extra,
                reserved=cuts_ahead * (self._scene_start_bytes + 2 * size + 3 * INDEX_ENTRY))
        self._interval = self._nominal_interval if self._placement is None else \
            self._placement(end + 1, self._nominal_interval)
        if self._on_checkpoint is not None:
            self._on_checkpoint(*self.checkpoint())

    # ------------------------------------------------------------------ resuming

    def checkpoint(self) -> tuple[dict, dict[str, np.ndarray]]:
        """The state after the last keyframe: JSON-able values and arrays (no pickles).

        With the units written so far (the writer's `size` bytes), it is all `restore`
        needs to continue exactly as an uninterrupted run would (same random numbers, same
        latent chain, same rate).
        """
        state = {
            # the frame after the last keyframe, not `_next_frame`: at a scene cut the
            # checkpoint of the old scene's last keyframe comes while the cut's frame is
            # being pushed, and a resume must push that frame again
            "next_frame": self._previous_key[0] + 1,
            "interval": self._interval,
            "nominal_interval": self._nominal_interval,
            "refresh_due": self._refresh_due,
            "scene_start_bytes": self._scene_start_bytes,
            "scenes": self.summary.scenes,
            "keyframes": [vars(k) for k in self.summary.keyframes],
            "cuts": self.summary.cuts,
        }
        arrays = {
            "previous_latent": self._previous_latent.cpu().numpy(),
            "last_scene_latent": self._last_scene_latent.numpy(),
            "rng_state": self._rng.get_state().numpy(),
        }
        return state, arrays

    def restore(self, state: dict, arrays: dict[str, np.ndarray], units: list) -> None:
        """Continue from a checkpoint; `units` are the stream's units written up to it."""
        keyframes = [u for u in units if isinstance(u, Keyframe)]
        if not keyframes or keyframes[-1].frame_index != state["next_frame"] - 1:
            raise ValueError("the checkpoint does not match the partial stream")
        self._next_frame = state["next_frame"]
        self._last_pending = self._next_frame - 1
        self._interval = state["interval"]
        self._nominal_interval = state["nominal_interval"]
        self._refresh_due = state["refresh_due"]
        self._scene_start_bytes = state["scene_start_bytes"]
        self.summary.scenes = state["scenes"]
        self.summary.keyframes = [KeyframeReport(**k) for k in state["keyframes"]]
        self.summary.cuts = list(state["cuts"])
        self._previous_key = (keyframes[-1].frame_index, keyframes[-1])
        self._previous_latent = torch.from_numpy(arrays["previous_latent"]).to(self._device)
        self._last_scene_latent = torch.from_numpy(arrays["last_scene_latent"])
        self._rng.set_state(torch.from_numpy(arrays["rng_state"]))

    def _reconstruct(self, keyframe: Keyframe, start: int | None, z: torch.Tensor):
        """Generate the interval's frames exactly as a decoder does (same conditioning, same
        batches of `batch` frames); return their uint8 images and keyframe's latent."""
        previous = None if start is None else (start, keyframe_factors(self._previous_key[1]))
        interval, _ = closed_interval(previous, keyframe)
        images: list[np.ndarray] = []
        for _, generation in generate_interval(self._engine, interval, list(interval.frames), z,
                                               batch=self.settings.batch):
            images.extend(generation.images.numpy())
        return images, generation.latents[-1:]
