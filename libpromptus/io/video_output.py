"""Writing decoded frames through PyAV: video files, PNG sequences and pipes.

The container follows the output name as in FFmpeg: `.mkv` (FFV1, lossless RGB),
`.mp4`/`.mov` (H.264 4:2:0 at CRF 17, which browsers and players play), `.y4m` (raw 4:4:4
YUV, the only layout YUV4MPEG2 has), a name with a `%d` pattern for an image sequence
(`out/%05d.png`), and `-`/`pipe:1` for standard output (y4m, or raw RGB with
`format="rawvideo"`).

`codec`, `crf` and `pix_fmt` mean what FFmpeg's `-c:v`, `-crf` and `-pix_fmt` do: another
encoder than the output type's own starts from that encoder's defaults (as in FFmpeg, the
least lossy pixel format it takes for RGB input, and no CRF of ours), so lossless RGB H.264
is `codec="libx264rgb", crf=0` (`-c:v libx264rgb -crf 0`), bit-exact like `.mkv`.

YUV in a file container is BT.709, limited range, and tagged so (the matrix, primaries,
transfer and range), so players do not guess by frame size. A chroma-subsampled pixel
format (yuv420p: even width and height) pads an odd-sized frame by repeating its last
column or row, with one warning: libx264 refuses odd sizes there, and pmtdec has no
filters to fix that, so padding is what gives a playable file; `-pix_fmt yuv444p` or
`.mkv` keep the size.
"""
from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import numpy as np

from .files import TemporaryOutput, naming_the_output
from .pipes import is_stdout

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutputFormat:
    container: str | None      # PyAV/FFmpeg format name, None: from the file name
    codec: str
    pix_fmt: str
    options: dict[str, str]
    tag_bt709: bool = False    # YUV is converted as BT.709 and tagged so (containers that carry tags)


# CRF 17 for the playable default, in x264's "visually lossless" range (17-18): on the
# 512x512 reference frames (sky, uvg) luma PSNR is 39.8 and 39.0 dB (CRF 18: 39.3, 38.5),
# and most of the RGB error left is 4:2:0 chroma itself (yuv420p at CRF 0 gains only 3-5 dB),
# at a sixth to a tenth of CRF 0's bits.
_PLAYABLE_CRF = "17"
_BY_EXTENSION = {
    ".mkv": OutputFormat("matroska", "ffv1", "bgr0", {}, tag_bt709=True),
    ".mp4": OutputFormat("mp4", "libx264", "yuv420p", {"crf": _PLAYABLE_CRF}, tag_bt709=True),
    ".mov": OutputFormat("mov", "libx264", "yuv420p", {"crf": _PLAYABLE_CRF}, tag_bt709=True),
    ".y4m": OutputFormat("yuv4mpegpipe", "rawvideo", "yuv444p", {}),
    ".png": OutputFormat("image2", "png", "rgb24", {}),
}
_PIPE_FORMATS = {
    "yuv4mpegpipe": OutputFormat("yuv4mpegpipe", "rawvideo", "yuv444p", {}),
    "rawvideo": OutputFormat("rawvideo", "rawvideo", "rgb24", {}),
}


def output_format(name: str, *, format: str | None = None, codec: str | None = None, crf: int | None = None,
                  pix_fmt: str | None = None) -> OutputFormat:
    """The container, codec and options for an output name and the user's overrides."""
    if is_stdout(name):
        base = _PIPE_FORMATS.get(format or "yuv4mpegpipe")
        if base is None:
            raise ValueError(f"-f {format}: standard output takes yuv4mpegpipe or rawvideo")
    else:
        base = _BY_EXTENSION.get(Path(name).suffix.lower())
        if base is None:
            raise ValueError(f"{name}: unknown output type (use .mkv, .mp4, .mov, .y4m, a %05d.png pattern or -)")
        if base.container == "image2" and "%" not in name:
            raise ValueError(f"{name}: an image sequence needs a frame number pattern, e.g. out/%05d.png")
    if codec is not None and codec != base.codec:
        # another encoder starts from its own defaults, as in FFmpeg: our CRF is tuned for ours
        formats = _encoder_formats(codec)
        first = next((f for f in _RGB_FIRST if f in formats), formats[0] if formats else base.pix_fmt)
        base = replace(base, codec=codec, pix_fmt=first, options={})
    if pix_fmt is not None and pix_fmt != base.pix_fmt:
        formats = _encoder_formats(base.codec)
        if formats and pix_fmt not in formats:
            listed = ", ".join(formats[:8]) + (", ..." if len(formats) > 8 else "")
            raise ValueError(f"pixel format {pix_fmt!r} is not available for encoder {base.codec} (it takes {listed})")
    options = dict(base.options)
    if crf is not None:
        options["crf"] = str(crf)
    return replace(base, pix_fmt=pix_fmt or base.pix_fmt, options=options)


# From RGB24 input, in FFmpeg's order of loss: RGB layouts are exact, then YUV by subsampling.
_RGB_FIRST = ("rgb24", "bgr24", "rgb0", "bgr0", "gbrp", "yuv444p", "yuv422p", "yuv420p")


def _encoder_formats(codec: str) -> list[str]:
    """The pixel formats encoder `codec` takes (empty where FFmpeg does not list them)."""
    import av

    try:
        return [f.name for f in av.Codec(codec, "w").video_formats or ()]
    except Exception:  # noqa: BLE001 - PyAV raises UnknownCodecError (a ValueError) or FFmpegError subclasses
        raise ValueError(f"-c:v {codec}: no such video encoder in this FFmpeg build") from None


