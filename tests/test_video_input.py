"""libpromptus.io.video_input: which frames the encoder's input gives: every frame of
every kind of clip, -ss / -t / -frames:v selections (frame-exact, through seeks),
-r relabelling, and seeks that land late or fail.

The clips are made by video_input_helpers.py. Scaling (-s, --fit) is in
test_video_input_size.py, standard input and y4m files cut inside a frame in
test_video_input_stdin.py, errors and lazy streaming in test_video_input_errors.py.
"""
from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import video_input_helpers
from video_input_helpers import CLIPS, H, N, W, gradient, read_all

from libpromptus.io.video_input import open_video

# the module fixtures of video_input_helpers (the clips, built once in each test module)
clips, full = video_input_helpers.clips, video_input_helpers.full


# ------------------------------------------------------------------ plain reading


@pytest.mark.parametrize("kind", list(CLIPS))
def test_reads_every_frame_with_size_and_rate(clips, full, kind):
    _, rate, lossless, count_known = CLIPS[kind]
    info, frames = read_all(clips[kind])
    assert (info.width, info.height, info.source_width, info.source_height) == (W, H, W, H)
    assert info.rate == rate and isinstance(info.rate, Fraction)
    assert info.frame_count == (N if count_known else None)
    assert len(frames) == N
    for i, frame in enumerate(frames):
        assert frame.shape == (H, W, 3) and frame.dtype == np.uint8 and frame.flags.c_contiguous
        if lossless:
            np.testing.assert_array_equal(frame, gradient(i))
        else:
            tolerance = 3 if kind != "webm" else 40
            assert np.abs(frame.astype(int) - gradient(i)).mean() < tolerance, i
    assert all(np.array_equal(a, b) for a, b in zip(frames, full[kind], strict=True)), "not deterministic"


def test_y4m_is_close_to_the_source(full):
    # 4:4:4 YUV rounding only
    for i, frame in enumerate(full["y4m"]):
        assert np.abs(frame.astype(int) - gradient(i)).max() <= 3


def test_single_image_file(tmp_path):
    path = tmp_path / "one.png"
    av.VideoFrame.from_ndarray(gradient(3), format="rgb24").to_image().save(path)
    info, frames = read_all(str(path))
    assert len(frames) == 1 and (info.width, info.height) == (W, H)
    np.testing.assert_array_equal(frames[0], gradient(3))


def test_picks_the_video_stream_of_a_file_with_audio(tmp_path):
    path = tmp_path / "av.mkv"
    with av.open(str(path), "w") as container:
        audio = container.add_stream("pcm_s16le", rate=8000)
        video = container.add_stream("ffv1", rate=10)
        video.width, video.height, video.pix_fmt = W, H, "bgr0"
        for i in range(5):
            for packet in video.encode(av.VideoFrame.from_ndarray(gradient(i), format="rgb24")):
                container.mux(packet)
        samples = av.AudioFrame.from_ndarray(np.zeros((1, 4000), np.int16), format="s16", layout="mono")
        samples.sample_rate = 8000
        for packet in audio.encode(samples):
            container.mux(packet)
        for stream in (video, audio):
            for packet in stream.encode():
                container.mux(packet)
    info, frames = read_all(str(path))
    assert info.rate == 10 and len(frames) == 5
    np.testing.assert_array_equal(frames[4], gradient(4))


# ------------------------------------------------------------------ -ss / -t / -frames:v


def expected_indices(rate: Fraction, start=None, duration=None, max_frames=None, total=N) -> list[int]:
    """Frame i is at i/rate; kept when start <= i/rate < start + duration, at most max_frames."""
    begin = Fraction(repr(start)) if start is not None else Fraction(0)
    kept = [i for i in range(total) if Fraction(i) / rate >= begin
            and (duration is None or Fraction(i) / rate < begin + Fraction(repr(duration)))]
    return kept if max_frames is None else kept[:max_frames]


SELECTIONS = [
    dict(start=0.5),
    dict(start=1.3),                       # mid-GOP in the mp4s: seek to a keyframe, decode forward
    dict(start=0.71, duration=0.5),
    dict(duration=0.9),
    dict(max_frames=7),
    dict(start=1.05, max_frames=4),
    dict(start=0.2, duration=1.0, max_frames=5),
    dict(start=0.2, duration=0.3, max_frames=50),
    dict(start=1.9),                       # the last frames
    dict(start=5.0),                       # past the end: nothing
    dict(duration=0.0),
    dict(max_frames=0),
]


@pytest.mark.parametrize("kind", [k for k in CLIPS if k != "png"])
@pytest.mark.parametrize("selection", SELECTIONS, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()))
def test_selection_is_frame_exact(clips, full, kind, selection):
    rate = CLIPS[kind][1]
    info, frames = read_all(clips[kind], **selection)
    indices = expected_indices(rate, **selection)
    assert len(frames) == len(indices)
    for index, frame in zip(indices, frames, strict=True):
        np.testing.assert_array_equal(frame, full[kind][index])
    if info.frame_count is not None:
        assert info.frame_count == len(frames)


def test_start_on_a_frame_boundary_keeps_that_frame(clips, full):
    for kind in ("y4m", "mp4"):                          # 24 fps: frame 12 is at exactly 0.5 s
        _, frames = read_all(clips[kind], start=0.5, max_frames=1)
        np.testing.assert_array_equal(frames[0], full[kind][12])
    _, frames = read_all(clips["mp4-444"], start=Fraction(30 * 1001, 30000), max_frames=1)
    np.testing.assert_array_equal(frames[0], full["mp4-444"][30])
    _, frames = read_all(clips["y4m"], start="0:01.5", duration="250ms")   # FFmpeg time syntax
    assert len(frames) == 6 and np.array_equal(frames[0], full["y4m"][36])


