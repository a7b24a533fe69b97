"""The units of a `.pmt` stream as plain Python values (SPEC.md, "Unit semantics").

These dataclasses are what the reader yields and the writer takes. They hold the coded
values themselves (8-bit factors, stored latents), never model tensors: turning them
into conditioning and images is the decoding process, outside this package. Every
unit's `unit_type` is its type on the wire (a class attribute; an `UnknownUnit`'s own).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from collections.abc import Iterable
from typing import ClassVar

import numpy as np

from . import latent_transform


class UnitType(IntEnum):
    """`unit_type` values of version 1 (SPEC.md, "Unit types")."""

    SEQUENCE_HEADER = 1
    SCENE_START = 2
    SCENE_CUT = 3
    KEYFRAME = 4
    METADATA = 5
    INDEX = 6
    END_OF_STREAM = 7


#: Unit types whose `may_ignore` flag is 1: a decoder loses nothing by skipping them.
IGNORABLE_TYPES = frozenset({UnitType.METADATA, UnitType.INDEX})


class Coding(IntEnum):
    """How 8-bit symbols (factors, quantized latents) are stored.

    LAYERED (version 1.1, keyframes only) codes a keyframe's factors as one entropy-coded
    block per rank component, so that every rank prefix is a byte prefix (`pmtenc
    --scalable`).
    """

    RAW = 0
    ENTROPY = 1
    LAYERED = 2


class LatentCodec(IntEnum):
    """How a scene's first-frame latent is represented.

    DCT8 (version 1.2) is a transform coder: 8×8 blocks of integer-DCT coefficients,
    quantized with a step per channel and entropy coded by zigzag band (SPEC.md §4.2).
    """

    F32 = 0
    F16 = 1
    Q8 = 2
    DCT8 = 3


def minor_version_of(coding: Coding, latent_codec: LatentCodec | None = None) -> int:
    """The lowest `version_minor` of a stream whose units use `coding` (and `latent_codec`):
    2 for a DCT8 latent, 1 for LAYERED keyframes, else 0."""
    if latent_codec == LatentCodec.DCT8:
        return 2
    return 1 if coding == Coding.LAYERED else 0


class PredictionType(IntEnum):
    """What the generator's network predicts (SPEC.md, "Single-step denoising")."""

    EPSILON = 0
    V_PREDICTION = 1
    SAMPLE = 2


class NoiseAlgorithm(IntEnum):
    """Generators of the fixed noise tensor (SPEC.md, "The noise tensor")."""

    MT19937_POLAR = 1


