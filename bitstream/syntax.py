"""Unit payload syntax (SPEC.md, "Unit payload syntax"): bytes <-> unit dataclasses.

The fixed-layout parts of every payload are declared once as `construct` structs, which
read and write them; the variable parts (8-bit symbol arrays, stored or entropy coded)
follow them. Value checks live in `validation`; this module only turns bytes into
fields and back, raising `InvalidDataError` for payloads that do not parse.
"""
from __future__ import annotations

import io

import numpy as np
from construct import (
    Array,
    Bytes,
    Construct,
    ConstructError,
    StringError,
    Float32l,
    Int8ul,
    Int16ul,
    Int32ul,
    Int64ul,
    PascalString,
    PrefixedArray,
    Struct,
    stream_read,
    stream_write,
)

from . import entropy, latent_transform
from .errors import InvalidDataError
from .framing import VERSION_MINOR
from .leb128 import decode_leb128, encode_leb128
from .limits import (
    MAX_INDEX_ENTRIES,
    MAX_LEB128_BYTES,
    MAX_METADATA_ENTRIES,
    MAX_METADATA_KEY,
    MAX_METADATA_VALUE,
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
    minor_version_of,
)


class _Leb128(Construct):
    """The `leb128()` descriptor as a construct field (shortest form only)."""

    def _parse(self, stream, context, path):
        data = bytearray()
        while True:
            data += stream_read(stream, 1, path)
            if not data[-1] & 0x80 or len(data) >= MAX_LEB128_BYTES:
                break
        value, _ = decode_leb128(bytes(data), 0, MAX_LEB128_BYTES)
        return value

    def _build(self, obj, stream, context, path):
        stream_write(stream, encode_leb128(obj), len(encode_leb128(obj)), path)
        return obj


Leb128 = _Leb128()


class _CappedLeb128(_Leb128):
    """A leb128() count or size with a cap (SPEC.md §10): a larger value is `size_limit`.

    Raised as soon as the value is read, before anything is parsed or allocated from it:
    a 32 MiB metadata payload of 16 M empty entries would otherwise become 16 M parsed
    objects (minutes, gigabytes) before the count is checked.
    """

    def __init__(self, cap: int, field: str) -> None:
        super().__init__()
        self.cap = cap
        self.field = field

    def _parse(self, stream, context, path):
        value = super()._parse(stream, context, path)
        if value > self.cap:
            raise InvalidDataError("size_limit", f"{self.field} {value} exceeds its cap {self.cap}")
        return value


SEQUENCE_HEADER = Struct(
    "model_name" / PascalString(Int8ul, "ascii"),
    "model_hash" / Bytes(32),
    "width" / Int16ul,
    "height" / Int16ul,
    "fps_num" / Int32ul,
    "fps_den" / Int32ul,
    "frame_count" / Int32ul,
    "latent_channels" / Int8ul,
    "latent_downsampling" / Int8ul,
    "size_multiple" / Int16ul,
    "cond_tokens" / Int16ul,
    "cond_dim" / Int16ul,
    "noise_algorithm" / Int8ul,
    "noise_seed" / Int32ul,
    "prev_weight" / Float32l,
    "noise_weight" / Float32l,
    "timestep" / Int16ul,
    "alpha_bar" / Float32l,
    "prediction_type" / Int8ul,
    "colour_primaries" / Int8ul,
    "transfer_characteristics" / Int8ul,
    "matrix_coefficients" / Int8ul,
    "full_range" / Int8ul,
)

_HEADER_FIELDS = tuple(sub.name for sub in SEQUENCE_HEADER.subcons)

SCENE_START_HEAD = Struct(
    "first_frame" / Int32ul,
    "latent_codec" / Int8ul,
    "coding" / Int8ul,
)
Q8_CHANNEL = Struct("scale" / Float32l, "zero_point" / Int8ul)
DCT8_STEP = Float32l

SCENE_CUT = Struct("frame_index" / Int32ul)

KEYFRAME_HEAD = Struct(
    "frame_index" / Int32ul,
    "rank" / Int8ul,
    "coding" / Int8ul,
    "u_scale" / Float32l,
    "u_zero_point" / Int8ul,
    "v_scale" / Float32l,
    "v_zero_point" / Int8ul,
)

