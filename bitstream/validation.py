"""The constraints of SPEC.md that a stream must meet beyond its syntax.

`check_unit` checks one unit's field values ("Limits and forbidden values");
`StreamValidator` checks the order of units and their frame indices ("Stream
structure"). The reader runs both on what it reads and the writer on what it is asked
to write, so the library cannot produce a stream it would refuse.
"""
from __future__ import annotations

import dataclasses
import math
import re

import numpy as np

from . import latent_transform
from .errors import InvalidDataError
from .limits import (
    LATENT_DOWNSAMPLING,
    MAX_COND_DIM,
    MAX_COND_TOKENS,
    MAX_DIMENSION,
    MAX_FPS_TERM,
    MAX_FRAME_INDEX,
    MAX_INDEX_ENTRIES,
    MAX_KEYFRAME_INTERVAL,
    MAX_LATENT_CHANNELS,
    MAX_METADATA_ENTRIES,
    MAX_METADATA_KEY,
    MAX_METADATA_VALUE,
    MAX_MODEL_NAME,
    MAX_RANK,
    MAX_SIZE_MULTIPLE,
    MAX_TIMESTEP,
    MAX_UNIT_SIZE,
)
from .units import (
    Coding,
    EndOfStream,
    Index,
    IndexEntry,
    Keyframe,
    LatentCodec,
    Metadata,
    NoiseAlgorithm,
    PredictionType,
    SceneCut,
    SceneStart,
    SequenceHeader,
    Unit,
    UnitType,
    UnknownUnit,
)

_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*\Z")
_KEY = re.compile(r"[a-z0-9][a-z0-9._-]*\Z")


def _require(condition: bool, code: str, message: str) -> None:
    if not condition:
        raise InvalidDataError(code, message)


def _cap(value: int, low: int, high: int, name: str) -> None:
    """A value above its cap is `size_limit`; below its minimum, `bad_field`."""
    _require(value <= high, "size_limit", f"{name} {value} exceeds its cap {high}")
    _require(value >= low, "bad_field", f"{name} {value} is below {low}")


def _stored(value: float) -> float:
    """The binary32 value an `f32` field holds for `value`: the one the reader will check.

    (A positive value below binary32's range is stored as 0, one above it as infinity.)
    """
    with np.errstate(over="ignore"):
        return float(np.float32(value))


def _scale(value: float, name: str) -> None:
    stored = _stored(value)
    _require(math.isfinite(stored) and stored > 0, "bad_field", f"{name} {value} is not a finite positive number")


def _member(kind: type, value: int, name: str) -> None:
    try:
        kind(value)
    except ValueError:
        raise InvalidDataError("bad_field", f"{name} {value} is not defined") from None


def _dtype(array: np.ndarray, dtype: type, name: str) -> None:
    _require(isinstance(array, np.ndarray) and array.dtype == np.dtype(dtype), "bad_field",
             f"{name} is not a {np.dtype(dtype).name} array")


def _is_u8(value) -> bool:
    """An integer 0..255 (a float, even 3.0, cannot be stored in a u8 field)."""
    return isinstance(value, (int, np.integer)) and 0 <= value <= 255


def _utf8_length(text: str, name: str) -> int:
    try:
        return len(text.encode())
    except UnicodeEncodeError:
        raise InvalidDataError("bad_field", f"{name} is not encodable as UTF-8") from None


_LATENT_DTYPES = {LatentCodec.F32: np.float32, LatentCodec.F16: np.float16, LatentCodec.Q8: np.uint8,
                  LatentCodec.DCT8: np.int16}


