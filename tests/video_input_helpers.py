"""Shared pieces of the video input tests (test_video_input*.py).

Small clips are made with PyAV itself: 48 frames of 96x64 moving gradients as .y4m
(raw 4:4:4), .mkv (FFV1 RGB, lossless), .mp4 (H.264 RGB at CRF 0, lossless, with a
12-frame GOP and B-frames, so that -ss has to seek to a keyframe and decode forward),
.mp4 (H.264 4:4:4 at 30000/1001), .webm (VP9), .ts, an .mkv whose first frame is
at 1.5 s, and a PNG sequence. The module fixtures `clips` (kind -> path) and `full`
(kind -> every frame, read whole) build them once in each test module that uses them.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from libpromptus.io.video_input import VideoInfo, open_video

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
