"""Seeded random content for the conformance streams: headers, first-frame latents, factors.

Nothing here fits a model: the suite checks decoders, not encoders, so its factors and
latents are drawn from fixed-seed `numpy.random.RandomState` generators, whose streams
numpy keeps frozen across versions (NEP 19): the same seeds give the same bytes. The
8-bit symbols come in three shapes, so that the reference encoder picks each
`coded_symbols()` model of SPEC.md §9: peaked like a Laplace distribution (LAPLACE),
bell-shaped (GAUSSIAN) or uniform (STORED, since nothing codes uniform bytes smaller).
The fuzz seed corpus (`fuzzing.seeded_stream`) and the tests' streams use the same units.
"""
from __future__ import annotations

import dataclasses
import json
from importlib import resources

import numpy as np

from ..bitstream import Coding, Keyframe, LatentCodec, SceneStart, SequenceHeader, latent_transform
from ..process.profiles import TINY, GeneratorProfile

SHAPES = ("laplace", "gaussian", "uniform")
#: The standard deviation of `symbols` of each shape with the default spread of 6.
_DEVIATION = {"laplace": 6.0 * 2 ** 0.5, "gaussian": 6.0, "uniform": 256 / 12 ** 0.5}


def tiny_model_hash() -> bytes:
    """The identity hash of the shipped tiny model (SPEC.md §7), read from its manifest (no torch)."""
    manifest = resources.files("libpromptus").joinpath("models/tiny/MANIFEST.json").read_text()
    return bytes.fromhex(json.loads(manifest)["identity"])


def tiny_header(width: int, height: int, *, profile: GeneratorProfile = TINY, **changes) -> SequenceHeader:
    """A sequence header for `profile` (the tiny model) at `width` x `height`, 30 fps, the
    tiny model's pinned weights; `changes` replace any field."""
    header = profile.sequence_header(width=width, height=height, fps_num=30, fps_den=1, frame_count=0,
                                     model_hash=tiny_model_hash())
    return dataclasses.replace(header, **changes)


def f32(value: float) -> float:
    """`value` rounded to binary32: what an f32 field stores."""
    return float(np.float32(value))


def symbols(rng: np.random.RandomState, shape: tuple[int, ...], kind: str, centre: int = 128,
            spread: float = 6.0) -> np.ndarray:
    """uint8 symbols of one of `SHAPES` around `centre` (`spread`: the distribution's scale)."""
    if kind == "uniform":
        return rng.randint(0, 256, size=shape, dtype=np.uint8)
    if kind == "laplace":
        values = rng.laplace(centre, spread, size=shape)
    elif kind == "gaussian":
        values = rng.normal(centre, spread, size=shape)
    else:
        raise ValueError(f"unknown symbol shape {kind!r}")
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def keyframe(rng: np.random.RandomState, header: SequenceHeader, frame_index: int, rank: int, *,
             coding: Coding = Coding.RAW, kind: str = "gaussian", zero_points: tuple[int, int] = (128, 128),
             scales: tuple[float, float] | None = None) -> Keyframe:
    """A keyframe of random 8-bit factors whose conditioning has roughly unit spread.

    Unless `scales` are given, each scale is about 1 / (the symbols' standard deviation),
    so U and V hold values of spread about 1, and the composition's 1/sqrt(rank) keeps
    the conditioning there.
    """
    u_zero, v_zero = zero_points
    if scales is None:
        deviation = _DEVIATION[kind]
        scales = (f32(rng.uniform(0.75, 1.25) / deviation), f32(rng.uniform(0.75, 1.25) / deviation))
    u_scale, v_scale = scales
    return Keyframe(frame_index=frame_index, coding=coding,
                    u=symbols(rng, (header.cond_tokens, rank), kind, u_zero),
                    v=symbols(rng, (rank, header.cond_dim), kind, v_zero),
                    u_scale=u_scale, u_zero_point=u_zero, v_scale=v_scale, v_zero_point=v_zero)


def _dct8_scene_start(rng: np.random.RandomState, shape: tuple[int, int, int], first_frame: int,
                      coding: Coding) -> SceneStart:
    """DCT8 coefficients drawn directly as integers: Laplace-shaped, spread falling with u + v
    as a smooth latent's do, DC values of a few hundred (wide bands) and the rest narrow."""
    channels, height, width = shape
    padded = (channels, latent_transform.padded_size(height), latent_transform.padded_size(width))
    tiles = (padded[1] // latent_transform.BLOCK, padded[2] // latent_transform.BLOCK)
    spread = np.tile(40.0 / latent_transform.RAMP ** 1.5, tiles)
    spread[::latent_transform.BLOCK, ::latent_transform.BLOCK] = 300.0
    coefficients = np.clip(np.rint(rng.laplace(0.0, spread, size=padded)), latent_transform.COEFFICIENT_MIN,
                           latent_transform.COEFFICIENT_MAX).astype(np.int16)
    steps = tuple(f32(s) for s in rng.uniform(0.005, 0.02, size=channels))
    return SceneStart(first_frame, LatentCodec.DCT8, coding, coefficients, steps, (), (height, width))


def scene_start(rng: np.random.RandomState, header: SequenceHeader, first_frame: int, *,
                codec: LatentCodec = LatentCodec.Q8, coding: Coding = Coding.ENTROPY) -> SceneStart:
    """A scene start with a random first-frame latent of unit spread (the tiny model's range)."""
    shape = header.latent_shape
    if codec == LatentCodec.Q8:
        codes = symbols(rng, shape, "gaussian", spread=40.0)
        scales = tuple(f32(s) for s in rng.uniform(0.02, 0.04, size=shape[0]))
        zeros = tuple(int(z) for z in rng.randint(100, 156, size=shape[0]))
        return SceneStart(first_frame, codec, coding, codes, scales, zeros)
    if codec == LatentCodec.DCT8:
        return _dct8_scene_start(rng, shape, first_frame, coding)
    latent = rng.standard_normal(shape)
    dtype = np.float32 if codec == LatentCodec.F32 else np.float16
    return SceneStart(first_frame, codec, coding, latent.astype(dtype))
