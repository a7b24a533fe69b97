"""The valid streams of the suite: one feature of SPEC.md each, from fixed seeds.

Every stream is for the tiny model (77 x 1024 conditioning, 4-channel latents at 1/8
of a size rounded up to 16 pixels), small (1 x 1 to 80 x 48 pixels, a handful of
frames except where the feature needs more) and written by `StreamWriter`, except
VERSION_A_3, whose later-version payload fields the writer cannot produce. A stream's
random content comes from `numpy.random.RandomState(seed)` with the seed of its case.
"""
from __future__ import annotations

import dataclasses
import io
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..bitstream import (
    Coding,
    LatentCodec,
    Metadata,
    PredictionType,
    SceneCut,
    SequenceHeader,
    StreamWriter,
    Unit,
    UnknownUnit,
    lowest_minor_version,
)
from ..bitstream.segments import split_stream
from ..process.profiles import SD_TURBO
from . import seeded
from .assemble import Framed, assemble, frame
from .seeded import f32


@dataclass(frozen=True)
class SceneSpec:
    """One scene: the gaps between its keyframes, their rank, coding and symbol shape."""

    gaps: tuple[int, ...] = (4,)
    rank: int = 4
    cut: bool = False                                   # a scene cut before it (not the first scene)
    codec: LatentCodec = LatentCodec.Q8
    latent_coding: Coding = Coding.ENTROPY
    codings: tuple[Coding, ...] = (Coding.ENTROPY,)     # cycled over the keyframes
    kind: str = "gaussian"                              # seeded.SHAPES

    @property
    def frames(self) -> int:
        return sum(self.gaps) + 1


@dataclass(frozen=True)
class StreamSpec:
    """A one-stream file: its scenes, header changes and optional units."""

    seed: int
    scenes: tuple[SceneSpec, ...] = (SceneSpec(),)
    width: int = 32
    height: int = 32
    header: dict = field(default_factory=dict)         # changes to the tiny header
    declare_frame_count: bool = True
    index: bool = True
    metadata: tuple[tuple[str, str], ...] = (("encoder", "libpromptus conformance"),)


@dataclass(frozen=True)
class ValidCase:
    """A valid stream of the suite: its name, what it covers, and how to build its bytes."""

    name: str
    description: str
    build: Callable[[], bytes]


def scene_units(rng: np.random.RandomState, header: SequenceHeader, first: int, spec: SceneSpec,
                first_scene: bool) -> list[Unit]:
    """The units of one scene starting at frame `first` (scene cut, scene start, keyframes)."""
    units: list[Unit] = []
    if spec.cut and not first_scene:
        units.append(SceneCut(first))
    units.append(seeded.scene_start(rng, header, first, codec=spec.codec, coding=spec.latent_coding))
    frame_index = first
    for number, gap in enumerate((0, *spec.gaps)):
        frame_index += gap
        coding = spec.codings[number % len(spec.codings)]
        units.append(seeded.keyframe(rng, header, frame_index, spec.rank, coding=coding, kind=spec.kind))
    return units


def spec_units(spec: StreamSpec) -> tuple[SequenceHeader, list[Unit]]:
    """The header and the units after it of a `StreamSpec` (index and end left to the writer)."""
    rng = np.random.RandomState(spec.seed)
    frames = sum(scene.frames for scene in spec.scenes)
    header = seeded.tiny_header(spec.width, spec.height, **spec.header)
    header = dataclasses.replace(header, frame_count=frames if spec.declare_frame_count else 0)
    units: list[Unit] = [Metadata(spec.metadata)] if spec.metadata else []
    first = 0
    for number, scene in enumerate(spec.scenes):
        units += scene_units(rng, header, first, scene, number == 0)
        first += scene.frames
    return header, units


def write(header: SequenceHeader, units: list[Unit], *, index: bool = True) -> bytes:
    """One stream written by the library's `StreamWriter`, of the lowest version its units allow."""
    sink = io.BytesIO()
    with StreamWriter(sink, header, write_index=index, minor=lowest_minor_version(units)) as writer:
        for unit in units:
            writer.write(unit)
    return sink.getvalue()


