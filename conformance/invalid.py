"""The invalid streams of the suite: one per constraint of SPEC.md §10 and error code of §11.

Each starts from one valid stream written by `StreamWriter` (`base_stream()`: two scenes,
raw and entropy-coded keyframes, a q8 and an f32 latent, metadata, index) and breaks one
thing: a field (the unit re-serialized, its CRC-32C recomputed, the index and end units
rebuilt to match, so that the field is the stream's first fault), the units' order, or
the bytes themselves (signature, CRC, sizes, truncation). A case's `code` is the SPEC.md
§11 error a decoder must report; the generator checks that the reader reports it.
"""
from __future__ import annotations

import dataclasses
import functools
import io
import struct
from collections.abc import Callable
from dataclasses import dataclass

import google_crc32c
import numpy as np

from ..bitstream import (
    Coding,
    EndOfStream,
    Index,
    IndexEntry,
    Keyframe,
    LatentCodec,
    Metadata,
    SceneCut,
    SceneStart,
    Unit,
    UnitType,
    UnknownUnit,
    read_streams,
    read_units,
)
from ..bitstream.entropy import decode_symbols
from ..bitstream.framing import SIGNATURE
from ..bitstream.leb128 import decode_leb128, encode_leb128
from ..bitstream.limits import MAX_INDEX_ENTRIES, MAX_UNIT_SIZE
from ..bitstream.syntax import encode_payload
from . import seeded
from .assemble import Framed, Part, assemble, frame, stream_units
from .valid import SceneSpec, StreamSpec, spec_units, write

_RAW, _ENTROPY = Coding.RAW, Coding.ENTROPY
_NAN, _INF = float("nan"), float("inf")

# Positions of the units of `base_stream()` (`base_units()` holds the first nine).
HEADER, META, START0, KEY0, KEY2, CUT3, START3, KEY3, KEY5, INDEX_UNIT, END_UNIT = range(11)
_KEY_HEAD = 16                      # bytes of a keyframe payload before its factors


@dataclass(frozen=True)
class InvalidCase:
    """An invalid stream of the suite: its name, the error code expected, what is wrong, its bytes."""

    name: str
    code: str
    description: str
    build: Callable[[], bytes]


@functools.cache
def base_stream() -> bytes:
    """The valid stream every invalid one is made from, as `StreamWriter` writes it (6 frames, 16 x 16)."""
    rng = np.random.RandomState(2000)
    header = seeded.tiny_header(16, 16, frame_count=6)
    start0 = seeded.scene_start(rng, header, 0, codec=LatentCodec.Q8, coding=_ENTROPY)
    start3 = seeded.scene_start(rng, header, 3, codec=LatentCodec.F32, coding=_RAW)
    units: list[Unit] = [
        Metadata((("encoder", "libpromptus conformance"),)),
        start0,
        seeded.keyframe(rng, header, 0, 1, coding=_RAW),
        seeded.keyframe(rng, header, 2, 1, coding=_ENTROPY),
        SceneCut(3),
        start3,
        seeded.keyframe(rng, header, 3, 2, coding=_ENTROPY),
        seeded.keyframe(rng, header, 5, 2, coding=_ENTROPY),
    ]
    return write(header, units)


def base_units() -> list[Unit]:
    """The units of `base_stream()`, header first, index and end left out (as read back)."""
    return stream_units(base_stream())[0]


# ---------------------------------------------------------------- ways of breaking the base stream


def _units(change: Callable[[list[Part]], list[Part]], **options) -> Callable[[], bytes]:
    """A stream of the base units after `change` (index and end rebuilt to match unless `options` say)."""
    return lambda: assemble(change(list(base_units())), **options)


def _field(position: int, **changes) -> Callable[[], bytes]:
    """The base stream with fields of one unit changed."""
    def change(parts: list[Part]) -> list[Part]:
        parts[position] = dataclasses.replace(parts[position], **changes)
        return parts
    return _units(change)


def _header(**changes) -> Callable[[], bytes]:
    return _field(HEADER, **changes)


def _payload(position: int, edit: Callable[[bytes], bytes], *, may_ignore: bool | None = None) -> Callable[[], bytes]:
    """The base stream with one unit's payload bytes edited (and framed with a correct CRC)."""
    return _units(lambda parts: _edited(parts, position, edit, may_ignore=may_ignore))


def _poke(offset: int, data: bytes) -> Callable[[bytes], bytes]:
    """A payload edit that overwrites bytes at `offset`."""
    return lambda payload: payload[:offset] + data + payload[offset + len(data):]


def _bytes(edit: Callable[[bytes], bytes]) -> Callable[[], bytes]:
    """The base stream's bytes, edited."""
    return lambda: edit(base_stream())


def _unit_offsets(data: bytes) -> list[int]:
    """Byte offsets of the units of one valid stream (header first, end last)."""
    return [item.offset for item in read_units(io.BytesIO(data))]


def _split_at(position: int) -> tuple[bytes, bytes]:
    """The base stream's bytes before and from its unit at `position`."""
    data = base_stream()
    offset = _unit_offsets(data)[position]
    return data[:offset], data[offset:]


def _insert(position: int, unit_bytes: bytes) -> Callable[[], bytes]:
    """The base stream with ready unit bytes inserted before its unit at `position` (no index rebuild)."""
    def build() -> bytes:
        head, tail = _split_at(position)
        return head + unit_bytes + tail
    return build


