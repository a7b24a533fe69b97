"""What a video output holds by default and by flags (io.video_output), read back with PyAV.

`.mp4`/`.mov` default to H.264 yuv420p at CRF 17, BT.709-tagged (playable); `.mkv` stays
FFV1 RGB (lossless); `-c:v libx264rgb -crf 0` keeps a bit-exact `.mp4`; an odd size is
padded for yuv420p with one warning. No model is loaded except by the API test (tiny).
"""
from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from decoding_helpers import CLI_SCENES, OFFICIAL, OFFICIAL_REASON, tiny_stream

from libpromptus.io.samples import sample_frames
from libpromptus.io.video_output import OutputFormat, VideoWriter, output_format

# PSNR of the default .mp4 against its RGB source as these tests measure it (x264 of
# FFmpeg 8 through PyAV 18), thresholds about 0.5-0.7 dB under: the sample clip's 12 frames
# (128x128, saturated discs on gradients, whose sharp colour edges 4:2:0 blurs) 31.0 dB RGB
# and 43.0 dB luma; 6 of the official 512x512 frames, sky 38.0 and uvg 34.7 dB RGB (39.6
# and 38.8 dB luma); the tiny model's 64x64 frames (test_pmtdec) 33.7 dB.
SAMPLE_RGB_PSNR, SAMPLE_LUMA_PSNR = 30.5, 42.3
OFFICIAL_RGB_PSNR = {"sky": 37.5, "uvg": 34.0}


def psnr(a: np.ndarray, b: np.ndarray, *, luma: bool = False) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    if luma:                                                  # BT.709 Y' of the RGB values
        weights = np.array([0.2126, 0.7152, 0.0722])
        a, b = a @ weights, b @ weights
    return float(10 * np.log10(255 ** 2 / np.mean((a - b) ** 2)))


def write(path: Path, frames: list[np.ndarray], fmt: OutputFormat | None = None, **flags) -> Path:
    height, width = frames[0].shape[:2]
    writer = VideoWriter(str(path), width, height, Fraction(30), fmt or output_format(str(path), **flags))
    for frame in frames:
        writer.write(frame)
    writer.close()
    return path