METADATA = Struct(
    "entries" / PrefixedArray(_CappedLeb128(MAX_METADATA_ENTRIES, "metadata entry_count"), Struct(
        "key" / PascalString(_CappedLeb128(MAX_METADATA_KEY, "metadata key_size"), "utf8"),
        "value" / PascalString(_CappedLeb128(MAX_METADATA_VALUE, "metadata value_size"), "utf8"),
    )),
)

INDEX = Struct(
    "entries" / PrefixedArray(Leb128, Struct(
        "unit_type" / Int8ul,
        "frame_index" / Int32ul,
        "offset" / Int64ul,
    )),
)

#: The entries of INDEX as a packed numpy record, for reading: up to 2^21 of them parse
#: in milliseconds where construct takes minutes.
_INDEX_COUNT = _CappedLeb128(MAX_INDEX_ENTRIES, "index entry_count")
_INDEX_ENTRY = np.dtype([("unit_type", "u1"), ("frame_index", "<u4"), ("offset", "<u8")])
_INDEX_TYPES = {UnitType.SCENE_START.value: UnitType.SCENE_START, UnitType.KEYFRAME.value: UnitType.KEYFRAME}

END_OF_STREAM = Struct("frame_count" / Int32ul, "index_offset" / Int64ul)

#: Bytes per stored value of each latent codec: also the number of byte planes that
#: entropy coding splits a float latent into.
LATENT_BYTES = {LatentCodec.F32: 4, LatentCodec.F16: 2, LatentCodec.Q8: 1}
_LATENT_DTYPE = {LatentCodec.F32: np.dtype("<f4"), LatentCodec.F16: np.dtype("<f2"), LatentCodec.Q8: np.dtype("u1")}
#: A DCT8 band's symbols are value + 128 (band_wide 0), or the low and high bytes of value + 32768 (1).
_NARROW_OFFSET, _WIDE_OFFSET = 128, 32768

END_OF_STREAM_UNIT_SIZE = 1 + 1 + END_OF_STREAM.sizeof() + 4
"""Bytes of a whole end-of-stream unit: a reader can find it at a fixed distance from EOF."""


# ---------------------------------------------------------------- symbol arrays


def _write_symbols(out: io.BytesIO, symbols: np.ndarray, coding: Coding) -> None:
    flat = np.ascontiguousarray(symbols, dtype=np.uint8).reshape(-1)
    out.write(entropy.encode_symbols(flat) if coding == Coding.ENTROPY else flat.tobytes())


def _read_symbols(payload: memoryview, offset: int, count: int, coding: Coding) -> tuple[np.ndarray, int]:
    if coding == Coding.ENTROPY:
        try:
            return entropy.decode_symbols(payload, offset, count)
        except InvalidDataError as err:
            if err.code != "truncated":
                raise
            raise InvalidDataError("bad_payload_size", f"payload ends inside coded symbols: {err.message}") from None
    if offset + count > len(payload):
        raise InvalidDataError("bad_payload_size", "payload ends inside stored symbols")
    return np.frombuffer(payload, dtype=np.uint8, count=count, offset=offset).copy(), offset + count


def _latent_planes(latent: np.ndarray, codec: LatentCodec) -> np.ndarray:
    """Split a stored latent into its byte planes: [bytes_per_value, values] uint8."""
    raw = np.ascontiguousarray(latent, dtype=_LATENT_DTYPE[codec]).reshape(-1)
    return raw.view(np.uint8).reshape(-1, LATENT_BYTES[codec]).T


def _symbol_groups(codec: LatentCodec, shape: tuple[int, int, int]) -> tuple[int, int]:
    """(number of coded_symbols blocks, symbols per block) of an entropy-coded latent."""
    channels, height, width = shape
    if codec == LatentCodec.Q8:
        return channels, height * width
    return LATENT_BYTES[codec], channels * height * width


# ---------------------------------------------------------------- encoding


