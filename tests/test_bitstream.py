"""The `.pmt` container: round trips, concatenation, streaming, damage and every error code."""
from __future__ import annotations

import dataclasses
import io
import math

import numpy as np
import pytest
from conftest import (
    MAX_TINY_RANK,
    RICH_SPEC,
    SMALL_SPEC,
    TINY_HEADER,
    Built,
    SceneSpec,
    StreamSpec,
    assert_unit_equal,
    build_stream,
    crc32c_le,
    expected_tail,
    f32,
    frame,
    frame_raw,
    make_keyframe,
    make_scene_start,
    prefix,
    raw_stream,
    tiny_header,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from libpromptus.bitstream import (
    ERROR_CODES,
    SIGNATURE,
    Coding,
    EndOfStream,
    Index,
    IndexEntry,
    InvalidDataError,
    Keyframe,
    LatentCodec,
    Metadata,
    PredictionType,
    SceneCut,
    SceneStart,
    SequenceHeader,
    StreamWriter,
    UnitType,
    UnknownUnit,
    read_streams,
    read_units,
)
from libpromptus.bitstream.framing import PREFIX_SIZE, UnitSource, frame_unit
from libpromptus.bitstream.leb128 import decode_leb128, encode_leb128
from libpromptus.bitstream.limits import MAX_KEYFRAME_INTERVAL, MAX_UNIT_SIZE
from libpromptus.bitstream.syntax import END_OF_STREAM_UNIT_SIZE, encode_payload

from libpromptus.process.prompts import frame_conditioning

HEADER_UNIT = frame(TINY_HEADER)
AFTER_HEADER = PREFIX_SIZE + len(HEADER_UNIT)      # offset of the unit after the header
SS0 = make_scene_start(0)
KF0 = make_keyframe(0, 2)


def read_all(data: bytes) -> list:
    return list(read_units(io.BytesIO(data)))


def error_of(data: bytes) -> InvalidDataError:
    """Read `data` completely; return the InvalidDataError it must raise."""
    with pytest.raises(InvalidDataError) as info:
        read_all(data)
    assert info.value.code in ERROR_CODES
    return info.value


def assert_code(data: bytes, code: str, offset: int | None = None) -> InvalidDataError:
    err = error_of(data)
    assert err.code == code, str(err)
    if offset is not None:
        assert err.offset == offset, str(err)
    return err


def assert_round_trip(built: Built, index: bool = True) -> list:
    got = read_all(built.data)
    assert len(got) == len(built.units) + (2 if index else 1)
    for item, want in zip(got, built.units):
        assert_unit_equal(item.unit, want)
    for item, want in zip(got[len(built.units):], expected_tail(got, built, index)):
        assert_unit_equal(item.unit, want)
    # Offsets and sizes tile the stream exactly.
    position = PREFIX_SIZE
    for item in got:
        assert item.offset == item.stream_offset == position
        assert item.stream == 0
        position += item.size
    assert position == len(built.data)
    return got


# ---------------------------------------------------------------- leb128


@pytest.mark.parametrize("value, coded", [
    (0, b"\x00"), (1, b"\x01"), (127, b"\x7f"), (128, b"\x80\x01"), (300, b"\xac\x02"),
    (16383, b"\xff\x7f"), (16384, b"\x80\x80\x01"), (MAX_UNIT_SIZE, b"\x80\x80\x80\x10"),
])
def test_leb128_values(value, coded):
    assert encode_leb128(value) == coded
    assert decode_leb128(coded + b"\xff", 0, 4) == (value, len(coded))


@pytest.mark.parametrize("coded, code", [
    (b"\x85\x00", "noncanonical_leb128"), (b"\x80\x00", "noncanonical_leb128"),
    (b"\x80\x80\x80\x80\x01", "size_limit"), (b"\x80", "truncated"), (b"", "truncated"),
])
def test_leb128_errors(coded, code):
    with pytest.raises(InvalidDataError) as info:
        decode_leb128(coded, 0, 4)
    assert info.value.code == code


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("rank", range(1, MAX_TINY_RANK + 1))
@pytest.mark.parametrize("coding", list(Coding), ids=lambda c: c.name.lower())
@pytest.mark.parametrize("codec", list(LatentCodec), ids=lambda c: c.name.lower())
def test_round_trip_every_unit_type(codec, coding, rank):
    spec = StreamSpec(
        scenes=(SceneSpec(gaps=(1, 3), rank=rank, codec=codec, coding=coding),
                SceneSpec(gaps=(2,), rank=rank, codec=codec, coding=coding, cut=True)),
        metadata=(("encoder", "test"), ("title", "Ünïcödé ✓ 日本")),
        unknown=b"\x00\xffopaque", declare_frame_count=True, seed=rank,
    )
    built = build_stream(spec)
    got = assert_round_trip(built)
    kinds = {type(item.unit) for item in got}
    assert kinds == {SequenceHeader, UnknownUnit, Metadata, SceneStart, Keyframe, SceneCut, Index, EndOfStream}
    assert [item.unit_type for item in got if isinstance(item.unit, UnknownUnit)] == [100]
    scene = next(item.unit for item in got if isinstance(item.unit, SceneStart))
    assert scene.latent.dtype == {LatentCodec.F32: np.float32, LatentCodec.F16: np.float16,
                                  LatentCodec.Q8: np.uint8}[codec]
    assert all(item.unit.rank == rank for item in got if isinstance(item.unit, Keyframe))
    assert got[-1].unit == EndOfStream(5 + 3, got[-2].stream_offset)


def test_round_trip_without_index_and_metadata():
    built = build_stream(StreamSpec(index=False, metadata=None))
    got = assert_round_trip(built, index=False)
    assert got[-1].unit == EndOfStream(4, 0)
    assert [type(item.unit) for item in got] == [SequenceHeader, SceneStart, Keyframe, Keyframe, EndOfStream]


def test_entropy_coding_is_smaller_for_peaked_symbols():
    """Entropy-coded factors of a low-spread keyframe take fewer bytes than stored ones."""
    base = make_keyframe(0, MAX_TINY_RANK, Coding.RAW)
    u = np.full(base.u.shape, 128, np.uint8)
    u[0, 0] = 129
    v = np.full(base.v.shape, 127, np.uint8)
    raw = dataclasses.replace(base, u=u, v=v)
    coded = dataclasses.replace(raw, coding=Coding.ENTROPY)
    assert len(encode_payload(coded)) < len(encode_payload(raw)) == 16 + 5 * 5 + 5 * 7
    for unit in (raw, coded):
        assert_unit_equal(read_all(raw_stream([TINY_HEADER, SS0, unit]))[2].unit, unit)


def test_read_streams_groups_units(rich_stream):
    [stream] = read_streams(io.BytesIO(rich_stream.data))
    assert stream.size == len(rich_stream.data)
    assert stream.first_frame == 0
    assert stream.frame_count == rich_stream.frame_count == 9
    assert stream.header == rich_stream.header
    assert stream.metadata == [("encoder", "libpromptus tests"), ("note", "Grüße ✓")]
    assert [s.first_frame for s in stream.scenes] == [0, 4]
    assert [s.last_frame for s in stream.scenes] == [3, 8]
    assert [s.cut is not None for s in stream.scenes] == [False, True]
    assert [[k.unit.frame_index for k in s.keyframes] for s in stream.scenes] == [[0, 2, 3], [4, 8]]
    assert stream.index is not None and len(stream.index.entries) == 7
    assert stream.units[-1].size == END_OF_STREAM_UNIT_SIZE


def test_read_units_from_path(tmp_path, small_stream):
    path = tmp_path / "a.pmt"
    path.write_bytes(small_stream.data)
    assert [type(i.unit) for i in read_units(str(path))] == [type(i.unit) for i in read_all(small_stream.data)]
    assert read_streams(path)[0].size == len(small_stream.data)


def test_dequantized_latent_q8():
    scene = SceneStart(0, LatentCodec.Q8, Coding.RAW,
                       np.arange(16, dtype=np.uint8).reshape(4, 2, 2) * 10,
                       (0.5, 1.0, 0.25, 2.0), (0, 10, 255, 40))
    want = np.array([[[0, 5], [10, 15]], [[30, 40], [50, 60]], [[-43.75, -41.25], [-38.75, -36.25]],
                     [[160, 180], [200, 220]]], np.float32)
    got = scene.dequantized_latent()
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)


