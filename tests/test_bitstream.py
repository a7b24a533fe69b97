"""The `.pmt` container read back: leb128 sizes, round trips of every unit type, the
property test, concatenated streams and pipes.

Damage is in test_bitstream_damage.py, the reader's error codes in
test_bitstream_errors.py, the writer's refusals in test_bitstream_writer.py; the
readers and units they share are in bitstream_helpers.py.
"""
from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
from bitstream_helpers import SS0, assert_code, read_all
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
    expected_tail,
    make_keyframe,
    prefix,
    raw_stream,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from libpromptus.bitstream import (
    SIGNATURE,
    Coding,
    EndOfStream,
    Index,
    InvalidDataError,
    Keyframe,
    LatentCodec,
    Metadata,
    PredictionType,
    SceneCut,
    SceneStart,
    SequenceHeader,
    UnknownUnit,
    read_streams,
    read_units,
)
from libpromptus.bitstream.framing import PREFIX_SIZE
from libpromptus.bitstream.leb128 import decode_leb128, encode_leb128
from libpromptus.bitstream.limits import MAX_KEYFRAME_INTERVAL, MAX_UNIT_SIZE
from libpromptus.bitstream.syntax import END_OF_STREAM_UNIT_SIZE, encode_payload

from libpromptus.process.prompts import frame_conditioning


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
    latent_coding = Coding.ENTROPY if coding == Coding.LAYERED else coding     # LAYERED is for keyframes only
    spec = StreamSpec(
        scenes=(SceneSpec(gaps=(1, 3), rank=rank, codec=codec, coding=latent_coding, keyframe_codings=(coding,)),
                SceneSpec(gaps=(2,), rank=rank, codec=codec, coding=latent_coding, keyframe_codings=(coding,),
                          cut=True)),
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
                                  LatentCodec.Q8: np.uint8, LatentCodec.DCT8: np.int16}[codec]
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
    coding=st.sampled_from([Coding.RAW, Coding.ENTROPY]),      # of the latent: LAYERED is for keyframes only
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