def encode_payload(unit: Unit) -> bytes:
    """Serialize a unit's payload (the unit header, size and CRC are `framing`'s job)."""
    out = io.BytesIO()
    if isinstance(unit, SequenceHeader):
        fields = {name: getattr(unit, name) for name in _HEADER_FIELDS}
        fields["full_range"] = int(unit.full_range)
        SEQUENCE_HEADER.build_stream(fields, out)
    elif isinstance(unit, SceneStart):
        SCENE_START_HEAD.build_stream(
            {"first_frame": unit.first_frame, "latent_codec": unit.latent_codec, "coding": unit.coding}, out)
        if unit.latent_codec == LatentCodec.Q8:
            for scale, zero in zip(unit.q_scale, unit.q_zero_point):
                Q8_CHANNEL.build_stream({"scale": scale, "zero_point": zero}, out)
        if unit.latent_codec == LatentCodec.DCT8:
            _write_dct8(out, unit)
        else:
            _write_latent(out, unit)
    elif isinstance(unit, SceneCut):
        SCENE_CUT.build_stream({"frame_index": unit.frame_index}, out)
    elif isinstance(unit, Keyframe):
        KEYFRAME_HEAD.build_stream({
            "frame_index": unit.frame_index, "rank": unit.rank, "coding": unit.coding,
            "u_scale": unit.u_scale, "u_zero_point": unit.u_zero_point,
            "v_scale": unit.v_scale, "v_zero_point": unit.v_zero_point}, out)
        if unit.coding == Coding.LAYERED:
            for component in range(unit.rank):
                _write_symbols(out, _layer(unit.u, unit.v, component), Coding.ENTROPY)
        else:
            _write_symbols(out, unit.u, unit.coding)
            _write_symbols(out, unit.v, unit.coding)
    elif isinstance(unit, Metadata):
        METADATA.build_stream({"entries": [{"key": k, "value": v} for k, v in unit.entries]}, out)
    elif isinstance(unit, Index):
        INDEX.build_stream({"entries": [
            {"unit_type": e.unit_type, "frame_index": e.frame_index, "offset": e.offset} for e in unit.entries]}, out)
    elif isinstance(unit, EndOfStream):
        END_OF_STREAM.build_stream({"frame_count": unit.frame_count, "index_offset": unit.index_offset}, out)
    else:
        return bytes(unit.payload)
    return out.getvalue()


def _layer(u: np.ndarray, v: np.ndarray, component: int) -> np.ndarray:
    """Layer `component` of LAYERED factors: column `component` of U_q, then row `component` of V_q."""
    return np.concatenate((u[:, component], v[component]))


def _write_latent(out: io.BytesIO, unit: SceneStart) -> None:
    if unit.coding == Coding.RAW:
        out.write(np.ascontiguousarray(unit.latent, dtype=_LATENT_DTYPE[unit.latent_codec]).tobytes())
    elif unit.latent_codec == LatentCodec.Q8:
        for channel in unit.latent:
            _write_symbols(out, channel, Coding.ENTROPY)
    else:
        for plane in _latent_planes(unit.latent, unit.latent_codec):
            _write_symbols(out, plane, Coding.ENTROPY)


def _write_dct8(out: io.BytesIO, unit: SceneStart) -> None:
    """latent_step per channel, then per channel and band group: band_wide and its symbol blocks."""
    for step in unit.q_scale:
        DCT8_STEP.build_stream(step, out)
    for channel in unit.latent:
        for values in latent_transform.split_bands(channel):
            values = values.astype(np.int32)
            wide = bool(values.min() < -_NARROW_OFFSET or values.max() >= _NARROW_OFFSET)
            out.write(bytes([wide]))
            if wide:
                shifted = values + _WIDE_OFFSET
                _write_symbols(out, shifted & 0xFF, unit.coding)
                _write_symbols(out, shifted >> 8, unit.coding)
            else:
                _write_symbols(out, values + _NARROW_OFFSET, unit.coding)


# ---------------------------------------------------------------- decoding


def decode_payload(unit_type: int, payload: bytes | memoryview, header: SequenceHeader | None,
                   minor_version: int, *, index_capacity: int | None = None) -> Unit:
    """Parse the payload of a known unit type.

    `header` is the stream's sequence header (None while parsing the header itself): it
    fixes the sizes of factor and latent arrays. In a stream of a version this decoder
    knows (1.0 to 1.`VERSION_MINOR`) every payload byte must belong to a field; a stream
    of a later minor version may append fields, which this decoder skips (SPEC.md, "Versioning"). An index unit listing more than
    `index_capacity` entries (when given: the seek points the stream has so far) is
    `bad_index`, found before its entries are built.
    """
    stream = io.BytesIO(payload)      # shares the buffer of a bytes payload (a memoryview would be copied)
    payload = memoryview(payload)
    try:
        unit, end = _decode(UnitType(unit_type), payload, stream, header, minor_version, index_capacity)
    except StringError:
        # construct wraps the UnicodeDecodeError of a text field (metadata, model_name).
        raise InvalidDataError("bad_field", f"{UnitType(unit_type).name.lower()} text is not valid "
                               f"{'ASCII' if unit_type == UnitType.SEQUENCE_HEADER else 'UTF-8'}") from None
    except ConstructError as err:
        raise InvalidDataError("bad_payload_size", f"{UnitType(unit_type).name.lower()} payload does not parse: "
                               f"{str(err).splitlines()[0]}") from None
    except UnicodeDecodeError:
        raise InvalidDataError("bad_field", "metadata text is not valid UTF-8") from None
    if end != len(payload) and minor_version <= VERSION_MINOR:
        raise InvalidDataError("bad_payload_size",
                               f"{len(payload) - end} bytes after the last field of a {UnitType(unit_type).name.lower()}")
    return unit