# ---------------------------------------------------------------- property test

_KEY = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,11}", fullmatch=True)
_SCENE = st.builds(
    SceneSpec,
    gaps=st.lists(st.integers(1, MAX_KEYFRAME_INTERVAL), max_size=3).map(tuple),
    rank=st.integers(1, MAX_TINY_RANK),
    codec=st.sampled_from(list(LatentCodec)),
    coding=st.sampled_from(list(Coding)),
    keyframe_codings=st.lists(st.sampled_from(list(Coding)), max_size=3).map(tuple),
    cut=st.booleans(),
)
_SPEC = st.builds(
    StreamSpec,
    scenes=st.lists(_SCENE, min_size=1, max_size=3).map(tuple),
    metadata=st.none() | st.lists(st.tuples(_KEY, st.text(max_size=12)), max_size=3).map(tuple),
    unknown=st.none() | st.binary(max_size=8),
    index=st.booleans(),
    declare_frame_count=st.booleans(),
    seed=st.integers(0, 2**16),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=_SPEC)
def test_property_round_trip_and_determinism(spec):
    built = build_stream(spec)
    got = assert_round_trip(built, index=spec.index)
    assert got[-1].unit.frame_count == sum(sum(s.gaps) + 1 for s in spec.scenes)
    assert build_stream(spec).data == built.data
    [stream] = read_streams(io.BytesIO(built.data))
    assert [len(s.keyframes) for s in stream.scenes] == [len(s.gaps) + 1 for s in spec.scenes]
    assert [s.cut is not None for s in stream.scenes] == [s.cut and n > 0 for n, s in enumerate(spec.scenes)]


# ---------------------------------------------------------------- concatenation


def test_concatenation_reads_as_two_streams():
    a = build_stream(RICH_SPEC)
    b = build_stream(StreamSpec(scenes=(SceneSpec(gaps=(5,), codec=LatentCodec.F32, coding=Coding.ENTROPY),),
                                seed=9, header={"noise_seed": 7}))
    data = a.data + b.data
    streams = read_streams(io.BytesIO(data))
    assert len(streams) == 2
    assert [s.first_frame for s in streams] == [0, 9]
    assert [s.frame_count for s in streams] == [9, 6]
    assert [s.size for s in streams] == [len(a.data), len(b.data)]
    items = read_all(data)
    assert [i.stream for i in items] == [0] * (len(a.units) + 2) + [1] * (len(b.units) + 2)
    second = items[len(a.units) + 2]
    assert isinstance(second.unit, SequenceHeader)
    assert (second.offset, second.stream_offset) == (len(a.data) + PREFIX_SIZE, PREFIX_SIZE)
    # Index offsets of the second stream count from its own signature.
    assert items[-1].unit.index_offset == items[-2].stream_offset == items[-2].offset - len(a.data)
    # Frame indices continue across the streams.
    assert [f for f, _ in frame_conditioning(streams)] == list(range(15))


def test_concatenation_of_the_same_stream_three_times(small_stream):
    streams = read_streams(io.BytesIO(small_stream.data * 3))
    assert [s.first_frame for s in streams] == [0, 3, 6]


@pytest.mark.parametrize("change", [{"width": 24}, {"height": 8}, {"fps_num": 25}, {"fps_den": 2},
                                    {"model_name": "other"}, {"model_hash": bytes(32)}, {"cond_tokens": 6},
                                    {"timestep": 500}, {"size_multiple": 16}, {"prev_weight": 0.5},
                                    {"prediction_type": PredictionType.SAMPLE}, {"full_range": False}])
def test_concatenation_mismatch(change, small_stream):
    """SPEC.md §2.1: only frame_count and noise_seed may differ between the streams of a file."""
    other = build_stream(dataclasses.replace(SMALL_SPEC, header=change))
    err = assert_code(small_stream.data + other.data, "stream_mismatch", offset=len(small_stream.data) + PREFIX_SIZE)
    (name,) = change
    assert f"a concatenated stream's {name} " in err.message


def test_concatenation_may_change_the_noise_seed_and_frame_count(small_stream):
    other = build_stream(dataclasses.replace(SMALL_SPEC, header={"noise_seed": 1}, scenes=SMALL_SPEC.scenes * 2))
    streams = read_streams(io.BytesIO(small_stream.data + other.data))
    assert [s.header.noise_seed for s in streams] == [small_stream.header.noise_seed, 1]
    assert streams[1].header.frame_count == 2 * streams[0].header.frame_count


def test_bytes_after_a_stream(small_stream):
    assert_code(small_stream.data + b"garbage!!!", "bad_signature", offset=len(small_stream.data))
    assert_code(small_stream.data + SIGNATURE[:5], "truncated", offset=len(small_stream.data))
    assert_code(small_stream.data + prefix(), "truncated")


# ---------------------------------------------------------------- pipes


