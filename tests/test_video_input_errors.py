"""libpromptus.io.video_input: errors, each a one-line VideoInputError (missing inputs,
files that are not video, corrupt data, bad -s and time strings and options, a source
over the size cap); and frames that stream lazily (decoded on request, read once,
stopped by close, independent arrays, no torch import).
"""
from __future__ import annotations

import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import video_input_helpers
from video_input_helpers import H, W, gradient, read_all, write_clip

from libpromptus.io.video_input import (
    VideoInputError,
    VideoReader,
    open_video,
    parse_size,
    parse_time,
)

# the module fixtures of video_input_helpers (the clips, built once in each test module)
clips = video_input_helpers.clips


# ------------------------------------------------------------------ errors


def raises_one_line(match: str, function, *args, **kwargs) -> str:
    with pytest.raises(VideoInputError, match=match) as caught:
        result = function(*args, **kwargs)
        if isinstance(result, VideoReader):
            list(result.frames())
    message = str(caught.value)
    assert "\n" not in message and message
    assert isinstance(caught.value, ValueError)
    return message


def test_missing_inputs(tmp_path):
    raises_one_line("no such file", open_video, str(tmp_path / "missing.mp4"))
    raises_one_line("no image matches", open_video, str(tmp_path / "%05d.png"))
    raises_one_line("no such directory", open_video, str(tmp_path / "nowhere" / "%05d.png"))
    raises_one_line("is a directory", open_video, str(tmp_path))
    raises_one_line("no input", open_video, "")


def test_files_that_are_not_video(tmp_path):
    for name in ("notes.txt", "notes.mp4", "notes.y4m", "notes"):
        (tmp_path / name).write_text("This is a text file, not a video.\n" * 40)
        raises_one_line("not a readable video", open_video, str(tmp_path / name))
    (tmp_path / "empty.mkv").write_bytes(b"")
    raises_one_line("not a readable video", open_video, str(tmp_path / "empty.mkv"))
    (tmp_path / "noise.bin").write_bytes(np.random.default_rng(0).integers(0, 256, 5000, np.uint8).tobytes())
    raises_one_line("not a readable video", open_video, str(tmp_path / "noise.bin"))


def test_audio_only_file(tmp_path):
    path = tmp_path / "tone.wav"
    with av.open(str(path), "w", format="wav") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        samples = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        samples.sample_rate = 8000
        for packet in stream.encode(samples):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    raises_one_line("no video stream", open_video, str(path))


def y4m_with_a_broken_frame(path: Path, frames: int, broken: int) -> str:
    write_clip(path, (gradient(i % 50) for i in range(frames)), fmt="yuv4mpegpipe", codec="rawvideo",
               pix_fmt="yuv444p", rate=24)
    data = bytearray(path.read_bytes())
    header = data.index(b"FRAME")
    frame_size = len(b"FRAME\n") + W * H * 3
    at = header + broken * frame_size
    assert data[at:at + 6] == b"FRAME\n"
    data[at:at + 6] = b"GARBGE"
    path.write_bytes(bytes(data))
    return str(path)


def test_corrupt_data_mid_stream(tmp_path):
    source = y4m_with_a_broken_frame(tmp_path / "broken.y4m", 30, 20)
    message = raises_one_line("corrupt or unreadable video data after 20 frames", open_video, source)
    assert message.startswith(source)
    truncated = tmp_path / "truncated.mp4"
    data = Path(write_clip(tmp_path / "whole.mkv", [gradient(i) for i in range(20)], fmt="matroska",
                           codec="ffv1", pix_fmt="bgr0", rate=10)).read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    # half a Matroska file: FFmpeg decodes what is there; whatever it does, only VideoInputError escapes
    try:
        with open_video(str(truncated)) as reader:
            assert 0 < len(list(reader.frames())) < 20
    except VideoInputError as error:
        assert "\n" not in str(error)


@pytest.mark.parametrize("text", ["0x10", "10x0", "abc", "5000x10", "10x5000", "", "12x", "x12", "-5x5",
                                  "1.5x2", "hd9999", "10 x 10", "99999999999x1"])
def test_bad_size_strings(text):
    raises_one_line("-s", parse_size, text)


