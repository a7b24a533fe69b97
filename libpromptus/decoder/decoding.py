"""The decoding process of SPEC.md §8: prompts and latents to frames, as units arrive.

Written once, engine-agnostic, over a stream's units in order: a scene start sets the
latent chain, and each keyframe closes an interval, whose frames are generated at once
from the chain's latent and the stream's noise tensor, in batches of at most `batch`.
So a receiver outputs a scene's first frame as soon as its scene start and first
keyframe have arrived, and holds only the chain latent and the last keyframe's factors,
however long the stream (`decode_units`, for units read from a pipe or a socket).
`decode_frames` runs the same process over streams already in memory, skipping the
scenes that `start_frame` makes unnecessary. Frames before `start_frame` are not
generated unless the chain needs them (the last frame of each interval, whose latent
feeds the next one).

A scene whose start unit is not a `SceneStart` (error concealment's stand-in for a lost
one, `libpromptus.bitstream.LostSceneStart`) has no first-frame latent: it continues the
chain from the previous scene's last generated latent, or from a zero latent when it is
its stream's first scene.
"""
from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from ..bitstream import (
    EndOfStream,
    Keyframe,
    ReadUnit,
    Scene,
    SceneStart,
    SequenceHeader,
    Stream,
    Unit,
)
from ..bitstream.units import LostSceneStart
from ..engines import DEFAULT_BATCH, Engine, Generation
from ..process.noise import noise_tensor
from ..process.prompts import Interval, closed_interval


@dataclass(frozen=True)
class Frame:
    """One decoded frame: its display index in the file and its RGB pixels."""

    index: int
    image: np.ndarray          # uint8 [height, width, 3]
    #: when the keyframe closing this frame's interval was read (`time.monotonic()` seconds):
    #: a live receiver's latency is the time it shows the frame minus this
    arrived: float | None = None


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


def decode_units(units: Iterable[ReadUnit | Unit], engine: Engine, *, batch: int = DEFAULT_BATCH,
                 start_frame: int = 0, frame_count: int | None = None, first_frame: int = 0) -> Iterator[Frame]:
    """Yield the frames `start_frame` .. `start_frame + frame_count - 1` of the streams whose
    units (`read_units`' or bare units, in stream order) arrive from `units`, each interval
    as soon as its closing keyframe has arrived.

    `first_frame` is the display index of the first stream's frame 0: a seek
    (`bitstream.read_from_frame`) starts in a later stream of a file, and after its
    header at a scene start, which the process needs nothing before.
    """
    _check_batch(batch)
    stop = None if frame_count is None else start_frame + frame_count
    items = (item.unit if isinstance(item, ReadUnit) else item for item in units)
    offset = first_frame
    for unit in items:
        if not isinstance(unit, SequenceHeader):
            raise ValueError(f"a stream starts with a sequence header, not {type(unit).__name__}")
        frames = yield from _decode_stream(unit, items, offset, engine, batch, start_frame, stop)
        if frames is None:
            return
        offset += frames


def decode_frames(streams: Iterable[Stream], engine: Engine, *, batch: int = DEFAULT_BATCH, start_frame: int = 0,
                  frame_count: int | None = None) -> Iterator[Frame]:
    """Yield the frames `start_frame` .. `start_frame + frame_count - 1` of `streams` in display order."""
    _check_batch(batch)
    stop = None if frame_count is None else start_frame + frame_count
    for stream in streams:
        offset = stream.first_frame
        if stop is not None and offset >= stop:
            return
        if offset + stream.frame_count <= start_frame:
            continue
        first_scene = _first_needed_scene(stream.scenes, start_frame - offset)
        units = [item.unit for scene in stream.scenes[first_scene:]
                 for item in (scene.start, *scene.keyframes)] + [EndOfStream(stream.frame_count)]
        if (yield from _decode_stream(stream.header, iter(units), offset, engine, batch, start_frame, stop)) is None:
            return


def _check_batch(batch: int) -> None:
    if batch < 1:
        raise ValueError("batch must be at least 1")


def _decode_stream(header: SequenceHeader, units: Iterator[Unit], offset: int, engine: Engine, batch: int,
                   start_frame: int, stop: int | None):
    """Decode one stream's units after its header, up to its end-of-stream unit, as display
    frames from `offset` on. Returns the stream's frame count, or None once `stop` is reached."""
    noise = torch.from_numpy(noise_tensor(header)).to(engine.device)
    previous = torch.zeros((1, *header.latent_shape), device=engine.device)
    last = None                   # the scene's last keyframe: its frame index and factors
    for unit in units:
        if isinstance(unit, EndOfStream):
            return unit.frame_count
        if isinstance(unit, Keyframe):
            arrived = time.monotonic()
            interval, last = closed_interval(last, unit)
            if stop is not None and offset + interval.frames[0] >= stop:
                return None
            z = input_latent(header, previous, noise)
            frames = _wanted(interval.frames, start_frame - offset, None if stop is None else stop - offset)
            for chunk, generation in generate_interval(engine, interval, frames, z, batch=batch):
                for frame, image in zip(chunk, generation.images):
                    index = offset + frame
                    if index >= start_frame and (stop is None or index < stop):
                        yield Frame(index, image[: header.height, : header.width].numpy(), arrived)
            previous = generation.latents[-1:]
        elif isinstance(unit, (SceneStart, LostSceneStart)):
            if isinstance(unit, SceneStart):
                previous = torch.from_numpy(unit.dequantized_latent()[None]).to(engine.device)
            last = None
    raise ValueError("the stream's units ended before its end-of-stream unit")


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
