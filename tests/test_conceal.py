"""Error concealment: `pmtdec --conceal`, `libpromptus.bitstream.concealment`, `bitstream.salvage`.

One stream for the tiny model, 20 frames 64x64 built from seeded factors and latents
(tests/decoding_helpers.py; benchmarks/concealment.py measures the same on a stream the
encoder made): rank 2, scene 0 with keyframes 0, 4, 8, 9 and, after a scene cut unit,
scene 1 with keyframes 10, 14, 18, 19; a metadata unit, an index. Unless a test says
otherwise, damage is one flipped byte in a unit's payload: its CRC-32C fails, its size
field survives. The report tests need no model; the frame tests decode in this process;
the pmtdec runs are started together by one module fixture (two at a time).
"""
from __future__ import annotations

import io
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from decoding_helpers import RecordingEngine, SceneDef, tiny_stream
from libpromptus.bitstream import (
    EndOfStream,
    InvalidDataError,
    Keyframe,
    LatentCodec,
    SceneCut,
    SceneStart,
    read_streams,
    read_units,
)
from libpromptus.bitstream.concealment import (
    Concealment,
    LostSceneStart,
    read_concealed,
)
from libpromptus.bitstream.framing import SIGNATURE
from libpromptus.bitstream.salvage import LostBytes, StreamPrefix, salvage

from libpromptus.process.noise import noise_tensor
from libpromptus.process.prompts import (
    compose,
    frame_conditioning,
    interpolate,
    interpolation_weight,
    keyframe_factors,
)

FRAMES, SIZE = 20, 64
SCENES = (SceneDef((0, 4, 8, 9), codec=LatentCodec.Q8), SceneDef((10, 14, 18, 19), codec=LatentCodec.Q8, cut=True))
LAYOUT = [[0, 4, 8, 9], [10, 14, 18, 19]]


# ---------------------------------------------------------------- the stream and its damage


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("conceal")


@pytest.fixture(scope="module")
def clean(workdir) -> bytes:
    return tiny_stream(SIZE, SIZE, SCENES, seed=7).write(workdir / "clean.pmt").read_bytes()


@pytest.fixture(scope="module")
def offsets(clean) -> dict:
    """Byte offset of each unit: ("keyframe", 14), ("scene_start", 10), ("metadata", None), ..."""
    names = {SceneStart: "scene_start", Keyframe: "keyframe", SceneCut: "scene_cut"}
    out = {}
    for item in read_units(io.BytesIO(clean)):
        unit = item.unit
        name = names.get(type(unit), type(unit).__name__.lower())
        out[(name, getattr(unit, "frame_index", getattr(unit, "first_frame", None)))] = item.offset
    return out


def flip(data: bytes, offset: int, mask: int = 0x55) -> bytes:
    """`data` with the byte at `offset` changed."""
    out = bytearray(data)
    out[offset] ^= mask
    return bytes(out)


def damage(clean: bytes, offsets: dict, unit: tuple) -> bytes:
    """The stream with byte 6 of `unit` flipped: past its header and size (a payload byte, or
    for the 10-byte scene cut unit a CRC byte)."""
    return flip(clean, offsets[unit] + 6)


def concealed(data: bytes):
    return read_concealed(io.BytesIO(data))


def layout(streams) -> list[list[int]]:
    return [[k.unit.frame_index for k in scene.keyframes] for stream in streams for scene in stream.scenes]


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


# ---------------------------------------------------------------- garbage after and between streams (no model)

#: Bytes that are not a stream, put after the stream's end-of-stream unit: the stream's own
#: last 200 bytes (index and end-of-stream units), random bytes, and partial signatures.
GARBAGE = {
    "own-tail": lambda clean: clean[-200:],
    "random": lambda clean: bytes(np.random.default_rng(5).integers(0, 256, 300, dtype=np.uint8)),
    "cut-signature-first": lambda clean: SIGNATURE[:7] + bytes(20),
    "cut-signatures-inside": lambda clean: b"junk" + SIGNATURE[:4] + b"more" + SIGNATURE[:7],
}