class OneByteReader:
    """A pipe-like source: read() returns at most one byte, and counts what it gave."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.position = 0
        self.calls = 0

    def read(self, size: int = -1) -> bytes:
        self.calls += 1
        if size == 0:
            return b""
        chunk = self.data[self.position:self.position + 1]
        self.position += len(chunk)
        return chunk


def test_pipe_one_byte_per_read(rich_stream, small_stream):
    data = rich_stream.data + small_stream.data
    pipe = OneByteReader(data)
    got = list(read_units(pipe))
    want = read_all(data)
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert (a.offset, a.size, a.stream) == (b.offset, b.size, b.stream)
        assert_unit_equal(a.unit, b.unit)
    assert pipe.position == len(data)


def test_reader_never_reads_ahead(rich_stream, small_stream):
    """Each unit is yielded as soon as its last byte (its CRC) has been read."""
    data = rich_stream.data + small_stream.data
    pipe = OneByteReader(data)
    for item in read_units(pipe):
        assert pipe.position == item.offset + item.size


# ---------------------------------------------------------------- damage


@pytest.mark.parametrize("spec", [SMALL_SPEC, RICH_SPEC], ids=["small", "rich"])
def test_every_bit_flip_is_detected(spec):
    built = build_stream(spec)
    data = built.data
    reference = read_all(data)
    for i in range(len(data)):
        for bit in range(8):
            damaged = bytearray(data)
            damaged[i] ^= 1 << bit
            if i == len(SIGNATURE) + 1:
                # The minor version: a 1.x stream with the same units is still valid.
                got = read_all(bytes(damaged))
                assert len(got) == len(reference)
                for a, b in zip(got, reference):
                    assert_unit_equal(a.unit, b.unit)
                continue
            try:
                read_all(bytes(damaged))
            except InvalidDataError as err:
                code = err.code
            else:
                pytest.fail(f"flipping bit {bit} of byte {i} went unnoticed")
            if i < len(SIGNATURE):
                assert code == "bad_signature", (i, bit)
            elif i == len(SIGNATURE):
                assert code == "unsupported_version", (i, bit)
            else:
                assert code in {"crc_mismatch", "truncated", "noncanonical_leb128", "size_limit"}, (i, bit, code)


@pytest.mark.parametrize("spec", [SMALL_SPEC, RICH_SPEC], ids=["small", "rich"])
def test_every_truncation_is_detected(spec):
    data = build_stream(spec).data
    for cut in range(len(data)):
        err = assert_code(data[:cut], "truncated")
        assert err.offset is not None and err.offset <= cut


def test_truncated_concatenation(small_stream):
    data = small_stream.data * 2
    for cut in range(len(data)):
        if cut == len(small_stream.data):
            assert len(read_streams(io.BytesIO(data[:cut]))) == 1
        else:
            assert_code(data[:cut], "truncated")


def _raw_units(data: bytes):
    source = UnitSource(io.BytesIO(data))
    assert source.read_prefix() == 0
    units = []
    while source.position < len(data):
        units.append(source.read_unit())
    return units


def test_payload_damage_with_valid_crc_raises_only_invalid_data(small_stream):
    """Damage that the CRC cannot see (recomputed) still raises nothing but InvalidDataError."""
    units = _raw_units(small_stream.data)
    valid = 0
    for n, raw in enumerate(units):
        for i in range(len(raw.payload)):
            for mask in (0x01, 0x10, 0x80, 0xFF):
                payload = bytearray(raw.payload)
                payload[i] ^= mask
                unit = frame_unit(raw.unit_type, bytes(payload), raw.may_ignore)
                data = prefix() + b"".join(
                    unit if k == n else frame_unit(u.unit_type, u.payload, u.may_ignore) for k, u in enumerate(units))
                try:
                    read_all(data)
                    valid += 1
                except InvalidDataError as err:
                    assert err.code in ERROR_CODES
    assert valid > 0   # e.g. a changed factor value is a valid stream


@pytest.mark.parametrize("length", [1, 7, 8, 10, 11, 64, 300])
@pytest.mark.parametrize("seed", range(5))
def test_random_bytes(length, seed):
    rng = np.random.default_rng([seed, length])
    data = rng.integers(0, 256, length, dtype=np.uint8).tobytes()
    error_of(data)
    # After a valid signature and version, random units fail too.
    error_of(prefix() + data)
    error_of(prefix() + HEADER_UNIT + data)


def test_empty_input():
    assert_code(b"", "truncated", offset=0)


# ---------------------------------------------------------------- error paths, one code each


def test_bad_signature():
    assert_code(b"GIF89a" + bytes(300), "bad_signature", offset=0)
    # Text-mode damage ("\r\n" -> "\n") breaks the signature.
    assert_code(SIGNATURE.replace(b"\r\n", b"\n") + b"\x01\x00" + HEADER_UNIT, "bad_signature", offset=0)


@pytest.mark.parametrize("major", [0, 2, 255])
def test_unsupported_version(major):
    data = raw_stream([TINY_HEADER, SS0, KF0], major=major)
    err = assert_code(data, "unsupported_version", offset=0)
    assert f"{major}.0" in err.message


def test_crc_mismatch():
    data = bytearray(raw_stream([TINY_HEADER, SS0, KF0]))
    data[AFTER_HEADER - 1] ^= 0x01       # the header unit's last CRC byte
    assert_code(bytes(data), "crc_mismatch", offset=PREFIX_SIZE)


class LazySource:
    """Serves `head`, then zeros without end; records how much was asked for."""

    def __init__(self, head: bytes) -> None:
        self.head = head
        self.position = 0

    def read(self, size: int = -1) -> bytes:
        assert size >= 0, "the reader must not read to the end of a source"
        if self.position < len(self.head):
            chunk = self.head[self.position:self.position + size]
        else:
            chunk = bytes(size)
        self.position += len(chunk)
        return chunk


@pytest.mark.parametrize("size_bytes", [encode_leb128(MAX_UNIT_SIZE + 1), encode_leb128((1 << 28) - 1),
                                        b"\x80\x80\x80\x80\x01"])
def test_unit_size_above_cap_is_refused_before_reading_the_payload(size_bytes):
    head = prefix() + b"\x01" + size_bytes
    source = LazySource(head)
    with pytest.raises(InvalidDataError) as info:
        read_all_source(source)
    assert info.value.code == "size_limit"
    assert info.value.offset == PREFIX_SIZE
    assert source.position <= len(head)


def read_all_source(source) -> list:
    return list(read_units(source))


def test_unit_size_at_the_cap_is_read():
    """Exactly MAX_UNIT_SIZE is allowed: the payload is read (and its CRC found wrong)."""
    head = prefix() + b"\x01" + encode_leb128(MAX_UNIT_SIZE)
    source = LazySource(head)
    with pytest.raises(InvalidDataError) as info:
        read_all_source(source)
    assert info.value.code == "crc_mismatch"
    assert source.position == len(head) + MAX_UNIT_SIZE + 4


@pytest.mark.parametrize("change, code", [
    ({"width": 5000}, "size_limit"), ({"height": 4097}, "size_limit"), ({"cond_tokens": 513}, "size_limit"),
    ({"cond_dim": 4097}, "size_limit"), ({"latent_channels": 17}, "size_limit"),
    ({"size_multiple": 2048}, "size_limit"),
    ({"width": 0}, "bad_field"), ({"fps_den": 0}, "bad_field"), ({"latent_channels": 0}, "bad_field"),
    ({"noise_algorithm": 9}, "bad_field"), ({"noise_algorithm": 0}, "bad_field"),
    ({"prediction_type": 3}, "bad_field"), ({"full_range": 2}, "bad_field"),
    ({"latent_downsampling": 3}, "bad_field"), ({"size_multiple": 12}, "bad_field"),
    ({"model_name": "Tiny"}, "bad_field"), ({"model_name": ""}, "bad_field"),
    ({"prev_weight": 1.5}, "bad_field"), ({"noise_weight": math.nan}, "bad_field"),
    ({"alpha_bar": 0.0}, "bad_field"), ({"alpha_bar": math.inf}, "bad_field"),
])
def test_header_field_errors(change, code):
    header = dataclasses.replace(TINY_HEADER, **change)
    assert_code(prefix() + frame(header), code, offset=PREFIX_SIZE)


def test_noncanonical_leb128():
    payload = encode_payload(TINY_HEADER)
    canonical = encode_leb128(len(payload))
    padded = canonical[:-1] + bytes((canonical[-1] | 0x80, 0x00))
    assert_code(prefix() + frame_raw(0x01, padded, payload), "noncanonical_leb128", offset=PREFIX_SIZE)
    assert_code(prefix() + frame_raw(0x01, b"\x85\x00", bytes(5)), "noncanonical_leb128", offset=PREFIX_SIZE)


@pytest.mark.parametrize("unit_type", [8, 100, 127])
def test_unsupported_unit(unit_type):
    data = raw_stream([TINY_HEADER, frame(UnknownUnit(unit_type, b"abc"), may_ignore=False), SS0, KF0])
    assert_code(data, "unsupported_unit", offset=AFTER_HEADER)


@pytest.mark.parametrize("unit_type", [8, 100, 127])
def test_unknown_ignorable_unit_is_skipped(unit_type):
    unknown = UnknownUnit(unit_type, b"\x00future\xff")
    units = [TINY_HEADER, unknown, SS0, unknown, KF0, unknown, make_keyframe(3, 2), unknown]
    got = read_all(raw_stream(units, index=True))
    assert [type(i.unit) for i in got] == [SequenceHeader, UnknownUnit, SceneStart, UnknownUnit, Keyframe,
                                           UnknownUnit, Keyframe, UnknownUnit, Index, EndOfStream]
    assert all(i.unit == unknown and i.unit_type == unit_type for i in got if isinstance(i.unit, UnknownUnit))
    assert got[-1].unit.frame_count == 4


def test_unit_type_zero_is_forbidden():
    data = raw_stream([TINY_HEADER, frame(UnknownUnit(0, b""), may_ignore=True), SS0, KF0])
    assert_code(data, "bad_field", offset=AFTER_HEADER)


def test_bad_unit_order_keyframe_before_scene_start():
    assert_code(raw_stream([TINY_HEADER, KF0, SS0]), "bad_unit_order", offset=AFTER_HEADER)


@pytest.mark.parametrize("first", [SS0, Metadata((("a", "b"),)), KF0, EndOfStream(1)], ids=lambda u: type(u).__name__)
def test_bad_unit_order_header_not_first(first):
    assert_code(raw_stream([first, TINY_HEADER, SS0, KF0]), "bad_unit_order", offset=PREFIX_SIZE)


@pytest.mark.parametrize("late", [make_keyframe(1, 2), Metadata((("a", "b"),)), SceneCut(1)],
                         ids=lambda u: type(u).__name__)
def test_bad_unit_order_unit_after_index(late):
    index = Index((IndexEntry(UnitType.SCENE_START, 0, AFTER_HEADER),
                   IndexEntry(UnitType.KEYFRAME, 0, AFTER_HEADER + len(frame(SS0)))))
    data = raw_stream([TINY_HEADER, SS0, KF0, frame(index), late])
    assert_code(data, "bad_unit_order", offset=AFTER_HEADER + len(frame(SS0)) + len(frame(KF0)) + len(frame(index)))


@pytest.mark.parametrize("units, end", [
    ([TINY_HEADER, SS0, KF0, TINY_HEADER], True),                               # a second header
    ([TINY_HEADER, SS0, KF0, SceneCut(1), make_keyframe(1, 2)], True),          # cut not followed by a scene
    ([TINY_HEADER, SceneCut(1), SS0, KF0], True),                               # cut before the first scene
    ([TINY_HEADER, SS0, make_scene_start(0), KF0], True),                       # a scene without keyframes
    ([TINY_HEADER, SS0], EndOfStream(1)),                                       # a stream without keyframes
    ([TINY_HEADER], EndOfStream(1)),
    ([TINY_HEADER, SS0, KF0, SceneCut(1)], EndOfStream(1)),                     # a cut at the end
    ([TINY_HEADER, Index(())], True),                                           # index before any scene
])
def test_bad_unit_order_other(units, end):
    assert_code(raw_stream(units, end=end), "bad_unit_order")


def test_bad_field_may_ignore():
    assert_code(raw_stream([TINY_HEADER, SS0, frame(KF0, may_ignore=True)]), "bad_field",
                offset=AFTER_HEADER + len(frame(SS0)))
    assert_code(raw_stream([TINY_HEADER, frame(Metadata((("a", "b"),)), may_ignore=False), SS0, KF0]), "bad_field",
                offset=AFTER_HEADER)
    assert_code(prefix() + frame(TINY_HEADER, may_ignore=True), "bad_field", offset=PREFIX_SIZE)


def _keyframe_bytes(**fields) -> bytes:
    """KF0's payload with some head fields replaced (rank changes the factor sizes)."""
    kf = dataclasses.replace(KF0, **{k: v for k, v in fields.items() if k != "rank"})
    if "rank" in fields:
        r = fields["rank"]
        kf = dataclasses.replace(kf, u=np.zeros((5, r), np.uint8), v=np.zeros((r, 7), np.uint8))
    return frame(kf)


