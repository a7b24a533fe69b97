"""Reading `.pmt` files: units one at a time, or whole streams for inspection.

`read_units` is the streaming interface (a pipe works: nothing is read ahead of the
unit it yields). `read_streams` collects each stream's units into a `Stream` with its
scenes, for tools such as pmtprobe. Both raise only `InvalidDataError` for bad input.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import BinaryIO, Generic, TypeVar

import numpy as np

from .errors import InvalidDataError
from .framing import PREFIX_SIZE, UnitSource
from .syntax import decode_payload
from .units import (
    IGNORABLE_TYPES,
    EndOfStream,
    Index,
    Keyframe,
    LostSceneStart,
    Metadata,
    SceneCut,
    SceneStart,
    SequenceHeader,
    Unit,
    UnitType,
    UnknownUnit,
)
from .validation import StreamValidator, check_concatenation, check_unit

Source = BinaryIO | str | os.PathLike
U_co = TypeVar("U_co", covariant=True)


@dataclass(frozen=True)
class ReadUnit(Generic[U_co]):
    """A parsed unit and where it was: `offset` in the input, `stream_offset` from the
    start of its stream's signature (what index units count), `size` of the whole unit."""

    unit: U_co
    offset: int
    stream_offset: int
    size: int
    stream: int          # 0 for the first stream of a file, 1 for the next, ...
    unit_type: int
    minor: int = 0       # the `version_minor` of its stream


@contextmanager
def _binary(source: Source) -> Iterator[BinaryIO]:
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as handle:
            yield handle
    else:
        yield source


def read_units(source: Source) -> Iterator[ReadUnit[Unit]]:
    """Yield every unit of every stream in `source`, checked against SPEC.md.

    Each unit is yielded only after its framing, CRC, field values and position in the
    stream have been checked; the caller may stop at any time.
    """
    with _binary(source) as handle:
        units = UnitSource(handle)
        first_header: SequenceHeader | None = None
        stream_number = 0
        while True:
            start = units.position
            minor = units.read_prefix()
            if minor is None:
                if stream_number == 0:
                    raise InvalidDataError("truncated", "empty input", 0)
                return
            validator = StreamValidator()
            while not validator.finished:
                raw = units.read_unit()
                with located_at(raw.offset):
                    unit = parse_unit(raw.unit_type, raw.may_ignore, raw.payload, validator.header, minor,
                                      index_capacity=validator.index_capacity())
                    check_unit(unit, validator.header)
                    validator.feed(unit, raw.offset - start)
                    if isinstance(unit, SequenceHeader):
                        if first_header is None:
                            first_header = unit
                        else:
                            check_concatenation(first_header, unit)
                yield ReadUnit(unit, raw.offset, raw.offset - start, raw.size, stream_number, raw.unit_type, minor)
            stream_number += 1


@contextmanager
def located_at(offset: int) -> Iterator[None]:
    """Report an `InvalidDataError` raised inside at the unit's file `offset` (a payload's
    own parsers count offsets from the payload)."""
    try:
        yield
    except InvalidDataError as err:
        raise InvalidDataError(err.code, err.message, offset) from None


def parse_unit(unit_type: int, may_ignore: bool, payload: bytes, header: SequenceHeader | None, minor: int,
               *, index_capacity: int | None = None) -> Unit:
    """Parse one framed unit's payload (unknown ignorable types become `UnknownUnit`).

    `index_capacity`, when given, is the most entries an index unit may list here
    (`StreamValidator.index_capacity`).
    """
    if unit_type == 0:
        raise InvalidDataError("bad_field", "unit_type 0 is forbidden")
    try:
        kind = UnitType(unit_type)
    except ValueError:
        if may_ignore:
            return UnknownUnit(unit_type, payload)
        raise InvalidDataError("unsupported_unit", f"unit type {unit_type} is unknown and not ignorable") from None
    if may_ignore != (kind in IGNORABLE_TYPES):
        raise InvalidDataError("bad_field", f"may_ignore is {int(may_ignore)} on a {kind.name.lower()} unit")
    if header is None and kind != UnitType.SEQUENCE_HEADER:
        raise InvalidDataError("bad_unit_order", "the first unit of a stream is not a sequence header")
    return decode_payload(kind, payload, header, minor, index_capacity=index_capacity)


@dataclass
class Scene:
    """One scene of a stream: its start unit, the cut marker before it if any, its keyframes.

    In a stream that `bitstream.concealment` repaired, a lost scene start is a `LostSceneStart`.
    """

    start: ReadUnit[SceneStart | LostSceneStart]
    cut: ReadUnit[SceneCut] | None = None
    keyframes: list[ReadUnit[Keyframe]] = field(default_factory=list)

    @property
    def first_frame(self) -> int:
        return self.start.unit.first_frame

    @property
    def last_frame(self) -> int:
        return self.keyframes[-1].unit.frame_index


@dataclass
class Stream:
    """All units of one stream, grouped."""

    header: SequenceHeader
    header_unit: ReadUnit
    end: EndOfStream
    units: list[ReadUnit]
    scenes: list[Scene]
    metadata: list[tuple[str, str]]
    index: Index | None
    first_frame: int          # display index of this stream's frame 0 in the whole file

    @property
    def frame_count(self) -> int:
        return self.end.frame_count

    @property
    def minor(self) -> int:
        """The stream's `version_minor`."""
        return self.header_unit.minor

    @property
    def size(self) -> int:
        """Bytes of the stream, signature to end-of-stream unit."""
        return PREFIX_SIZE + sum(u.size for u in self.units)


def read_streams(source: Source, *, values: bool = True) -> list[Stream]:
    """Read a whole file into `Stream`s (one per concatenated stream).

    Every unit is kept, so memory grows with the stream, and faster than the file: a
    41-byte keyframe unit may code 1.2 MB of factors. `values=False` keeps the shape and
    dtype of every factor and latent array but not its values (each becomes a read-only
    view of one zero, taking no memory), for tools that only describe a stream.
    """
    streams: list[Stream] = []
    current: list[ReadUnit] = []
    first_frame = 0
    for item in read_units(source):
        current.append(item if values else _without_values(item))
        if isinstance(item.unit, EndOfStream):
            stream = _group(current, first_frame)
            streams.append(stream)
            first_frame += stream.frame_count
            current = []
    return streams


def _without_values(item: ReadUnit) -> ReadUnit:
    """`item` with its factor or latent arrays replaced by zero views of the same shape."""
    unit = item.unit
    if isinstance(unit, Keyframe):
        unit = dataclasses.replace(unit, u=_zero_view(unit.u), v=_zero_view(unit.v))
    elif isinstance(unit, SceneStart):
        unit = dataclasses.replace(unit, latent=_zero_view(unit.latent))
    else:
        return item
    return dataclasses.replace(item, unit=unit)


def _zero_view(array: np.ndarray) -> np.ndarray:
    return np.broadcast_to(np.zeros((), dtype=array.dtype), array.shape)


def _group(units: list[ReadUnit], first_frame: int) -> Stream:
    scenes: list[Scene] = []
    metadata: list[tuple[str, str]] = []
    index = None
    cut = None
    for item in units:
        unit = item.unit
        if isinstance(unit, SceneCut):
            cut = item
        elif isinstance(unit, SceneStart):
            scenes.append(Scene(item, cut))
            cut = None
        elif isinstance(unit, Keyframe):
            scenes[-1].keyframes.append(item)
        elif isinstance(unit, Metadata):
            metadata.extend(unit.entries)
        elif isinstance(unit, Index):
            index = unit
    return Stream(units[0].unit, units[0], units[-1].unit, units, scenes, metadata, index, first_frame)
