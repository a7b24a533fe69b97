"""Writing decoded frames through PyAV: video files, PNG sequences and pipes.

The container follows the output name as in FFmpeg: `.mkv` (FFV1, lossless RGB),
`.mp4`/`.mov` (H.264 RGB at CRF 0, lossless), `.y4m` (raw 4:4:4 YUV, the only layout
YUV4MPEG2 has), a name with a `%d` pattern for an image sequence (`out/%05d.png`), and
`-`/`pipe:1` for standard output (y4m, or raw RGB with `format="rawvideo"`). `codec`,
`crf` and `pix_fmt` override the defaults.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from .files import TemporaryOutput, naming_the_output
from .pipes import is_stdout


@dataclass(frozen=True)
class OutputFormat:
    container: str | None      # PyAV/FFmpeg format name, None: from the file name
    codec: str
    pix_fmt: str
    options: dict[str, str]


_BY_EXTENSION = {
    ".mkv": OutputFormat("matroska", "ffv1", "bgr0", {}),
    ".mp4": OutputFormat("mp4", "libx264rgb", "rgb24", {"crf": "0"}),
    ".mov": OutputFormat("mov", "libx264rgb", "rgb24", {"crf": "0"}),
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
    if codec is not None:
        import av

        try:
            av.Codec(codec, "w")
        except Exception:  # PyAV raises UnknownCodecError (a ValueError) or FFmpegError subclasses
            raise ValueError(f"-c:v {codec}: no such video encoder in this FFmpeg build") from None
    options = dict(base.options)
    if crf is not None:
        options["crf"] = str(crf)
    return OutputFormat(base.container, codec or base.codec, pix_fmt or base.pix_fmt, options)


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
        try:
            with naming_the_output(name):
                self._container = av.open(target, "w", format=fmt.container)
            self._stream = self._container.add_stream(fmt.codec, rate=rate, options=fmt.options)
            self._stream.width = width
            self._stream.height = height
            try:
                self._stream.pix_fmt = fmt.pix_fmt
            except (ValueError, av.FFmpegError):
                raise ValueError(f"pixel format {fmt.pix_fmt!r} is not available for encoder {fmt.codec}") from None
        except BaseException:
            self.abort()
            raise

    def write(self, image: np.ndarray) -> None:
        import av

        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
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