def check_header(h: SequenceHeader) -> None:
    """Check every field of a sequence header against SPEC.md's limits."""
    _require(1 <= len(h.model_name) <= MAX_MODEL_NAME and _NAME.match(h.model_name) is not None,
             "bad_field", f"model_name {h.model_name!r} is not 1..{MAX_MODEL_NAME} characters of [a-z0-9._-]")
    _require(len(h.model_hash) == 32, "bad_field", "model_hash is not 32 bytes")
    _cap(h.width, 1, MAX_DIMENSION, "width")
    _cap(h.height, 1, MAX_DIMENSION, "height")
    _cap(h.fps_num, 1, MAX_FPS_TERM, "fps_num")
    _cap(h.fps_den, 1, MAX_FPS_TERM, "fps_den")
    _cap(h.frame_count, 0, MAX_FRAME_INDEX, "frame_count")
    _cap(h.latent_channels, 1, MAX_LATENT_CHANNELS, "latent_channels")
    _require(h.latent_downsampling in LATENT_DOWNSAMPLING, "bad_field",
             f"latent_downsampling {h.latent_downsampling} is not a power of two up to 64")
    _cap(h.size_multiple, 1, MAX_SIZE_MULTIPLE, "size_multiple")
    _require(h.size_multiple % h.latent_downsampling == 0, "bad_field",
             f"size_multiple {h.size_multiple} is not a multiple of latent_downsampling {h.latent_downsampling}")
    channels, height, width = h.latent_shape
    _require(channels * height * width * 4 <= MAX_UNIT_SIZE - 1024, "size_limit",
             f"a {channels}x{height}x{width} float32 latent does not fit in one unit")
    _cap(h.cond_tokens, 1, MAX_COND_TOKENS, "cond_tokens")
    _cap(h.cond_dim, 1, MAX_COND_DIM, "cond_dim")
    _member(NoiseAlgorithm, h.noise_algorithm, "noise_algorithm")
    _require(0 <= h.noise_seed <= 0xFFFFFFFF, "bad_field", f"noise_seed {h.noise_seed} is not a 32-bit unsigned value")
    for name in ("prev_weight", "noise_weight"):
        value = _stored(getattr(h, name))
        _require(math.isfinite(value) and 0.0 <= value <= 1.0, "bad_field", f"{name} {value} is not in [0, 1]")
    _cap(h.timestep, 0, MAX_TIMESTEP, "timestep")
    alpha_bar = _stored(h.alpha_bar)
    _require(math.isfinite(alpha_bar) and 0.0 < alpha_bar <= 1.0, "bad_field",
             f"alpha_bar {h.alpha_bar} is not in (0, 1]")
    _member(PredictionType, h.prediction_type, "prediction_type")
    for name in ("colour_primaries", "transfer_characteristics", "matrix_coefficients"):
        _require(0 <= getattr(h, name) <= 255, "bad_field", f"{name} {getattr(h, name)} is not in 0..255")
    _require(h.full_range in (0, 1), "bad_field", f"full_range {h.full_range} is not 0 or 1")


#: The sequence header fields that may differ between the streams of one file (SPEC.md §2.1).
PER_STREAM_FIELDS = ("frame_count", "noise_seed")


def check_concatenation(first: SequenceHeader, header: SequenceHeader) -> None:
    """SPEC.md §2.1: a later stream of a file repeats the first one's sequence header but
    for `frame_count` and `noise_seed`, so that one generator set up once (one engine,
    one TensorRT plan) decodes the whole file and its output is one video."""
    for item in dataclasses.fields(SequenceHeader):
        if item.name not in PER_STREAM_FIELDS and getattr(first, item.name) != getattr(header, item.name):
            raise InvalidDataError("stream_mismatch", f"a concatenated stream's {item.name} "
                                   f"{_shown(getattr(header, item.name))} differs from the first stream's "
                                   f"{_shown(getattr(first, item.name))}")


def _shown(value) -> str:
    """A header value as SPEC.md writes it: hashes in hex, enumerations and flags as numbers."""
    if isinstance(value, bytes):
        return value.hex()
    return str(int(value)) if isinstance(value, int) else repr(value) if isinstance(value, str) else str(value)


def _check_dct8(unit: SceneStart, header: SequenceHeader) -> None:
    """A DCT8 latent: coefficients covering the header's latent in whole 8x8 blocks, one finite positive step per channel."""
    channels, height, width = header.latent_shape
    blocks = (channels, latent_transform.padded_size(height), latent_transform.padded_size(width))
    _require(unit.latent.shape == blocks and tuple(unit.latent_size) == (height, width), "bad_field",
             f"DCT8 coefficients {unit.latent.shape} of a {unit.latent_size} latent do not cover the header's "
             f"{header.latent_shape} in 8x8 blocks")
    _require(len(unit.q_scale) == channels, "bad_field", "a DCT8 latent needs one latent_step per channel")
    for step in unit.q_scale:
        _scale(step, "latent_step")


def _check_stored_latent(unit: SceneStart, header: SequenceHeader) -> None:
    """An F32, F16 or Q8 latent: the header's shape; finite values, or a scale and zero point per channel."""
    _require(unit.latent.shape == header.latent_shape, "bad_field",
             f"latent shape {unit.latent.shape} is not the header's {header.latent_shape}")
    if unit.latent_codec == LatentCodec.Q8:
        _require(len(unit.q_scale) == len(unit.q_zero_point) == header.latent_channels, "bad_field",
                 "a q8 latent needs one scale and zero point per channel")
        for scale in unit.q_scale:
            _scale(scale, "latent scale")
        _require(all(_is_u8(z) for z in unit.q_zero_point), "bad_field", "latent zero point outside 0..255")
    else:
        _require(bool(np.isfinite(unit.latent).all()), "bad_field", "the latent holds NaN or infinity")