@pytest.mark.parametrize("fields, code", [
    ({"rank": 0}, "bad_field"), ({"rank": 6}, "bad_field"), ({"u_scale": 0.0}, "bad_field"),
    ({"v_scale": -0.5}, "bad_field"), ({"u_scale": math.nan}, "bad_field"), ({"v_scale": math.inf}, "bad_field"),
    ({"coding": 2}, "bad_field"), ({"frame_index": (1 << 31) - 1}, "size_limit"),
], ids=str)
def test_bad_field_keyframe(fields, code):
    data = raw_stream([TINY_HEADER, SS0, _keyframe_bytes(**fields)])
    assert_code(data, code, offset=AFTER_HEADER + len(frame(SS0)))


@pytest.mark.parametrize("unit", [
    SceneStart(0, LatentCodec.F32, Coding.RAW, np.full((4, 2, 2), np.nan, np.float32)),
    SceneStart(0, LatentCodec.F16, Coding.ENTROPY, np.full((4, 2, 2), np.inf, np.float16)),
    SceneStart(0, LatentCodec.Q8, Coding.RAW, np.zeros((4, 2, 2), np.uint8), (1.0, 0.0, 1.0, 1.0), (0,) * 4),
    SceneStart(0, LatentCodec.Q8, Coding.RAW, np.zeros((4, 2, 2), np.uint8), (1.0, math.nan, 1.0, 1.0), (0,) * 4),
    # latent_codec 3, then coding 2 (payload bytes 4 and 5)
    frame_raw(UnitType.SCENE_START, encode_leb128(70), encode_payload(SS0)[:4] + b"\x03" + encode_payload(SS0)[5:]),
    frame_raw(UnitType.SCENE_START, encode_leb128(70), encode_payload(SS0)[:5] + b"\x02" + encode_payload(SS0)[6:]),
], ids=["nan", "inf-f16", "zero-q-scale", "nan-q-scale", "codec-3", "coding-2"])
def test_bad_field_scene_start(unit):
    assert len(encode_payload(SS0)) == 70
    assert_code(raw_stream([TINY_HEADER, unit, KF0], end=EndOfStream(1)), "bad_field", offset=AFTER_HEADER)


