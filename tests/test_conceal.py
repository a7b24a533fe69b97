"""Error concealment reports (no model): `libpromptus.bitstream.concealment` and
`bitstream.salvage` on the tiny stream of conceal_helpers.py with damaged units: which
frames are concealed and how (interpolated across, repeated, held, continued from a
latent), notes for units that carry no frames, what cannot be concealed, and
resynchronisation after lost bytes within its budget.

Garbage after and between streams is in test_conceal_garbage.py; decoding concealed
streams (frames, pmtdec --conceal, the API) in test_conceal_decoding.py.
"""
from __future__ import annotations

import io

import conceal_helpers
import numpy as np
import pytest
from conceal_helpers import FRAMES, LAYOUT, concealed, damage, flip, layout
from decoding_helpers import SceneDef, tiny_stream
from libpromptus.bitstream import (
    EndOfStream,
    InvalidDataError,
    Keyframe,
    LatentCodec,
    SceneStart,
    read_streams,
    read_units,
)
from libpromptus.bitstream.concealment import Concealment, LostSceneStart
from libpromptus.bitstream.salvage import LostBytes, salvage

from libpromptus.process.prompts import (
    compose,
    frame_conditioning,
    interpolate,
    interpolation_weight,
    keyframe_factors,
)

# the module fixtures of conceal_helpers: the clean stream, its units' offsets, a work directory
clean, offsets, workdir = conceal_helpers.clean, conceal_helpers.offsets, conceal_helpers.workdir


# ---------------------------------------------------------------- reports (no model)


def test_a_clean_stream_reads_exactly_as_without_concealment(clean):
    streams, report = concealed(clean)
    assert not report.damaged and report.frames == ()
    strict = read_streams(io.BytesIO(clean))
    assert [(u.offset, u.size, u.unit_type) for u in streams[0].units] == \
        [(u.offset, u.size, u.unit_type) for u in strict[0].units]
    assert layout(streams) == LAYOUT
    for (f, got), (g, want) in zip(frame_conditioning(streams), frame_conditioning(strict), strict=True):
        assert f == g and np.array_equal(got, want)


def test_a_keyframe_lost_mid_scene_is_interpolated_across(clean, offsets):
    streams, report = concealed(damage(clean, offsets, ("keyframe", 14)))
    assert report.concealed == (Concealment(range(11, 19), range(19, 20),
                                            f"keyframe lost: crc_mismatch at byte {offsets[('keyframe', 14)]}"),)
    assert report.frames == tuple(range(11, 19))
    assert report.notes == ()
    assert report.concealed[0].describe() == (f"concealed frames 11..18 (keyframe lost: crc_mismatch at byte "
                                              f"{offsets[('keyframe', 14)]}); frame 19 follows from them")
    assert layout(streams) == [[0, 4, 8, 9], [10, 18, 19]]
    assert streams[0].frame_count == FRAMES


def test_the_merged_interval_uses_the_weights_of_the_longer_interval(clean, offsets):
    """Frames 11..18 interpolate keyframes 10 and 18 with s / 8 (SPEC.md §8.3 over 10 -> 18)."""
    streams, _ = concealed(damage(clean, offsets, ("keyframe", 14)))
    got = dict(frame_conditioning(streams))
    scene = read_streams(io.BytesIO(clean))[0].scenes[1]
    (u_a, v_a), (u_c, v_c) = (keyframe_factors(scene.keyframes[i].unit) for i in (0, 2))
    for frame in range(11, 19):
        w = interpolation_weight(frame - 10, 8)
        assert np.array_equal(got[frame], compose(interpolate(u_a, u_c, w), interpolate(v_a, v_c, w))), frame
    clean_conditioning = dict(frame_conditioning(read_streams(io.BytesIO(clean))))
    assert [f for f in range(FRAMES) if not np.array_equal(got[f], clean_conditioning[f])] == list(range(11, 18))


def test_the_last_keyframe_of_a_scene_lost_repeats_the_last_good_one(clean, offsets):
    streams, report = concealed(damage(clean, offsets, ("keyframe", 9)))
    cause = f"keyframe lost: crc_mismatch at byte {offsets[('keyframe', 9)]}; repeated keyframe 8"
    assert report.concealed == (Concealment(range(9, 10), range(10, 10), cause),)
    assert report.concealed[0].describe() == f"concealed frame 9 ({cause})"
    assert layout(streams) == [[0, 4, 8, 9], [10, 14, 18, 19]]
    conditioning = dict(frame_conditioning(streams))
    assert np.array_equal(conditioning[9], conditioning[8])


def test_the_last_keyframe_of_the_stream_lost_repeats_up_to_the_declared_end(clean, offsets):
    streams, report = concealed(damage(clean, offsets, ("keyframe", 19)))
    assert report.frames == (19,)
    assert streams[0].frame_count == FRAMES                  # the end-of-stream unit says 20