def check_unit(unit: Unit, header: SequenceHeader | None) -> None:
    """Check one unit's field values; `header` is the stream's sequence header."""
    if isinstance(unit, SequenceHeader):
        check_header(unit)
    elif isinstance(unit, SceneStart):
        _cap(unit.first_frame, 0, MAX_FRAME_INDEX - 1, "first_frame")
        _member(LatentCodec, unit.latent_codec, "latent_codec")
        _member(Coding, unit.coding, "coding")
        _require(unit.coding != Coding.LAYERED, "bad_field", "a scene start's coding is LAYERED (keyframes only)")
        _dtype(unit.latent, _LATENT_DTYPES[unit.latent_codec], "the latent")
        if unit.latent_codec == LatentCodec.DCT8:
            _check_dct8(unit, header)
        else:
            _check_stored_latent(unit, header)
    elif isinstance(unit, SceneCut):
        _cap(unit.frame_index, 1, MAX_FRAME_INDEX - 1, "scene cut frame_index")
    elif isinstance(unit, Keyframe):
        _cap(unit.frame_index, 0, MAX_FRAME_INDEX - 1, "keyframe frame_index")
        _member(Coding, unit.coding, "coding")
        _dtype(unit.u, np.uint8, "u")
        _dtype(unit.v, np.uint8, "v")
        _require(unit.u.ndim == 2 and unit.v.ndim == 2, "bad_field", "factors are not matrices")
        max_rank = min(header.cond_tokens, header.cond_dim, MAX_RANK)
        # bad_field, as the reader reports it (syntax checks the rank before sizing arrays).
        _require(1 <= unit.rank <= max_rank, "bad_field", f"rank {unit.rank} outside 1..{max_rank}")
        _require(unit.u.shape == (header.cond_tokens, unit.rank) and unit.v.shape == (unit.rank, header.cond_dim),
                 "bad_field", f"factor shapes {unit.u.shape} and {unit.v.shape} do not match the header")
        _scale(unit.u_scale, "u_scale")
        _scale(unit.v_scale, "v_scale")
        _require(_is_u8(unit.u_zero_point) and _is_u8(unit.v_zero_point), "bad_field",
                 "factor zero point outside 0..255")
    elif isinstance(unit, Metadata):
        _cap(len(unit.entries), 0, MAX_METADATA_ENTRIES, "metadata entry count")
        for key, value in unit.entries:
            _cap(_utf8_length(key, "metadata key"), 1, MAX_METADATA_KEY, "metadata key length")
            _require(_KEY.match(key) is not None, "bad_field", f"metadata key {key!r} is not [a-z0-9._-]")
            _cap(_utf8_length(value, "metadata value"), 0, MAX_METADATA_VALUE, "metadata value length")
    elif isinstance(unit, Index):
        _cap(len(unit.entries), 0, MAX_INDEX_ENTRIES, "index entry count")
    elif isinstance(unit, EndOfStream):
        _cap(unit.frame_count, 1, MAX_FRAME_INDEX, "end_of_stream frame_count")
    elif isinstance(unit, UnknownUnit):
        # Types 1..7 are defined (and not all ignorable), 0 is forbidden, 7 bits in all.
        _require(max(UnitType) < unit.unit_type <= 0x7F, "bad_field",
                 f"unit type {unit.unit_type} is not an undefined type in {max(UnitType) + 1}..127")