def _raw_unit(header_byte: int, size: bytes, payload: bytes) -> bytes:
    """A unit with any header byte and size coding, and a correct CRC-32C."""
    body = bytes((header_byte,)) + size + payload
    return body + struct.pack("<I", google_crc32c.value(body))


def _blocks(payload: bytes, start: int, counts: tuple[int, ...]) -> list[tuple[int, int]]:
    """(start, end) of consecutive coded_symbols() blocks of `counts` symbols from `start`."""
    spans = []
    for count in counts:
        _, end = decode_symbols(payload, start, count)
        spans.append((start, end))
        start = end
    return spans


def _factor_blocks(payload: bytes, rank: int) -> list[tuple[int, int]]:
    header = base_units()[HEADER]
    return _blocks(payload, _KEY_HEAD, (header.cond_tokens * rank, rank * header.cond_dim))


def _block(position: int, which: int, edit: Callable[[bytes, int], bytes]) -> Callable[[], bytes]:
    """Edit coded block `which` (0: U, 1: V) of the entropy-coded keyframe at `position`.

    `edit(block, n)` returns the new block bytes; n is the block's symbol count.
    """
    def payload_edit(payload: bytes) -> bytes:
        unit = base_units()[position]
        start, end = _factor_blocks(payload, unit.rank)[which]
        n = unit.u.size if which == 0 else unit.v.size
        if payload[start] == 0:
            raise AssertionError("the block to edit is stored, not coded")
        return payload[:start] + edit(payload[start:end], n) + payload[end:]
    return _payload(position, payload_edit)


def _data_size(block: bytes) -> tuple[int, int]:
    """(data_size, offset of data) of a coded block."""
    return decode_leb128(block, 5, 8)


def _with_size(block: bytes, size_bytes: bytes) -> bytes:
    """A coded block with its data_size field replaced by `size_bytes` (data kept)."""
    _, data_at = _data_size(block)
    return block[:5] + size_bytes + block[data_at:]


def _words(block: bytes, edit: Callable[[bytearray], bytes]) -> bytes:
    """A coded block with its data words edited (data_size updated)."""
    _, data_at = _data_size(block)
    data = edit(bytearray(block[data_at:]))
    return block[:5] + encode_leb128(len(data)) + data


def _second_stream(width: int = 16, **header) -> Callable[[], bytes]:
    """The base stream followed by a valid stream whose header differs from it as given."""
    def build() -> bytes:
        spec = StreamSpec(seed=2100, scenes=(SceneSpec(gaps=(2,), rank=1),), width=width, height=16, header=header)
        return base_stream() + write(*spec_units(spec))
    return build


def _f16_latent_with_inf(parts: list[Part]) -> list[Part]:
    start = parts[START3]
    latent = start.latent.astype(np.float16)
    latent[1, 0, 1] = np.inf
    parts[START3] = dataclasses.replace(start, latent_codec=LatentCodec.F16, latent=latent)
    return parts


def _f32_latent_with_nan(parts: list[Part]) -> list[Part]:
    start = parts[START3]
    latent = start.latent.copy()
    latent[0, 1, 0] = np.nan
    parts[START3] = dataclasses.replace(start, latent=latent)
    return parts


def _shift(parts: list[Part], first: int, by: int) -> list[Part]:
    """Frame indices of the units from `first` on moved by `by`."""
    for position in range(first, len(parts)):
        unit = parts[position]
        if isinstance(unit, SceneStart):
            parts[position] = dataclasses.replace(unit, first_frame=unit.first_frame + by)
        elif isinstance(unit, (SceneCut, Keyframe)):
            parts[position] = dataclasses.replace(unit, frame_index=unit.frame_index + by)
    return parts


def _rank(parts: list[Part], position: int, rank: int, coding: Coding = _RAW) -> list[Part]:
    """The keyframe at `position` with constant factors of another rank."""
    header = parts[HEADER]
    parts[position] = dataclasses.replace(parts[position], coding=coding,
                                          u=np.full((header.cond_tokens, rank), 128, np.uint8),
                                          v=np.full((rank, header.cond_dim), 128, np.uint8))
    return parts


#: Bytes of a DCT8 scene start of the base stream before its first band_wide: the head, 4 steps.
_DCT8_BANDS = 6 + 4 * 4


def _dct8(parts: list[Part]) -> list[Part]:
    """The first scene's latent DCT8, entropy coded (a version 1.2 stream)."""
    rng = np.random.RandomState(2001)
    parts[START0] = seeded.scene_start(rng, parts[HEADER], 0, codec=LatentCodec.DCT8, coding=_ENTROPY)
    return parts


def _layered(parts: list[Part]) -> list[Part]:
    """Every keyframe LAYERED (a version 1.1 stream)."""
    for position in (KEY0, KEY2, KEY3, KEY5):
        parts[position] = dataclasses.replace(parts[position], coding=Coding.LAYERED)
    return parts


def _first_layer_only(parts: list[Part], position: int) -> list[Part]:
    """The LAYERED keyframe at `position` with its payload cut after its first layer (its rank unchanged)."""
    unit = parts[position]
    size = len(encode_payload(dataclasses.replace(unit, u=unit.u[:, :1], v=unit.v[:1])))
    return _edited(parts, position, lambda payload: payload[:size])


def _edited(parts: list[Part], position: int, edit: Callable[[bytes], bytes], *,
            may_ignore: bool | None = None) -> list[Part]:
    """`parts` with the payload of the unit at `position` edited (framed with a correct CRC)."""
    unit = parts[position]
    parts[position] = Framed(frame(unit, payload=edit(encode_payload(unit)), may_ignore=may_ignore), unit)
    return parts


