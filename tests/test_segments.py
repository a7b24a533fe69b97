"""Segment-parallel encoding: closed segments encoded independently, merged into one stream."""
import io

import numpy as np
import pytest
from libpromptus.bitstream import (
    Coding,
    InvalidDataError,
    Keyframe,
    LatentCodec,
    SceneCut,
    SceneStart,
    StreamWriter,
    merge_streams,
    read_streams,
)

from libpromptus import encode
from libpromptus.io.samples import write_sample
from libpromptus.process.profiles import TINY


def _segment(frames: list[int], seed: int, *, width: int = 32) -> bytes:
    """A tiny-profile stream with keyframes at `frames` (the first is 0)."""
    header = TINY.sequence_header(width=width, height=32, fps_num=30, fps_den=1, frame_count=frames[-1] + 1)
    rng = np.random.default_rng(seed)
    sink = io.BytesIO()
    with StreamWriter(sink, header) as writer:
        writer.write(SceneStart(0, LatentCodec.Q8, Coding.ENTROPY,
                                rng.integers(0, 256, header.latent_shape, np.uint8), (0.1,) * 4, (128,) * 4))
        for index in frames:
            writer.write(Keyframe(index, Coding.ENTROPY, rng.integers(0, 256, (77, 2), np.uint8),
                                  rng.integers(0, 256, (2, 1024), np.uint8), 0.02, 100, 0.1, 120))
    return sink.getvalue()


def test_merge_shifts_frames_and_keeps_every_unit():
    first, second = _segment([0, 4, 9], 1), _segment([0, 3, 5], 2)
    segments = [read_streams(io.BytesIO(first))[0], read_streams(io.BytesIO(second))[0]]
    sink = io.BytesIO()
    merge_streams(segments, sink, cuts=[False, True])
    merged = read_streams(io.BytesIO(sink.getvalue()))
    assert len(merged) == 1 and merged[0].frame_count == 16 and merged[0].header.frame_count == 16
    scenes = merged[0].scenes
    assert [s.first_frame for s in scenes] == [0, 10]
    assert scenes[0].cut is None and isinstance(scenes[1].cut.unit, SceneCut) and scenes[1].cut.unit.frame_index == 10
    assert [k.unit.frame_index for s in scenes for k in s.keyframes] == [0, 4, 9, 10, 13, 15]
    originals = [k.unit for seg in segments for s in seg.scenes for k in s.keyframes]
    for original, item in zip(originals, [k for s in scenes for k in s.keyframes]):
        assert np.array_equal(original.u, item.unit.u) and np.array_equal(original.v, item.unit.v)
    assert np.array_equal(segments[1].scenes[0].start.unit.latent, scenes[1].start.unit.latent)


def test_merge_refuses_segments_with_other_headers():
    segments = [read_streams(io.BytesIO(_segment([0, 2], 1)))[0],
                read_streams(io.BytesIO(_segment([0, 2], 2, width=48)))[0]]
    with pytest.raises(InvalidDataError) as err:
        merge_streams(segments, io.BytesIO())
    assert err.value.code == "stream_mismatch"


def test_segmented_encode_is_one_valid_stream_of_closed_segments(tmp_path):
    clip = tmp_path / "clip.y4m"
    write_sample(str(clip), 40, 32, 32)
    out = tmp_path / "out.pmt"
    result = encode(str(clip), str(out), model="tiny", rank=2, interval=5, iterations=1, first_iterations=1,
                    scene_threshold=None, segment_seconds=0.5, jobs=1)
    stream = read_streams(str(out))[0]
    assert result.frames == 40 and stream.frame_count == 40
    assert [s.first_frame for s in stream.scenes] == [0, 15, 30]
    assert [k.unit.frame_index for s in stream.scenes for k in s.keyframes] == [0, 5, 10, 14, 15, 20, 25, 29, 30,
                                                                              35, 39]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.y4m", "out.pmt"]
    again = tmp_path / "again.pmt"
    encode(str(clip), str(again), model="tiny", rank=2, interval=5, iterations=1, first_iterations=1,
           scene_threshold=None, segment_seconds=0.5, jobs=1)
    assert again.read_bytes() == out.read_bytes()