def read(path: Path) -> tuple[np.ndarray, av.VideoFrame, av.video.stream.VideoStream]:
    """The frames as rgb24 (PyAV converts by the stream's colour tags), the last frame, the stream."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        images, last = [], None
        for last in container.decode(stream):
            images.append(last.to_ndarray(format="rgb24"))
        return np.stack(images), last, stream


@pytest.fixture(scope="module")
def sample() -> list[np.ndarray]:
    return sample_frames(12)


# ---------------------------------------------------------------- the playable default


@pytest.mark.parametrize("suffix", [".mp4", ".mov"])
def test_mp4_and_mov_default_to_playable_h264_yuv420p(tmp_path, sample, suffix):
    assert output_format(f"out{suffix}") == OutputFormat(suffix[1:], "libx264", "yuv420p", {"crf": "17"},
                                                         tag_bt709=True)
    got, last, stream = read(write(tmp_path / f"out{suffix}", sample))
    context = stream.codec_context
    assert (context.name, context.pix_fmt, context.profile) == ("h264", "yuv420p", "High")
    assert (stream.width, stream.height, len(got)) == (128, 128, len(sample))
    # BT.709 matrix, primaries and transfer, limited range: players need not guess
    assert (last.colorspace, last.color_primaries, last.color_trc, last.color_range) == (1, 1, 1, 1)
    source = np.stack(sample)
    assert psnr(got, source) > SAMPLE_RGB_PSNR
    assert psnr(got, source, luma=True) > SAMPLE_LUMA_PSNR


@pytest.mark.skipif(not OFFICIAL.is_dir(), reason=OFFICIAL_REASON)
@pytest.mark.parametrize("clip", sorted(OFFICIAL_RGB_PSNR))
def test_the_default_mp4_of_real_frames_is_close_to_them(tmp_path, clip):
    frames = [read(OFFICIAL / clip / "frames" / f"{i:05d}.png")[0][0] for i in range(0, 21, 4)]
    got, _, stream = read(write(tmp_path / "out.mp4", frames))
    assert (stream.codec_context.pix_fmt, stream.width, stream.height) == ("yuv420p", 512, 512)
    assert psnr(got, np.stack(frames)) > OFFICIAL_RGB_PSNR[clip]


# ---------------------------------------------------------------- lossless by flags


@pytest.mark.parametrize("name, flags", [("out.mp4", {"codec": "libx264rgb", "crf": 0}),
                                         ("out.mov", {"codec": "libx264rgb", "crf": 0}),
                                         ("out.mkv", {})],
                         ids=["mp4-libx264rgb-crf0", "mov-libx264rgb-crf0", "mkv-default"])
def test_lossless_outputs_are_bit_exact(tmp_path, sample, name, flags):
    got, _, stream = read(write(tmp_path / name, sample, **flags))
    assert stream.codec_context.name == ("ffv1" if name.endswith(".mkv") else "h264")
    assert np.array_equal(got, np.stack(sample))


def test_another_encoder_starts_from_its_own_defaults_as_in_ffmpeg():
    # libx264rgb takes RGB: rgb24, and x264's own CRF (23) unless -crf is given
    assert output_format("out.mp4", codec="libx264rgb") == OutputFormat("mp4", "libx264rgb", "rgb24", {},
                                                                         tag_bt709=True)
    assert output_format("out.mp4", codec="libx264rgb", crf=0).options == {"crf": "0"}
    # the least lossy format FFmpeg picks for RGB input: 4:4:4 for libx264 into .mkv
    assert output_format("out.mkv", codec="libx264").pix_fmt == "yuv444p"
    # naming the default encoder, or only -crf / -pix_fmt, keeps the rest of the default
    assert output_format("out.mp4", codec="libx264") == output_format("out.mp4")
    assert output_format("out.mp4", crf=0) == OutputFormat("mp4", "libx264", "yuv420p", {"crf": "0"}, tag_bt709=True)
    assert output_format("out.mp4", pix_fmt="yuv444p").options == {"crf": "17"}
    assert output_format("out.mkv").pix_fmt == "bgr0"
    with pytest.raises(ValueError, match="-c:v no-such-codec: no such video encoder"):
        output_format("out.mp4", codec="no-such-codec")


def test_an_rgb_pixel_format_for_libx264_is_refused_in_one_line(tmp_path, sample):
    with pytest.raises(ValueError, match="pixel format 'gbrp' is not available for encoder libx264"):
        write(tmp_path / "out.mp4", sample, pix_fmt="gbrp")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- odd sizes


def test_an_odd_size_is_padded_for_yuv420p_with_one_warning(tmp_path, sample, caplog):
    odd = [frame[:127, :125] for frame in sample]
    with caplog.at_level(logging.WARNING, logger="libpromptus.io.video_output"):
        got, _, stream = read(write(tmp_path / "odd.mp4", odd))
    warning = (f"{tmp_path / 'odd.mp4'}: 125x127 padded to 126x128 by repeating the edge pixels "
               "(yuv420p needs an even width and height; -pix_fmt yuv444p keeps 125x127)")
    assert [r.getMessage() for r in caplog.records] == [warning]
    assert (stream.codec_context.pix_fmt, stream.width, stream.height) == ("yuv420p", 126, 128)
    source = np.stack(odd)
    assert psnr(got[:, :127, :125], source) > SAMPLE_RGB_PSNR
    # the added column and row repeat the edge (up to the coding error)
    assert psnr(got[:, :127, 125], source[:, :, 124]) > SAMPLE_RGB_PSNR - 3
    assert psnr(got[:, 127, :125], source[:, 126]) > SAMPLE_RGB_PSNR - 3


@pytest.mark.parametrize("name, flags", [("odd.mp4", {"pix_fmt": "yuv444p"}), ("odd.mkv", {}),
                                         ("odd.mp4", {"codec": "libx264rgb", "crf": 0})],
                         ids=["mp4-yuv444p", "mkv", "mp4-libx264rgb"])
def test_formats_without_subsampled_chroma_keep_an_odd_size(tmp_path, sample, caplog, name, flags):
    odd = [frame[:127, :125] for frame in sample]
    with caplog.at_level(logging.WARNING, logger="libpromptus.io.video_output"):
        got, _, stream = read(write(tmp_path / name, odd, **flags))
    assert caplog.records == []
    assert (stream.width, stream.height) == (125, 127)
    if flags.get("pix_fmt") != "yuv444p":
        assert np.array_equal(got, np.stack(odd))


# ---------------------------------------------------------------- the API


def test_the_api_decode_gets_the_same_mp4_default(tmp_path):
    import libpromptus

    path = tiny_stream(64, 64, CLI_SCENES, seed=5).write(tmp_path / "in.pmt")
    assert libpromptus.decode(path, str(tmp_path / "out.mp4"), model="tiny") == 8
    got, last, stream = read(tmp_path / "out.mp4")
    context = stream.codec_context
    assert (context.name, context.pix_fmt, context.profile, len(got)) == ("h264", "yuv420p", "High", 8)
    assert (last.colorspace, last.color_range) == (1, 1)