def _index_then_metadata() -> bytes:
    body = assemble(base_units(), index=False, end=False)
    index = frame(Index(tuple(_seek_points())))
    return body + index + frame(Metadata((("late", "after the index"),))) + frame(EndOfStream(6, len(body)))


def _seek_points() -> list[IndexEntry]:
    """The index entries of the base stream, as the writer wrote them."""
    return list(read_streams(io.BytesIO(base_stream()))[0].index.entries)


def _index(edit: Callable[[list[IndexEntry]], list[IndexEntry]]) -> Callable[[], bytes]:
    """The base stream with an edited list of index entries."""
    return lambda: assemble(base_units(), index=Index(tuple(edit(_seek_points()))))


def _entry(position: int, *, offset_by: int = 0, **changes) -> Callable[[list[IndexEntry]], list[IndexEntry]]:
    """An index edit: entry `position` with fields changed, its offset moved by `offset_by`."""
    def edit(entries: list[IndexEntry]) -> list[IndexEntry]:
        entry = entries[position]
        entries[position] = dataclasses.replace(entry, offset=entry.offset + offset_by, **changes)
        return entries
    return edit


def _end(index_unit: int = INDEX_UNIT, **changes) -> Callable[[], bytes]:
    """The base stream with its end-of-stream fields changed; index_offset: the unit at `index_unit`."""
    def build() -> bytes:
        head, _ = _split_at(END_UNIT)
        end = EndOfStream(6, _unit_offsets(base_stream())[index_unit])
        return head + frame(dataclasses.replace(end, **changes))
    return build


def _index_count_past_cap() -> bytes:
    body = assemble(base_units(), index=False, end=False)
    index = frame(Index(()), payload=encode_leb128(MAX_INDEX_ENTRIES + 1))
    return body + index + frame(EndOfStream(6, len(body)))


def _metadata(payload: bytes) -> Callable[[], bytes]:
    return _payload(META, lambda _: payload)


def _text(text: str) -> bytes:
    return encode_leb128(len(text.encode())) + text.encode()


def _header_bytes(edit: Callable[[bytes], bytes]) -> Callable[[], bytes]:
    return _payload(HEADER, edit)


def _flip(data: bytes, offset: int) -> bytes:
    """`data` with one bit of the byte at `offset` flipped."""
    offset %= len(data)
    return data[:offset] + bytes((data[offset] ^ 0x10,)) + data[offset + 1:]


def _padded_leb128(value: int) -> bytes:
    """`value` in leb128 with one redundant trailing 0x00 group."""
    coded = bytearray(encode_leb128(value))
    coded[-1] |= 0x80
    return bytes(coded) + b"\x00"


def _without_unit(position: int) -> Callable[[], bytes]:
    """The base stream's bytes without its unit at `position` (nothing rebuilt)."""
    def build() -> bytes:
        data, offsets = base_stream(), _unit_offsets(base_stream())
        return data[:offsets[position]] + data[offsets[position + 1]:]
    return build


def _last_keyframe_moved() -> bytes:
    """The last keyframe at frame 4, not 5, with the index and end-of-stream units written for 5."""
    parts = list(base_units())
    parts[KEY5] = dataclasses.replace(parts[KEY5], frame_index=4)
    return assemble(parts, index=Index(tuple(_seek_points())),
                    end=EndOfStream(6, _unit_offsets(base_stream())[INDEX_UNIT]))


def _second_stream_header(**changes) -> Callable[[], bytes]:
    """The base stream followed by a stream whose sequence header has fields changed (index and end rebuilt)."""
    def build() -> bytes:
        spec = StreamSpec(seed=2100, scenes=(SceneSpec(gaps=(2,), rank=1),), width=16, height=16)
        header, units = spec_units(spec)
        return base_stream() + assemble([dataclasses.replace(header, **changes), *units])
    return build


def _plus_one(word: bytes) -> bytes:
    return struct.pack("<I", (struct.unpack("<I", word)[0] + 1) & 0xFFFFFFFF)


# ---------------------------------------------------------------- the catalogue

_SIZE_PAST_CAP = encode_leb128(MAX_UNIT_SIZE + 1)

