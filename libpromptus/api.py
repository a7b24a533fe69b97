"""The PyAV-like Python API: `open` a .pmt file to read or write, `encode` and `decode` whole files.

    import libpromptus as pmt
    with pmt.open("clip.pmt") as container:                # read: units, frames
        print(container.info.width, container.info.frame_count)
        for frame in container.decode(model="tiny"):
            frame.image                                     # numpy uint8 [height, width, 3]
    with pmt.open("live.pmt", "w", width=128, height=128, rate=30, model="tiny") as container:
        for image in images:
            container.encode(image)                         # write: frames in, units out as keyframes are fitted
    pmt.encode("clip.mp4", "clip.pmt", model="tiny", bitrate=100_000)
    pmt.encode("clip.mp4", "clip.pmt", segment_seconds=2, cluster="auto")   # segments as tasks of a Ray cluster
    pmt.decode("clip.pmt", "clip.mkv", model="tiny")

This module only composes the layers below it: `decoder.Decoder` decodes, the
`encoder` package encodes, `io` reads and writes video and files.
"""
from __future__ import annotations

import builtins
import io
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, BinaryIO, TextIO

import numpy as np

from .bitstream import ReadUnit, SequenceHeader, Stream, read_units
from .dash.abr import Rule, parse_rule
from .dash.client import DashReader, SegmentRecord, is_manifest_url
from .decoder.decoder import Decoder, read_arriving, read_input
from .encoder import job, segments
from .encoder.encoder import check_frame
from .encoder.job import INPUT_OPTIONS, EncodeOptions, EncodeResult, EncoderSetup
from .engines import DEFAULT_BATCH
from .io import network
from .io.pipes import is_stdin

if TYPE_CHECKING:
    from .bitstream.concealment import ConcealmentReport
    from .decoder.decoding import Frame
    from .encoder.encoder import EncodeSummary, KeyframeReport
    from .encoder.segments import SegmentReport

__all__ = ["Container", "EncodeResult", "LiveContainer", "OutputContainer", "StreamInfo", "decode", "encode", "open"]


@dataclass(frozen=True)
class StreamInfo:
    """What a player needs to know before decoding."""

    width: int
    height: int
    rate: Fraction
    frame_count: int
    model_name: str
    model_hash: bytes
    header: SequenceHeader

    @classmethod
    def of(cls, header: SequenceHeader, frame_count: int) -> StreamInfo:
        """The info of streams that begin with `header` and hold `frame_count` frames."""
        return cls(header.width, header.height, Fraction(header.fps_num, header.fps_den), frame_count,
                   header.model_name, header.model_hash, header)


class Container:
    """An opened .pmt file (all its concatenated streams), for reading.

    With `conceal=True` damaged units do not stop it: `streams` are rebuilt from what
    survived, each concealment is logged as a warning, and `concealment` reports the
    concealed frames (`libpromptus.bitstream.concealment`); otherwise `concealment` is
    None. `demux` always reads the file strictly.
    """

    def __init__(self, path: str | os.PathLike, *, conceal: bool = False) -> None:
        self.path = path
        self.streams: list[Stream]
        self.concealment: ConcealmentReport | None
        self.streams, self.concealment = read_input(path, conceal=conceal)
        header = self.streams[0].header
        self.info = StreamInfo.of(header, sum(s.frame_count for s in self.streams))

    def demux(self) -> Iterator[ReadUnit]:
        """Yield every unit of the file, in order."""
        yield from read_units(self.path)

    def decode(self, *, model: str | None = None, engine: str = "auto", device: str = "auto",
               precision: str = "auto", batch: int = DEFAULT_BATCH, start_frame: int = 0, frame_count: int | None = None,
               force_model: bool = False, tensors: bool = False) -> Iterator[Frame]:
        """Return an iterator over the decoded frames (SPEC.md §8), in display order.

        `model` is a registered name or a path (default: $PROMPTUS_MODEL, else the model
        the stream names); `force_model` decodes with it even when the stream names
        another model (`decoder.Decoder`). The model is loaded and checked before this
        returns, so its errors come first. With `tensors=True` each `Frame.image` is a
        torch uint8 tensor instead of a numpy array.
        """
        decoder = Decoder(self.info.header, model=model, engine=engine, device=device, precision=precision,
                          force_model=force_model)
        return _as_tensors(decoder.decode(self.streams, batch=batch, start_frame=start_frame,
                                          frame_count=frame_count), tensors)

    def __enter__(self) -> Container:
        return self

    def __exit__(self, *exc) -> None:
        return None