def unit_table(streams) -> list[list[tuple[int, int, int, int]]]:
    """Every unit of every stream as (stream, offset in its stream, size, type): what garbage must not change."""
    return [[(u.stream, u.stream_offset, u.size, u.unit_type) for u in s.units] for s in streams]


def assert_same_streams(got, want) -> None:
    """`got` holds exactly `want`'s streams: frame counts, units and every frame's conditioning."""
    assert [(s.first_frame, s.frame_count) for s in got] == [(s.first_frame, s.frame_count) for s in want]
    assert unit_table(got) == unit_table(want)
    assert layout(got) == layout(want)
    for (f, a), (g, b) in zip(frame_conditioning(got), frame_conditioning(want), strict=True):
        assert f == g and np.array_equal(a, b), f


def skipped(first: int, size: int, stream: int = 0) -> str:
    return f"bytes {first}..{first + size - 1} after the end of stream {stream} are not a stream: skipped"


@pytest.mark.parametrize("kind", GARBAGE)
def test_garbage_after_the_last_stream_is_skipped_with_a_note(clean, kind):
    garbage = GARBAGE[kind](clean)
    streams, report = concealed(clean + garbage)
    assert_same_streams(streams, read_streams(io.BytesIO(clean)))
    assert report.concealed == () and report.frames == ()
    assert report.notes == (skipped(len(clean), len(garbage)),)


def test_the_own_tail_note_names_the_exact_range(clean):
    assert len(clean) == 18674
    assert concealed(clean + clean[-200:]).report.notes == \
        ("bytes 18674..18873 after the end of stream 0 are not a stream: skipped",)


@pytest.mark.parametrize("kind", GARBAGE)
def test_garbage_between_concatenated_streams_is_skipped_to_the_next_signature(clean, kind):
    garbage = GARBAGE[kind](clean)
    data = clean + garbage + clean
    pieces = list(salvage(data))
    assert [p.offset for p in pieces if isinstance(p, StreamPrefix)] == [0, len(clean) + len(garbage)]
    assert [p for p in pieces if isinstance(p, LostBytes)] == [LostBytes(len(clean), len(garbage), "bad_signature",
                                                                         None)]
    streams, report = concealed(data)
    assert_same_streams(streams, read_streams(io.BytesIO(clean + clean)))
    assert [s.first_frame for s in streams] == [0, FRAMES]
    assert report.concealed == () and report.notes == (skipped(len(clean), len(garbage)),)


@pytest.mark.parametrize("kind", GARBAGE)
@pytest.mark.parametrize("between", [False, True])
def test_the_strict_reader_still_refuses_garbage_after_a_stream(clean, kind, between):
    data = clean + GARBAGE[kind](clean) + (clean if between else b"")
    with pytest.raises(InvalidDataError) as err:
        read_streams(io.BytesIO(data))
    assert (err.value.code, err.value.offset) == ("bad_signature", len(clean))


def test_garbage_after_damage_elsewhere_is_skipped_too(clean, offsets):
    """A lost keyframe and trailing garbage: the strict reader stops at the keyframe (crc_mismatch),
    concealment interpolates across it and skips the garbage."""
    data = damage(clean, offsets, ("keyframe", 14)) + clean[-200:]
    streams, report = concealed(data)
    assert report.frames == tuple(range(11, 19))
    assert report.notes == (skipped(len(clean), 200),)
    assert streams[0].frame_count == FRAMES


def test_garbage_after_the_second_stream_names_that_stream(clean):
    streams, report = concealed(clean + clean + b"junk")
    assert [s.frame_count for s in streams] == [FRAMES, FRAMES]
    assert report.notes == (skipped(2 * len(clean), 4, stream=1),)