INVALID: tuple[InvalidCase, ...] = (
    # §2 file structure
    InvalidCase("SIGNATURE_A_1", "bad_signature", "the first signature byte is 0x8B",
          _bytes(lambda d: bytes((d[0] ^ 1,)) + d[1:])),
    InvalidCase("SIGNATURE_B_1", "bad_signature", "the signature's CR LF became LF (a text-mode transfer)",
          _bytes(lambda d: d[:4] + d[5:])),
    InvalidCase("SIGNATURE_C_1", "bad_signature", "four zero bytes after the end-of-stream unit",
          _bytes(lambda d: d + bytes(4))),
    InvalidCase("SIGNATURE_D_1", "bad_signature", "the bytes 0x8A 'P' 'X' after the end-of-stream unit: they differ "
          "from the signature before the input ends (not a signature cut short)", _bytes(lambda d: d + b"\x8aPX")),
    InvalidCase("MAJOR_A_1", "unsupported_version", "version_major 2", _bytes(lambda d: d[:8] + b"\x02" + d[9:])),
    InvalidCase("TRUNCATED_A_1", "truncated", "the input ends inside a keyframe unit",
          lambda: _split_at(KEY2)[0] + _split_at(KEY2)[1][:40]),
    InvalidCase("TRUNCATED_B_1", "truncated", "the input ends before the end-of-stream unit", lambda: _split_at(END_UNIT)[0]),
    InvalidCase("TRUNCATED_C_1", "truncated", "a second stream that ends inside its signature",
          _bytes(lambda d: d + SIGNATURE[:5])),
    InvalidCase("TRUNCATED_D_1", "truncated", "an empty file", lambda: b""),
    InvalidCase("TRUNCATED_E_1", "truncated", "the input ends inside a unit_size, after its first byte 0x84",
          lambda: _split_at(START0)[0] + bytes((int(UnitType.SCENE_START),)) + b"\x84"),
    InvalidCase("TRUNCATED_F_1", "truncated", "a second stream's signature and version, then the input ends "
          "(before its end-of-stream unit)", _bytes(lambda d: d + SIGNATURE + b"\x01\x00")),
    InvalidCase("CRC_A_1", "crc_mismatch", "one payload bit of a keyframe flipped",
          _bytes(lambda d: _flip(d, _unit_offsets(d)[KEY0] + 30))),
    InvalidCase("CRC_B_1", "crc_mismatch", "the end-of-stream unit's CRC-32C altered", _bytes(lambda d: _flip(d, -1))),
    InvalidCase("CRC_C_1", "crc_mismatch", "an ignorable unit of reserved type 100 with a wrong CRC-32C (checked "
          "before the unit is skipped)", _insert(START0, _flip(_raw_unit(0x80 | 100, b"\x02", b"ab"), -1))),
    # §1.4 leb128, unit_size
    InvalidCase("UNITSIZE_A_1", "size_limit", "a unit_size of 2^25 + 1, above MAX_UNIT_SIZE (the input ends after it)",
          lambda: _split_at(START0)[0] + bytes((int(UnitType.SCENE_START),)) + _SIZE_PAST_CAP),
    InvalidCase("UNITSIZE_B_1", "size_limit", "a unit_size coded in 5 leb128 bytes",
          lambda: _split_at(START0)[0] + bytes((int(UnitType.SCENE_START),)) + b"\x80\x80\x80\x80\x01"),
    InvalidCase("UNITSIZE_C_1", "size_limit", "a scene cut's unit_size coded in 5 bytes 0x84 0x80 0x80 0x80 0x00: "
          "the 4th byte's high bit is size_limit, before the redundant 0x00 is read",
          lambda: _split_at(CUT3)[0] + _raw_unit(int(UnitType.SCENE_CUT), b"\x84\x80\x80\x80\x00", struct.pack("<I", 3))
          + _split_at(START3)[1]),
    InvalidCase("LEB128_A_1", "noncanonical_leb128", "the unit_size of a scene cut coded as 0x84 0x00",
          lambda: _split_at(CUT3)[0] + _raw_unit(int(UnitType.SCENE_CUT), b"\x84\x00", struct.pack("<I", 3))
          + _split_at(START3)[1]),
    InvalidCase("LEB128_B_1", "noncanonical_leb128", "a metadata key_size coded as 0x87 0x00",
          _metadata(b"\x01\x87\x00encoder" + _text("libpromptus conformance"))),
    InvalidCase("LEB128_C_1", "size_limit", "a metadata entry_count coded in 5 bytes 0x81 0x80 0x80 0x80 0x00: "
          "payload leb128() values end within 4 bytes too",
          _metadata(b"\x81\x80\x80\x80\x00" + _text("encoder") + _text("libpromptus conformance"))),
    InvalidCase("LEB128_D_1", "noncanonical_leb128", "a metadata key_size of 65 coded as 0xC1 0x00: the form is "
          "checked before the cap", _metadata(b"\x01\xc1\x00" + b"k" * 65 + _text("v"))),
    # §3 unit types
    InvalidCase("UNITTYPE_A_1", "bad_field", "a unit of type 0", _insert(START0, _raw_unit(0, b"\x00", b""))),
    InvalidCase("UNITTYPE_B_1", "unsupported_unit", "a unit of reserved type 100 with may_ignore 0",
          _insert(START0, _raw_unit(100, b"\x00", b""))),
    InvalidCase("UNITTYPE_C_1", "bad_field", "a unit of type 0 with may_ignore 1",
          _insert(START0, _raw_unit(0x80, b"\x00", b""))),
    InvalidCase("UNKNOWN_C_1", "bad_unit_order", "an ignorable unit of reserved type 8 before the sequence header",
          _insert(HEADER, _raw_unit(0x80 | 8, b"\x00", b""))),
    InvalidCase("UNKNOWN_D_1", "bad_unit_order", "an ignorable unit of reserved type 9 between the index and the "
          "end-of-stream unit", _insert(END_UNIT, _raw_unit(0x80 | 9, b"\x00", b""))),
    InvalidCase("UNKNOWN_B_1", "bad_unit_order", "an ignorable unit of reserved type 8 between a scene cut and its "
          "scene start", _units(lambda p: p[:START3] + [UnknownUnit(8, b"")] + p[START3:])),
    InvalidCase("MAYIGNORE_A_1", "bad_field", "a keyframe with may_ignore 1", _payload(KEY0, lambda p: p, may_ignore=True)),
    InvalidCase("MAYIGNORE_B_1", "bad_field", "a metadata unit with may_ignore 0", _payload(META, lambda p: p, may_ignore=False)),
    # §4 payload sizes
    InvalidCase("PAYLOAD_A_1", "bad_payload_size", "a scene cut payload with one byte after its field (version 1.0)",
          _payload(CUT3, lambda p: p + b"\x00")),
    InvalidCase("PAYLOAD_B_1", "bad_payload_size", "a raw keyframe payload one byte short",
          _payload(KEY0, lambda p: p[:-1])),
    InvalidCase("PAYLOAD_C_1", "bad_payload_size", "a sequence header payload ending inside full_range's field",
          _header_bytes(lambda p: p[:-1])),
    # §10 sequence header
    InvalidCase("MODELNAME_A_1", "bad_field", "model_name_size 0", _header(model_name="")),
    InvalidCase("MODELNAME_B_1", "bad_field", "a model_name of 65 characters", _header(model_name="t" * 65)),
    InvalidCase("MODELNAME_C_1", "bad_field", "model_name 'Tiny' (upper case)", _header(model_name="Tiny")),
    InvalidCase("MODELNAME_D_1", "bad_field", "model_name '-tiny' (starts with '-')", _header(model_name="-tiny")),
    InvalidCase("MODELNAME_E_1", "bad_field", "a model_name byte that is not ASCII (0xE9)",
          _header_bytes(_poke(4, b"\xe9"))),
    InvalidCase("WIDTH_A_1", "bad_field", "width 0", _header(width=0)),
    InvalidCase("WIDTH_B_1", "size_limit", "width 4097", _header(width=4097)),
    InvalidCase("HEIGHT_A_1", "bad_field", "height 0", _header(height=0)),
    InvalidCase("HEIGHT_B_1", "size_limit", "height 4097", _header(height=4097)),
    InvalidCase("RATE_B_1", "bad_field", "fps_num 0", _header(fps_num=0)),
    InvalidCase("RATE_C_1", "size_limit", "fps_num 2^31", _header(fps_num=1 << 31)),
    InvalidCase("RATE_D_1", "bad_field", "fps_den 0", _header(fps_den=0)),
    InvalidCase("RATE_E_1", "size_limit", "fps_den 2^31", _header(fps_den=1 << 31)),
    InvalidCase("FRAMECOUNT_B_1", "size_limit", "frame_count 2^31", _header(frame_count=1 << 31)),
    InvalidCase("FRAMECOUNT_C_1", "frame_count_mismatch", "frame_count 7 for a stream of 6 frames",
          _header(frame_count=7)),
    InvalidCase("CHANNELS_A_1", "bad_field", "latent_channels 0", _header(latent_channels=0)),
    InvalidCase("CHANNELS_B_1", "size_limit", "latent_channels 17", _header(latent_channels=17)),
    InvalidCase("DOWNSAMPLING_A_1", "bad_field", "latent_downsampling 0", _header(latent_downsampling=0)),
    InvalidCase("DOWNSAMPLING_B_1", "bad_field", "latent_downsampling 3", _header(latent_downsampling=3)),
    InvalidCase("MULTIPLE_A_1", "bad_field", "size_multiple 0", _header(size_multiple=0)),
    InvalidCase("MULTIPLE_B_1", "bad_field", "size_multiple 12, not a multiple of latent_downsampling 8",
          _header(size_multiple=12)),
    InvalidCase("MULTIPLE_C_1", "size_limit", "size_multiple 2048", _header(size_multiple=2048)),
    InvalidCase("LATENTSIZE_A_1", "size_limit", "a 16 x 4096 x 4096 latent (downsampling 1): over MAX_UNIT_SIZE - 1024 "
          "as float32", _header(width=4096, height=4096, latent_channels=16, latent_downsampling=1, size_multiple=1)),
    InvalidCase("CONDTOKENS_A_1", "bad_field", "cond_tokens 0", _header(cond_tokens=0)),
    InvalidCase("CONDTOKENS_B_1", "size_limit", "cond_tokens 513", _header(cond_tokens=513)),
    InvalidCase("CONDDIM_A_1", "bad_field", "cond_dim 0", _header(cond_dim=0)),
    InvalidCase("CONDDIM_B_1", "size_limit", "cond_dim 4097", _header(cond_dim=4097)),
    InvalidCase("NOISE_B_1", "bad_field", "noise_algorithm 0", _header(noise_algorithm=0)),
    InvalidCase("NOISE_C_1", "bad_field", "noise_algorithm 2 (reserved)", _header(noise_algorithm=2)),
    InvalidCase("MIX_C_1", "bad_field", "prev_weight NaN", _header(prev_weight=_NAN)),
    InvalidCase("MIX_D_1", "bad_field", "prev_weight -0.25", _header(prev_weight=-0.25)),
    InvalidCase("MIX_E_1", "bad_field", "noise_weight 1.5", _header(noise_weight=1.5)),
    InvalidCase("MIX_F_1", "bad_field", "noise_weight infinity", _header(noise_weight=_INF)),
    InvalidCase("ALPHABAR_B_1", "bad_field", "alpha_bar 0", _header(alpha_bar=0.0)),
    InvalidCase("ALPHABAR_C_1", "bad_field", "alpha_bar 1.0000001 (the next binary32 above 1)",
          _header(alpha_bar=float(np.nextafter(np.float32(1), np.float32(2))))),
    InvalidCase("ALPHABAR_D_1", "bad_field", "alpha_bar NaN", _header(alpha_bar=_NAN)),
    InvalidCase("PREDICTION_C_1", "bad_field", "prediction_type 3 (reserved)", _header(prediction_type=3)),
    InvalidCase("COLOUR_B_1", "bad_field", "full_range 2", _header(full_range=2)),
    # §10 scene start
    InvalidCase("FIRSTFRAME_A_1", "size_limit", "a scene start's first_frame 2^31 - 1",
          _field(START0, first_frame=(1 << 31) - 1)),
    InvalidCase("FIRSTFRAME_B_1", "frame_order", "the first scene starts at frame 1 (its units all one frame later)",
          _units(lambda p: _shift(p, START0, 1))),
    InvalidCase("FIRSTFRAME_C_1", "frame_order", "the second scene starts one frame after the one following the first",
          _units(lambda p: _shift(p, CUT3, 1))),
    InvalidCase("LATENT_G_1", "bad_field", "latent_codec 3 (DCT8, defined in version 1.2) in a version 1.0 stream",
          _payload(START0, _poke(4, b"\x03"))),
    InvalidCase("LATENT_H_1", "bad_field", "a scene start's coding 2 (LAYERED, for keyframes only)",
          _payload(START0, _poke(5, b"\x02"))),
    InvalidCase("LATENT_I_1", "bad_field", "a q8 latent_scale of 0", _payload(START0, _poke(6, struct.pack("<f", 0.0)))),
    InvalidCase("LATENT_J_1", "bad_field", "a q8 latent_scale of -0.03",
          _payload(START0, _poke(11, struct.pack("<f", -0.03)))),
    InvalidCase("LATENT_K_1", "bad_field", "a q8 latent_scale of NaN", _payload(START0, _poke(16, struct.pack("<f", _NAN)))),
    InvalidCase("LATENT_L_1", "bad_field", "an f32 latent value NaN", _units(_f32_latent_with_nan)),
    InvalidCase("LATENT_M_1", "bad_field", "an f16 latent value infinity", _units(_f16_latent_with_inf)),
    InvalidCase("LATENT_Q_1", "bad_field", "version 1.2: latent_codec 4 (reserved)",
          _units(lambda p: _edited(_dct8(p), START0, _poke(4, b"\x04")), minor=2)),
    InvalidCase("LATENT_R_1", "bad_field", "version 1.2: a DCT8 band_wide of 2",
          _units(lambda p: _edited(_dct8(p), START0, _poke(_DCT8_BANDS, b"\x02")), minor=2)),
    InvalidCase("LATENT_S_1", "bad_field", "version 1.2: a DCT8 latent_step of 0",
          _units(lambda p: _edited(_dct8(p), START0, _poke(6, struct.pack("<f", 0.0))), minor=2)),
    InvalidCase("LATENT_T_1", "bad_field", "version 1.2: a DCT8 latent_step of infinity",
          _units(lambda p: _edited(_dct8(p), START0, _poke(10, struct.pack("<f", _INF))), minor=2)),
    InvalidCase("LATENT_U_1", "bad_payload_size", "version 1.2: a DCT8 latent's payload ends after its steps, "
          "before the first band_wide", _units(lambda p: _edited(_dct8(p), START0, lambda b: b[:_DCT8_BANDS]), minor=2)),
    InvalidCase("LATENT_V_1", "bad_field", "a DCT8 first-frame latent in a version 1.1 stream",
          _units(lambda p: _dct8(_layered(p)), minor=1)),
    # §10 scene cut
    InvalidCase("SCENECUT_B_1", "bad_field", "a scene cut at frame 0", _field(CUT3, frame_index=0)),
    InvalidCase("SCENECUT_C_1", "frame_order", "a scene cut at frame 4 before a scene starting at 3",
          _field(CUT3, frame_index=4)),
    InvalidCase("SCENECUT_D_1", "size_limit", "a scene cut at frame 2^31 - 1", _field(CUT3, frame_index=(1 << 31) - 1)),
    InvalidCase("SCENECUT_E_1", "bad_unit_order", "a scene cut before the first scene start",
          _units(lambda p: p[:START0] + [SceneCut(1)] + p[START0:])),
    InvalidCase("SCENECUT_F_1", "bad_unit_order", "a metadata unit between a scene cut and its scene start",
          _units(lambda p: p[:START3] + [Metadata((("k", "v"),))] + p[START3:])),
    InvalidCase("SCENECUT_G_1", "bad_unit_order", "a scene cut at the end of the stream, before the index",
          _units(lambda p: p + [SceneCut(6)])),
    # §10 keyframe
    InvalidCase("KEYFRAME_A_1", "size_limit", "a keyframe at frame 2^31 - 1", _field(KEY2, frame_index=(1 << 31) - 1)),
    InvalidCase("KEYFRAME_B_1", "frame_order", "a keyframe at the frame of the keyframe before it", _field(KEY2, frame_index=0)),
    InvalidCase("KEYFRAME_C_1", "frame_order", "a scene's first keyframe at frame 4, the scene starting at 3",
          _field(KEY3, frame_index=4)),
    InvalidCase("INTERVAL_E_1", "size_limit", "a keyframe interval of 257 (keyframes 3 and 260)",
          _field(KEY5, frame_index=260)),
    InvalidCase("CODING_F_1", "bad_field", "a keyframe's coding 2 (LAYERED) in a version 1.0 stream",
          _payload(KEY0, _poke(5, b"\x02"))),
    InvalidCase("LAYERED_C_1", "bad_payload_size", "version 1.1: a rank-2 LAYERED keyframe's payload ends after "
          "its first layer", _units(lambda p: _first_layer_only(_layered(p), KEY5), minor=1)),
    InvalidCase("LAYERED_D_1", "bad_field", "version 1.1: a scene start's coding 2 (LAYERED, for keyframes only)",
          _units(lambda p: _edited(_layered(p), START0, _poke(5, b"\x02")), minor=1)),
    InvalidCase("VERSION_B_1", "bad_payload_size", "version 1.1: a byte after the last layer of a LAYERED keyframe "
          "(1.1 defines every field of its payloads)", _units(lambda p: _edited(_layered(p), KEY0, lambda b: b + b"\x00"),
                                                                minor=1)),
    InvalidCase("RANK_D_1", "bad_field", "rank 0", _units(lambda p: _rank(p, KEY0, 0))),
    InvalidCase("RANK_E_1", "bad_field", "rank 78, above min(cond_tokens, cond_dim, 255) = 77 (entropy-coded "
          "constant factors)", _units(lambda p: _rank(p, KEY0, 78, _ENTROPY))),
    InvalidCase("RANK_F_1", "rank_mismatch", "a rank-3 keyframe in a scene of rank 1",
          _units(lambda p: _rank(p, KEY2, 3, _ENTROPY))),
    InvalidCase("SCALE_A_1", "bad_field", "u_scale 0", _field(KEY0, u_scale=0.0)),
    InvalidCase("SCALE_B_1", "bad_field", "u_scale -0.5", _field(KEY0, u_scale=-0.5)),
    InvalidCase("SCALE_C_1", "bad_field", "v_scale infinity", _field(KEY2, v_scale=_INF)),
    InvalidCase("SCALE_D_1", "bad_field", "v_scale NaN", _field(KEY2, v_scale=_NAN)),
    # §6 stream structure
    InvalidCase("ORDER_A_1", "bad_unit_order", "a metadata unit before the sequence header",
          _units(lambda p: [p[META], p[HEADER], *p[START0:]])),
    InvalidCase("ORDER_B_1", "bad_unit_order", "a second sequence header", _units(lambda p: [p[HEADER], *p])),
    InvalidCase("ORDER_C_1", "bad_unit_order", "a keyframe before the first scene start",
          _units(lambda p: [p[HEADER], p[META], p[KEY0], p[START0], *p[KEY2:]])),
    InvalidCase("ORDER_D_1", "bad_unit_order", "a scene without keyframes",
          _units(lambda p: [p[HEADER], p[META], p[START0], *p[CUT3:]])),
    InvalidCase("ORDER_E_1", "bad_unit_order", "a metadata unit between the index and the end-of-stream unit",
          _index_then_metadata),
    InvalidCase("ORDER_F_1", "bad_unit_order", "an index unit before the first scene",
          _units(lambda p: p[:START0] + [Index(())] + p[START0:])),
    InvalidCase("ORDER_G_1", "bad_unit_order", "a stream without scenes: header, metadata, end",
          _units(lambda p: p[:START0], index=False, end=EndOfStream(1, 0))),
    # §6 frame counts and the index
    InvalidCase("FRAMECOUNT_D_1", "bad_field", "total_frames 0", _end(frame_count=0)),
    InvalidCase("FRAMECOUNT_E_1", "size_limit", "total_frames 2^31", _end(frame_count=1 << 31)),
    InvalidCase("FRAMECOUNT_F_1", "frame_count_mismatch", "total_frames 5 for a stream of 6 frames", _end(frame_count=5)),
    InvalidCase("FRAMECOUNT_G_1", "frame_count_mismatch", "the last keyframe at frame 4, the index and end units "
          "written for frame 5: rule 7 (total_frames 6) is checked before rule 8 (the index)", _last_keyframe_moved),
    InvalidCase("INDEX_B_1", "bad_index", "an index entry of unit type 3", _index(_entry(3, unit_type=3))),
    InvalidCase("INDEX_C_1", "bad_index", "an index entry's offset one byte off", _index(_entry(2, offset_by=1))),
    InvalidCase("INDEX_D_1", "bad_index", "an index without its last entry", _index(lambda e: e[:-1])),
    InvalidCase("INDEX_E_1", "bad_index", "an index entry with the wrong frame index", _index(_entry(4, frame_index=4))),
    InvalidCase("INDEX_F_1", "bad_index", "index_offset pointing at the unit before the index",
          _end(index_unit=KEY5)),
    InvalidCase("INDEX_G_1", "bad_index", "no index unit but a nonzero index_offset",
          _units(lambda p: p, index=False, end=EndOfStream(6, 100))),
    InvalidCase("INDEX_H_1", "size_limit", "an index entry_count of 2^21 + 1, above its cap (the payload ends "
          "after the count)", _index_count_past_cap),
    InvalidCase("INDEX_I_1", "bad_index", "the last keyframe unit removed, index and end units kept: the index "
          "lists 6 entries for 5 seek points, found at the index unit (before total_frames)", _without_unit(KEY5)),
    # §10 metadata
    InvalidCase("METADATA_B_1", "size_limit", "257 metadata entries",
          _field(META, entries=tuple((f"k{n}", "") for n in range(257)))),
    InvalidCase("METADATA_C_1", "bad_field", "an empty metadata key", _field(META, entries=(("", "v"),))),
    InvalidCase("METADATA_D_1", "size_limit", "a metadata key of 65 bytes", _field(META, entries=(("k" * 65, "v"),))),
    InvalidCase("METADATA_E_1", "bad_field", "metadata key 'Encoder' (upper case)", _field(META, entries=(("Encoder", "v"),))),
    InvalidCase("METADATA_F_1", "bad_field", "metadata key '_encoder' (starts with '_')",
          _field(META, entries=(("_encoder", "v"),))),
    InvalidCase("METADATA_G_1", "size_limit", "a metadata value of 4097 bytes", _field(META, entries=(("k", "x" * 4097),))),
    InvalidCase("METADATA_H_1", "bad_field", "a metadata value that is not UTF-8 (0xFF)",
          _metadata(b"\x01" + _text("encoder") + b"\x01\xff")),
    InvalidCase("METADATA_I_1", "bad_field", "a metadata value holding a UTF-8-coded surrogate (0xED 0xA0 0x80)",
          _metadata(b"\x01" + _text("encoder") + b"\x03\xed\xa0\x80")),
    InvalidCase("METADATA_J_1", "bad_field", "a metadata value holding an overlong UTF-8 form of '/' (0xC0 0xAF)",
          _metadata(b"\x01" + _text("encoder") + b"\x02\xc0\xaf")),
    # §2.1 concatenation
    InvalidCase("CONCAT_B_1", "stream_mismatch", "a second stream of another width (32, not 16)", _second_stream(width=32)),
    InvalidCase("CONCAT_C_1", "stream_mismatch", "a second stream at 25 fps, not 30", _second_stream(fps_num=25)),
    InvalidCase("CONCAT_D_1", "stream_mismatch", "a second stream with an unpinned model_hash",
          _second_stream(model_hash=bytes(32))),
    InvalidCase("CONCAT_E_1", "stream_mismatch", "a second stream at timestep 999, not 49",
          _second_stream(timestep=999)),
    InvalidCase("CONCAT_F_1", "stream_mismatch", "a second stream with size_multiple 32, not 16 (another latent size)",
          _second_stream(size_multiple=32)),
    InvalidCase("CONCAT_G_1", "stream_mismatch", "a second stream with full_range 0, not 1",
          _second_stream(full_range=False)),
    InvalidCase("CONCAT_H_1", "bad_field", "a second stream of width 0: its header's own checks come before the "
          "comparison with the first stream's", _second_stream_header(width=0)),
    # §9 coded_symbols()
    InvalidCase("ENTROPY_A_1", "bad_field", "a coded block's model_type 3", _block(KEY2, 0, lambda b, n: b"\x03" + b[1:])),
    InvalidCase("ENTROPY_B_1", "bad_field", "a coded block's center 65281",
          _block(KEY2, 0, lambda b, n: b[:1] + struct.pack("<H", 65281) + b[3:])),
    InvalidCase("ENTROPY_C_1", "bad_field", "a coded block's scale 0",
          _block(KEY2, 0, lambda b, n: b[:3] + b"\x00\x00" + b[5:])),
    InvalidCase("ENTROPY_D_1", "bad_field", "a coded block's data_size 0", _block(KEY2, 0, lambda b, n: _with_size(b, b"\x00"))),
    InvalidCase("ENTROPY_E_1", "bad_field", "a coded block's data_size not a multiple of 4",
          _block(KEY2, 0, lambda b, n: _with_size(b, encode_leb128(_data_size(b)[0] - 1)))),
    InvalidCase("ENTROPY_F_1", "size_limit", "a coded block's data_size 4n + 20, above 4n + 16",
          _block(KEY2, 0, lambda b, n: _with_size(b, encode_leb128(4 * n + 20)))),
    InvalidCase("ENTROPY_G_1", "size_limit", "a coded block's data_size beyond the end of the payload",
          _block(KEY2, 1, lambda b, n: _with_size(b, encode_leb128(_data_size(b)[0] + 4)))),
    InvalidCase("ENTROPY_H_1", "noncanonical_leb128", "a coded block's data_size with a redundant 0x00 byte",
          _block(KEY2, 0, lambda b, n: _with_size(b, _padded_leb128(_data_size(b)[0])))),
    InvalidCase("ENTROPY_I_1", "size_limit", "a coded block's data_size in 8 leb128 bytes, the last with the high bit",
          _block(KEY2, 0, lambda b, n: _with_size(b, b"\x80" * 8))),
    InvalidCase("ENTROPY_J_1", "bad_field", "a LAPLACE block with center 128 and scale 1: every weight is 0 (W = 0)",
          _block(KEY2, 0, lambda b, n: b"\x01" + struct.pack("<HH", 128, 1) + b[5:])),
    InvalidCase("ENTROPY_K_1", "entropy_error", "a coded block whose last data word is 0",
          _block(KEY2, 0, lambda b, n: _words(b, lambda w: bytes(w[:-4]) + bytes(4)))),
    InvalidCase("ENTROPY_L_1", "entropy_error", "a coded block with an extra data word before the first (left unread)",
          _block(KEY2, 0, lambda b, n: _words(b, lambda w: b"\x01\x00\x00\x00" + bytes(w)))),
    InvalidCase("ENTROPY_M_1", "entropy_error", "a coded block whose last data word is 1 more: the final state is not 1",
          _block(KEY2, 1, lambda b, n: _words(b, lambda w: bytes(w[:-4]) + _plus_one(w[-4:])))),
    InvalidCase("ENTROPY_N_1", "bad_payload_size", "a keyframe payload ending inside a coded block's data_size",
          _block(KEY2, 1, lambda b, n: b[:6])),
    InvalidCase("ENTROPY_O_1", "bad_payload_size", "a STORED block with one symbol missing at the end of the payload",
          _block(KEY2, 1, lambda b, n: b"\x00" + bytes(n - 1))),
)

