"""Shared pieces of the decoder tests (test_decoding.py, test_pmtdec.py).

Small synthetic streams for the `tiny` generator, built from seeded numpy values and
written with StreamWriter, plus an engine wrapper that records what the decoding
process hands to the engine. Sizes stay tiny (latents of 4x4 to 8x8) so that a
whole decode costs a fraction of a second on a CPU.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from libpromptus.bitstream import (
    Coding,
    Keyframe,
    LatentCodec,
    Metadata,
    SceneCut,
    SceneStart,
    SequenceHeader,
    StreamWriter,
)
from libpromptus.conformance import seeded
from libpromptus.conformance.seeded import f32  # noqa: F401  (tests import it from here)

from libpromptus.process.profiles import SD_TURBO, TINY, GeneratorProfile

OFFICIAL = Path(__file__).resolve().parents[2] / "shared/reference/promptus-official"
OFFICIAL_REASON = f"the official Promptus reference data is not at {OFFICIAL}"


@dataclass(frozen=True)
class SceneDef:
    """One scene: its keyframes' display indices (within the stream), the latent's codec."""

    keyframes: tuple[int, ...]
    codec: LatentCodec = LatentCodec.F32
    rank: int = 2
    cut: bool = False
    coding: Coding = Coding.RAW


@dataclass
class Synthetic:
    """A written stream and the units it was written from."""

    data: bytes
    header: SequenceHeader
    starts: list[SceneStart]
    keyframes: list[list[Keyframe]]
    scenes: tuple[SceneDef, ...] = field(default=())

    @property
    def frame_count(self) -> int:
        return self.keyframes[-1][-1].frame_index + 1

    def write(self, path: Path) -> Path:
        path.write_bytes(self.data)
        return path


def make_stream(header: SequenceHeader, scenes: tuple[SceneDef, ...], *, seed: int = 0,
                metadata: tuple[tuple[str, str], ...] | None = (("encoder", "decoder tests"),),
                index: bool = True) -> Synthetic:
    """Write a stream of `scenes` (seeded, deterministic) into memory."""
    rng = np.random.RandomState(seed)
    sink = io.BytesIO()
    starts: list[SceneStart] = []
    keyframes: list[list[Keyframe]] = []
    with StreamWriter(sink, header, write_index=index) as writer:
        if metadata is not None:
            writer.write(Metadata(metadata))
        for number, scene in enumerate(scenes):
            first = scene.keyframes[0]
            if scene.cut and number > 0:
                writer.write(SceneCut(first))
            start = seeded.scene_start(rng, header, first, codec=scene.codec, coding=scene.coding)
            writer.write(start)
            starts.append(start)
            keyframes.append([])
            for frame_index in scene.keyframes:
                unit = seeded.keyframe(rng, header, frame_index, scene.rank, coding=scene.coding, kind="uniform")
                writer.write(unit)
                keyframes[-1].append(unit)
    return Synthetic(sink.getvalue(), header, starts, keyframes, scenes)


def tiny_stream(width: int, height: int, scenes: tuple[SceneDef, ...], *, seed: int = 0, declare: bool = True,
                profile: GeneratorProfile = TINY, **header_changes) -> Synthetic:
    """A stream for `profile` (default tiny) with the frame count declared or 0."""
    frame_count = scenes[-1].keyframes[-1] + 1 if declare else 0
    header = seeded.tiny_header(width, height, profile=profile, model_hash=bytes(32), frame_count=frame_count,
                                **header_changes)
    return make_stream(header, scenes, seed=seed)


#: Two scenes (the second after a cut), non-uniform intervals, 18 frames.
TWO_SCENES = (
    SceneDef(keyframes=(0, 4, 9), codec=LatentCodec.Q8, rank=2, coding=Coding.ENTROPY),
    SceneDef(keyframes=(10, 13, 17), codec=LatentCodec.F16, rank=3, cut=True),
)

#: The 64x64 stream of the CLI tests: one scene, intervals 3 and 4 (8 frames).
CLI_SCENES = (SceneDef(keyframes=(0, 3, 7), codec=LatentCodec.F32, rank=2),)


def sd_turbo_stream(width: int = 64, height: int = 64, scenes: tuple[SceneDef, ...] = CLI_SCENES,
                    seed: int = 0) -> Synthetic:
    return tiny_stream(width, height, scenes, seed=seed, profile=SD_TURBO)


# ---------------------------------------------------------------- recording engine


@dataclass
class Call:
    latents: np.ndarray        # float32 [B, C, h, w]: the input latents z
    prompts: np.ndarray        # float32 [B, T, D]
    generated: np.ndarray      # float32 [B, C, h, w]: the generated latents x0


class RecordingEngine:
    """Forwards to a real engine and records every call's inputs and generated latents."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.name = inner.name
        self.device = inner.device
        self.calls: list[Call] = []

    def generate(self, latents, prompts):
        generation = self.inner.generate(latents, prompts)
        self.calls.append(Call(latents.detach().cpu().float().numpy().copy(),
                               prompts.detach().cpu().float().numpy().copy(),
                               generation.latents.detach().cpu().float().numpy().copy()))
        return generation

    def rows(self, what: str) -> np.ndarray:
        """One field of every recorded call, concatenated over the batch axis."""
        return np.concatenate([getattr(call, what) for call in self.calls])


def stack_frames(frames) -> tuple[list[int], np.ndarray]:
    """(indices, uint8 [N, H, W, 3]) of decoded Frame objects."""
    frames = list(frames)
    return [f.index for f in frames], np.stack([np.asarray(f.image) for f in frames]) if frames else np.zeros(0)


def max_difference(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    """(largest absolute difference, number of differing components) of two uint8 arrays."""
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return int(diff.max(initial=0)), int(np.count_nonzero(diff))


def empty_model_places(base: Path) -> dict[str, str | None]:
    """An environment in which no SD-Turbo can be found."""
    env: dict[str, str | None] = {"PROMPTUS_MODEL": None, "HUGGINGFACE_HUB_CACHE": None}
    for var in ("PROMPTUS_MODEL_DIR", "HF_HOME", "HF_HUB_CACHE", "XDG_CACHE_HOME"):
        (base / var).mkdir(parents=True)
        env[var] = str(base / var)
    return env
