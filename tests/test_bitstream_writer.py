"""StreamWriter: it refuses every unit and header the reader would refuse, leaving its
output and state unchanged; property tests that writer and reader agree on keyframes
and headers; float fields stored as binary32; its sizes and the exact bytes it writes
(framing, CRC-32C).
"""
from __future__ import annotations

import dataclasses
import io
import math

import numpy as np
import pytest
from bitstream_helpers import AFTER_HEADER, HEADER_UNIT, KF0, SS0, read_all
from conftest import (
    TINY_HEADER,
    assert_unit_equal,
    crc32c_le,
    f32,
    frame,
    make_keyframe,
    make_scene_start,
    prefix,
    raw_stream,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from libpromptus.bitstream import (
    Coding,
    EndOfStream,
    Index,
    IndexEntry,
    InvalidDataError,
    Keyframe,
    LatentCodec,
    Metadata,
    SceneCut,
    SceneStart,
    StreamWriter,
    UnitType,
    UnknownUnit,
)
from libpromptus.bitstream.framing import PREFIX_SIZE, frame_unit
from libpromptus.bitstream.limits import MAX_KEYFRAME_INTERVAL, MAX_UNIT_SIZE
from libpromptus.bitstream.syntax import encode_payload

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
    ((SS0,), KF(coding=2), "bad_field"),                       # LAYERED in a version 1.0 stream
    ((SS0,), KF(coding=3), "bad_field"),
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
@given(rank=st.integers(0, 7), coding=st.integers(0, 3), frame_index=st.integers(0, 300),
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