def test_size_strings():
    assert parse_size("256x256") == (256, 256)
    assert parse_size(" 96x64 ") == (96, 64)
    assert parse_size("1x4096") == (1, 4096)
    assert parse_size("4096x4096") == (4096, 4096)
    assert parse_size("hd720") == (1280, 720)
    assert parse_size("VGA") == (640, 480)


def test_time_strings():
    assert parse_time("1.5") == Fraction(3, 2)
    assert parse_time("90") == 90
    assert parse_time("1:02.5") == Fraction(125, 2)
    assert parse_time("01:00:00") == 3600
    assert parse_time("500ms") == Fraction(1, 2)
    for bad in ("", "abc", "-1", "1:60", "1:2:3:4", "1e3"):
        raises_one_line("not a time", parse_time, bad)


@pytest.mark.parametrize("options, match", [
    (dict(size=(0, 10)), "at least 1"),
    (dict(size=(5000, 10)), "larger than 4096x4096"),
    (dict(size=(10, 4097)), "larger than 4096x4096"),
    (dict(size=(10,)), "pair"),
    (dict(size=(10.0, 10)), "integers"),
    (dict(fit="zoom"), "--fit"),
    (dict(start=-1.0), "negative"),
    (dict(start=float("nan")), "finite"),
    (dict(duration=-0.5), "negative"),
    (dict(duration=float("inf")), "finite"),
    (dict(max_frames=-1), "negative"),
    (dict(max_frames=2.5), "frame count"),
    (dict(rate=Fraction(0)), "positive"),
    (dict(rate="abc"), "frame rate"),
])
def test_bad_options(clips, options, match):
    raises_one_line(match, open_video, clips["y4m"], **options)


def test_source_larger_than_the_cap_needs_a_size(tmp_path):
    source = str(write_clip(tmp_path / "wide.y4m", [np.zeros((8, 4100, 3), np.uint8)], fmt="yuv4mpegpipe",
                            codec="rawvideo", pix_fmt="yuv444p", rate=24))
    raises_one_line("choose an output size with -s", open_video, source)
    info, frames = read_all(source, size=(410, 8), fit="scale")
    assert info.source_width == 4100 and frames[0].shape == (8, 410, 3)


# ------------------------------------------------------------------ streaming


def test_frames_stream_and_decode_lazily(tmp_path):
    # 300 frames whose 250th is corrupt: the first frame comes without touching it
    source = y4m_with_a_broken_frame(tmp_path / "long.y4m", 300, 250)
    with open_video(source) as reader:
        assert reader.info.frame_count == 300
        frames = reader.frames()                  # a generator: nothing decoded yet
        first = next(frames)
        np.testing.assert_array_equal(first, read_all(source, max_frames=1)[1][0])
        for _ in range(100):
            next(frames)
    with open_video(source, start=5.0, max_frames=10) as reader:   # -ss seeks: frame 240 on
        assert len(list(reader.frames())) == 10
    with pytest.raises(VideoInputError, match="after 250 frames"):
        read_all(source)


def test_frames_do_not_decode_before_the_first_request(tmp_path):
    source = y4m_with_a_broken_frame(tmp_path / "bad0.y4m", 3, 0)
    with open_video(source) as reader:
        frames = reader.frames()                  # no error yet: nothing is read
        with pytest.raises(VideoInputError, match="after 0 frames"):
            next(frames)


def test_frames_reads_once_and_close_stops(clips):
    reader = open_video(clips["mkv"])
    frames = reader.frames()
    next(frames)
    raises_one_line("once", reader.frames)
    reader.close()
    assert list(frames) == []                     # closed: the generator just ends
    reader.close()
    raises_one_line("closed", reader.frames)


def test_frame_arrays_are_independent(clips):
    with open_video(clips["mkv"]) as reader:
        frames = reader.frames()
        first = next(frames)
        kept = first.copy()
        rest = list(frames)
    np.testing.assert_array_equal(first, kept)
    assert not any(np.shares_memory(first, other) for other in rest[:3])


def test_no_torch_import():
    code = ("import sys, libpromptus.io.video_input\n"
            "assert not [m for m in sys.modules if m == 'torch' or m.startswith('torch.')]\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