def test_a_cut_off_signature_after_a_stream_is_skipped_with_its_own_note(clean):
    streams, report = concealed(clean + SIGNATURE[:3])
    assert [s.frame_count for s in streams] == [FRAMES]
    assert report.notes == (f"bytes {len(clean)}..{len(clean) + 2} after the end of stream 0 are a cut-off "
                            f"signature: skipped",)


@pytest.mark.parametrize("data", [b"junk", b"GIF89a" + bytes(300)], ids=["short", "gif"])
def test_a_damaged_first_signature_is_never_concealed(clean, data):
    for damaged in (data + clean, flip(clean, 0)):
        with pytest.raises(InvalidDataError) as err:
            concealed(damaged)
        assert (err.value.code, err.value.offset) == ("bad_signature", 0)


def test_the_scan_for_the_next_signature_gives_up_after_its_budget(clean, monkeypatch):
    """SCAN_BUDGET bytes of garbage hide the next stream: the rest of the input counts as lost."""
    import libpromptus.bitstream.salvage as salvage_module

    monkeypatch.setattr(salvage_module, "SCAN_BUDGET", 1000)
    data = clean + bytes(1000) + clean
    assert [p for p in salvage(data) if isinstance(p, LostBytes)] == [LostBytes(len(clean), len(data) - len(clean),
                                                                                "bad_signature", None)]
    streams, report = concealed(data)
    assert [s.frame_count for s in streams] == [FRAMES]
    assert report.notes == (skipped(len(clean), len(data) - len(clean)),)
    data = clean + bytes(1000 - len(SIGNATURE)) + clean  # the next signature lies wholly inside the budget
    assert [s.frame_count for s in concealed(data).streams] == [FRAMES, FRAMES]


# ---------------------------------------------------------------- frames (the tiny model)


@pytest.fixture(scope="module")
def engine(clean):
    from libpromptus.engines import create_engine

    from libpromptus.models import load_generator

    return create_engine("torch", load_generator("tiny"), read_streams(io.BytesIO(clean))[0].header, device="cpu")


def decode(streams, engine, **options) -> np.ndarray:
    from libpromptus.decoder.decoding import decode_frames

    return np.stack([frame.image for frame in decode_frames(streams, engine, **options)])


@pytest.fixture(scope="module")
def clean_frames(clean, engine) -> np.ndarray:
    return decode(read_streams(io.BytesIO(clean)), engine)


def differing(a: np.ndarray, b: np.ndarray) -> list[int]:
    return [i for i in range(len(a)) if not np.array_equal(a[i], b[i])]


def test_frames_outside_the_concealed_chain_are_bit_identical(clean, offsets, engine, clean_frames):
    """Keyframe 14 lost: frames 0..10 are the clean decode's; 11..18 (concealed) and 19
    (whose input latent is frame 18's) differ."""
    streams, report = concealed(damage(clean, offsets, ("keyframe", 14)))
    frames = decode(streams, engine)
    assert frames.shape == clean_frames.shape
    assert differing(frames, clean_frames) == list(range(11, 20))
    assert [*report.concealed[0].frames, *report.concealed[0].follow] == list(range(11, 20))


def test_an_end_of_scene_loss_changes_only_that_frame(clean, offsets, engine, clean_frames):
    streams, _ = concealed(damage(clean, offsets, ("keyframe", 9)))
    assert differing(decode(streams, engine), clean_frames) == [9]


def test_a_lost_scene_start_generates_from_the_previous_scenes_last_latent(clean, offsets, engine, clean_frames):
    streams, _ = concealed(damage(clean, offsets, ("scene_start", 10)))
    recorder = RecordingEngine(engine)
    frames = decode(streams, recorder)
    assert differing(frames, clean_frames) == list(range(10, 20))
    header = streams[0].header
    # Calls in order: frame 0; 1..4; 5..8; 9; then the scene's first frame 10, alone.
    generated = recorder.rows("generated")
    frame_9, frame_10_input = generated[9], recorder.rows("latents")[10]
    noise = noise_tensor(header)[0]
    assert np.array_equal(frame_10_input, np.float32(header.prev_weight) * frame_9
                          + np.float32(header.noise_weight) * noise)


