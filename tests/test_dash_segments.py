"""Segmented delivery (SPEC.md Annex D): cutting a stream into DASH segments, and every
path through aligned renditions being one conforming stream."""
import io
import itertools

import numpy as np
import pytest
from libpromptus.bitstream import (
    EndOfStream,
    InvalidDataError,
    Metadata,
    SceneCut,
    StreamWriter,
    read_streams,
    read_units,
)
from libpromptus.bitstream.framing import PREFIX_SIZE
from libpromptus.bitstream.segments import Segmenter, split_stream
from libpromptus.bitstream.writer import unit_bytes
from libpromptus.conformance import seeded

#: Three segments of 4 frames, the last one cut short: frames 0..9.
SEGMENT_FRAMES, TOTAL = 4, 10
HEADER = seeded.tiny_header(32, 32, frame_count=TOTAL)


def rendition(rank: int, keyframes_per_segment: list[list[int]], *, seed: int, cut_at: int | None = None) -> bytes:
    """A stream of closed segments (a scene start at every boundary) at `rank`, with the
    given keyframes in each segment; `cut_at`: a scene cut inside a segment."""
    rng = np.random.RandomState(seed)
    sink = io.BytesIO()
    with StreamWriter(sink, HEADER) as writer:
        writer.write(Metadata((("settings", f"rank={rank}"),)))
        for keyframes in keyframes_per_segment:
            writer.write(seeded.scene_start(rng, HEADER, keyframes[0]))
            for frame in keyframes:
                if frame == cut_at:
                    writer.write(SceneCut(frame))
                    writer.write(seeded.scene_start(rng, HEADER, frame))
                writer.write(seeded.keyframe(rng, HEADER, frame, rank))
    return sink.getvalue()


RENDITIONS = [
    rendition(1, [[0, 3], [4, 7], [8, 9]], seed=1),
    rendition(2, [[0, 1, 3], [4, 5, 6, 7], [8, 9]], seed=2, cut_at=6),
    rendition(4, [[0, 2, 3], [4, 7], [8, 9]], seed=3),
]


def segments(data: bytes) -> list:
    return list(split_stream(io.BytesIO(data), SEGMENT_FRAMES))


def test_a_stream_splits_into_an_init_segment_and_media_segments_of_whole_scenes():
    init, *media = segments(RENDITIONS[1])
    assert init.number == 0 and init.frames == 0
    assert [(s.number, s.first_frame, s.frames, s.last) for s in media] == [
        (1, 0, 4, False), (2, 4, 4, False), (3, 8, 2, True)]
    whole = read_streams(io.BytesIO(RENDITIONS[1]))[0]
    # Every unit keeps its bytes but the index, left out, and the end unit, which says so.
    rejoined = init.data + b"".join(s.data for s in media)
    assert rejoined == RENDITIONS[1][:whole.end.index_offset] + unit_bytes(EndOfStream(TOTAL, 0))
    assert whole.end.index_offset > 0
    assert [s.start.unit.first_frame for s in read_streams(io.BytesIO(rejoined))[0].scenes] == [0, 4, 6, 8]


def test_every_path_through_aligned_renditions_is_one_stream_of_their_segments():
    cut = [segments(data) for data in RENDITIONS]
    for path in itertools.product(range(3), repeat=3):
        data = cut[path[0]][0].data + b"".join(cut[r][n + 1].data for n, r in enumerate(path))
        stream = read_streams(io.BytesIO(data))[0]
        assert stream.frame_count == TOTAL
        for n, r in enumerate(path):
            own = read_streams(io.BytesIO(RENDITIONS[r]))[0]
            frames = range(n * SEGMENT_FRAMES, (n + 1) * SEGMENT_FRAMES)
            mine = [k.unit for s in stream.scenes for k in s.keyframes if k.unit.frame_index in frames]
            theirs = [k.unit for s in own.scenes for k in s.keyframes if k.unit.frame_index in frames]
            assert len(mine) == len(theirs) > 0
            for a, b in zip(mine, theirs):
                assert a.frame_index == b.frame_index and a.u.shape[1] == b.u.shape[1]
                assert np.array_equal(a.u, b.u) and np.array_equal(a.v, b.v)


def test_a_keyframe_across_a_boundary_cannot_be_cut():
    crossing = rendition(2, [[0, 5], [6, 9]], seed=4)
    with pytest.raises(ValueError, match="keyframe of frame 5 crosses the segment boundary at frame 4"):
        segments(crossing)


def test_units_out_of_order_are_refused():
    segmenter = Segmenter(SEGMENT_FRAMES)
    segmenter.push(HEADER, b"")
    with pytest.raises(ValueError, match="a scene at frame 4 where frame 0 comes next"):
        segmenter.push(seeded.scene_start(np.random.RandomState(0), HEADER, 4), b"")


def test_segments_come_out_as_the_units_arrive():
    segmenter = Segmenter(SEGMENT_FRAMES)
    data = RENDITIONS[0]
    completed = []
    for item in read_units(io.BytesIO(data)):
        start = 0 if item.offset == PREFIX_SIZE else item.offset     # the header comes with the prefix
        done = segmenter.push(item.unit, data[start:item.offset + item.size])
        completed.append((type(item.unit).__name__, [s.number for s in done]))
    # init when the first scene opens; segment n when segment n + 1 opens; the last at the end
    assert [c for c in completed if c[1]] == [("SceneStart", [0]), ("SceneStart", [1]), ("SceneStart", [2]),
                                              ("EndOfStream", [3])]


def test_a_file_of_several_streams_is_refused():
    with pytest.raises(InvalidDataError, match="several streams"):
        segments(RENDITIONS[0] + RENDITIONS[1])


def test_a_segment_holds_at_least_one_frame():
    with pytest.raises(ValueError, match="at least one frame"):
        Segmenter(0)



def test_the_packager_refuses_a_rendition_of_another_version(tmp_path):
    from libpromptus.dash.packager import package

    def files(*streams: bytes) -> list:
        for number, data in enumerate(streams):
            (tmp_path / f"{number}.pmt").write_bytes(data)
        return [tmp_path / f"{number}.pmt" for number in range(len(streams))]

    later = RENDITIONS[1][:9] + b"\x01" + RENDITIONS[1][10:]      # the same units in a version 1.1 stream
    with pytest.raises(ValueError, match="another sequence header or version than rendition 0"):
        package(files(RENDITIONS[0], later), tmp_path / "manifest.mpd", SEGMENT_FRAMES)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0.pmt", "1.pmt"]       # nothing published
    package(files(RENDITIONS[0], RENDITIONS[1]), tmp_path / "manifest.mpd", SEGMENT_FRAMES)
    assert (tmp_path / "manifest.mpd").exists()
