"""The encoder's input: any video FFmpeg reads, decoded through PyAV into RGB frames.

Sources, as `pmtenc -i` names them:

- a file (`.mp4`, `.mkv`, `.mov`, `.webm`, `.y4m`, ...), opened by FFmpeg's probing;
- an image sequence, a name with a frame number pattern (`frames/%05d.png`), read by
  FFmpeg's `image2` demuxer at 25 frames per second unless `rate` (`-r`) says otherwise;
- standard input, `-`, `pipe:` or `pipe:0`: a YUV4MPEG2 (`.y4m`) stream.

Options, FFmpeg's input options:

- `start` (`-ss`, seconds): the source is seeked (to the keyframe at or before the start,
  never past it) and decoded frames before the start are dropped, so the selection is
  frame-accurate: frame i is kept when its timestamp t_i >= start. Times are measured on
  the video stream's own timestamps with its first frame at 0, so in a constant-rate
  video frame i is at i/rate and `start = i/rate` selects from frame i on.
- `duration` (`-t`, seconds): frames with t_i >= start + duration end the selection.
- `max_frames` (`-frames:v`): at most that many frames.
- `size` (`-s WxH`, default the source's size, at most 4096x4096) with `fit` for a change
  of aspect ratio:
  `crop` (the default; what the official Promptus code does, a centre crop and a resize)
  scales the frame to cover WxH, keeping its aspect ratio, and cuts the centre out;
  `pad` scales it to fit inside WxH and fills the rest by replicating the edge pixels
  outwards, the picture centred;
  `scale` stretches it to WxH.
  The sample aspect ratio of anamorphic video is ignored, as FFmpeg's `-s` does.
- `rate` (`-r`): the frame rate the frames are labelled with. Nothing is resampled: no
  frame is duplicated or dropped, the same frames just play at the new rate (a 24 fps
  clip read with `-r 12` lasts twice as long). FFmpeg's `-r` on an input does the same.
  `start` and `duration` still measure the source's own timestamps, except for image
  sequences, which have none: there `rate` is the sequence's rate (FFmpeg passes `-r`
  to the image2 demuxer as its `framerate`), so `-r 10 -ss 1` starts at the 11th image.
  Variable-rate sources are relabelled the same way, at `rate` or at FFmpeg's guess of
  their rate (`VideoInfo.rate`).

Frame conversion (deterministic, the same frames for the same input and options: swscale
runs with `BITEXACT | ACCURATE_RND | FULL_CHR_H_INT`, BITEXACT keeping it off rounding
paths that differ between CPUs' SIMD code): YUV is
converted to RGB by the matrix and range the stream declares (BT.601 when it declares
none, as FFmpeg does) with full-resolution chroma interpolation. Downscaling uses the
`area` filter (each output pixel the average of the source pixels it covers: no aliasing
and no ringing), upscaling `bicubic` (FFmpeg's default scaler).

Why `pad` replicates edges instead of adding black bars: the frames are fitted by Stable
Diffusion prompts, and a black bar is content the model has to reproduce: a hard,
high-contrast straight edge that costs prompt capacity, bleeds into the picture and
flickers from frame to frame. Replicated edges continue the picture smoothly, carry no
new structure and cost almost nothing to reproduce. The padding is there to be cropped
away, not watched (its extent follows from the source and output sizes).

`VideoInfo.frame_count` is the exact number of frames `frames()` yields, given only where
the container makes it certain (y4m files and image sequences, whose timestamps are frame
numbers); elsewhere it is None (an .mp4's sample count can differ from the frames
decoded, and a .pmt header's frame count must be exact or 0).

A y4m input that ends inside a frame (a cut file, an interrupted pipe) is read as FFmpeg
reads it, up to its last complete frame, with one warning on the `libpromptus` logger
naming the frame and how many of its bytes were there: FFmpeg's y4m demuxer itself drops
the partial frame without a word.

Every failure caused by the input (a missing file, something that is not a video (text
files too, which FFmpeg's `tty` demuxer would render as ANSI art), a file without a video
stream, corrupt data in the middle of the stream, a bad option) raises
`VideoInputError`, a `ValueError` with a one-line message. `frames()` streams: it decodes
one frame at a time, so memory stays bounded whatever the length of the video.
"""
from __future__ import annotations