class StreamValidator:
    """Checks that a stream's units come in SPEC.md's order with consistent frames.

    Feed it every unit of one stream, with the byte offset of the unit from the start
    of the stream's signature, in stream order. It raises `InvalidDataError` at the first
    violation and remembers the seek points the index unit must list.
    """

    def __init__(self) -> None:
        self.header: SequenceHeader | None = None
        self.seek_points: list[IndexEntry] = []
        self.frames = 0                # frames coded by the scenes completed so far
        self._last_keyframe: int | None = None
        self._scene_first: int | None = None
        self._scene_rank: int | None = None
        self._pending_cut: int | None = None
        self._index: tuple[int, Index] | None = None
        self.finished = False

    def feed(self, unit: Unit, offset: int) -> None:
        _require(not self.finished, "bad_unit_order", "a unit follows the end-of-stream unit")
        if self.header is None:
            _require(isinstance(unit, SequenceHeader), "bad_unit_order",
                     "the first unit of a stream is not a sequence header")
            self.header = unit
            return
        _require(not isinstance(unit, SequenceHeader), "bad_unit_order", "a second sequence header")
        if self._pending_cut is not None:
            _require(isinstance(unit, SceneStart), "bad_unit_order", "a scene cut is not followed by a scene start")
        if self._index is not None:
            _require(isinstance(unit, EndOfStream), "bad_unit_order", "the index unit is not the last before the end")
        if isinstance(unit, SceneStart):
            self._start_scene(unit, offset)
        elif isinstance(unit, SceneCut):
            _require(self._scene_first is not None, "bad_unit_order", "a scene cut before the first scene")
            self._pending_cut = unit.frame_index
        elif isinstance(unit, Keyframe):
            self._keyframe(unit, offset)
        elif isinstance(unit, Index):
            _require(self._scene_first is not None, "bad_unit_order", "an index unit before the first scene")
            self._index = (offset, unit)
        elif isinstance(unit, EndOfStream):
            self._end(unit)
        else:
            _require(isinstance(unit, (Metadata, UnknownUnit)), "bad_unit_order", f"unexpected unit {unit!r}")

    def _start_scene(self, unit: SceneStart, offset: int) -> None:
        if self._scene_first is not None:
            _require(self._last_keyframe is not None, "bad_unit_order", "a scene without keyframes")
        _require(unit.first_frame == self.frames_so_far, "frame_order",
                 f"scene starts at frame {unit.first_frame}, expected {self.frames_so_far}")
        if self._pending_cut is not None:
            _require(self._pending_cut == unit.first_frame, "frame_order",
                     f"scene cut at frame {self._pending_cut} but the scene starts at {unit.first_frame}")
        self.frames = self.frames_so_far
        self._pending_cut = None
        self._scene_first = unit.first_frame
        self._last_keyframe = None
        self._scene_rank = None
        self.seek_points.append(IndexEntry(UnitType.SCENE_START, unit.first_frame, offset))

    def _keyframe(self, unit: Keyframe, offset: int) -> None:
        _require(self._scene_first is not None, "bad_unit_order", "a keyframe before the first scene start")
        if self._last_keyframe is None:
            _require(unit.frame_index == self._scene_first, "frame_order",
                     f"first keyframe of the scene is frame {unit.frame_index}, not {self._scene_first}")
        else:
            interval = unit.frame_index - self._last_keyframe
            _require(interval >= 1, "frame_order",
                     f"keyframe {unit.frame_index} does not follow keyframe {self._last_keyframe}")
            _require(interval <= MAX_KEYFRAME_INTERVAL, "size_limit",
                     f"keyframe interval {interval} exceeds its cap {MAX_KEYFRAME_INTERVAL}")
            _require(unit.rank == self._scene_rank, "rank_mismatch",
                     f"rank {unit.rank} in a scene of rank {self._scene_rank}")
        self._last_keyframe = unit.frame_index
        self._scene_rank = unit.rank
        self.seek_points.append(IndexEntry(UnitType.KEYFRAME, unit.frame_index, offset))

    def index_capacity(self) -> int | None:
        """How many entries an index unit read next may list: the seek points so far.

        None when an index unit may not come next (`feed` reports that order error). The
        reader passes this to the index parser, which refuses a longer index (bad_index,
        as rule 8 would at the end of the stream) before it builds up to 2^21 entries.
        """
        if self.finished or self._pending_cut is not None or self._index is not None or self._scene_first is None:
            return None
        return len(self.seek_points)

    @property
    def frames_so_far(self) -> int:
        """Frames coded so far: up to and including the last keyframe read."""
        return self.frames if self._last_keyframe is None else self._last_keyframe + 1

    def _end(self, unit: EndOfStream) -> None:
        _require(self._scene_first is not None and self._last_keyframe is not None, "bad_unit_order",
                 "a stream without keyframes")
        _require(self._pending_cut is None, "bad_unit_order", "a scene cut at the end of the stream")
        frames = self.frames_so_far
        _require(unit.frame_count == frames, "frame_count_mismatch",
                 f"end_of_stream says {unit.frame_count} frames, the stream codes {frames}")
        declared = self.header.frame_count
        _require(declared in (0, frames), "frame_count_mismatch",
                 f"sequence header says {declared} frames, the stream codes {frames}")
        if self._index is None:
            _require(unit.index_offset == 0, "bad_index", "index_offset points to a missing index unit")
        else:
            offset, index = self._index
            _require(unit.index_offset == offset, "bad_index",
                     f"index_offset {unit.index_offset} is not the index unit's offset {offset}")
            _require(list(index.entries) == self.seek_points, "bad_index",
                     "the index does not list every scene start and keyframe unit")
        self.frames = frames
        self.finished = True