def _padding(pix_fmt: str, width: int, height: int) -> tuple[int, int]:
    """Columns and rows to add so that a chroma-subsampled format's planes divide evenly."""
    import av

    try:
        layout = av.VideoFormat(pix_fmt)
    except (ValueError, av.FFmpegError):
        return 0, 0                     # unknown: the stream refuses it with its own message
    x, y = 4 // max(layout.chroma_width(4), 1), 4 // max(layout.chroma_height(4), 1)
    return -width % x, -height % y


def _needs(pix_fmt: str) -> str:
    """What `pix_fmt` asks of the frame size, in words: "an even width and height"."""
    x, y = _padding(pix_fmt, 1, 1)
    if x == y == 1:
        return "an even width and height"
    if x + y == 1:
        return "an even width" if x else "an even height"
    return f"a size in multiples of {x + 1}x{y + 1}"


def _is_yuv(pix_fmt: str) -> bool:
    import av

    try:
        layout = av.VideoFormat(pix_fmt)
    except (ValueError, av.FFmpegError):
        return False
    return not layout.is_rgb and len(layout.components) >= 3


class VideoWriter:
    """Encodes RGB frames into one output; `close()` finishes it, `abort()` discards it.

    File outputs are written under a temporary name beside the target (a temporary
    folder for image sequences) and moved into place by `close()`, so the output name
    only ever holds a complete video.
    """

    def __init__(self, name: str, width: int, height: int, rate: Fraction, fmt: OutputFormat,
                 *, overwrite: bool = False) -> None:
        import av

        self._name = name
        self._temporary: TemporaryOutput | None = None
        if is_stdout(name):
            target = sys.stdout.buffer
        else:
            path = Path(name)
            if fmt.container == "image2":
                path.parent.mkdir(parents=True, exist_ok=True)
                existing = [p for p in path.parent.iterdir() if _matches(p.name, path.name)]
                if existing and not overwrite:
                    raise FileExistsError(f"{name}: {existing[0].name} already exists (use -y to overwrite)")
                self._temporary = TemporaryOutput(path, directory=True)
                target = str(self._temporary.path / path.name)
            else:
                if path.exists() and not overwrite:
                    raise FileExistsError(f"{name}: already exists (use -y to overwrite)")
                self._temporary = TemporaryOutput(path)
                target = str(self._temporary.path)
        self._image_sequence = fmt.container == "image2"
        self.frames = 0
        self._container = None
        self._pad = _padding(fmt.pix_fmt, width, height)
        self.width, self.height = width + self._pad[0], height + self._pad[1]
        self._bt709 = fmt.tag_bt709 and _is_yuv(fmt.pix_fmt)
        self._pix_fmt = fmt.pix_fmt
        try:
            with naming_the_output(name):
                self._container = av.open(target, "w", format=fmt.container)
            self._stream = self._container.add_stream(fmt.codec, rate=rate, options=fmt.options)
            self._stream.width = self.width
            self._stream.height = self.height
            try:
                self._stream.pix_fmt = fmt.pix_fmt
            except (ValueError, av.FFmpegError):
                raise ValueError(f"pixel format {fmt.pix_fmt!r} is not available for encoder {fmt.codec}") from None
            if self._bt709:
                from av.video.reformatter import (
                    ColorPrimaries,
                    ColorRange,
                    Colorspace,
                    ColorTrc,
                )

                context = self._stream.codec_context
                context.colorspace, context.color_primaries = Colorspace.ITU709, ColorPrimaries.BT709
                context.color_trc = ColorTrc.BT709
                context.color_range = ColorRange.JPEG if fmt.pix_fmt.startswith("yuvj") else ColorRange.MPEG
        except BaseException:
            self.abort()
            raise
        if any(self._pad):
            log.warning("%s: %dx%d padded to %dx%d by repeating the edge pixels (%s needs %s; -pix_fmt yuv444p "
                        "keeps %dx%d)", name, width, height, self.width, self.height, fmt.pix_fmt,
                        _needs(fmt.pix_fmt), width, height)

    def write(self, image: np.ndarray) -> None:
        import av

        if any(self._pad):
            image = np.pad(image, ((0, self._pad[1]), (0, self._pad[0]), (0, 0)), mode="edge")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        if self._bt709:
            from av.video.reformatter import Colorspace

            frame = frame.reformat(format=self._pix_fmt, dst_colorspace=Colorspace.ITU709,
                                   dst_color_range=self._stream.codec_context.color_range)
        with naming_the_output(self._name):
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        """Flush the encoder and move the finished output into place."""
        with naming_the_output(self._name):
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()
            if self._temporary is not None:
                self._temporary.publish()
                self._temporary = None

    def abort(self) -> None:
        """Discard everything written so far."""
        try:
            if self._container is not None:
                self._container.close()
        except Exception:  # noqa: BLE001 - the output is being thrown away; its errors do not matter
            pass
        if self._temporary is not None:
            self._temporary.discard()
            self._temporary = None


def _matches(candidate: str, pattern: str) -> bool:
    """Whether a file name could have been produced by a printf-style frame pattern."""
    import re

    regex = re.sub(r"%0?(\d*)d", lambda m: r"\d{%s,}" % (m.group(1) or 1), re.escape(pattern).replace(r"\%", "%"))
    return re.fullmatch(regex, candidate) is not None