class LiveContainer:
    """A .pmt stream read as it arrives: standard input (`-`), a URL (`http://`, `tcp://`,
    see `io.network`) or any binary file object such as a socket's; or an MPD
    (`http://…/NAME.mpd`, `pmtenc -f dash`), read as the path its `abr` rule picks
    (`dash.abr`: a rule or its text, `bba` by default; `on_segment` receives each
    segment's `dash.client.SegmentRecord`).

    `info` comes from the first sequence header, read at once (its `frame_count` is what
    the header declares: 0 for a live stream). The rest is read in one pass, by `demux()`
    or by `decode()`, whose frames come out as each interval's keyframe arrives.
    """

    def __init__(self, source: str | BinaryIO, *, abr: str | Rule | None = None,
                 on_segment: Callable[[SegmentRecord], None] | None = None) -> None:
        self._handle, self._owned = _arriving(source, abr, on_segment)
        try:
            header, self._units = read_arriving(self._handle)
        except BaseException:
            self.close()
            raise
        self._read = False
        self.info = StreamInfo.of(header, header.frame_count)

    def _units_once(self) -> Iterator[ReadUnit]:
        if self._read:
            raise ValueError("a stream read as it arrives can be demuxed or decoded once")
        self._read = True
        return self._units

    def demux(self) -> Iterator[ReadUnit]:
        """Yield every unit as it arrives, checked."""
        return self._units_once()

    def decode(self, *, model: str | None = None, engine: str = "auto", device: str = "auto",
               precision: str = "auto", batch: int = DEFAULT_BATCH, frame_count: int | None = None,
               force_model: bool = False, tensors: bool = False) -> Iterator[Frame]:
        """The frames as they can be generated (see `Container.decode`; no `start_frame`:
        what has gone by is not read again)."""
        decoder = Decoder(self.info.header, model=model, engine=engine, device=device, precision=precision,
                          force_model=force_model)
        return _as_tensors(decoder.decode_units(self._units_once(), batch=batch, frame_count=frame_count), tensors)

    def close(self) -> None:
        if self._owned:
            self._handle.close()

    def __enter__(self) -> LiveContainer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _arriving(source: str | BinaryIO, abr: str | Rule | None,
              on_segment: Callable[[SegmentRecord], None] | None) -> tuple[BinaryIO, bool]:
    """The binary file object to read `source` from, and whether closing it is ours."""
    is_manifest = isinstance(source, str) and is_manifest_url(source)
    if (abr is not None or on_segment is not None) and not is_manifest:
        raise ValueError("abr and on_segment apply to an MPD (http://HOST/PATH/NAME.mpd)")
    if is_manifest:
        rule = parse_rule(abr) if isinstance(abr, str) else abr
        return io.BufferedReader(DashReader(source, rule, on_segment=on_segment)), True
    if isinstance(source, str) and is_stdin(source):
        return sys.stdin.buffer, False
    if isinstance(source, str):
        return network.open_input(source), True
    return source, False


def _as_tensors(frames: Iterator[Frame], tensors: bool) -> Iterator[Frame]:
    """`frames` with torch uint8 tensors as images when `tensors`."""
    if not tensors:
        return frames
    import torch

    from .decoder.decoding import Frame

    return (Frame(f.index, torch.from_numpy(f.image), f.arrived) for f in frames)


class OutputContainer:
    """A .pmt stream being written from frames: `encode(frame)` per frame, `close()` at the end.

    `target` is a path or a binary file object (a pipe, a socket). Units reach it as
    keyframes are fitted, so a receiver can decode while frames are still coming. A path
    is written to a private temporary and renamed into place by `close()`; leaving the
    `with` block by an exception removes it, so no partial file is left. `options` are
    `encode`'s coding options (`EncodeOptions`: model, bitrate, rank, interval, iterations,
    …); with `frame_count` unknown, -b:v is spent per frame as frames come. With a bitrate
    and the rate-distortion trials on (`decisions="trial"`, the default), the first
    `lookahead` frames are held until the trials have decided (`encoder.rdo`): nothing is
    written before, and `rank` and `interval` are the decided ones from then on.
    """

    def __init__(self, target: str | os.PathLike | BinaryIO, *, width: int, height: int, rate: Fraction | int | str,
                 frame_count: int | None = None, overwrite: bool = False, **options) -> None:
        ignored = sorted(set(options) & set(INPUT_OPTIONS))
        if ignored:
            raise TypeError(f"write mode takes frames, not an input to read: {', '.join(ignored)} do not apply")
        is_path = isinstance(target, (str, os.PathLike))
        if is_path and os.path.exists(target) and not overwrite:
            raise FileExistsError(f"{os.fspath(target)}: already exists (use overwrite=True)")
        setup = EncoderSetup(EncodeOptions(**options), width=width, height=height, rate=Fraction(rate),
                             frame_count=frame_count)
        self._temporary = None
        if is_path:
            from .io.files import TemporaryOutput

            self._temporary = TemporaryOutput(target)
            self._sink = builtins.open(self._temporary.path, "wb")   # noqa: SIM115 - closed by close()/abort()
        else:
            self._sink = target
        self.header = setup.header
        self._setup = setup
        self._window: list[np.ndarray] | None = [] if setup.trials_decide else None
        self._encoder = None if self._window is not None else setup.open(self._sink)
        self.rank, self.interval = setup.rank, setup.interval
        self.summary: EncodeSummary | None = None

    def _start(self) -> None:
        """Decide on the held window, open the stream and push the window into it."""
        window, self._window = self._window, None
        self._setup.decide(window)
        self.rank, self.interval = self._setup.rank, self._setup.interval
        self._encoder = self._setup.open(self._sink)
        for frame in window:
            self._encoder.push(frame)

    def encode(self, frame: np.ndarray) -> None:
        """Add the next frame (numpy uint8 [height, width, 3]); units are written as keyframes are fitted."""
        if self._window is None:
            self._encoder.push(frame)
            return
        check_frame(self.header, frame, len(self._window))
        self._window.append(frame)
        if len(self._window) >= self._setup.options.lookahead:
            self._start()

    def close(self) -> EncodeSummary:
        """Fit the last keyframe, write the index and end-of-stream unit, and publish a file output."""
        if self.summary is None:
            if self._window is not None:
                self._start()
            self.summary = self._encoder.finish()
            if self._temporary is not None:
                self._sink.close()
                self._temporary.publish()
        return self.summary

    def abort(self) -> None:
        """Stop without finishing the stream; a file output is removed."""
        if self._temporary is not None and self.summary is None:
            self._sink.close()
            self._temporary.discard()

    def __enter__(self) -> OutputContainer:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()


