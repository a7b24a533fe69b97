"""Segmented delivery (SPEC.md Annex D): a stream cut into an init segment and media
segments of whole scenes, the way DASH serves a Representation.

The init segment is the stream's prefix, sequence header and leading metadata; media
segment n (from 1) holds the scenes of frames `(n − 1)·L … n·L − 1` and starts with a
scene start, so that any path through aligned renditions (an init segment, then media
segment n of any rendition, for n = 1, 2, …) is itself a conforming stream whose frames
are, segment by segment, those of the renditions it took them from. The `INDEX` unit is
left out (its offsets would depend on the path); the last media segment ends with an
`END_OF_STREAM` unit whose `index_offset` is 0.

`Segmenter` works on units as they come, so a live encode is packaged as it goes: a
media segment is handed on as soon as the unit that opens the next one, or the end of
the stream, shows that it is complete.
"""
from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass

from .errors import InvalidDataError
from .reader import Source, _binary, read_units
from .units import EndOfStream, Index, Keyframe, SceneCut, SceneStart, SequenceHeader, Unit
from .writer import unit_bytes


@dataclass(frozen=True)
class Segment:
    """One segment's bytes: `number` 0 is the init segment, n ≥ 1 media segment n, which
    codes `frames` frames from `first_frame`; `last`: it ends with `END_OF_STREAM`."""

    number: int
    first_frame: int
    frames: int
    data: bytes
    last: bool = False


class Segmenter:
    """Cuts one stream's units into segments of `segment_frames` frames (SPEC.md Annex D).

    `push(unit, data)` takes each unit in stream order with its bytes as read or written
    (`data` starts with the stream's prefix for the sequence header) and returns the
    segments it completed. A scene that crosses a segment boundary cannot be cut
    (`ValueError`): the stream must have been encoded with a scene start at every
    boundary (`segment_seconds`).
    """

    def __init__(self, segment_frames: int) -> None:
        if segment_frames < 1:
            raise ValueError("a segment holds at least one frame")
        self.segment_frames = segment_frames
        self._parts: list[bytes] = []
        self._number = 0                 # the segment being collected; 0: the init segment
        self._next_keyframe = 0          # the first frame not yet coded
        self._ended = False

    @property
    def _end(self) -> int:
        """The first frame after the media segment being collected."""
        return self._number * self.segment_frames

    def push(self, unit: Unit, data: bytes) -> list[Segment]:
        if self._ended:
            raise ValueError("the stream has ended: one stream per segmenter")
        done: list[Segment] = []
        if isinstance(unit, SceneCut | SceneStart):
            first = unit.frame_index if isinstance(unit, SceneCut) else unit.first_frame
            if self._number == 0 or first >= self._end:
                if first != self._end:      # only units out of SPEC.md §6's order get here
                    raise ValueError(f"a scene at frame {first} where frame {self._end} comes next")
                done.append(self._cut())
        elif isinstance(unit, Keyframe):
            if unit.frame_index >= self._end:
                raise ValueError(f"the keyframe of frame {unit.frame_index} crosses the segment boundary at frame "
                                 f"{self._end}: encode with a scene start every {self.segment_frames} frames")
            self._next_keyframe = unit.frame_index + 1
        elif isinstance(unit, Index):
            return done
        elif isinstance(unit, EndOfStream):
            self._parts.append(unit_bytes(EndOfStream(unit.frame_count, 0)))
            self._ended = True
            done.append(self._cut(last=True))
            return done
        elif isinstance(unit, SequenceHeader) and (self._number or self._parts):
            raise ValueError("one stream per segmenter")
        self._parts.append(data)
        return done

    def _cut(self, *, last: bool = False) -> Segment:
        """The segment collected so far; the next one starts."""
        number = self._number
        first = max(0, (number - 1) * self.segment_frames)
        frames = self._next_keyframe - first if number else 0
        segment = Segment(number, first, frames, b"".join(self._parts), last)
        self._parts = []
        self._number += 1
        return segment


def split_stream(source: Source, segment_frames: int) -> Iterator[Segment]:
    """The segments of the one stream in `source` (a path or binary file), in order, as it is read."""
    segmenter = Segmenter(segment_frames)
    with _binary(source) as handle:
        reading = _Recording(handle)
        for item in read_units(reading):
            if item.stream > 0:
                raise InvalidDataError("stream_mismatch", "a file of several streams: segment one stream at a time",
                                       item.offset)
            yield from segmenter.push(item.unit, reading.take())


class _Recording(io.RawIOBase):
    """A binary reader that keeps what was read until `take` hands it over: `read_units`
    reads nothing ahead of the unit it yields, so that is the unit's bytes (with the
    stream's prefix before its sequence header)."""

    def __init__(self, handle) -> None:
        self._handle = handle
        self._kept = bytearray()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._handle.read(len(buffer))
        buffer[:len(data)] = data
        self._kept.extend(data)
        return len(data)

    def take(self) -> bytes:
        data = bytes(self._kept)
        self._kept.clear()
        return data