def simple(spec: StreamSpec) -> Callable[[], bytes]:
    """The builder of a stream that a `StreamSpec` describes."""
    def build() -> bytes:
        header, units = spec_units(spec)
        return write(header, units, index=spec.index)
    return build


# ---------------------------------------------------------------- streams that need more than a spec


def _metadata() -> bytes:
    """Metadata units before the first scene and inside it, every size coding and key form."""
    header, units = spec_units(StreamSpec(seed=1400, scenes=(SceneSpec(gaps=(3,)),), metadata=()))
    many = tuple((f"key{n:03d}", str(n)) for n in range(130))       # entry_count takes 2 leb128 bytes
    first = Metadata((("encoder", "libpromptus conformance"), ("title", "Grüße, 世界 ✓"), ("empty", ""),
                      ("k" * 64, "the longest key"), ("0.a_b-c", "every kind of key character"),
                      ("long", "x" * 4096)))                        # the longest value: a 2-byte size
    inside = Metadata((("title", "a repeated key: this later value overrides the first"),))
    return write(header, [first, Metadata(many), *units[:2], inside, *units[2:]])


def _unknown() -> bytes:
    """Ignorable units of reserved types (8 and 127) wherever SPEC.md §6 allows them."""
    header, units = spec_units(StreamSpec(seed=1500, scenes=(SceneSpec(gaps=(2, 2)),)))
    rng = np.random.RandomState(1501)
    big = UnknownUnit(127, rng.randint(0, 256, size=300, dtype=np.uint8).tobytes())
    return write(header, [UnknownUnit(8, b""), *units[:3], big, *units[3:], UnknownUnit(8, b"\x00\x01")])


def _concatenated() -> bytes:
    """Three streams back to back: same model, size and rate; other seeds, counts and options."""
    first = spec_units(StreamSpec(seed=1600, scenes=(SceneSpec(gaps=(2, 3)),)))
    second = spec_units(StreamSpec(seed=1601, scenes=(SceneSpec(gaps=(4,), rank=2),
                                                      SceneSpec(gaps=(1,), cut=True)),
                                   header={"noise_seed": 7}, declare_frame_count=False))
    third = spec_units(StreamSpec(seed=1602, scenes=(SceneSpec(gaps=()),), metadata=()))
    return write(*first) + write(*second, index=False) + write(*third)


def _later_version() -> bytes:
    """Version 1.3 (not yet defined): every payload but the end's carries bytes after the fields of version 1.2."""
    header, units = spec_units(StreamSpec(seed=1700, scenes=(SceneSpec(gaps=(2,)), SceneSpec(gaps=(1,), cut=True))))
    rng = np.random.RandomState(1701)
    parts = [Framed(frame(unit, extra=rng.randint(0, 256, size=1 + n % 4, dtype=np.uint8).tobytes()), unit)
             for n, unit in enumerate([header, *units])]
    return assemble(parts, minor=3, index_extra=b"\x00" * 5)


def _segmented_path() -> bytes:
    """Annex D: a path through a rendition set of two streams cut into segments of 4 frames.

    The init segment and media segment 2 come from a rank-2 rendition, media segments 1
    and 3 from a rank-5 one with other keyframe positions and a scene cut.
    """
    low = spec_units(StreamSpec(seed=1900, scenes=(SceneSpec(gaps=(3,), rank=2), SceneSpec(gaps=(3,), rank=2),
                                                   SceneSpec(gaps=(1,), rank=2))))
    high = spec_units(StreamSpec(seed=1901, scenes=(SceneSpec(gaps=(1, 2), rank=5),
                                                    SceneSpec(gaps=(2, 1), rank=5, cut=True),
                                                    SceneSpec(gaps=(1,), rank=5)), metadata=(("rendition", "1"),)))
    segments = [list(split_stream(io.BytesIO(write(*units)), 4)) for units in (low, high)]
    return b"".join(segment.data for segment in (segments[0][0], segments[1][1], segments[0][2], segments[1][3]))