def _decode(kind: UnitType, payload: memoryview, stream: io.BytesIO, header: SequenceHeader | None,
            minor_version: int, index_capacity: int | None) -> tuple[Unit, int]:
    if kind == UnitType.SEQUENCE_HEADER:
        f = SEQUENCE_HEADER.parse_stream(stream)
        return _header_from_fields(f), stream.tell()
    if kind == UnitType.SCENE_START:
        return _decode_scene_start(payload, stream, header, minor_version)
    if kind == UnitType.SCENE_CUT:
        return SceneCut(SCENE_CUT.parse_stream(stream).frame_index), stream.tell()
    if kind == UnitType.KEYFRAME:
        return _decode_keyframe(payload, stream, header, minor_version)
    if kind == UnitType.METADATA:
        f = METADATA.parse_stream(stream)
        return Metadata(tuple((e.key, e.value) for e in f.entries)), stream.tell()
    if kind == UnitType.INDEX:
        return _decode_index(payload, stream, index_capacity)
    f = END_OF_STREAM.parse_stream(stream)
    return EndOfStream(f.frame_count, f.index_offset), stream.tell()


def _decode_index(payload: memoryview, stream: io.BytesIO, capacity: int | None) -> tuple[Index, int]:
    count = _INDEX_COUNT.parse_stream(stream)
    offset = stream.tell()
    end = offset + count * _INDEX_ENTRY.itemsize
    if end > len(payload):
        raise InvalidDataError("bad_payload_size", f"payload ends inside the {count} index entries")
    if capacity is not None and count > capacity:
        raise InvalidDataError("bad_index", f"the index lists {count} entries, the stream has {capacity} seek points")
    table = np.frombuffer(payload, dtype=_INDEX_ENTRY, count=count, offset=offset)
    kinds = table["unit_type"].tolist()
    for kind in kinds:
        if kind not in _INDEX_TYPES:
            raise InvalidDataError("bad_index", f"index entry names unit type {kind}")
    entries = map(IndexEntry, map(_INDEX_TYPES.__getitem__, kinds), table["frame_index"].tolist(),
                  table["offset"].tolist())
    return Index(tuple(entries)), end


def _header_from_fields(f) -> SequenceHeader:
    noise = _enum(NoiseAlgorithm, f.noise_algorithm, "noise_algorithm")
    prediction = _enum(PredictionType, f.prediction_type, "prediction_type")
    if f.full_range > 1:
        raise InvalidDataError("bad_field", f"full_range is {f.full_range}, not 0 or 1")
    values = {name: f[name] for name in _HEADER_FIELDS}
    values.update(noise_algorithm=noise, prediction_type=prediction, full_range=bool(f.full_range))
    return SequenceHeader(**values)


def _enum(kind: type, value: int, field: str):
    try:
        return kind(value)
    except ValueError:
        raise InvalidDataError("bad_field", f"{field} {value} is not defined") from None