import logging
import math
import os
import re
import sys
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterator

import numpy as np

from ..bitstream.limits import MAX_DIMENSION
from ..errors import VideoInputError
from .pipes import is_stdin

__all__ = [
    "FITS",
    "VideoInfo",
    "VideoReader",
    "open_video",
    "parse_size",
    "parse_time",
]

log = logging.getLogger("libpromptus")

FITS = ("crop", "pad", "scale")
MAX_SOURCE_SIZE = 16384         # the largest source width or height decoded
DEFAULT_SEQUENCE_RATE = Fraction(25)   # FFmpeg's image2 default
# Formats FFmpeg "reads as video" that are not video: `tty` renders text files as ANSI art.
_REFUSED_FORMATS = {"tty": "a text file, not a video"}
# The cover frame of `crop` is scaled whole and then cut when it is at most this many times
# the output's area (any ordinary aspect change: 16:9 to 1:1 is 1.8x, 9:16 to 16:9 3.2x);
# beyond that (extreme aspect ratios) the centre is cut from the source first, then scaled,
# so memory stays bounded.
_COVER_AREA_LIMIT = 4
# A y4m header line is within the input's first bytes (FFmpeg refuses longer ones).
_Y4M_HEAD_BYTES = 4096
_Y4M_FRAME_LINE = b"FRAME\n"   # what FFmpeg's muxer writes before each frame

# FFmpeg's size abbreviations (libavutil/parseutils.c).
_SIZE_ABBREVIATIONS = {
    "ntsc": (720, 480), "pal": (720, 576), "qntsc": (352, 240), "qpal": (352, 288),
    "sntsc": (640, 480), "spal": (768, 576), "film": (352, 240), "ntsc-film": (352, 240),
    "sqcif": (128, 96), "qcif": (176, 144), "cif": (352, 288), "4cif": (704, 576),
    "16cif": (1408, 1152), "qqvga": (160, 120), "qvga": (320, 240), "vga": (640, 480),
    "svga": (800, 600), "xga": (1024, 768), "uxga": (1600, 1200), "qxga": (2048, 1536),
    "sxga": (1280, 1024), "qsxga": (2560, 2048), "hsxga": (5120, 4096), "wvga": (852, 480),
    "wxga": (1366, 768), "wsxga": (1600, 1024), "wuxga": (1920, 1200), "woxga": (2560, 1600),
    "wqhd": (2560, 1440), "wqsxga": (3200, 2048), "wquxga": (3840, 2400),
    "whsxga": (6400, 4096), "whuxga": (7680, 4800), "cga": (320, 200), "ega": (640, 350),
    "hd480": (852, 480), "hd720": (1280, 720), "hd1080": (1920, 1080), "quadhd": (2560, 1440),
    "2k": (2048, 1080), "2kdci": (2048, 1080), "2kflat": (1998, 1080), "2kscope": (2048, 858),
    "4k": (4096, 2160), "4kdci": (4096, 2160), "4kflat": (3996, 2160), "4kscope": (4096, 1716),
    "nhd": (640, 360), "hqvga": (240, 160), "wqvga": (400, 240), "fwqvga": (432, 240),
    "hvga": (480, 320), "qhd": (960, 540), "uhd2160": (3840, 2160), "uhd4320": (7680, 4320),
}


@dataclass(frozen=True)
class VideoInfo:
    width: int                  # output size, after `size`/`fit`
    height: int
    rate: Fraction              # frames per second the frames are labelled with
    source_rate: Fraction       # the rate -ss and -t count frames at: the stream's own (for an image
                                # sequence, its -r), so frame i of a constant-rate source is at i/source_rate
    frame_count: int | None     # exactly what frames() yields (after start/duration/max_frames) when the
                                # container makes it certain (y4m files, image sequences), else None
    source_width: int
    source_height: int


