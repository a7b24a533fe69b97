"""Seeking in a `.pmt` file: one checking pass that keeps each stream's outline, then
reading from the scene start that holds a frame.

`outline_streams` reads every unit once, with all of `read_units`' checks, and keeps of
each stream only its header, its frame range and its seek points: the scene starts its
`INDEX` unit lists (SPEC.md §4.6; §6 rule 8 makes them the stream's real scene starts),
or, in a stream without one, the scene starts as they were read. Memory stays that of
one unit, whatever the file's length or the sizes its units declare (SPEC.md §12).

`read_from_frame` then seeks to the scene start that holds a frame and parses units,
values included, from there to the end of the file: a decoder asked for frames from N
on never parses the scenes before N's.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from .errors import InvalidDataError
from .framing import UnitSource
from .reader import ReadUnit, located_at, parse_unit, read_units
from .units import EndOfStream, Index, SceneStart, SequenceHeader, UnitType
from .validation import check_unit


@dataclass(frozen=True)
class SeekPoint:
    """A scene start: the first frame of its scene (the stream's own numbering) and the
    file offset of its `SCENE_START` unit."""

    first_frame: int
    offset: int


@dataclass(frozen=True)
class StreamOutline:
    """One checked stream of a file, without its units."""

    number: int                         # 0 for the file's first stream
    offset: int                         # file offset of its signature
    header: SequenceHeader
    first_frame: int                    # display index, in the whole file, of its frame 0
    frame_count: int
    scene_starts: tuple[SeekPoint, ...]
    indexed: bool                       # whether `scene_starts` came from its INDEX unit


def outline_streams(source: BinaryIO) -> list[StreamOutline]:
    """Check every unit of `source` (as `read_units` does) and return each stream's outline."""
    outlines: list[StreamOutline] = []
    read: list[SeekPoint] = []
    header: SequenceHeader | None = None
    for item in read_units(source):
        unit = item.unit
        if isinstance(unit, SequenceHeader):
            header, read = unit, []
        elif isinstance(unit, SceneStart):
            read.append(SeekPoint(unit.first_frame, item.offset))
        elif isinstance(unit, Index):
            start = item.offset - item.stream_offset
            read = [SeekPoint(entry.frame_index, start + entry.offset) for entry in unit.entries
                    if entry.unit_type == UnitType.SCENE_START]
        elif isinstance(unit, EndOfStream):
            first = outlines[-1].first_frame + outlines[-1].frame_count if outlines else 0
            outlines.append(StreamOutline(item.stream, item.offset - item.stream_offset, header, first,
                                          unit.frame_count, tuple(read), unit.index_offset != 0))
    return outlines


def read_from_frame(source: BinaryIO, outlines: list[StreamOutline],
                    frame: int) -> tuple[int, Iterator[ReadUnit]]:
    """Where decoding for display frame `frame` on starts in a file `outline_streams` checked:
    (the display index of frame 0 of the first stream read, its units and those of every
    later stream, lazily). The first stream's units are its header, then those from the
    scene start holding `frame`. A `frame` past the file's end gives the file's frame count
    and no units. `source` must be seekable.
    """
    number = next((n for n, o in enumerate(outlines) if frame < o.first_frame + o.frame_count), len(outlines))
    if number == len(outlines):
        return (outlines[-1].first_frame + outlines[-1].frame_count if outlines else 0), iter(())
    first = outlines[number]
    local = frame - first.first_frame
    scene = max((p for p in first.scene_starts if p.first_frame <= local), key=lambda p: p.first_frame)

    def units() -> Iterator[ReadUnit]:
        yield from _read_stream(source, first, scene.offset)
        for outline in outlines[number + 1:]:
            yield from _read_stream(source, outline, None)

    return first.first_frame, units()


def _read_stream(source: BinaryIO, outline: StreamOutline, skip_to: int | None) -> Iterator[ReadUnit]:
    """`outline`'s header unit, then its units from file offset `skip_to` (or right after
    the header) to its end-of-stream unit, parsed and checked."""
    source.seek(outline.offset)
    reader = UnitSource(source, position=outline.offset)
    minor = reader.read_prefix()
    if minor is None:
        raise InvalidDataError("truncated", "the file ended before a stream it held when it was checked",
                               outline.offset)
    while True:
        raw = reader.read_unit()
        with located_at(raw.offset):
            unit = parse_unit(raw.unit_type, raw.may_ignore, raw.payload, outline.header, minor)
            check_unit(unit, outline.header)
        yield ReadUnit(unit, raw.offset, raw.offset - outline.offset, raw.size, outline.number, raw.unit_type,
                       minor)
        if isinstance(unit, EndOfStream):
            return
        if skip_to is not None:
            source.seek(skip_to)
            reader = UnitSource(source, position=skip_to)
            skip_to = None