def test_a_lost_first_scene_start_generates_from_a_zero_latent(clean, offsets, engine, clean_frames):
    streams, _ = concealed(damage(clean, offsets, ("scene_start", 0)))
    recorder = RecordingEngine(engine)
    frames = decode(streams, recorder)
    assert differing(frames, clean_frames) == list(range(10))
    header = streams[0].header
    assert np.array_equal(recorder.rows("latents")[0], np.float32(header.noise_weight) * noise_tensor(header)[0])


def test_a_start_frame_after_a_lost_scene_start_still_runs_the_chain(clean, offsets, engine):
    """Decoding from frame 12 must generate scene 0's chain first (batch 1: no reordering)."""
    streams, _ = concealed(damage(clean, offsets, ("scene_start", 10)))
    whole = decode(streams, engine, batch=1)
    assert np.array_equal(decode(streams, engine, batch=1, start_frame=12), whole[12:])


# ---------------------------------------------------------------- pmtdec


def pmtdec(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "libpromptus.cli.pmtdec", *map(str, args)], capture_output=True,
                          cwd=cwd, env={**os.environ, "PYTHONUNBUFFERED": "1"}, timeout=300, check=False)


@pytest.fixture(scope="module")
def runs(workdir, clean, offsets):
    """name -> (directory, finished process); the processes run two at a time."""
    inputs = {
        "keyframe": damage(clean, offsets, ("keyframe", 14)),
        "clean": clean,
        "header": damage(clean, offsets, ("sequenceheader", None)),
        "tail": clean + clean[-200:],
        "between": clean + GARBAGE["cut-signatures-inside"](clean) + clean,
    }
    jobs = {
        "default": ("keyframe", ["out.mkv"]),
        "conceal": ("keyframe", ["--conceal", "-f", "rawvideo", "-"]),
        "clean-conceal": ("clean", ["--conceal", "-f", "rawvideo", "-"]),
        "clean-plain": ("clean", ["-f", "rawvideo", "-"]),
        "header": ("header", ["--conceal", "out.mkv"]),
        "tail-conceal": ("tail", ["--conceal", "-f", "rawvideo", "-"]),
        "tail-dump": ("tail", ["--conceal", "--dump-prompts", "out.npz"]),
        "tail-strict": ("tail", ["--dump-prompts", "out.npz"]),
        "between-dump": ("between", ["--conceal", "--dump-prompts", "out.npz"]),
    }

    def run(name: str):
        source, arguments = jobs[name]
        directory = workdir / f"run-{name}"
        directory.mkdir()
        (directory / "in.pmt").write_bytes(inputs[source])
        return directory, pmtdec("-i", "in.pmt", "--model", "tiny", "-nostats", *arguments, cwd=directory)

    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(run, name) for name in jobs}
        yield {name: future.result() for name, future in futures.items()}


def error_line(proc: subprocess.CompletedProcess) -> str:
    stderr = proc.stderr.decode()
    assert proc.returncode == 1 and "Traceback" not in stderr, stderr
    assert len(stderr.splitlines()) == 1, stderr
    return stderr.splitlines()[0]


def test_pmtdec_stops_at_a_damaged_keyframe_and_writes_nothing(runs, offsets):
    directory, proc = runs["default"]
    assert error_line(proc) == (f"pmtdec: error: invalid data: crc_mismatch: unit CRC-32C mismatch (unit type 4) at "
                                f"byte {offsets[('keyframe', 14)]}")
    assert sorted(p.name for p in directory.iterdir()) == ["in.pmt"]


