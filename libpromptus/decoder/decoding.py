"""The decoding process of SPEC.md §8 over a stream: prompts and latents to frames.

Written once, engine-agnostic: `decode_frames` walks the scenes and their intervals,
keeps each scene's previous-latent chain, mixes in the stream's noise tensor once per
interval and hands the interval's frames to the engine in batches of at most `batch`.
Frames before `start_frame` are not generated unless the chain needs them (the last
frame of each interval, whose latent feeds the next one).

A scene whose start unit is not a `SceneStart` (error concealment's stand-in for a lost
one, `libpromptus.bitstream.concealment.LostSceneStart`) has no first-frame latent: it continues
the chain from the previous scene's last generated latent, or from a zero latent when it
is its stream's first scene.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from ..bitstream import Scene, SceneStart, SequenceHeader, Stream
from ..engines import DEFAULT_BATCH, Engine, Generation
from ..process.noise import noise_tensor
from ..process.prompts import Interval, scene_intervals


@dataclass(frozen=True)
class Frame:
    """One decoded frame: its display index in the file and its RGB pixels."""

    index: int
    image: np.ndarray          # uint8 [height, width, 3]


def input_latent(header: SequenceHeader, previous: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """`z = prev_weight * P + noise_weight * N` in binary32 (SPEC.md §8.5): the latent an
    interval's frames are all generated from (the encoder fits through the same one)."""
    return header.prev_weight * previous + header.noise_weight * noise


def _wanted(frames: range, first: int, stop: int | None) -> list[int]:
    """The frames of an interval to generate: the requested ones, plus its last frame."""
    chosen = [f for f in frames if f >= first and (stop is None or f < stop)]
    if frames[-1] not in chosen:
        chosen.append(frames[-1])
    return chosen


def decode_frames(streams: Iterable[Stream], engine: Engine, *, batch: int = DEFAULT_BATCH, start_frame: int = 0,
                  frame_count: int | None = None) -> Iterator[Frame]:
    """Yield the frames `start_frame` .. `start_frame + frame_count - 1` in display order."""
    if batch < 1:
        raise ValueError("batch must be at least 1")
    stop = None if frame_count is None else start_frame + frame_count
    for stream in streams:
        offset = stream.first_frame
        if stop is not None and offset >= stop:
            return
        if offset + stream.frame_count <= start_frame:
            continue
        header = stream.header
        noise = torch.from_numpy(noise_tensor(header)).to(engine.device)
        first_scene = _first_needed_scene(stream.scenes, start_frame - offset)
        previous = torch.zeros((1, *header.latent_shape), device=engine.device)
        for scene in stream.scenes[first_scene:]:
            if stop is not None and offset + scene.first_frame >= stop:
                return
            start = scene.start.unit
            if isinstance(start, SceneStart):
                previous = torch.from_numpy(start.dequantized_latent()[None]).to(engine.device)
            for interval in scene_intervals(scene):
                if stop is not None and offset + interval.frames[0] >= stop:
                    return
                z = input_latent(header, previous, noise)
                frames = _wanted(interval.frames, start_frame - offset, None if stop is None else stop - offset)
                for chunk, generation in generate_interval(engine, interval, frames, z, batch=batch):
                    for frame, image in zip(chunk, generation.images):
                        index = offset + frame
                        if index >= start_frame and (stop is None or index < stop):
                            yield Frame(index, image[: header.height, : header.width].numpy())
                previous = generation.latents[-1:]


def _first_needed_scene(scenes: list[Scene], frame: int) -> int:
    """The first scene to decode for output from stream frame `frame` on: the scene holding
    it, or an earlier one whose latent chain runs into it through lost scene starts."""
    number = next((n for n, scene in enumerate(scenes) if scene.last_frame >= frame), len(scenes))
    while 0 < number < len(scenes) and not isinstance(scenes[number].start.unit, SceneStart):
        number -= 1
    return number


def generate_interval(engine: Engine, interval: Interval, frames: list[int], z: torch.Tensor, *,
                      batch: int = DEFAULT_BATCH) -> Iterator[tuple[list[int], Generation]]:
    """Generate `frames` of `interval` from its input latent `z` (SPEC.md §8.7), at most
    `batch` frames per engine call; yield each call's frames and `Generation`.

    The batches are part of the result on the CPU (float sums are reordered), so the
    encoder's closed loop reconstructs with this very function.
    """
    for chunk_start in range(0, len(frames), batch):
        chunk = frames[chunk_start:chunk_start + batch]
        prompts = torch.from_numpy(np.stack([interval.conditioning(f) for f in chunk]))
        yield chunk, engine.generate(z.expand(len(chunk), *z.shape[1:]), prompts)
