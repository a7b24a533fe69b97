"""libpromptus.io.video_input: the encoder's input through PyAV.

Small clips are made with PyAV itself: 48 frames of 96x64 moving gradients as .y4m
(raw 4:4:4), .mkv (FFV1 RGB, lossless), .mp4 (H.264 RGB at CRF 0, lossless, with a
12-frame GOP and B-frames, so that -ss has to seek to a keyframe and decode forward),
.mp4 (H.264 4:4:4 at 30000/1001), .webm (VP9), .ts, an .mkv whose first frame is
at 1.5 s, and a PNG sequence.
"""
from __future__ import annotations

import io
import logging
import math
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from libpromptus.io.video_input import (
    FITS,
    VideoInfo,
    VideoInputError,
    VideoReader,
    open_video,
    parse_size,
    parse_time,
)

W, H, N = 96, 64, 48


def gradient(i: int, width: int = W, height: int = H) -> np.ndarray:
    x = np.arange(width)[None, :, None]
    y = np.arange(height)[:, None, None]
    channel = np.array([1, 2, 3])[None, None, :]
    return ((x * 2 + y * 3 + i * 7 * channel) % 256).astype(np.uint8)


def write_clip(path: Path, frames, *, fmt: str, codec: str, pix_fmt: str, rate, options=None, gop=None,
               first_pts=None) -> Path:
    frames = list(frames)
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=rate, options=options or {})
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if gop:
            stream.gop_size = gop
        for i, array in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(array, format="rgb24")
            if first_pts is not None:               # timestamps that do not start at 0
                frame.pts, frame.time_base = first_pts + i, 1 / Fraction(rate)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


# kind -> (name, rate, lossless, frame_count known from the container: exact counts only)
CLIPS = {
    "y4m": ("clip.y4m", Fraction(24), False, True),
    "mkv": ("clip.mkv", Fraction(30000, 1001), True, False),
    "mp4": ("clip.mp4", Fraction(24), True, False),
    "mp4-444": ("clip444.mp4", Fraction(30000, 1001), False, False),
    "webm": ("clip.webm", Fraction(25), False, False),
    "ts": ("clip.ts", Fraction(24), False, False),
    "mkv-late": ("late.mkv", Fraction(24), True, False),     # first frame at 1.5 s
    "png": ("png/%05d.png", Fraction(25), True, True),
}


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("clips")
    frames = [gradient(i) for i in range(N)]
    write_clip(root / "clip.y4m", frames, fmt="yuv4mpegpipe", codec="rawvideo", pix_fmt="yuv444p", rate=24)
    write_clip(root / "clip.mkv", frames, fmt="matroska", codec="ffv1", pix_fmt="bgr0", rate=Fraction(30000, 1001))
    write_clip(root / "clip.mp4", frames, fmt="mp4", codec="libx264rgb", pix_fmt="rgb24", rate=24,
               options={"crf": "0", "bf": "2", "sc_threshold": "0"}, gop=12)
    write_clip(root / "clip444.mp4", frames, fmt="mp4", codec="libx264", pix_fmt="yuv444p",
               rate=Fraction(30000, 1001), options={"crf": "0", "bf": "3", "sc_threshold": "0"}, gop=12)
    write_clip(root / "clip.webm", frames, fmt="webm", codec="libvpx-vp9", pix_fmt="yuv420p", rate=25,
               options={"deadline": "realtime", "cpu-used": "8"}, gop=12)
    write_clip(root / "clip.ts", frames, fmt="mpegts", codec="libx264", pix_fmt="yuv444p", rate=24,
               options={"crf": "0", "bf": "2", "sc_threshold": "0"}, gop=12)
    write_clip(root / "late.mkv", frames, fmt="matroska", codec="ffv1", pix_fmt="bgr0", rate=24, first_pts=36)
    (root / "png").mkdir()
    for i, array in enumerate(frames):
        av.VideoFrame.from_ndarray(array, format="rgb24").to_image().save(root / "png" / f"{i + 1:05d}.png")
    return {kind: str(root / name) for kind, (name, *_rest) in CLIPS.items()}