def test_the_first_keyframe_of_a_scene_lost_repeats_the_next_back(clean, offsets):
    _, report = concealed(damage(clean, offsets, ("keyframe", 10)))
    assert report.concealed == (Concealment(range(10, 15), range(15, 20),
                                            f"keyframe lost: crc_mismatch at byte {offsets[('keyframe', 10)]}; "
                                            f"repeated keyframe 14"),)


def test_two_lost_keyframes_merge_into_one_interval(clean, offsets):
    data = damage(damage(clean, offsets, ("keyframe", 4)), offsets, ("keyframe", 8))
    streams, report = concealed(data)
    assert layout(streams) == [[0, 9], [10, 14, 18, 19]]
    assert report.concealed == (Concealment(range(1, 10), range(10, 10),
                                            f"keyframe lost: crc_mismatch at byte {offsets[('keyframe', 4)]}, "
                                            f"keyframe lost: crc_mismatch at byte {offsets[('keyframe', 8)]}"),)


def test_a_scene_that_lost_every_keyframe_holds_the_previous_good_one(clean, offsets):
    data = clean
    for frame in (10, 14, 18, 19):
        data = damage(data, offsets, ("keyframe", frame))
    streams, report = concealed(data)
    assert layout(streams) == [[0, 4, 8, 9], [10, 19]]
    lost = ", ".join(f"keyframe lost: crc_mismatch at byte {offsets[('keyframe', f)]}" for f in (10, 14, 18, 19))
    assert report.concealed == (Concealment(range(10, 20), range(20, 20), f"{lost}; held keyframe 9"),)
    conditioning = dict(frame_conditioning(streams))
    assert np.array_equal(conditioning[10], conditioning[9])
    for frame in range(11, 20):        # keyframe 9 interpolated with itself: equal up to rounding
        np.testing.assert_allclose(conditioning[frame], conditioning[9], rtol=1e-6, atol=1e-6)


def test_bytes_lost_before_the_first_scene_hold_no_frames(clean, offsets):
    """The metadata unit's size field is damaged: its bytes are lost without a type, and
    the scene start after them shows that they held no frames."""
    at = offsets[("metadata", None)]
    streams, report = concealed(flip(clean, at + 1, 0x03))
    size = offsets[("scene_start", 0)] - at
    assert report.concealed == ()
    note = f"dropped damaged units that held no frames ({size} bytes lost: crc_mismatch at byte {at})"
    assert report.notes == (note,)
    assert layout(streams) == LAYOUT


def test_a_lost_scene_start_continues_the_chain(clean, offsets):
    streams, report = concealed(damage(clean, offsets, ("scene_start", 10)))
    at = offsets[("scene_start", 10)]
    assert report.concealed == (Concealment(range(10, 20), range(20, 20), f"scene start lost: crc_mismatch at byte "
                                                                          f"{at}; continued from frame 9's latent"),)
    scene = streams[0].scenes[1]
    assert scene.start.unit == LostSceneStart(10) and scene.cut is not None
    assert layout(streams) == LAYOUT


def test_a_lost_first_scene_start_conceals_from_a_zero_latent(clean, offsets):
    streams, report = concealed(damage(clean, offsets, ("scene_start", 0)))
    assert report.frames == tuple(range(10))
    assert report.concealed[0].cause.endswith("; continued from a zero latent")
    assert streams[0].scenes[0].start.unit == LostSceneStart(0)


def test_a_scene_start_lost_with_its_size_field_is_found_by_the_cut_before_it(clean, offsets):
    """The size byte is damaged: the bytes lost have no known type, but a scene cut must be
    followed by a scene start, so the lost bytes held one."""
    at = offsets[("scene_start", 10)]
    streams, report = concealed(flip(clean, at + 1, 0x01))
    size = offsets[("keyframe", 10)] - at
    assert report.concealed == (Concealment(range(10, 20), range(20, 20), f"{size} bytes lost: crc_mismatch at byte "
                                                                          f"{at}; continued from frame 9's latent"),)
    assert isinstance(streams[0].scenes[1].start.unit, LostSceneStart)


@pytest.mark.parametrize("mask", [0x01, 0x7F])
def test_a_damaged_size_field_resynchronises_on_the_next_unit(clean, offsets, mask):
    """Size 2,xxx is two leb128 bytes: 0x01 makes it wrong (crc_mismatch), 0x7F makes it run
    past the input (truncated); either way the scan finds keyframe 18."""
    at = offsets[("keyframe", 14)]
    streams, report = concealed(flip(clean, at + 2, mask))
    assert layout(streams) == [[0, 4, 8, 9], [10, 18, 19]]
    code = "crc_mismatch" if mask == 0x01 else "truncated"
    assert report.concealed == (Concealment(range(11, 19), range(19, 20),
                                            f"{offsets[('keyframe', 18)] - at} bytes lost: {code} at byte {at}"),)


