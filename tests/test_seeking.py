"""Seeking in a file (`bitstream.seeking`): one checking pass keeps each stream's outline,
and decoding from frame N parses the file only from the scene start that holds N.
"""
from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
from decoding_helpers import TWO_SCENES, make_stream, stack_frames, tiny_stream
from libpromptus.bitstream import (
    InvalidDataError,
    SceneStart,
    SeekPoint,
    SequenceHeader,
    outline_streams,
    read_from_frame,
    read_streams,
    read_units,
)
from libpromptus.engines import create_engine

from libpromptus.decoder.decoding import decode_frames, decode_units
from libpromptus.models import load_generator

SIZE = 32


def two_streams(*, index: bool) -> bytes:
    """Two concatenated copies of TWO_SCENES (18 frames each, scenes at 0 and 10)."""
    header = tiny_stream(SIZE, SIZE, TWO_SCENES, seed=3).header
    data = make_stream(header, TWO_SCENES, seed=3, index=index).data
    return data + data


class RecordingFile(io.BytesIO):
    """A seekable file that records the byte ranges read from it."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.ranges: list[tuple[int, int]] = []

    def read(self, size: int = -1) -> bytes:
        start = self.tell()
        data = super().read(size)
        self.ranges.append((start, start + len(data)))
        return data


@pytest.mark.parametrize("index", [True, False])
def test_the_outline_has_each_streams_frames_and_scene_starts(index):
    data = two_streams(index=index)
    outlines = outline_streams(io.BytesIO(data))
    starts = [item for item in read_units(io.BytesIO(data)) if isinstance(item.unit, SceneStart)]
    assert [(o.number, o.first_frame, o.frame_count, o.indexed) for o in outlines] == [(0, 0, 18, index),
                                                                                     (1, 18, 18, index)]
    assert outlines[1].offset == len(data) // 2
    assert [p for o in outlines for p in o.scene_starts] == [SeekPoint(s.unit.first_frame, s.offset) for s in starts]


def test_the_outline_pass_refuses_a_bad_file_like_the_reader():
    data = bytearray(two_streams(index=True))
    data[-30] ^= 1
    with pytest.raises(InvalidDataError) as outlined:
        outline_streams(io.BytesIO(bytes(data)))
    with pytest.raises(InvalidDataError) as read:
        read_streams(io.BytesIO(bytes(data)))
    assert read.value.code == "crc_mismatch"
    assert (outlined.value.code, outlined.value.offset) == (read.value.code, read.value.offset)


@pytest.mark.parametrize(("frame", "first_frame", "scene_first"), [(0, 0, 0), (9, 0, 0), (10, 0, 10), (17, 0, 10),
                                                                   (18, 18, 0), (31, 18, 10)])
def test_reading_from_a_frame_starts_at_the_scene_start_that_holds_it(frame, first_frame, scene_first):
    data = two_streams(index=True)
    source = RecordingFile(data)
    outlines = outline_streams(io.BytesIO(data))
    first, units = read_from_frame(source, outlines, frame)
    units = list(units)
    assert first == first_frame
    assert isinstance(units[0].unit, SequenceHeader) and isinstance(units[1].unit, SceneStart)
    assert units[1].unit.first_frame == scene_first
    assert [u.stream for u in units][-1] == 1
    # nothing between the header and the seek point was read
    skipped = (units[0].offset + units[0].size, units[1].offset)
    assert not any(start < skipped[1] and end > skipped[0] for start, end in source.ranges)


def test_a_frame_past_the_end_gives_the_frame_count_and_no_units():
    data = two_streams(index=True)
    first, units = read_from_frame(io.BytesIO(data), outline_streams(io.BytesIO(data)), 36)
    assert first == 36 and list(units) == []


@pytest.fixture(scope="module")
def engine():
    data = two_streams(index=True)
    return create_engine("torch", load_generator("tiny"), read_streams(io.BytesIO(data))[0].header, device="cpu")


@pytest.mark.parametrize("index", [True, False])
@pytest.mark.parametrize(("start", "count"), [(0, None), (5, 3), (12, None), (20, 7), (35, 1)])
def test_decoding_from_a_seek_gives_the_frames_of_a_whole_decode(engine, index, start, count):
    data = two_streams(index=index)
    expected = stack_frames(decode_frames(read_streams(io.BytesIO(data)), engine, start_frame=start,
                                          frame_count=count))
    first, units = read_from_frame(io.BytesIO(data), outline_streams(io.BytesIO(data)), start)
    got = stack_frames(decode_units(units, engine, start_frame=start, frame_count=count, first_frame=first))
    assert got[0] == expected[0] == list(range(start, 36 if count is None else start + count))
    assert np.array_equal(got[1], expected[1])


def test_pmtdec_start_frame_on_a_file_seeks(tmp_path, engine):
    data = two_streams(index=True)
    path = tmp_path / "two.pmt"
    path.write_bytes(data)
    done = subprocess.run([sys.executable, "-m", "libpromptus.cli.pmtdec", "-loglevel", "error", "-i", str(path),
                           "--start-frame", "20", "-frames:v", "5", "-f", "rawvideo", "-"], capture_output=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    _, expected = stack_frames(decode_frames(read_streams(io.BytesIO(data)), engine, start_frame=20, frame_count=5))
    assert np.frombuffer(done.stdout, np.uint8).reshape(-1, SIZE, SIZE, 3).tolist() == expected.tolist()