# ------------------------------------------------------------------------------ parsing


def parse_size(text: str) -> tuple[int, int]:
    """An FFmpeg size: "256x256" -> (256, 256), or an abbreviation ("hd720", "vga")."""
    value = str(text).strip()
    match = re.fullmatch(r"(\d{1,9})[xX](\d{1,9})", value)
    if match:
        width, height = int(match.group(1)), int(match.group(2))
    elif value.lower() in _SIZE_ABBREVIATIONS:
        width, height = _SIZE_ABBREVIATIONS[value.lower()]
    else:
        raise VideoInputError(f"-s {text!r}: not a size (use WxH, e.g. 512x512)")
    _check_size(width, height, f"-s {value}")
    return width, height


def parse_time(text: str) -> Fraction:
    """An FFmpeg time duration, exactly: "1.5", "90", "1:02.5" ([HH:]MM:SS[.m]), "500ms"."""
    value = str(text).strip()
    match = re.fullmatch(r"(?:(\d+):)?(\d{1,2}):(\d{1,2}(?:\.\d*)?)", value)
    if match:
        hours, minutes, seconds = match.groups()
        if int(minutes) >= 60 or Fraction(seconds) >= 60:
            raise VideoInputError(f"{text!r}: not a time (minutes and seconds go up to 59)")
        return int(hours or 0) * 3600 + int(minutes) * 60 + Fraction(seconds)
    match = re.fullmatch(r"(\d+(?:\.\d*)?|\.\d+)(s|ms|us)?", value)
    if match:
        scale = {None: 1, "s": 1, "ms": Fraction(1, 1000), "us": Fraction(1, 1000000)}[match.group(2)]
        return Fraction(match.group(1)) * scale
    raise VideoInputError(f"{text!r}: not a time (use seconds, e.g. 1.5, or [HH:]MM:SS.m)")


def _check_size(width: int, height: int, what: str) -> None:
    if width < 1 or height < 1:
        raise VideoInputError(f"{what}: width and height must be at least 1")
    if width > MAX_DIMENSION or height > MAX_DIMENSION:
        raise VideoInputError(f"{what}: larger than {MAX_DIMENSION}x{MAX_DIMENSION}")