def _keyframe_parameters() -> bytes:
    """Factor zero points at 0 and 255 and scales far from 1 (dequantization's edge values)."""
    header = seeded.tiny_header(32, 32, frame_count=6)
    rng = np.random.RandomState(1800)
    units: list[Unit] = [seeded.scene_start(rng, header, 0)]
    settings = (((0, 255), (f32(1 / 512), f32(0.5))), ((255, 0), (f32(0.75), f32(1 / 1024))),
                ((0, 0), (f32(2.0 ** -10), f32(2.0 ** -8))))
    for frame_index, (zeros, scales) in zip((0, 2, 5), settings):
        units.append(seeded.keyframe(rng, header, frame_index, 3, zero_points=zeros, scales=scales))
    return write(header, units)


# ---------------------------------------------------------------- the catalogue

_RAW, _ENTROPY, _LAYERED = Coding.RAW, Coding.ENTROPY, Coding.LAYERED
_DCT8 = LatentCodec.DCT8
_SD_TURBO_CONSTANTS = {"timestep": SD_TURBO.timestep, "alpha_bar": f32(SD_TURBO.schedule.alpha_bar(SD_TURBO.timestep)),
                       "prev_weight": f32(SD_TURBO.prev_weight), "noise_weight": f32(SD_TURBO.noise_weight)}


def _case(name: str, description: str, seed: int, **spec) -> ValidCase:
    return ValidCase(name, description, simple(StreamSpec(seed=seed, **spec)))