@dataclass(frozen=True)
class SequenceHeader:
    """Everything a decoder needs before the first scene."""

    unit_type: ClassVar[UnitType] = UnitType.SEQUENCE_HEADER
    model_name: str
    model_hash: bytes
    width: int
    height: int
    fps_num: int
    fps_den: int
    frame_count: int
    latent_channels: int
    latent_downsampling: int
    size_multiple: int
    cond_tokens: int
    cond_dim: int
    noise_algorithm: NoiseAlgorithm
    noise_seed: int
    prev_weight: float
    noise_weight: float
    timestep: int
    alpha_bar: float
    prediction_type: PredictionType
    colour_primaries: int = 1
    transfer_characteristics: int = 13
    matrix_coefficients: int = 0
    full_range: bool = True

    @property
    def coded_width(self) -> int:
        """Width the generator produces: `width` rounded up to `size_multiple`."""
        return -(-self.width // self.size_multiple) * self.size_multiple

    @property
    def coded_height(self) -> int:
        """Height the generator produces: `height` rounded up to `size_multiple`."""
        return -(-self.height // self.size_multiple) * self.size_multiple

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of every latent of the stream."""
        d = self.latent_downsampling
        return (self.latent_channels, self.coded_height // d, self.coded_width // d)

    @property
    def fps(self) -> str:
        """The frame rate as a rational string, e.g. "30/1"."""
        return f"{self.fps_num}/{self.fps_den}"


@dataclass(frozen=True)
class SceneStart:
    """Starts a scene: its first frame and the latent that frame continues from.

    `latent` is the stored form: float32 or float16 [C, H, W] for the float codecs,
    uint8 [C, H, W] for Q8 with one `q_scale`/`q_zero_point` per channel, and for DCT8
    the int16 coefficients [C, Hp, Wp] in block layout (H and W rounded up to whole 8×8
    blocks; coefficient (u, v) of block (i, j) at [c, 8i + u, 8j + v]) with one step per
    channel in `q_scale`; `latent_size` is then (H, W), where the blocks are cropped.
    """

    unit_type: ClassVar[UnitType] = UnitType.SCENE_START
    first_frame: int
    latent_codec: LatentCodec
    coding: Coding
    latent: np.ndarray
    q_scale: tuple[float, ...] = ()
    q_zero_point: tuple[int, ...] = ()
    latent_size: tuple[int, int] = ()

    def dequantized_latent(self) -> np.ndarray:
        """The latent as float32 [C, H, W], exactly as SPEC.md's decoding process defines."""
        if self.latent_codec == LatentCodec.DCT8:
            return latent_transform.reconstruct(self.latent, self.q_scale, *self.latent_size)
        if self.latent_codec == LatentCodec.Q8:
            scale = np.asarray(self.q_scale, dtype=np.float32)[:, None, None]
            zero = np.asarray(self.q_zero_point, dtype=np.float32)[:, None, None]
            return scale * (self.latent.astype(np.float32) - zero)
        return self.latent.astype(np.float32)


@dataclass(frozen=True)
class SceneCut:
    """Marks that the content changes abruptly at `frame_index` (a new scene follows)."""

    unit_type: ClassVar[UnitType] = UnitType.SCENE_CUT
    frame_index: int


@dataclass(frozen=True)
class Keyframe:
    """The 8-bit low-rank factors of one keyframe's prompt.

    `u` is uint8 [cond_tokens, rank], `v` uint8 [rank, cond_dim]; their real values are
    `scale * (q - zero_point)`.
    """

    unit_type: ClassVar[UnitType] = UnitType.KEYFRAME
    frame_index: int
    coding: Coding
    u: np.ndarray
    v: np.ndarray
    u_scale: float
    u_zero_point: int
    v_scale: float
    v_zero_point: int

    @property
    def rank(self) -> int:
        return int(self.u.shape[1])


@dataclass(frozen=True)
class Metadata:
    """Free key/value text, e.g. the encoder's name, version and settings."""

    unit_type: ClassVar[UnitType] = UnitType.METADATA
    entries: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class IndexEntry:
    """One seek point: a scene start or keyframe unit and its byte offset in the stream."""

    unit_type: UnitType
    frame_index: int
    offset: int


@dataclass(frozen=True)
class Index:
    """Offsets of every scene start and keyframe unit, for seeking."""

    unit_type: ClassVar[UnitType] = UnitType.INDEX
    entries: tuple[IndexEntry, ...]


@dataclass(frozen=True)
class EndOfStream:
    """Closes a stream: the frames it holds and where its index unit is (0: none)."""

    unit_type: ClassVar[UnitType] = UnitType.END_OF_STREAM
    frame_count: int
    index_offset: int = 0


@dataclass(frozen=True)
class UnknownUnit:
    """An ignorable unit of a type this version does not define, kept verbatim."""

    unit_type: int
    payload: bytes = field(repr=False)


Unit = SequenceHeader | SceneStart | SceneCut | Keyframe | Metadata | Index | EndOfStream | UnknownUnit


@dataclass(frozen=True)
class LostSceneStart:
    """Stands in a repaired `Scene` (bitstream.repair) for a scene start unit that was lost.

    The scene has no first-frame latent: the decoding process continues the latent chain
    from the previous scene's last generated latent (a zero latent for a stream's first
    scene).
    """

    first_frame: int


def lowest_minor_version(units: Iterable[Unit]) -> int:
    """The lowest `version_minor` of a stream holding `units` (`minor_version_of` its units)."""
    return max((minor_version_of(unit.coding, getattr(unit, "latent_codec", None))
                for unit in units if isinstance(unit, (Keyframe, SceneStart))), default=0)
