"""Concealment of garbage after and between streams (no model): it is skipped to the next
signature with a note naming its range, while the strict reader still refuses it; a
damaged first signature is never concealed; the scan for a signature has a budget.
"""
from __future__ import annotations

import io

import conceal_helpers
import numpy as np
import pytest
from conceal_helpers import FRAMES, GARBAGE, concealed, damage, flip, layout, skipped
from libpromptus.bitstream import InvalidDataError, read_streams
from libpromptus.bitstream.framing import SIGNATURE
from libpromptus.bitstream.salvage import LostBytes, StreamPrefix, salvage

from libpromptus.process.prompts import frame_conditioning

# the module fixtures of conceal_helpers: the clean stream, its units' offsets, a work directory
clean, offsets, workdir = conceal_helpers.clean, conceal_helpers.offsets, conceal_helpers.workdir


# ---------------------------------------------------------------- garbage after and between streams (no model)


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