def read_all(source: str, **options) -> tuple[VideoInfo, list[np.ndarray]]:
    with open_video(source, **options) as reader:
        return reader.info, list(reader.frames())


@pytest.fixture(scope="module")
def full(clips) -> dict[str, list[np.ndarray]]:
    return {kind: read_all(source)[1] for kind, source in clips.items()}


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


# ------------------------------------------------------------------ a y4m cut inside a frame


FRAME_BYTES = W * H * 3                 # the clip is 4:4:4


def cut_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "ends inside frame" in r.getMessage()]


def cut_message(name: str, frame: int, present: int) -> str:
    complete = frame - 1
    return (f"{name}: the input ends inside frame {frame}, after {complete} complete "
            f"{'frame' if complete == 1 else 'frames'} ({present} of its {FRAME_BYTES} bytes are there); "
            f"the partial frame is dropped")


# (bytes cut off the end, the frame it ends inside, its bytes there): inside the last frame's
# data, inside its FRAME line, and inside the first frame of a one-frame file
@pytest.mark.parametrize("cut, frame, present", [(100, N, FRAME_BYTES - 100), (FRAME_BYTES + 3, N, 0),
                                                 ((N - 1) * (FRAME_BYTES + 6) + 1000, 1, FRAME_BYTES - 1000)])
def test_a_y4m_file_cut_inside_a_frame_warns_and_drops_it(tmp_path, clips, full, caplog, cut, frame, present):
    """FFmpeg's demuxer drops the partial frame silently; the reader says so once."""
    path = tmp_path / "cut.y4m"
    path.write_bytes(Path(clips["y4m"]).read_bytes()[:-cut])
    with caplog.at_level(logging.WARNING, logger="libpromptus"):
        _, read = read_all(str(path))
    assert len(read) == frame - 1
    assert all(np.array_equal(a, b) for a, b in zip(read, full["y4m"], strict=False))
    assert cut_warnings(caplog) == [cut_message(str(path), frame, present)]