@pytest.mark.parametrize("entries", [(("Encoder", "x"),), (("", "x"),), (("a b", "x"),), (("ok", "x"), ("é", "y"))],
                         ids=str)
def test_bad_field_metadata_key(entries):
    assert_code(raw_stream([TINY_HEADER, Metadata(entries), SS0, KF0]), "bad_field", offset=AFTER_HEADER)


def test_bad_field_metadata_not_utf8():
    payload = b"\x01\x01k\x02\xff\xfe"          # one entry: key "k", value bytes ff fe
    data = raw_stream([TINY_HEADER, frame_raw(0x80 | UnitType.METADATA, encode_leb128(len(payload)), payload),
                       SS0, KF0])
    assert_code(data, "bad_field", offset=AFTER_HEADER)


def test_bad_payload_size_trailing_byte():
    kf_offset = AFTER_HEADER + len(frame(SS0))
    units = [TINY_HEADER, SS0, frame(KF0, extra=b"\x00")]
    assert_code(raw_stream(units, end=EndOfStream(1)), "bad_payload_size", offset=kf_offset)
    # A 1.1 stream may append fields this decoder does not know: they are skipped.
    got = read_all(raw_stream(units, minor=1, end=EndOfStream(1)))
    assert_unit_equal(got[2].unit, KF0)


@pytest.mark.parametrize("unit", [TINY_HEADER, SS0, KF0, SceneCut(1), Metadata((("a", "b"),)), EndOfStream(1)],
                         ids=lambda u: type(u).__name__)
def test_trailing_byte_in_every_unit_type(unit):
    ss1 = make_scene_start(1)
    units = {
        SequenceHeader: [frame(TINY_HEADER, extra=b"\x07"), SS0, KF0],
        SceneStart: [TINY_HEADER, frame(SS0, extra=b"\x07"), KF0],
        Keyframe: [TINY_HEADER, SS0, frame(KF0, extra=b"\x07")],
        SceneCut: [TINY_HEADER, SS0, KF0, frame(SceneCut(1), extra=b"\x07"), ss1, make_keyframe(1, 2)],
        Metadata: [TINY_HEADER, frame(Metadata((("a", "b"),)), extra=b"\x07"), SS0, KF0],
        EndOfStream: [TINY_HEADER, SS0, KF0, frame(EndOfStream(1), extra=b"\x07")],
    }[type(unit)]
    end = False if isinstance(unit, EndOfStream) else EndOfStream(2 if isinstance(unit, SceneCut) else 1)
    assert_code(raw_stream(units, end=end), "bad_payload_size")
    got = read_all(raw_stream(units, minor=1, end=end))
    assert isinstance(got[-1].unit, EndOfStream)


@pytest.mark.parametrize("unit", [TINY_HEADER, SS0, make_scene_start(0, LatentCodec.Q8, Coding.ENTROPY), KF0,
                                  make_keyframe(0, 2, Coding.ENTROPY), EndOfStream(1)],
                         ids=["header", "scene", "scene-q8-entropy", "keyframe", "keyframe-entropy", "end"])
def test_bad_payload_size_short_payload(unit):
    payload = encode_payload(unit)[:-1]
    short = frame_raw(_kind(unit), encode_leb128(len(payload)), payload)
    if isinstance(unit, SequenceHeader):
        data = prefix() + short
    elif isinstance(unit, EndOfStream):
        data = raw_stream([TINY_HEADER, SS0, KF0, short], end=False)
    elif isinstance(unit, SceneStart):
        data = raw_stream([TINY_HEADER, short, KF0])
    else:
        data = raw_stream([TINY_HEADER, SS0, short])
    err = error_of(data)
    assert err.code in ({"bad_payload_size", "entropy_error"} if getattr(unit, "coding", 0) else {"bad_payload_size"})


def _kind(unit) -> int:
    return {SequenceHeader: 1, SceneStart: 2, SceneCut: 3, Keyframe: 4, Metadata: 0x85, Index: 0x86,
            EndOfStream: 7}[type(unit)]


def test_frame_order_second_scene_at_wrong_frame():
    units = [TINY_HEADER, SS0, KF0, make_keyframe(2, 2), make_scene_start(4), make_keyframe(4, 2)]
    offset = AFTER_HEADER + len(frame(SS0)) + len(frame(KF0)) + len(frame(make_keyframe(2, 2)))
    assert_code(raw_stream(units), "frame_order", offset=offset)
    # The right first frame (3) is accepted.
    units[4:] = [make_scene_start(3), make_keyframe(3, 2)]
    assert read_all(raw_stream(units))[-1].unit.frame_count == 4