def open(target: str | os.PathLike | BinaryIO, mode: str = "r",  # noqa: A001
         **options) -> Container | LiveContainer | OutputContainer:
    """Open a .pmt stream to read (`mode="r"`) or to write (`mode="w"`: `OutputContainer`,
    which takes `width`, `height`, `rate` and coding options).

    Reading a path gives a `Container` (`conceal=True` conceals damage); `-`, a URL
    (`http://`, `https://`, `tcp://`; an MPD, `http://…/NAME.mpd`, with `abr=`) or a
    binary file object gives a `LiveContainer`, read as it arrives."""
    if mode == "r":
        if isinstance(target, os.PathLike) or (isinstance(target, str) and not is_stdin(target)
                                                and not network.is_url(target)):
            return Container(target, **options)
        return LiveContainer(target, **options)
    if mode == "w":
        return OutputContainer(target, **options)
    raise ValueError(f"mode {mode!r}: choose 'r' or 'w'")


def encode(source: str, output: str, *, overwrite: bool = False, resume: bool = False,
           segment_seconds: float | None = None, jobs: int = 1, cluster: str | None = None, threads: int | None = None,
           stats: TextIO | None = None, on_start: Callable[[int | None, Fraction], None] | None = None,
           on_iteration: Callable[[int, int, float], None] | None = None,
           on_keyframe: Callable[[KeyframeReport], None] | None = None,
           on_segment: Callable[[SegmentReport], None] | None = None, **options) -> EncodeResult:
    """Encode a video (any input PyAV reads) into a .pmt file; `options`: see `EncodeOptions`.

    The output appears whole or not at all; `resume=True` continues an interrupted encode
    of the same input and options (`encoder.job.encode`). With `segment_seconds` the video
    is cut into closed segments encoded independently, `jobs` local processes at a time or
    as tasks of the Ray cluster `cluster` (`"local"`, `"auto"` or `"HOST:PORT"`; needs
    `libpromptus[cluster]`), and merged (`encoder.segments.encode_segmented`); resuming
    reuses every finished segment. `threads`: torch's CPU threads per encode or segment
    (the file's bytes depend on them). Callbacks: `on_start(frame_count or None, rate)`,
    `on_iteration(keyframe, iteration, loss)` (not for segments), `on_keyframe(KeyframeReport)`,
    `on_segment(SegmentReport)` (segments only).
    """
    if segment_seconds is None:
        if jobs != 1 or cluster is not None or on_segment is not None:
            raise ValueError("--jobs and --cluster run segments: give --segment-seconds")
        return job.encode(source, output, overwrite=overwrite, resume=resume, threads=threads, stats=stats,
                          on_start=on_start, on_iteration=on_iteration, on_keyframe=on_keyframe, **options)
    return segments.encode_segmented(source, output, segment_seconds=segment_seconds, jobs=jobs, cluster=cluster,
                                     threads=threads, overwrite=overwrite, resume=resume, stats=stats,
                                     on_start=on_start, on_keyframe=on_keyframe, on_segment=on_segment, **options)


def decode(path: str | os.PathLike, output: str, *, codec: str | None = None, crf: int | None = None,
           overwrite: bool = False, conceal: bool = False, **options) -> int:
    """Decode a whole .pmt file into a video file (or image sequence); return the frame count.

    `conceal=True` conceals damaged units and logs each concealment and note as a warning.
    `options` are `Container.decode`'s.
    """
    from .io.video_output import VideoWriter, output_format

    container = Container(path, conceal=conceal)
    info = container.info
    frames = container.decode(**options)
    writer = VideoWriter(output, info.width, info.height, info.rate,
                         output_format(output, codec=codec, crf=crf), overwrite=overwrite)
    try:
        for frame in frames:
            writer.write(frame.image)
    except BaseException:
        writer.abort()
        raise
    writer.close()
    return writer.frames