def test_a_y4m_cut_inside_a_frame_from_standard_input(monkeypatch, clips, full, caplog):
    data = Path(clips["y4m"]).read_bytes()[:-100]
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))     # a file object, no fileno
    with caplog.at_level(logging.WARNING, logger="libpromptus"):
        _, read = read_all("-")
    assert len(read) == N - 1 and all(np.array_equal(a, b) for a, b in zip(read, full["y4m"], strict=False))
    assert cut_warnings(caplog) == [cut_message("standard input", N, FRAME_BYTES - 100)]
    # through a real pipe: the one warning on stderr (logging's last-resort handler)
    result = subprocess.run([sys.executable, "-c", STDIN_SCRIPT, "-", "{}"], input=data, capture_output=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.split()[0] == str(N - 1).encode()
    assert result.stderr.decode().splitlines() == [cut_message("standard input", N, FRAME_BYTES - 100)]


def test_whole_y4m_inputs_and_selections_that_stop_before_the_cut_do_not_warn(tmp_path, clips, caplog):
    data = Path(clips["y4m"]).read_bytes()
    header = data.index(b"FRAME")
    params = tmp_path / "params.y4m"        # FRAME lines with parameters: whole, though not bare
    params.write_bytes(data[:header] + b"".join(b"FRAME Ip\n" + f for f in data[header:].split(b"FRAME\n")[1:]))
    cut = tmp_path / "cut.y4m"
    cut.write_bytes(data[:-100])
    with caplog.at_level(logging.WARNING, logger="libpromptus"):
        assert len(read_all(clips["y4m"])[1]) == N
        assert len(read_all(str(params))[1]) == N
        assert len(read_all(str(cut), max_frames=N - 1)[1]) == N - 1     # the cut is never read
        assert len(read_all(str(cut), start=1.0)[1]) == N - 1 - 24       # a seek, then to the end
    assert cut_warnings(caplog) == [cut_message(str(cut), N, FRAME_BYTES - 100)]


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


# ------------------------------------------------------------------ -s and --fit


RED, GREEN, BLUE, GREY = (220, 30, 30), (30, 200, 40), (40, 50, 210), (128, 128, 128)


def thirds(width: int, height: int, horizontal: bool = True) -> np.ndarray:
    """Left/middle/right thirds (top/middle/bottom when not horizontal) red, green, blue."""
    image = np.empty((height, width, 3), np.uint8)
    if horizontal:
        third = width // 3
        image[:, :third], image[:, third:2 * third], image[:, 2 * third:] = RED, GREEN, BLUE
    else:
        third = height // 3
        image[:third], image[third:2 * third], image[2 * third:] = RED, GREEN, BLUE
    return image


def lossless_clip(path: Path, frames, rate=10) -> str:
    write_clip(path, frames, fmt="matroska", codec="ffv1", pix_fmt="bgr0", rate=rate)
    return str(path)


def assert_colour(image: np.ndarray, colour, tolerance=2):
    assert np.abs(image.astype(int) - np.array(colour)).max() <= tolerance, image.reshape(-1, 3)[:4]


@pytest.mark.parametrize("out", [(30, 30), (10, 10), (30, 45), (120, 120), (300, 300), (4, 64), (2, 90)])
def test_crop_keeps_the_centre(tmp_path, out):
    # 90x30: to a square the cover frame is 3 times as wide, and only the middle third is kept;
    # (4, 64) and (2, 90) are extreme aspect changes (the centre is cut from the source first)
    source = lossless_clip(tmp_path / "thirds.mkv", [thirds(90, 30)] * 2)
    info, frames = read_all(source, size=out, fit="crop")
    assert (info.width, info.height, info.source_width, info.source_height) == (*out, 90, 30)
    assert len(frames) == 2 and frames[0].shape == (out[1], out[0], 3)
    width = out[0]
    margin = max(1, width // 8)                           # the filter's transition at the seams
    assert_colour(frames[0][:, margin:width - margin] if width > 4 else frames[0], GREEN, tolerance=3)


def test_crop_keeps_the_centre_vertically(tmp_path):
    source = lossless_clip(tmp_path / "rows.mkv", [thirds(30, 90, horizontal=False)])
    _, frames = read_all(source, size=(16, 16))
    assert_colour(frames[0][2:-2], GREEN, tolerance=3)
    _, frames = read_all(source, size=(16, 16), fit="scale")
    assert_colour(frames[0][0], RED, tolerance=3) and assert_colour(frames[0][-1], BLUE, tolerance=3)


def test_crop_to_the_same_aspect_is_a_plain_scale(clips, full):
    _, cropped = read_all(clips["mkv"], size=(48, 32), fit="crop")
    _, scaled = read_all(clips["mkv"], size=(48, 32), fit="scale")
    assert all(np.array_equal(a, b) for a, b in zip(cropped, scaled, strict=True))
    # halving with the area filter averages 2x2 blocks
    expected = full["mkv"][5].astype(float).reshape(32, 2, 48, 2, 3).mean(axis=(1, 3))
    assert np.abs(scaled[5] - expected).max() <= 1


def test_pad_replicates_the_edges_centred(tmp_path):
    picture = thirds(60, 30)
    picture[0], picture[-1] = GREY, (10, 240, 240)        # distinctive first and last rows
    source = lossless_clip(tmp_path / "pad.mkv", [picture])
    info, frames = read_all(source, size=(60, 60), fit="pad")
    (frame,) = frames
    assert (info.width, info.height) == (60, 60) and frame.shape == (60, 60, 3)
    np.testing.assert_array_equal(frame[15:45], picture)                    # the picture, centred
    assert all(np.array_equal(frame[row], picture[0]) for row in range(15))  # edge rows replicated
    assert all(np.array_equal(frame[row], picture[-1]) for row in range(45, 60))
    # sideways: a tall picture in a wide frame, the edge columns replicated
    tall = lossless_clip(tmp_path / "tall.mkv", [thirds(30, 60, horizontal=False)])
    (frame,) = read_all(tall, size=(60, 30), fit="pad")[1]
    assert frame.shape == (30, 60, 3)
    for column in list(range(0, 22)) + list(range(38, 60)):
        np.testing.assert_array_equal(frame[:, column], frame[:, 22 if column < 22 else 37])
    assert_colour(frame[0, 30], RED, tolerance=3) and assert_colour(frame[-1, 30], BLUE, tolerance=3)


def test_scale_stretches(tmp_path):
    source = lossless_clip(tmp_path / "thirds.mkv", [thirds(90, 30)])
    (frame,) = read_all(source, size=(30, 60), fit="scale")[1]
    assert frame.shape == (60, 30, 3)
    assert_colour(frame[:, :8], RED, 3) and assert_colour(frame[:, 11:19], GREEN, 3)
    assert_colour(frame[:, 22:], BLUE, 3)


@pytest.mark.parametrize("fit", FITS)
def test_every_fit_gives_the_size_asked_for(clips, fit):
    for size in [(64, 64), (200, 50), (7, 3), (1, 1), (255, 129)]:
        info, frames = read_all(clips["mp4-444"], size=size, fit=fit, max_frames=2)
        assert (info.width, info.height) == size
        assert [f.shape for f in frames] == [(size[1], size[0], 3)] * 2
        again = read_all(clips["mp4-444"], size=size, fit=fit, max_frames=2)[1]
        assert all(np.array_equal(a, b) for a, b in zip(frames, again, strict=True))


# ------------------------------------------------------------------ standard input


STDIN_SCRIPT = """
import sys
from libpromptus.io.video_input import open_video
with open_video(sys.argv[1], **eval(sys.argv[2])) as reader:
    frames = list(reader.frames())
    info = reader.info
print(len(frames), info.width, info.height, info.rate, info.frame_count, sum(int(f.sum()) for f in frames))
"""


@pytest.mark.parametrize("name", ["-", "pipe:0", "pipe:"])
def test_standard_input(clips, full, name):
    data = Path(clips["y4m"]).read_bytes()       # through a real pipe: not seekable, no length
    result = subprocess.run([sys.executable, "-c", STDIN_SCRIPT, name, "{}"], input=data,
                            capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr.decode()
    result.stdout = result.stdout.decode()
    checksum = sum(int(f.sum()) for f in full["y4m"])
    assert result.stdout.split() == [str(N), str(W), str(H), "24", "None", str(checksum)]


def test_standard_input_with_selection_and_size(clips, full):
    options = "dict(start=0.5, duration=0.5, size=(32, 32))"
    result = subprocess.run([sys.executable, "-c", STDIN_SCRIPT, "-", options],
                            input=Path(clips["y4m"]).read_bytes(), capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr.decode()
    result.stdout = result.stdout.decode()
    expected = read_all(clips["y4m"], start=0.5, duration=0.5, size=(32, 32))[1]
    assert result.stdout.split()[:3] == ["12", "32", "32"]
    assert result.stdout.split()[5] == str(sum(int(f.sum()) for f in expected))


def test_standard_input_that_is_a_terminal():
    pty = pytest.importorskip("pty")
    leader, follower = pty.openpty()
    try:
        result = subprocess.run([sys.executable, "-c", STDIN_SCRIPT, "-", "{}"], stdin=follower,
                                capture_output=True, text=True, timeout=60)
    finally:
        os.close(leader)
        os.close(follower)
    assert result.returncode != 0 and "standard input is a terminal" in result.stderr


def test_standard_input_that_is_not_y4m(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("not a video\n" * 50)
    with open(text, "rb") as stdin:
        result = subprocess.run([sys.executable, "-c", STDIN_SCRIPT, "-", "{}"], stdin=stdin,
                                capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "VideoInputError: standard input:" in result.stderr


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