@pytest.mark.parametrize("frames", [(0, 0), (0, 5, 4), (0, 5, 5)])
def test_frame_order_keyframes_not_increasing(frames):
    assert_code(raw_stream([TINY_HEADER, SS0, *(make_keyframe(f, 2) for f in frames)]), "frame_order")


def test_frame_order_other():
    # The first scene starts at frame 0, and its first keyframe is at the scene's first frame.
    assert_code(raw_stream([TINY_HEADER, make_scene_start(1), make_keyframe(1, 2)]), "frame_order")
    assert_code(raw_stream([TINY_HEADER, SS0, make_keyframe(1, 2)]), "frame_order")
    # A scene cut names the frame its scene starts at.
    assert_code(raw_stream([TINY_HEADER, SS0, KF0, SceneCut(2), make_scene_start(1), make_keyframe(1, 2)]),
                "frame_order")


def test_keyframe_interval_cap():
    ok = raw_stream([TINY_HEADER, SS0, KF0, make_keyframe(MAX_KEYFRAME_INTERVAL, 2)])
    assert read_all(ok)[-1].unit.frame_count == MAX_KEYFRAME_INTERVAL + 1
    assert_code(raw_stream([TINY_HEADER, SS0, KF0, make_keyframe(MAX_KEYFRAME_INTERVAL + 1, 2)]), "size_limit")


def test_rank_mismatch():
    offset = AFTER_HEADER + len(frame(SS0)) + len(frame(KF0))
    assert_code(raw_stream([TINY_HEADER, SS0, KF0, make_keyframe(1, 3)]), "rank_mismatch", offset=offset)
    # A new scene may change the rank.
    units = [TINY_HEADER, SS0, KF0, make_scene_start(1), make_keyframe(1, 3)]
    assert [i.unit.rank for i in read_all(raw_stream(units)) if isinstance(i.unit, Keyframe)] == [2, 3]


def _indexed(entries=None, index_offset_delta=0) -> bytes:
    body = [TINY_HEADER, SS0, KF0]
    good = [IndexEntry(UnitType.SCENE_START, 0, AFTER_HEADER),
            IndexEntry(UnitType.KEYFRAME, 0, AFTER_HEADER + len(frame(SS0)))]
    index = Index(tuple(good if entries is None else entries(good)))
    index_offset = AFTER_HEADER + len(frame(SS0)) + len(frame(KF0))
    return raw_stream(body, index=index, end=EndOfStream(1, index_offset + index_offset_delta))


def test_bad_index():
    assert len(read_all(_indexed())) == 5
    index_offset = AFTER_HEADER + len(frame(SS0)) + len(frame(KF0))
    end_offset = index_offset + len(frame(Index(tuple([IndexEntry(UnitType.KEYFRAME, 0, 0)] * 2))))
    wrong_offset = lambda g: [g[0], dataclasses.replace(g[1], offset=g[1].offset + 1)]  # noqa: E731
    assert_code(_indexed(wrong_offset), "bad_index", offset=end_offset)
    assert_code(_indexed(lambda g: g[:1]), "bad_index")                        # a keyframe missing
    assert_code(_indexed(lambda g: [g[1], g[0]]), "bad_index")                 # out of order
    assert_code(_indexed(lambda g: [g[0], dataclasses.replace(g[1], frame_index=1)]), "bad_index")
    assert_code(_indexed(index_offset_delta=1), "bad_index")                   # end points elsewhere
    assert_code(raw_stream([TINY_HEADER, SS0, KF0], end=EndOfStream(1, 40)), "bad_index")   # no index unit


def test_bad_index_entry_type():
    payload = bytearray(encode_payload(Index((IndexEntry(UnitType.SCENE_START, 0, AFTER_HEADER),))))
    payload[1] = UnitType.SCENE_CUT
    unit = frame_raw(0x80 | UnitType.INDEX, encode_leb128(len(payload)), bytes(payload))
    index_offset = AFTER_HEADER + len(frame(SS0)) + len(frame(KF0))
    data = raw_stream([TINY_HEADER, SS0, KF0, unit], end=EndOfStream(1, index_offset))
    assert_code(data, "bad_index", offset=index_offset)


def test_frame_count_mismatch():
    units = [SS0, KF0, make_keyframe(4, 2)]
    assert read_all(raw_stream([tiny_header(frame_count=5), *units]))[-1].unit.frame_count == 5
    assert read_all(raw_stream([tiny_header(frame_count=0), *units]))[-1].unit.frame_count == 5
    for declared in (4, 6):
        assert_code(raw_stream([tiny_header(frame_count=declared), *units]), "frame_count_mismatch")
    for end in (EndOfStream(4), EndOfStream(6)):
        assert_code(raw_stream([TINY_HEADER, *units], end=end), "frame_count_mismatch")
    # end_of_stream's frame count must be positive.
    assert_code(raw_stream([TINY_HEADER, *units], end=EndOfStream(0)), "bad_field")


def test_error_message_is_one_line_with_code_and_offset():
    err = assert_code(raw_stream([TINY_HEADER, SS0, KF0, make_keyframe(1, 3)]), "rank_mismatch")
    assert str(err) == f"rank_mismatch: rank 3 in a scene of rank 2 at byte {err.offset}"
    assert "\n" not in str(err)
    assert isinstance(err, ValueError)


def test_unregistered_error_code_is_a_programming_error():
    with pytest.raises(AssertionError):
        InvalidDataError("no_such_code", "x")


# ---------------------------------------------------------------- the writer refuses


def _writer(units=()) -> tuple[io.BytesIO, StreamWriter]:
    sink = io.BytesIO()
    writer = StreamWriter(sink, TINY_HEADER)
    for unit in units:
        writer.write(unit)
    return sink, writer


KF = lambda **c: dataclasses.replace(KF0, **c)  # noqa: E731