@pytest.mark.parametrize(("unit", "note"), [
    (("metadata", None), "dropped a damaged metadata unit (crc_mismatch at byte {at})"),
    (("index", None), "dropped a damaged index unit (crc_mismatch at byte {at})"),
    (("scene_cut", 10), "dropped a damaged scene cut unit (crc_mismatch at byte {at})"),
    (("endofstream", None), "the end-of-stream unit is damaged (crc_mismatch at byte {at})"),
])
def test_units_that_carry_no_frames_are_dropped_with_a_note(clean, offsets, unit, note):
    streams, report = concealed(damage(clean, offsets, unit))
    assert report.concealed == () and report.notes == (note.format(at=offsets[unit]),)
    assert layout(streams) == LAYOUT and streams[0].frame_count == FRAMES
    for (f, got), (g, want) in zip(frame_conditioning(streams), frame_conditioning(read_streams(io.BytesIO(clean)))):
        assert f == g and np.array_equal(got, want)


def test_a_truncated_stream_decodes_what_is_there(clean, offsets):
    at = offsets[("keyframe", 18)]
    streams, report = concealed(clean[:at + 50])
    assert layout(streams) == [[0, 4, 8, 9], [10, 14]] and streams[0].frame_count == 15
    assert report.concealed == ()
    note = f"the stream ends at frame 14: what followed is lost (50 bytes lost: truncated at byte {at})"
    assert report.notes == (note,)


def test_a_damaged_sequence_header_cannot_be_concealed(clean, offsets):
    with pytest.raises(InvalidDataError) as err:
        concealed(damage(clean, offsets, ("sequenceheader", None)))
    assert err.value.code == "crc_mismatch"
    assert str(err.value) == "crc_mismatch: the sequence header is damaged: the stream cannot be decoded at byte 10"


def test_only_damage_is_concealed_not_a_malformed_stream(clean, offsets):
    """A CRC-valid end-of-stream unit that claims 25 frames: without damage the strict
    reader's error; with a lost keyframe too, concealment finds no loss to explain frames
    20..24 and refuses as well."""
    from libpromptus.bitstream.framing import frame_unit
    from libpromptus.bitstream.syntax import encode_payload

    end = offsets[("endofstream", None)]
    index_offset = read_streams(io.BytesIO(clean))[0].end.index_offset
    lying = clean[:end] + frame_unit(7, encode_payload(EndOfStream(25, index_offset)), may_ignore=False)
    with pytest.raises(InvalidDataError) as err:
        concealed(lying)
    assert err.value.code == "frame_count_mismatch"
    with pytest.raises(InvalidDataError) as err:
        concealed(damage(lying, offsets, ("keyframe", 14)))
    assert (err.value.code, err.value.message) == ("frame_order", "frames 20..24 have no keyframe and nothing was lost")


def test_concatenated_streams_report_file_frame_indices(clean, offsets):
    streams, report = concealed(clean + damage(clean, offsets, ("keyframe", 4)))
    assert [s.first_frame for s in streams] == [0, FRAMES]
    at = len(clean) + offsets[("keyframe", 4)]
    assert report.concealed == (Concealment(range(21, 29), range(29, 30), f"keyframe lost: crc_mismatch at byte {at}"),)


def test_a_rank_change_after_lost_bytes_reveals_a_lost_scene_start():
    """Two scenes of ranks 2 and 3 without a cut; the second scene start's size field is
    damaged, so neither its type nor the cut tells: the rank change does."""
    stream = tiny_stream(16, 16, (SceneDef((0, 3)), SceneDef((4, 6), rank=3, codec=LatentCodec.F16)))
    start = next(item.offset for item in read_units(io.BytesIO(stream.data)) if isinstance(item.unit, SceneStart)
                 and item.unit.first_frame == 4)
    streams, report = concealed(flip(stream.data, start + 1, 0x01))
    assert [type(scene.start.unit) for scene in streams[0].scenes] == [SceneStart, LostSceneStart]
    assert layout(streams) == [[0, 3], [4, 6]]
    assert report.frames == (4, 5, 6)


def test_a_resynchronisation_scan_gives_up_after_its_budget(monkeypatch):
    """Bytes that look like keyframe units of 1,000-byte payloads stand between a scene
    start and its keyframe: the scan for the next verifying unit hashes about 1 KB per
    candidate and stops after SCAN_BUDGET bytes, the rest of the input then lost."""
    import libpromptus.bitstream.salvage as salvage_module

    data = tiny_stream(16, 16, (SceneDef((0, 3)),)).data
    start = next(item.offset for item in read_units(io.BytesIO(data)) if isinstance(item.unit, Keyframe))
    garbage = b"\x04\xe8\x07\x00" * 5000
    data = data[:start] + garbage + data[start:]
    found = list(salvage(data))
    assert [p for p in found if isinstance(p, LostBytes)] == [LostBytes(start, len(garbage), "crc_mismatch", None)]
    assert found[-1].unit_type == 7                      # everything after the garbage survives
    monkeypatch.setattr(salvage_module, "SCAN_BUDGET", 1000)
    found = list(salvage(data))
    assert found[-1] == LostBytes(start, len(data) - start, "crc_mismatch", None)