def test_pmtdec_conceal_decodes_every_frame_and_names_the_concealed_ones(runs, offsets, clean, engine):
    _, proc = runs["conceal"]
    assert proc.returncode == 0, proc.stderr.decode()
    lines = proc.stderr.decode().splitlines()
    assert f"pmtdec: concealed frames 11..18 (keyframe lost: crc_mismatch at byte {offsets[('keyframe', 14)]}); " \
           f"frame 19 follows from them" in lines
    frames = np.frombuffer(proc.stdout, dtype=np.uint8).reshape(FRAMES, SIZE, SIZE, 3)
    streams, _ = concealed(damage(clean, offsets, ("keyframe", 14)))
    assert np.array_equal(frames, decode(streams, engine))


def test_pmtdec_conceal_on_a_clean_stream_changes_nothing(runs):
    (_, with_conceal), (_, plain) = runs["clean-conceal"], runs["clean-plain"]
    assert with_conceal.returncode == 0 and plain.returncode == 0
    assert len(plain.stdout) == FRAMES * SIZE * SIZE * 3
    assert with_conceal.stdout == plain.stdout
    assert "conceal" not in with_conceal.stderr.decode()


def test_pmtdec_conceal_refuses_a_damaged_sequence_header(runs):
    directory, proc = runs["header"]
    assert error_line(proc) == ("pmtdec: error: invalid data: crc_mismatch: the sequence header is damaged: the "
                                "stream cannot be decoded at byte 10")
    assert sorted(p.name for p in directory.iterdir()) == ["in.pmt"]


def test_the_api_reports_concealment(workdir, clean, offsets):
    import libpromptus as pmt

    path = workdir / "api-damaged.pmt"
    path.write_bytes(damage(clean, offsets, ("keyframe", 14)))
    with pytest.raises(InvalidDataError):
        pmt.open(path)
    with pmt.open(path, conceal=True) as container:
        assert container.concealment.frames == tuple(range(11, 19))
        assert container.info.frame_count == FRAMES
    assert pmt.open(workdir / "clean.pmt", conceal=True).concealment.damaged is False
    assert pmt.open(workdir / "clean.pmt").concealment is None


TAIL_NOTE = "pmtdec: bytes 18674..18873 after the end of stream 0 are not a stream: skipped"


def test_pmtdec_conceal_decodes_every_frame_before_trailing_garbage(runs):
    _, proc = runs["tail-conceal"]
    assert proc.returncode == 0, proc.stderr.decode()
    assert TAIL_NOTE in proc.stderr.decode().splitlines()
    assert "conceal" not in proc.stderr.decode()
    assert len(proc.stdout) == FRAMES * SIZE * SIZE * 3
    assert proc.stdout == runs["clean-plain"][1].stdout


def dumped_prompts(directory: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(directory / "out.npz") as dump:
        return dump["frame_index"], dump["prompts"]


@pytest.mark.parametrize(("name", "intact", "note"), [
    ("tail-dump", 1, TAIL_NOTE),
    ("between-dump", 2, f"pmtdec: {skipped(18674, len(GARBAGE['cut-signatures-inside'](b'')))}"),
])
def test_pmtdec_conceal_dumps_the_prompts_of_every_intact_stream(runs, clean, name, intact, note):
    directory, proc = runs[name]
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stderr.decode().splitlines() == [note, f"pmtdec: wrote the conditioning of {intact * FRAMES} frames "
                                                       f"to out.npz"]
    frame_index, prompts = dumped_prompts(directory)
    assert frame_index.tolist() == list(range(intact * FRAMES))
    want = np.stack([c for _, c in frame_conditioning(read_streams(io.BytesIO(clean * intact)))])
    assert np.array_equal(prompts, want)


def test_pmtdec_without_conceal_refuses_trailing_garbage(runs):
    directory, proc = runs["tail-strict"]
    assert error_line(proc) == ("pmtdec: error: invalid data: bad_signature: not a .pmt stream (signature mismatch) "
                                "at byte 18674")
    assert sorted(p.name for p in directory.iterdir()) == ["in.pmt"]