def test_frame_count_after_selection_is_known_for_y4m_and_images(clips):
    def count(kind, **options):
        with open_video(clips[kind], **options) as reader:
            return reader.info.frame_count

    assert count("y4m", start=0.5, duration=0.5) == 12
    assert count("y4m", start=1.0, max_frames=100) == 24
    assert count("png", start=0.4, duration=1) == 25
    assert count("png", max_frames=4) == 4
    assert count("y4m", start=9.0) == 0
    # an mp4's sample count is not a promise of the frames decoded (edit lists): not reported
    assert count("mp4") is None and count("mp4", max_frames=10) is None


def test_frame_count_of_a_y4m_with_frame_parameters_is_unknown(tmp_path, clips, full):
    # FFmpeg's y4m length assumes bare FRAME lines; with parameters it would be wrong
    data = Path(clips["y4m"]).read_bytes()
    header = data.index(b"FRAME")
    frames = data[header:].split(b"FRAME\n")[1:]
    path = tmp_path / "params.y4m"
    path.write_bytes(data[:header] + b"".join(b"FRAME Ip\n" + frame for frame in frames))
    info, read = read_all(str(path))
    assert info.frame_count is None and len(read) == N
    assert all(np.array_equal(a, b) for a, b in zip(read, full["y4m"], strict=True))
    # a file cut inside its last frame: not an exact multiple, so unknown too
    path = tmp_path / "cut.y4m"
    path.write_bytes(data[:-100])
    info, read = read_all(str(path))
    assert info.frame_count is None and len(read) == N - 1


# ------------------------------------------------------------------ -r


def test_rate_relabels_without_resampling(clips, full):
    info, frames = read_all(clips["y4m"], rate=Fraction(12))
    assert info.rate == 12 and info.frame_count == N and len(frames) == N
    assert all(np.array_equal(a, b) for a, b in zip(frames, full["y4m"], strict=True))
    # -ss/-t keep measuring the file's own timestamps
    info, frames = read_all(clips["mp4-444"], rate=Fraction(50), start=1.0, duration=0.5)
    assert info.rate == 50
    indices = expected_indices(Fraction(30000, 1001), start=1.0, duration=0.5)
    assert len(frames) == len(indices) == 15
    assert all(np.array_equal(f, full["mp4-444"][i]) for f, i in zip(frames, indices, strict=True))


def test_image_sequence_rate(clips, full):
    info, frames = read_all(clips["png"])
    assert info.rate == 25                               # FFmpeg's image2 default
    info, frames = read_all(clips["png"], rate=Fraction(10), start=1.0, duration=1.5)
    assert info.rate == 10 and info.frame_count == 15 and len(frames) == 15
    np.testing.assert_array_equal(frames[0], gradient(10))   # -r is the sequence's rate: 1 s = image 10
    info, _ = read_all(clips["png"], rate=Fraction(30000, 1001), max_frames=3)
    assert info.rate == Fraction(30000, 1001) and info.frame_count == 3


# ------------------------------------------------------------------ seeking that goes wrong


class SeekingProxy:
    """A container whose first seeks land `late` seconds late, or fail."""

    def __init__(self, container, *, late_seeks: int = 0, late: int = 1, fail: bool = False) -> None:
        self._container, self._late_seeks, self._late, self._fail = container, late_seeks, late, fail
        self.seeks: list[int] = []

    def seek(self, offset, **options):
        self.seeks.append(offset)
        if self._fail:
            raise av.error.ArgumentError(22, "Invalid argument")
        if len(self.seeks) <= self._late_seeks:
            stream = options["stream"]
            offset += int(self._late / stream.time_base)
        return self._container.seek(offset, **options)

    def __getattr__(self, name):
        return getattr(self._container, name)


@pytest.mark.parametrize("late_seeks, late", [(1, 1), (2, 1), (10, 1), (10, 100)])
@pytest.mark.parametrize("kind", ["mp4", "mkv-late", "y4m"])
def test_a_seek_landing_past_the_start_steps_back(clips, full, kind, late_seeks, late):
    # (10, 100): every seek lands past the end; the input is opened again and read from the top
    reader = open_video(clips[kind], start=1.3, duration=0.3)
    proxy = reader._container = SeekingProxy(reader._container, late_seeks=late_seeks, late=late)
    with reader:
        frames = list(reader.frames())
    indices = expected_indices(Fraction(24), start=1.3, duration=0.3)
    assert len(proxy.seeks) >= 2 and len(frames) == len(indices)
    assert all(np.array_equal(frame, full[kind][i]) for frame, i in zip(frames, indices, strict=True))


@pytest.mark.parametrize("kind", ["mp4", "png"])
def test_a_failing_seek_reads_from_the_top(clips, full, kind):
    reader = open_video(clips[kind], start=1.3, max_frames=3)
    reader._container = SeekingProxy(reader._container, fail=True)
    with reader:
        frames = list(reader.frames())
    first = math.ceil(Fraction(13, 10) * CLIPS[kind][1])
    assert all(np.array_equal(frame, full[kind][first + k]) for k, frame in enumerate(frames))
    assert len(frames) == 3
