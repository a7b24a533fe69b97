"""The `.pmt` reader's error paths, one code each: signature, version, CRC, unit sizes and
their cap, header fields, unit types and their order, payload fields and sizes, frame
order, the keyframe interval, rank, index and frame count, and the error's message.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from bitstream_helpers import (
    AFTER_HEADER,
    HEADER_UNIT,
    KF0,
    SS0,
    assert_code,
    error_of,
    read_all,
)
from conftest import (
    TINY_HEADER,
    assert_unit_equal,
    frame,
    frame_raw,
    make_keyframe,
    make_scene_start,
    prefix,
    raw_stream,
    tiny_header,
)
from libpromptus.bitstream import (
    SIGNATURE,
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
    SequenceHeader,
    UnitType,
    UnknownUnit,
    read_units,
)
from libpromptus.bitstream.framing import PREFIX_SIZE, VERSION_MINOR
from libpromptus.bitstream.leb128 import encode_leb128
from libpromptus.bitstream.limits import MAX_KEYFRAME_INTERVAL, MAX_UNIT_SIZE
from libpromptus.bitstream.syntax import encode_payload

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
    # A stream of a later version may append fields this decoder does not know: they are skipped.
    got = read_all(raw_stream(units, minor=VERSION_MINOR + 1, end=EndOfStream(1)))
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
    got = read_all(raw_stream(units, minor=VERSION_MINOR + 1, end=end))
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