def _decode_dct8(payload: memoryview, offset: int, first_frame: int, coding: Coding, steps: tuple[float, ...],
                 shape: tuple[int, int, int]) -> tuple[SceneStart, int]:
    channels, height, width = shape
    padded_height, padded_width = latent_transform.padded_size(height), latent_transform.padded_size(width)
    blocks = (padded_height // latent_transform.BLOCK) * (padded_width // latent_transform.BLOCK)
    coefficients = np.empty((channels, padded_height, padded_width), dtype=np.int16)
    for c in range(channels):
        bands = []
        for start, end in latent_transform.BAND_GROUPS:
            if offset >= len(payload):
                raise InvalidDataError("bad_payload_size", "payload ends before a band_wide")
            wide = payload[offset]
            if wide > 1:
                raise InvalidDataError("bad_field", f"band_wide {wide} is not 0 or 1")
            count = blocks * (end - start)
            low, offset = _read_symbols(payload, offset + 1, count, coding)
            if wide:
                high, offset = _read_symbols(payload, offset, count, coding)
                bands.append(low.astype(np.int32) + (high.astype(np.int32) << 8) - _WIDE_OFFSET)
            else:
                bands.append(low.astype(np.int32) - _NARROW_OFFSET)
        coefficients[c] = latent_transform.join_bands(bands, padded_height, padded_width)
    return SceneStart(first_frame, LatentCodec.DCT8, coding, coefficients, steps, (), (height, width)), offset


def _decode_scene_start(payload: memoryview, stream: io.BytesIO, header: SequenceHeader,
                        minor_version: int) -> tuple[SceneStart, int]:
    f = SCENE_START_HEAD.parse_stream(stream)
    codec = _enum(LatentCodec, f.latent_codec, "latent_codec")
    coding = _enum(Coding, f.coding, "coding")
    if coding == Coding.LAYERED:
        raise InvalidDataError("bad_field", "a scene start's coding is LAYERED (keyframes only)")
    shape = header.latent_shape
    scales: tuple[float, ...] = ()
    zeros: tuple[int, ...] = ()
    if codec == LatentCodec.DCT8:
        if minor_version < 2:
            raise InvalidDataError("bad_field", f"latent_codec 3 (DCT8) is not defined in version 1.{minor_version}")
        steps = tuple(Array(shape[0], DCT8_STEP).parse_stream(stream))
        return _decode_dct8(payload, stream.tell(), f.first_frame, coding, steps, shape)
    if codec == LatentCodec.Q8:
        channels = Array(shape[0], Q8_CHANNEL).parse_stream(stream)
        scales = tuple(c.scale for c in channels)
        zeros = tuple(c.zero_point for c in channels)
    offset = stream.tell()
    count = shape[0] * shape[1] * shape[2]
    dtype = _LATENT_DTYPE[codec]
    if coding == Coding.RAW:
        size = count * dtype.itemsize
        if offset + size > len(payload):
            raise InvalidDataError("bad_payload_size", "payload ends inside the stored latent")
        latent = np.frombuffer(payload, dtype=dtype, count=count, offset=offset).copy()
        offset += size
    else:
        # Each block is decoded straight into its place: a channel (q8) is a row, byte
        # plane k of float values a column, so a latent at its cap is not held twice.
        blocks, per_block = _symbol_groups(codec, shape)
        q8 = codec == LatentCodec.Q8
        planes = np.empty((blocks, per_block) if q8 else (per_block, blocks), dtype=np.uint8)
        for k in range(blocks):
            target = planes[k] if q8 else planes[:, k]
            target[...], offset = _read_symbols(payload, offset, per_block, Coding.ENTROPY)
        latent = planes if q8 else planes.view(dtype).reshape(-1)
    latent = latent.reshape(shape)
    return SceneStart(f.first_frame, codec, coding, latent, scales, zeros), offset


def _decode_keyframe(payload: memoryview, stream: io.BytesIO, header: SequenceHeader,
                     minor_version: int) -> tuple[Keyframe, int]:
    f = KEYFRAME_HEAD.parse_stream(stream)
    coding = _enum(Coding, f.coding, "coding")
    if minor_version_of(coding) > minor_version:
        raise InvalidDataError("bad_field", f"coding {coding.value} is not defined in version 1.{minor_version}")
    rank = f.rank
    # The rank is checked against its cap before any factor array is sized from it.
    max_rank = min(header.cond_tokens, header.cond_dim, 255)
    if not 1 <= rank <= max_rank:
        raise InvalidDataError("bad_field", f"rank {rank} outside 1..{max_rank}")
    offset = stream.tell()
    tokens, dim = header.cond_tokens, header.cond_dim
    if coding == Coding.LAYERED:
        u = np.empty((tokens, rank), dtype=np.uint8)
        v = np.empty((rank, dim), dtype=np.uint8)
        for component in range(rank):
            layer, offset = _read_symbols(payload, offset, tokens + dim, Coding.ENTROPY)
            u[:, component], v[component] = layer[:tokens], layer[tokens:]
    else:
        u, offset = _read_symbols(payload, offset, tokens * rank, coding)
        v, offset = _read_symbols(payload, offset, rank * dim, coding)
        u, v = u.reshape(tokens, rank), v.reshape(rank, dim)
    return Keyframe(f.frame_index, coding, u, v, f.u_scale, f.u_zero_point, f.v_scale, f.v_zero_point), offset
