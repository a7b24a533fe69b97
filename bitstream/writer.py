"""Writing `.pmt` streams incrementally (SPEC.md, "File structure").

`StreamWriter` writes each unit as soon as it is given, so a live encoder can stream
to a pipe; `close()` appends the index (seek points of every scene start and keyframe)
and the end-of-stream unit. Every unit is checked by the same rules the reader applies
before a byte of it is written.
"""
from __future__ import annotations

import io
from typing import BinaryIO

from .errors import InvalidDataError
from .framing import UnitSource, frame_unit, stream_prefix
from .reader import parse_unit
from .syntax import encode_payload
from .units import (
    IGNORABLE_TYPES,
    Coding,
    EndOfStream,
    Index,
    SequenceHeader,
    Unit,
    UnknownUnit,
    minor_version_of,
)
from .validation import StreamValidator, check_unit


def unit_bytes(unit: Unit) -> bytes:
    """The bytes of `unit` framed (SPEC.md §2): unit header, payload and CRC."""
    if isinstance(unit, UnknownUnit):
        return frame_unit(unit.unit_type, unit.payload, may_ignore=True)
    return frame_unit(unit.unit_type, encode_payload(unit), may_ignore=unit.unit_type in IGNORABLE_TYPES)


class StreamWriter:
    """Writes one stream to a binary sink; use as a context manager or call `close()`.

    `write_index=False` leaves out the index unit (streams written live, whose readers
    never seek, save its bytes). `minor` is the stream's `version_minor`: 1 for a stream
    with LAYERED keyframes (`minor_version_of`), else 0 so that 1.0 decoders read it.
    """

    def __init__(self, sink: BinaryIO, header: SequenceHeader, *, write_index: bool = True, minor: int = 0) -> None:
        self._sink = sink
        self._write_index = write_index
        self._validator = StreamValidator()
        self.minor = minor
        self.size = 0
        check_unit(header, None)         # a refused header leaves the sink untouched
        self._emit(stream_prefix(minor))
        self.write(header)

    @classmethod
    def resume(cls, sink: BinaryIO, written: bytes, *, write_index: bool = True) -> tuple["StreamWriter", list[Unit]]:
        """Continue a stream of which `written` (whole units, no end yet) is already in `sink`.

        The units are read back and checked as a reader would (CRC, values, order), so the
        writer knows the stream's state; returns the writer and those units. The caller
        positions `sink` right after `written`.
        """
        source = UnitSource(io.BytesIO(written))
        minor = source.read_prefix()
        if minor is None:
            raise InvalidDataError("truncated", "nothing to resume: the partial stream is empty")
        writer = cls.__new__(cls)
        writer._sink = sink
        writer._write_index = write_index
        writer._validator = StreamValidator()
        writer.minor = minor
        units: list[Unit] = []
        while source.position < len(written):
            raw = source.read_unit()
            header = writer._validator.header
            unit = parse_unit(raw.unit_type, raw.may_ignore, raw.payload, header, minor)
            check_unit(unit, header)
            writer._validator.feed(unit, raw.offset)
            units.append(unit)
        writer.size = len(written)
        return writer, units

    @property
    def header(self) -> SequenceHeader:
        return self._validator.header

    def _emit(self, data: bytes) -> None:
        self._sink.write(data)
        self.size += len(data)

    def write(self, unit: Unit) -> int:
        """Check and write one unit; return its size in bytes."""
        check_unit(unit, self._validator.header)
        coding = Coding(getattr(unit, "coding", Coding.RAW))        # check_unit knows it is a member
        latent_codec = getattr(unit, "latent_codec", None)
        needed = minor_version_of(coding, latent_codec)
        if needed > self.minor:
            feature = f"latent_codec {latent_codec.name}" if latent_codec is not None else f"coding {coding.name}"
            raise InvalidDataError("bad_field", f"{feature} needs a version 1.{needed} stream; this one is "
                                                f"1.{self.minor}")
        # Serialize before the validator records the unit: a unit that fails to serialize
        # (e.g. a payload over the unit cap) must not leave a seek point behind.
        data = unit_bytes(unit)
        self._validator.feed(unit, self.size)
        self._emit(data)
        return len(data)

    def close(self) -> int:
        """Write the index (if enabled) and the end-of-stream unit; return the stream size."""
        index_offset = 0
        if self._write_index:
            index_offset = self.size
            self.write(Index(tuple(self._validator.seek_points)))
        self.write(EndOfStream(self._validator.frames_so_far, index_offset))
        self._sink.flush()
        return self.size

    def __enter__(self) -> "StreamWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()