VALID: tuple[ValidCase, ...] = (
    _case("BASIC_A_1", "one scene of rank 8, keyframes 0, 4, 8; q8 entropy-coded latent, entropy-coded factors, "
          "metadata, index", 1000, scenes=(SceneSpec(gaps=(4, 4), rank=8),)),
    _case("RANK_A_1", "rank 1, the smallest", 1010, scenes=(SceneSpec(gaps=(4,), rank=1),)),
    _case("RANK_B_1", "rank 77, the largest a 77 x 1024 conditioning allows (min(cond_tokens, cond_dim, 255))",
          1020, scenes=(SceneSpec(gaps=(2,), rank=77),)),
    _case("RANK_C_1", "ranks 2, 16 and 40 in three scenes (the rank may change at a scene start)", 1030,
          scenes=(SceneSpec(gaps=(2,), rank=2), SceneSpec(gaps=(2,), rank=16), SceneSpec(gaps=(2,), rank=40))),
    _case("INTERVAL_A_1", "uniform keyframe interval 8: keyframes 0, 8, 16, 24", 1040,
          scenes=(SceneSpec(gaps=(8, 8, 8), rank=4),)),
    _case("INTERVAL_B_1", "non-uniform keyframe intervals 1, 5, 2, 7, 3", 1050,
          scenes=(SceneSpec(gaps=(1, 5, 2, 7, 3), rank=4),)),
    _case("INTERVAL_C_1", "every frame a keyframe (interval 1), 130 keyframes at 16 x 16: the index entry "
          "count takes two leb128 bytes", 1060, width=16, height=16,
          scenes=(SceneSpec(gaps=(1,) * 129, rank=1, codings=(_RAW,)),)),
    _case("INTERVAL_D_1", "the longest keyframe interval, 256 (keyframes 0 and 256), at 16 x 16", 1070,
          width=16, height=16, scenes=(SceneSpec(gaps=(256,), rank=2),)),
    _case("STILL_A_1", "a single frame: one scene, one keyframe", 1080, scenes=(SceneSpec(gaps=(), rank=4),)),
    _case("SCENECUT_A_1", "three scenes after scene cuts; the middle scene is one keyframe", 1090,
          scenes=(SceneSpec(gaps=(3,)), SceneSpec(gaps=(), cut=True), SceneSpec(gaps=(2, 2), cut=True))),
    _case("REFRESH_A_1", "a scene start without a scene cut (refresh), then one after a cut", 1100,
          scenes=(SceneSpec(gaps=(3,)), SceneSpec(gaps=(3,)), SceneSpec(gaps=(2,), cut=True))),
    _case("LATENT_A_1", "f32 first-frame latent, raw", 1110,
          scenes=(SceneSpec(gaps=(3,), codec=LatentCodec.F32, latent_coding=_RAW),)),
    _case("LATENT_B_1", "f32 first-frame latent, entropy-coded byte planes", 1120,
          scenes=(SceneSpec(gaps=(3,), codec=LatentCodec.F32, latent_coding=_ENTROPY),)),
    _case("LATENT_C_1", "f16 first-frame latent, raw", 1130,
          scenes=(SceneSpec(gaps=(3,), codec=LatentCodec.F16, latent_coding=_RAW),)),
    _case("LATENT_D_1", "f16 first-frame latent, entropy-coded byte planes", 1140,
          scenes=(SceneSpec(gaps=(3,), codec=LatentCodec.F16, latent_coding=_ENTROPY),)),
    _case("LATENT_E_1", "q8 first-frame latent, raw", 1150,
          scenes=(SceneSpec(gaps=(3,), codec=LatentCodec.Q8, latent_coding=_RAW),)),
    _case("LATENT_F_1", "q8 first-frame latent, one entropy-coded plane per channel", 1160,
          scenes=(SceneSpec(gaps=(3,), codec=LatentCodec.Q8, latent_coding=_ENTROPY),)),
    _case("CODING_A_1", "raw (stored) factors", 1170, scenes=(SceneSpec(gaps=(3,), codings=(_RAW,)),)),
    _case("CODING_B_1", "entropy-coded factors, Laplace-shaped: LAPLACE blocks", 1180,
          scenes=(SceneSpec(gaps=(3,), kind="laplace"),)),
    _case("CODING_C_1", "entropy-coded factors, bell-shaped: GAUSSIAN blocks", 1190,
          scenes=(SceneSpec(gaps=(3,), kind="gaussian"),)),
    _case("CODING_D_1", "entropy-coded factors, uniform: STORED blocks", 1200,
          scenes=(SceneSpec(gaps=(3,), kind="uniform"),)),
    _case("CODING_E_1", "raw and entropy-coded keyframes alternating in one scene", 1210,
          scenes=(SceneSpec(gaps=(2, 2, 2), codings=(_RAW, _ENTROPY)),)),
    _case("PADDING_A_1", "40 x 24: coded at 48 x 32, the output cropped", 1220, width=40, height=24),
    _case("PADDING_B_1", "17 x 33, odd sizes: coded at 32 x 48", 1230, width=17, height=33),
    _case("PADDING_C_1", "80 x 48 with size_multiple 64 (a multiple of the model's 16): coded at 128 x 64",
          1240, width=80, height=48, header={"size_multiple": 64}),
    _case("PADDING_D_1", "1 x 1, the smallest size: coded at 16 x 16", 1250, width=1, height=1),
    _case("INDEX_A_1", "no index unit (index_offset 0)", 1260, index=False,
          scenes=(SceneSpec(gaps=(3,)), SceneSpec(gaps=(2,), cut=True))),
    _case("FRAMECOUNT_A_1", "frame_count 0 in the sequence header (unknown when it was written)", 1270,
          declare_frame_count=False),
    _case("RATE_A_1", "frame rate 30000/1001", 1280, header={"fps_num": 30000, "fps_den": 1001}),
    _case("NOISE_A_1", "noise_seed 4294967295, the largest", 1290, header={"noise_seed": 0xFFFFFFFF}),
    _case("MIX_A_1", "prev_weight 1, noise_weight 0: no noise", 1300,
          header={"prev_weight": 1.0, "noise_weight": 0.0}),
    _case("MIX_B_1", "prev_weight 0, noise_weight 1: the previous latent unused", 1310,
          header={"prev_weight": 0.0, "noise_weight": 1.0}),
    _case("PREDICTION_A_1", "prediction_type V_PREDICTION", 1320,
          header={"prediction_type": PredictionType.V_PREDICTION}),
    _case("PREDICTION_B_1", "prediction_type SAMPLE", 1330, header={"prediction_type": PredictionType.SAMPLE}),
    _case("ALPHABAR_A_1", "alpha_bar 1, the largest: sqrt(1 - alpha_bar) = 0", 1340, header={"alpha_bar": 1.0}),
    _case("TIMESTEP_A_1", "SD-Turbo's constants on the tiny model: timestep 999, its alpha_bar, mix 0.05 / 0.95",
          1350, header=_SD_TURBO_CONSTANTS),
    _case("COLOUR_A_1", "colour tags 9 / 16 / 9 and full_range 0 (they do not change decoding)", 1360,
          header={"colour_primaries": 9, "transfer_characteristics": 16, "matrix_coefficients": 9,
                  "full_range": False}),
    _case("UNPINNED_A_1", "model_hash all zero: the weights are not pinned", 1370, header={"model_hash": bytes(32)}),
    ValidCase("KFPARAM_A_1", "factor zero points 0 and 255, scales from 2^-10 to 0.75", _keyframe_parameters),
    ValidCase("METADATA_A_1", "metadata before and inside a scene: UTF-8, an empty value, a 64-byte key, a "
              "4096-byte value, 130 entries, a repeated key", _metadata),
    ValidCase("UNKNOWN_A_1", "ignorable units of reserved types 8 and 127 (may_ignore 1) after the header, "
              "inside a scene and before the index", _unknown),
    ValidCase("CONCAT_A_1", "three concatenated streams (other noise seeds, with and without index and "
              "declared frame count)", _concatenated),
    _case("LAYERED_A_1", "version 1.1: LAYERED factors, one coded block per rank component", 1380,
          scenes=(SceneSpec(gaps=(3,), codings=(_LAYERED,)),)),
    _case("LAYERED_B_1", "LAYERED, raw and entropy-coded keyframes alternating at rank 1, then a scene of "
          "LAYERED rank-6 Laplace-shaped factors", 1390,
          scenes=(SceneSpec(gaps=(2, 2), rank=1, codings=(_LAYERED, _RAW, _ENTROPY)),
                  SceneSpec(gaps=(3,), rank=6, codings=(_LAYERED,), kind="laplace", cut=True))),
    ValidCase("SEGMENT_A_1", "Annex D: a path through two renditions (ranks 2 and 5) cut into 4-frame segments, "
              "switching at every boundary; no index", _segmented_path),
    _case("LATENT_N_1", "version 1.2: DCT8 first-frame latent, entropy-coded bands; 32 x 32, so the 4 x 4 latent "
          "is one 8 x 8 block, cropped", 1410, scenes=(SceneSpec(gaps=(3,), codec=_DCT8, latent_coding=_ENTROPY),)),
    _case("LATENT_O_1", "version 1.2: DCT8 first-frame latent, raw bands; 80 x 48 coded at 128 x 64: a 16 x 8 "
          "latent, two blocks", 1420, width=80, height=48, header={"size_multiple": 64},
          scenes=(SceneSpec(gaps=(2,), codec=_DCT8, latent_coding=_RAW),)),
    _case("LATENT_P_1", "version 1.2: a q8 scene, a DCT8 refresh, then a DCT8 scene after a cut and an f16 refresh "
          "(the codec may change at every scene start)", 1430,
          scenes=(SceneSpec(gaps=(2,)), SceneSpec(gaps=(2,), codec=_DCT8),
                  SceneSpec(gaps=(1,), codec=_DCT8, cut=True, rank=6),
                  SceneSpec(gaps=(2,), codec=LatentCodec.F16, latent_coding=_RAW))),
    ValidCase("VERSION_A_3", "version 1.3: payloads carry bytes after their 1.2 fields, which a 1.2 decoder "
              "ignores", _later_version),
)
