"""libpromptus.io.video_input: -s and --fit: crop keeps the centre, pad replicates the
edges, scale stretches, and every fit gives exactly the size asked for.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import video_input_helpers
from video_input_helpers import read_all, write_clip

from libpromptus.io.video_input import FITS

# the module fixtures of video_input_helpers (the clips, built once in each test module)
clips, full = video_input_helpers.clips, video_input_helpers.full


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