def exact_seconds(value, what: str) -> Fraction | None:
    """A time option as an exact Fraction (a float as the decimal it prints as)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise VideoInputError(f"{what}: not a time")
    if isinstance(value, str):
        result = parse_time(value)
    elif isinstance(value, (int, Fraction)):
        result = Fraction(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise VideoInputError(f"{what} {value}: not a finite time")
        result = Fraction(repr(value))
    else:
        raise VideoInputError(f"{what}: not a time ({type(value).__name__})")
    if result < 0:
        raise VideoInputError(f"{what} {value}: negative")
    return result


def _check_options(start, duration, max_frames, size, fit, rate):
    start = exact_seconds(start, "-ss")
    duration = exact_seconds(duration, "-t")
    if max_frames is not None:
        if isinstance(max_frames, bool) or not isinstance(max_frames, int):
            raise VideoInputError(f"-frames:v {max_frames!r}: not a frame count")
        if max_frames < 0:
            raise VideoInputError(f"-frames:v {max_frames}: negative")
    if size is not None:
        try:
            width, height = size
        except (TypeError, ValueError):
            raise VideoInputError(f"-s {size!r}: not a (width, height) pair") from None
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (width, height)):
            raise VideoInputError(f"-s {size!r}: width and height must be integers")
        _check_size(width, height, f"-s {width}x{height}")
        size = (width, height)
    if fit not in FITS:
        raise VideoInputError(f"--fit {fit!r}: not one of {', '.join(FITS)}")
    if rate is not None:
        if isinstance(rate, bool):
            raise VideoInputError(f"-r {rate!r}: not a frame rate")
        try:
            rate = Fraction(repr(rate)) if isinstance(rate, float) else Fraction(rate)
        except (TypeError, ValueError, ZeroDivisionError):
            raise VideoInputError(f"-r {rate!r}: not a frame rate") from None
        if rate <= 0:
            raise VideoInputError(f"-r {rate}: the frame rate must be positive")
    return start, duration, max_frames, size, rate


# ------------------------------------------------------------------------------ geometry


@dataclass(frozen=True)
class _Plan:
    """How one source size becomes the output: scale to (scale_w, scale_h), then cut the
    window at (x, y) (crop) or pad by (left, top, right, bottom) (pad)."""
    scale_w: int
    scale_h: int
    x: int = 0
    y: int = 0
    pad: tuple[int, int, int, int] | None = None
    source_crop: tuple[int, int, int, int] | None = None   # (x, y, w, h) cut before scaling


def _round_div(a: int, b: int) -> int:
    return (2 * a + b) // (2 * b)


def _plan(src_w: int, src_h: int, out_w: int, out_h: int, fit: str) -> _Plan:
    if fit == "scale" or src_w * out_h == out_w * src_h:
        return _Plan(out_w, out_h)
    wider = src_w * out_h > out_w * src_h          # the source is wider than the output
    if fit == "crop":
        if wider:
            cover_w, cover_h = max(out_w, _round_div(src_w * out_h, src_h)), out_h
        else:
            cover_w, cover_h = out_w, max(out_h, _round_div(src_h * out_w, src_w))
        if cover_w * cover_h <= _COVER_AREA_LIMIT * out_w * out_h:
            return _Plan(cover_w, cover_h, x=(cover_w - out_w) // 2, y=(cover_h - out_h) // 2)
        # extreme aspect change: cut the centre from the source, then scale it
        if wider:
            cut_w, cut_h = max(1, min(src_w, _round_div(src_h * out_w, out_h))), src_h
        else:
            cut_w, cut_h = src_w, max(1, min(src_h, _round_div(src_w * out_h, out_w)))
        return _Plan(out_w, out_h, source_crop=((src_w - cut_w) // 2, (src_h - cut_h) // 2, cut_w, cut_h))
    # pad: fit inside, then replicate the edges
    if wider:
        fit_w, fit_h = out_w, max(1, min(out_h, _round_div(src_h * out_w, src_w)))
    else:
        fit_w, fit_h = max(1, min(out_w, _round_div(src_w * out_h, src_h))), out_h
    left, top = (out_w - fit_w) // 2, (out_h - fit_h) // 2
    return _Plan(fit_w, fit_h, pad=(left, top, out_w - fit_w - left, out_h - fit_h - top))


# ------------------------------------------------------------------------------ opening


def _display_name(source: str) -> str:
    return "standard input" if is_stdin(source) else source


def _open_error(name: str, error: BaseException) -> VideoInputError:
    import av

    if isinstance(error, (FileNotFoundError, IsADirectoryError, PermissionError)) or (
            isinstance(error, OSError) and getattr(error, "errno", None) in (2, 13, 21)):
        reason = (getattr(error, "strerror", None) or str(error)).lower()
        return VideoInputError(f"{name}: {reason}")
    if isinstance(error, av.error.FFmpegError):
        reason = (error.strerror or "unreadable").lower()
        return VideoInputError(f"{name}: not a readable video ({reason})")
    return VideoInputError(f"{name}: not a readable video ({error})")


class _CountedInput:
    """Standard input as FFmpeg reads it, counting its bytes and keeping the first ones.

    A pipe has no size: the count at its end is what a y4m's frames are compared with to
    tell a stream cut inside a frame from a whole one. Only `read` is offered, so FFmpeg
    treats it as the pipe it is (no seeking).
    """

    def __init__(self, stream) -> None:
        self._stream = stream
        self.size = 0
        self.head = b""

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        if len(self.head) < _Y4M_HEAD_BYTES:
            self.head += data[:_Y4M_HEAD_BYTES - len(self.head)]
        self.size += len(data)
        return data


def _open_container(source: str, rate: Fraction | None):
    """(container, the counted standard input or None, is_sequence); raises VideoInputError."""
    import av

    name = _display_name(source)
    options = {}
    if is_stdin(source):
        stdin = sys.stdin
        if stdin is None or getattr(stdin, "buffer", None) is None:
            raise VideoInputError("standard input: not available")
        try:
            terminal = os.isatty(stdin.fileno())
        except (OSError, ValueError, AttributeError):   # no file descriptor (a wrapped stream)
            terminal = False
        if terminal:
            raise VideoInputError("standard input is a terminal: pipe a y4m stream into it")
        target, fmt, is_sequence = _CountedInput(stdin.buffer), "yuv4mpegpipe", False
    elif "%" in source and not os.path.isfile(source):
        directory = os.path.dirname(source) or "."
        if not os.path.isdir(directory):
            raise VideoInputError(f"{source}: no such directory")
        target, fmt, is_sequence = "file:" + source, "image2", True
        if rate is not None:
            options["framerate"] = f"{rate.numerator}/{rate.denominator}"
    else:
        if not source:
            raise VideoInputError("no input named")
        if os.path.isdir(source):
            raise VideoInputError(f"{source}: is a directory (for an image sequence name a pattern, e.g. "
                                  f"{os.path.join(source, '%05d.png')})")
        if not os.path.exists(source):
            raise VideoInputError(f"{source}: no such file")
        # "file:" keeps a local name from being read as a protocol ("concat:", "http:", ...)
        target, fmt, is_sequence = "file:" + source, None, False
    try:
        container = av.open(target, mode="r", format=fmt, options=options)
    except VideoInputError:
        raise
    except FileNotFoundError as error:
        if is_sequence:
            raise VideoInputError(f"{source}: no image matches the pattern") from None
        raise _open_error(name, error) from None
    except (av.error.FFmpegError, OSError, ValueError, EOFError) as error:
        raise _open_error(name, error) from None
    refused = _REFUSED_FORMATS.get(container.format.name)
    if refused:
        container.close()
        raise VideoInputError(f"{name}: not a readable video ({refused})")
    return container, target if isinstance(target, _CountedInput) else None, is_sequence


def _video_stream(container, name: str):
    streams = [s for s in container.streams.video if not _is_attached_picture(s)]
    if not streams:
        raise VideoInputError(f"{name}: no video stream")
    stream = streams[0]
    if len(streams) > 1:
        try:
            best = container.streams.best("video")
        except Exception:   # noqa: BLE001 - only a preference
            best = None
        stream = best if best in streams else streams[0]
    try:
        stream.thread_type = "AUTO"      # frame threads: faster, the same frames
    except Exception:   # noqa: BLE001 - an optimisation only
        pass
    return stream


def _is_attached_picture(stream) -> bool:
    try:
        import av

        return bool(stream.disposition & av.stream.Disposition.attached_pic)
    except (AttributeError, TypeError):
        return False


def open_video(source: str, *, start: float | None = None, duration: float | None = None,
               max_frames: int | None = None, size: tuple[int, int] | None = None, fit: str = "crop",
               rate: Fraction | None = None) -> "VideoReader":
    """Open a video file, an image sequence (`dir/%05d.png`) or standard input (`-`).

    `start`/`duration` in seconds (`-ss`/`-t`), `max_frames` (`-frames:v`), `size`
    (`-s`, (width, height)) with `fit` in "crop", "pad", "scale", and `rate` (`-r`, a
    relabelling: no frame is duplicated or dropped). See the module's docstring.
    """
    start, duration, max_frames, size, rate = _check_options(start, duration, max_frames, size, fit, rate)
    if not isinstance(source, (str, os.PathLike)):
        raise VideoInputError(f"{source!r}: not a file name")
    source = os.fspath(source)
    container, pipe, is_sequence = _open_container(source, rate)
    try:
        return VideoReader(container, source, pipe=pipe, is_sequence=is_sequence, start=start,
                           duration=duration, max_frames=max_frames, size=size, fit=fit, rate=rate)
    except BaseException:
        container.close()
        raise


# ------------------------------------------------------------------------------ reading


class VideoReader:
    """An open video input: `info`, then `frames()` once; a context manager.

    Made by `open_video`. `frames()` yields uint8 [height, width, 3] RGB arrays in
    display order, decoding one frame at a time.
    """

    info: VideoInfo

    def __init__(self, container, source: str, *, pipe: _CountedInput | None, is_sequence: bool,
                 start: Fraction | None, duration: Fraction | None, max_frames: int | None,
                 size: tuple[int, int] | None, fit: str, rate: Fraction | None) -> None:
        self._container = container
        self._source = source
        self._name = _display_name(source)
        self._pipe = pipe
        self._is_pipe = pipe is not None
        self._start = start
        self._duration = duration
        self._max_frames = max_frames
        self._fit = fit
        self._rate_option = rate
        self._closed = False
        self._started = False
        self._plans: dict[tuple[int, int], _Plan] = {}
        self._reformatter = None
        self._last_packet: tuple[int | None, int, int | None] | None = None   # (pos, size, pts)

        stream = _video_stream(container, self._name)
        self._stream = stream
        src_w, src_h = stream.width or 0, stream.height or 0
        if src_w < 1 or src_h < 1:
            raise VideoInputError(f"{self._name}: the video stream has no frame size")
        if src_w > MAX_SOURCE_SIZE or src_h > MAX_SOURCE_SIZE:
            raise VideoInputError(f"{self._name}: {src_w}x{src_h} is larger than {MAX_SOURCE_SIZE}x{MAX_SOURCE_SIZE}")
        if size is None:
            if src_w > MAX_DIMENSION or src_h > MAX_DIMENSION:
                raise VideoInputError(f"{self._name}: {src_w}x{src_h} is larger than {MAX_DIMENSION}x{MAX_DIMENSION}; "
                                      f"choose an output size with -s")
            size = (src_w, src_h)
        self._out_w, self._out_h = size
        native = _native_rate(stream, is_sequence, rate)
        self._native_rate = native
        self._time_base = stream.time_base or (1 / native)
        self._origin = stream.start_time if stream.start_time is not None else 0
        self.info = VideoInfo(
            width=self._out_w, height=self._out_h, rate=rate if rate is not None else native, source_rate=native,
            frame_count=self._known_count(container, stream, native), source_width=src_w, source_height=src_h)

    # -- context manager
    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __iter__(self) -> Iterator[np.ndarray]:
        return self.frames()

    def close(self) -> None:
        """Close the input; an unfinished `frames()` generator stops."""
        if not self._closed:
            self._closed = True
            try:
                self._container.close()
            except Exception:   # noqa: BLE001 - closing a broken input is not an error
                pass

    # -- the frame count the container knows
    def _known_count(self, container, stream, native: Fraction) -> int | None:
        """The exact number of frames `frames()` yields, where the container makes it certain.

        Only y4m files and image sequences qualify: their timestamps are frame numbers and
        their length follows from the file size or the files present, so the count holds
        after `start`/`duration` too. An .mp4/.mov's sample count (nb_frames) is not used:
        edit lists and leading frames the decoder drops make it differ from the frames
        decoded, and a .pmt header's frame_count must be exact or 0 (SPEC.md §5.1).
        """
        fmt = container.format.name
        total = stream.duration
        if self._is_pipe or fmt not in ("yuv4mpegpipe", "image2") or not total or self._origin != 0 \
                or stream.time_base != 1 / native:
            return None
        if fmt == "yuv4mpegpipe" and not _y4m_length_is_exact(self._source, total):
            return None
        first = 0 if self._start is None else math.ceil(self._start * native)
        end = total if self._duration is None else math.ceil(((self._start or 0) + self._duration) * native)
        count = max(0, min(total, end) - first)
        return count if self._max_frames is None else min(count, self._max_frames)

    # -- decoding
    def frames(self) -> Iterator[np.ndarray]:
        """The selected frames, uint8 [height, width, 3] RGB, one at a time (once per reader)."""
        if self._closed:
            raise VideoInputError(f"{self._name}: the input is closed")
        if self._started:
            raise VideoInputError(f"{self._name}: frames() reads the input once; open it again")
        self._started = True
        return self._generate()

    def _generate(self) -> Iterator[np.ndarray]:
        import av

        if self._max_frames == 0:
            return
        start = self._start or Fraction(0)
        end = None if self._duration is None else start + self._duration
        count = 0
        try:
            for time, frame in self._timed_frames(start):
                if time < start:
                    continue
                if end is not None and time >= end:
                    break
                image = self._convert(frame)
                yield image
                count += 1
                if self._max_frames is not None and count >= self._max_frames:
                    break
                if self._closed:
                    break
        except VideoInputError:
            raise
        except (av.error.FFmpegError, OSError, EOFError, ValueError, RuntimeError) as error:
            if self._closed:
                return
            reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
            raise VideoInputError(f"{self._name}: corrupt or unreadable video data after {count} frames "
                                  f"({reason.lower()})") from None

    def _timed_frames(self, start: Fraction):
        """(time from the stream's first frame, frame), from a frame at or before `start`."""
        decoded = self._seek(start) if start > 0 and not self._is_pipe else None
        if decoded is None:
            decoded = self._decode()
        previous = None
        for frame in decoded:
            if self._closed:
                return
            time = self._frame_time(frame, previous)
            previous = time
            yield time, frame
        self._warn_if_cut()

    def _decode(self):
        """The stream's frames as `container.decode` gives them, noting the last packet read
        (its position in the input, size and timestamp) for `_warn_if_cut`."""
        for packet in self._container.demux(self._stream):
            if packet.size:
                self._last_packet = (packet.pos, packet.size, packet.pts)
            yield from packet.decode()

    def _warn_if_cut(self) -> None:
        """Warn once the input is read to its end when it is a y4m that ends inside a frame.

        FFmpeg's y4m demuxer stops at the short read without a word, dropping the partial
        frame, so a cut file or an interrupted pipe would pass for a whole input. The input's
        size is compared with the end of the last frame read (the header's end when there was
        none); a frame's number is its timestamp, which FFmpeg's demuxer counts in frames.
        """
        if self._container.format.name != "yuv4mpegpipe":
            return
        try:
            head, size = self._head_and_size()
        except OSError:             # the file is gone: nothing to compare with
            return
        if self._last_packet is None:
            complete, end = 0, head.find(b"\n") + 1
        else:
            pos, length, pts = self._last_packet
            complete, end = pts + 1, pos + length
        if size > end:
            present = max(size - end - len(_Y4M_FRAME_LINE), 0)
            log.warning("%s: the input ends inside frame %d, after %d complete %s (%d of its %d bytes are "
                        "there); the partial frame is dropped", self._name, complete + 1, complete,
                        "frame" if complete == 1 else "frames", present, _y4m_frame_bytes(self._stream))

    def _head_and_size(self) -> tuple[bytes, int]:
        """The input's first bytes and its size in bytes (read so far, for standard input)."""
        if self._pipe is not None:
            return self._pipe.head, self._pipe.size
        with open(self._source, "rb") as handle:
            return handle.read(_Y4M_HEAD_BYTES), os.fstat(handle.fileno()).st_size

    def _frame_time(self, frame, previous: Fraction | None) -> Fraction:
        if frame.pts is None:       # no timestamp: one frame after the previous one
            return Fraction(0) if previous is None else previous + 1 / self._native_rate
        time_base = frame.time_base or self._time_base
        return (frame.pts - self._origin) * Fraction(time_base)

    def _seek(self, start: Fraction):
        """A decode iterator from a frame at or before `start`, or None to read from the top."""
        import av

        container, stream = self._container, self._stream
        time_base = Fraction(self._time_base)
        # some indexes (B-frames, odd edit lists) land after the target: step back until not
        for back in (0, 1, 5, 30):
            target = start - back
            if target <= 0:
                break
            try:
                container.seek(self._origin + math.floor(target / time_base), stream=stream, backward=True)
            except (av.error.FFmpegError, OSError, ValueError):
                break
            decoded = self._decode()
            first = next(decoded, None)
            if first is not None and self._frame_time(first, None) <= start:
                return _chain(first, decoded)
            # nothing after the seek point, or a first frame past the start: try further back
        # from the very beginning: a fresh open is the one position that is certain
        self._reopen()
        return None

    def _reopen(self) -> None:
        """Open the source again (a file whose seek failed) to read it from the top."""
        old = self._container
        self._container, _, _ = _open_container(self._source, self._rate_option)
        try:
            old.close()
        except Exception:   # noqa: BLE001
            pass
        self._stream = _video_stream(self._container, self._name)

    def _convert(self, frame) -> np.ndarray:
        key = (frame.width, frame.height)
        plan = self._plans.get(key)
        if plan is None:
            if frame.width < 1 or frame.height < 1 or frame.width > MAX_SOURCE_SIZE or frame.height > MAX_SOURCE_SIZE:
                raise VideoInputError(f"{self._name}: a frame of {frame.width}x{frame.height}")
            plan = self._plans[key] = _plan(frame.width, frame.height, self._out_w, self._out_h, self._fit)
        if plan.source_crop is not None:
            x, y, w, h = plan.source_crop
            rgb = self._rgb(frame, frame.width, frame.height)[y:y + h, x:x + w]
            import av

            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        image = self._rgb(frame, plan.scale_w, plan.scale_h)
        if plan.pad is not None:
            left, top, right, bottom = plan.pad
            image = np.pad(image, ((top, bottom), (left, right), (0, 0)), mode="edge")
        elif image.shape[0] != self._out_h or image.shape[1] != self._out_w:
            image = image[plan.y:plan.y + self._out_h, plan.x:plan.x + self._out_w]
        return np.ascontiguousarray(image)

    def _rgb(self, frame, width: int, height: int) -> np.ndarray:
        """The frame as rgb24 at width x height (swscale, deterministic flags)."""
        if self._reformatter is None:
            from av.video.reformatter import Interpolation, VideoReformatter

            exact = Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT | Interpolation.BITEXACT
            self._reformatter = VideoReformatter()
            self._flags = (Interpolation.AREA | exact, Interpolation.BICUBIC | exact)   # (shrink, enlarge)
        shrink = width <= frame.width and height <= frame.height
        converted = self._reformatter.reformat(frame, width, height, "rgb24",
                                               interpolation=self._flags[0 if shrink else 1])
        return converted.to_ndarray()


def _y4m_length_is_exact(path: str, frames: int) -> bool:
    """FFmpeg counts a y4m file's frames as its size over the size of a frame with a bare
    `FRAME` line; true when that holds: the first and last frames have bare FRAME lines where
    the count puts them and the data divides evenly."""
    try:
        with open(path, "rb") as handle:
            header = handle.readline(4096)
            size = os.fstat(handle.fileno()).st_size - len(header)
            if not header.endswith(b"\n") or frames < 1 or size % frames:
                return False
            packet = size // frames
            for index in (0, frames - 1):
                handle.seek(len(header) + index * packet)
                if handle.read(6) != b"FRAME\n":
                    return False
            return True
    except OSError:
        return False


def _y4m_frame_bytes(stream) -> int:
    """The bytes of one frame of a y4m stream after its FRAME line: its planes, one
    component each (y4m is planar), rounded up to whole bytes per sample."""
    components = stream.codec_context.format.components
    return sum(c.width * c.height * ((c.bits + 7) // 8) for c in components)


def _chain(first, rest):
    yield first
    yield from rest


def _native_rate(stream, is_sequence: bool, rate: Fraction | None) -> Fraction:
    """The stream's frame rate as FFmpeg guesses it (25 when it cannot tell)."""
    if is_sequence and rate is not None:
        return rate
    for candidate in (getattr(stream, "guessed_rate", None), stream.average_rate, getattr(stream, "base_rate", None)):
        if candidate:
            value = Fraction(candidate)
            if value > 0:
                return value
    return DEFAULT_SEQUENCE_RATE