@pytest.mark.parametrize("before, unit, code", [
    ((), KF0, "bad_unit_order"),
    ((), SceneCut(1), "bad_unit_order"),
    ((), TINY_HEADER, "bad_unit_order"),
    ((SS0,), KF(u=np.zeros((5, 0), np.uint8), v=np.zeros((0, 7), np.uint8)), "bad_field"),     # rank 0
    ((SS0,), KF(u=np.zeros((5, 6), np.uint8), v=np.zeros((6, 7), np.uint8)), "bad_field"),     # rank 6 > 5
    ((SS0,), KF(u=np.zeros((4, 2), np.uint8)), "bad_field"),                                   # wrong shape
    ((SS0,), KF(u_scale=0.0), "bad_field"),
    ((SS0,), KF(v_scale=math.nan), "bad_field"),
    ((SS0,), KF(u_scale=-1.0), "bad_field"),
    ((SS0,), KF(v_zero_point=256), "bad_field"),
    ((SS0,), KF(frame_index=1), "frame_order"),
    ((SS0, KF0), make_keyframe(0, 2), "frame_order"),
    ((SS0, KF0), make_keyframe(1, 3), "rank_mismatch"),
    ((SS0, KF0), make_keyframe(MAX_KEYFRAME_INTERVAL + 1, 2), "size_limit"),
    ((SS0, KF0), make_scene_start(2), "frame_order"),
    ((SS0, KF0), SceneCut(0), "bad_field"),
    ((SS0, KF0, SceneCut(1)), make_keyframe(1, 2), "bad_unit_order"),
    ((SS0, KF0, SceneCut(1)), make_scene_start(2), "frame_order"),
    ((), make_scene_start(1), "frame_order"),
    ((), SceneStart(0, LatentCodec.F32, Coding.RAW, np.zeros((4, 2, 3), np.float32)), "bad_field"),
    ((), SceneStart(0, LatentCodec.F32, Coding.RAW, np.full((4, 2, 2), np.nan, np.float32)), "bad_field"),
    ((), SceneStart(0, LatentCodec.Q8, Coding.RAW, np.zeros((4, 2, 2), np.uint8), (1.0,) * 3, (0,) * 3), "bad_field"),
    ((), SceneStart(0, LatentCodec.Q8, Coding.RAW, np.zeros((4, 2, 2), np.uint8), (1.0, 1.0, 0.0, 1.0), (0,) * 4),
     "bad_field"),
    ((), Metadata((("Key", "value"),)), "bad_field"),
    ((), Metadata((("k" * 65, "value"),)), "size_limit"),
    ((), Metadata((("k", "v" * 4097),)), "size_limit"),
    ((), Metadata((("k", "v"),) * 257), "size_limit"),
    ((), EndOfStream(0), "bad_field"),
    # Values the stream cannot hold as given: refused rather than silently changed.
    ((SS0,), KF(coding=2), "bad_field"),
    ((SS0,), KF(u_scale=1e-50), "bad_field"),                  # binary32 zero
    ((SS0,), KF(v_scale=1e39), "bad_field"),                   # binary32 infinity
    ((SS0,), KF(u=KF0.u.astype(np.int64)), "bad_field"),
    ((SS0,), KF(v=KF0.v.astype(np.int64) + 200), "bad_field"),
    ((), dataclasses.replace(SS0, latent_codec=3), "bad_field"),
    ((), dataclasses.replace(SS0, coding=2), "bad_field"),
    ((), dataclasses.replace(SS0, latent=SS0.latent.astype(np.float64)), "bad_field"),
    ((), SceneStart(0, LatentCodec.F16, Coding.RAW, np.full((4, 2, 2), 1e6, np.float32)), "bad_field"),
    ((), SceneStart(0, LatentCodec.Q8, Coding.RAW, np.full((4, 2, 2), 300), (1.0,) * 4, (0,) * 4), "bad_field"),
    ((), SceneStart(0, LatentCodec.Q8, Coding.RAW, np.zeros((4, 2, 2), np.uint8), (1e-46,) * 4, (0,) * 4),
     "bad_field"),
    ((), UnknownUnit(UnitType.KEYFRAME, b"x"), "bad_field"),
    ((), UnknownUnit(0, b"x"), "bad_field"),
    ((), UnknownUnit(128 + 100, b"x"), "bad_field"),
    ((), Metadata((("k", "\ud800"),)), "bad_field"),
    ((SS0,), KF(u_zero_point=3.0), "bad_field"),
    ((), SceneStart(0, LatentCodec.Q8, Coding.RAW, np.zeros((4, 2, 2), np.uint8), (1.0,) * 4, (0, 0, 0.5, 0)),
     "bad_field"),
    ((), UnknownUnit(100, bytes(MAX_UNIT_SIZE + 1)), "size_limit"),
], ids=lambda x: None if isinstance(x, (tuple, str)) else type(x).__name__)
def test_writer_refuses_invalid_units(before, unit, code):
    sink, writer = _writer(before)
    written = sink.getvalue()
    with pytest.raises(InvalidDataError) as info:
        writer.write(unit)
    assert info.value.code == code
    assert sink.getvalue() == written and writer.size == len(written)
    # The refused unit left the writer's state alone: the stream can be finished.
    if not any(isinstance(u, SceneStart) for u in before):
        writer.write(SS0)
    if not any(isinstance(u, Keyframe) for u in before):
        writer.write(KF0)
    if before and isinstance(before[-1], SceneCut):
        writer.write(make_scene_start(1))
        writer.write(make_keyframe(1, 2))
    writer.close()
    assert read_all(sink.getvalue())[-1].unit.frame_count in (1, 2)


@pytest.mark.parametrize("change, code", [
    ({"width": 5000}, "size_limit"), ({"noise_algorithm": 9}, "bad_field"), ({"model_name": "Tiny"}, "bad_field"),
    ({"alpha_bar": 0.0}, "bad_field"), ({"model_hash": bytes(31)}, "bad_field"), ({"fps_num": 0}, "bad_field"),
    ({"prediction_type": 3}, "bad_field"), ({"full_range": 2}, "bad_field"), ({"timestep": 65536}, "size_limit"),
    ({"noise_seed": -1}, "bad_field"), ({"noise_seed": 1 << 32}, "bad_field"), ({"colour_primaries": 256}, "bad_field"),
    ({"alpha_bar": 1e-50}, "bad_field"), ({"prev_weight": 1 + 1e-6}, "bad_field"),
])
def test_writer_refuses_invalid_header(change, code):
    sink = io.BytesIO()
    with pytest.raises(InvalidDataError) as info:
        StreamWriter(sink, dataclasses.replace(TINY_HEADER, **change))
    assert info.value.code == code
    assert sink.getvalue() == b""


@settings(max_examples=150, deadline=None)
@given(rank=st.integers(0, 7), coding=st.integers(0, 2), frame_index=st.integers(0, 300),
       scales=st.tuples(st.floats(width=32) | st.floats(), st.floats(width=32) | st.floats()),
       zeros=st.tuples(st.integers(-1, 256), st.integers(-1, 256)), seed=st.integers(0, 1000))
def test_property_writer_and_reader_agree_on_keyframes(rank, coding, frame_index, scales, zeros, seed):
    """Any keyframe is either refused by the writer, or written and read back unchanged."""
    rng = np.random.default_rng(seed)
    unit = Keyframe(frame_index, coding, rng.integers(0, 256, (5, rank), dtype=np.uint8),
                    rng.integers(0, 256, (rank, 7), dtype=np.uint8), scales[0], zeros[0], scales[1], zeros[1])
    sink, writer = _writer((SS0, KF0))
    size = len(sink.getvalue())
    try:
        writer.write(unit)
    except InvalidDataError as err:
        assert len(sink.getvalue()) == size
        try:
            data = raw_stream([TINY_HEADER, SS0, KF0, frame(unit)])
        except Exception:
            return                        # not even encodable (a zero point of 256, binary32 overflow)
        with pytest.raises(InvalidDataError) as info:     # the reader refuses it with the same code
            read_all(data)
        assert info.value.code == err.code
        return
    writer.close()
    # Read back as written, the scales rounded to binary32 (a no-op for binary32 values).
    stored = dataclasses.replace(unit, u_scale=f32(scales[0]), v_scale=f32(scales[1]))
    assert_unit_equal(read_all(sink.getvalue())[3].unit, stored)


_HEADER_FIELDS = {
    "width": st.integers(0, 5000), "fps_num": st.integers(0, 3), "latent_channels": st.integers(0, 17),
    "latent_downsampling": st.sampled_from([0, 1, 3, 8, 64, 128]), "size_multiple": st.integers(0, 70),
    "cond_tokens": st.integers(0, 600), "noise_algorithm": st.integers(0, 2), "prediction_type": st.integers(0, 3),
    "prev_weight": st.floats(width=32), "alpha_bar": st.floats(width=32), "full_range": st.integers(0, 2),
    "model_name": st.text(max_size=5), "timestep": st.integers(0, 65535),
}


@settings(max_examples=150, deadline=None)
@given(change=st.sampled_from(sorted(_HEADER_FIELDS)).flatmap(
    lambda name: st.fixed_dictionaries({name: _HEADER_FIELDS[name]})))
def test_property_writer_and_reader_agree_on_headers(change):
    header = dataclasses.replace(TINY_HEADER, **change)
    sink = io.BytesIO()
    try:
        StreamWriter(sink, header)
    except InvalidDataError as err:
        assert sink.getvalue() == b""
        try:
            payload = encode_payload(header)
        except Exception:
            return                                          # not even encodable (a non-ASCII name)
        with pytest.raises(InvalidDataError) as info:
            read_all(prefix() + frame_unit(1, payload, False))
        assert info.value.code == err.code
        return
    got = read_all(raw_stream([header, make_scene_start(0, header=header), make_keyframe(0, 1, header=header)]))
    assert_unit_equal(got[0].unit, header)


def test_writer_stores_float_fields_as_binary32():
    header = dataclasses.replace(TINY_HEADER, prev_weight=0.05, noise_weight=0.95, alpha_bar=0.0046601)
    sink = io.BytesIO()
    with StreamWriter(sink, header) as writer:
        writer.write(SS0)
        writer.write(KF(u_scale=0.1, v_scale=1e-40))         # 1e-40: a binary32 subnormal, still positive
    got = read_all(sink.getvalue())
    assert (got[0].unit.prev_weight, got[0].unit.noise_weight, got[0].unit.alpha_bar) == (
        f32(0.05), f32(0.95), f32(0.0046601))
    assert (got[2].unit.u_scale, got[2].unit.v_scale) == (f32(0.1), f32(1e-40))
    assert got[2].unit.u_scale != 0.1 and got[2].unit.v_scale > 0


def test_writer_state_is_unchanged_when_serializing_fails(monkeypatch):
    """A unit that fails after its checks (here: an injected fault) leaves no trace in the index."""
    import libpromptus.bitstream.writer as writer_module

    sink, writer = _writer((SS0,))
    size = len(sink.getvalue())
    real = writer_module.encode_payload

    def failing(unit):
        raise InvalidDataError("size_limit", "injected")

    monkeypatch.setattr(writer_module, "encode_payload", failing)
    with pytest.raises(InvalidDataError):
        writer.write(KF0)
    assert len(sink.getvalue()) == size
    monkeypatch.setattr(writer_module, "encode_payload", real)
    writer.write(KF0)                    # frame 0 again: the failed attempt was not recorded
    writer.write(make_keyframe(2, 2))
    writer.close()
    got = read_all(sink.getvalue())
    assert got[-1].unit.frame_count == 3
    assert len(got[-2].unit.entries) == 3


def test_writer_refuses_units_after_close(small_stream):
    sink, writer = _writer((SS0, KF0))
    writer.close()
    size = len(sink.getvalue())
    with pytest.raises(InvalidDataError) as info:
        writer.write(make_keyframe(1, 2))
    assert info.value.code == "bad_unit_order"
    assert len(sink.getvalue()) == size


def test_writer_refuses_to_close_an_empty_stream():
    sink, writer = _writer()
    with pytest.raises(InvalidDataError) as info:
        writer.close()
    assert info.value.code == "bad_unit_order"


def test_writer_reports_sizes(small_stream):
    sink, writer = _writer()
    assert writer.size == len(sink.getvalue()) == PREFIX_SIZE + len(HEADER_UNIT)
    assert writer.write(SS0) == len(frame(SS0))
    assert writer.header == TINY_HEADER
    writer.write(KF0)
    assert writer.close() == len(sink.getvalue())


def test_writer_output_is_exactly_the_framed_units():
    sink, writer = _writer((SS0, KF0))
    writer.close()
    index = Index((IndexEntry(UnitType.SCENE_START, 0, AFTER_HEADER),
                   IndexEntry(UnitType.KEYFRAME, 0, AFTER_HEADER + len(frame(SS0)))))
    index_offset = AFTER_HEADER + len(frame(SS0)) + len(frame(KF0))
    want = prefix() + HEADER_UNIT + frame(SS0) + frame(KF0) + frame(index) + frame(EndOfStream(1, index_offset))
    assert sink.getvalue() == want
    assert want[:10] == b"\x8aPMT\r\n\x1a\n\x01\x00"
    # Unit framing: header byte, leb128 size, payload, CRC-32C of all that, little-endian.
    unit = frame(SceneCut(7))
    assert unit == b"\x03\x04\x07\x00\x00\x00" + crc32c_le(b"\x03\x04\x07\x00\x00\x00")
    assert frame_unit(UnitType.SCENE_CUT, b"\x07\x00\x00\x00", False) == unit


def test_crc32c_known_value():
    # The CRC-32C check value (RFC 3720): "123456789" -> 0xE3069283.
    assert crc32c_le(b"123456789") == bytes.fromhex("839206e3")
