"""Framing units by hand, for streams the writer refuses to write.

`StreamWriter` checks every unit before it writes a byte, so the invalid streams of the
suite (and the one valid stream of a later minor version) are put together here: each
unit is serialized with the library's own payload syntax and framing (the CRC-32C is
always recomputed, so a changed field is the stream's only fault), and `assemble` adds
the index and end-of-stream units that match the units given. `assemble` of the units
a writer wrote reproduces the writer's bytes exactly; the generator checks that.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

from ..bitstream import (
    EndOfStream,
    Index,
    IndexEntry,
    Keyframe,
    SceneStart,
    Unit,
    UnitType,
    UnknownUnit,
    read_units,
)
from ..bitstream.framing import SIGNATURE, frame_unit
from ..bitstream.syntax import encode_payload
from ..bitstream.units import IGNORABLE_TYPES


@dataclass(frozen=True)
class Framed:
    """A unit already on the wire, possibly malformed; `unit` is what the index should list for it."""

    data: bytes
    unit: Unit | None = None


Part = Unit | Framed


def frame(unit: Unit, *, payload: bytes | None = None, may_ignore: bool | None = None, extra: bytes = b"") -> bytes:
    """Frame `unit` with a correct size and CRC-32C, without checking its values.

    `payload` replaces the serialized payload, `may_ignore` the flag §3 gives its type,
    and `extra` is appended to the payload (fields of a later minor version).
    """
    kind = unit.unit_type
    body = encode_payload(unit) if payload is None else payload
    flag = (isinstance(unit, UnknownUnit) or kind in IGNORABLE_TYPES) if may_ignore is None else may_ignore
    return frame_unit(kind, body + extra, flag)


def stream_units(data: bytes) -> list[list[Unit]]:
    """The units of each stream of a valid file, index and end-of-stream units left out."""
    streams: list[list[Unit]] = []
    for item in read_units(io.BytesIO(data)):
        if item.stream == len(streams):
            streams.append([])
        if not isinstance(item.unit, (Index, EndOfStream)):
            streams[-1].append(item.unit)
    return streams


def assemble(parts: list[Part], *, minor: int = 0, index: bool | Index = True,
             end: bool | EndOfStream = True, index_extra: bytes = b"") -> bytes:
    """One stream: signature, version 1.`minor`, the parts in order, then its index and end units.

    `index=True` appends the index of the scene starts and keyframes among the parts (an
    `Index` appends that one instead, False none), its payload followed by `index_extra`;
    `end=True` appends the end-of-stream unit that matches (the last keyframe + 1
    frames), an `EndOfStream` that one, False none.
    """
    out = bytearray(SIGNATURE + bytes((1, minor)))
    seek: list[IndexEntry] = []
    frames = 0
    for part in parts:
        unit, data = (part.unit, part.data) if isinstance(part, Framed) else (part, frame(part))
        if isinstance(unit, SceneStart):
            seek.append(IndexEntry(UnitType.SCENE_START, unit.first_frame, len(out)))
        elif isinstance(unit, Keyframe):
            seek.append(IndexEntry(UnitType.KEYFRAME, unit.frame_index, len(out)))
            frames = unit.frame_index + 1
        out += data
    index_offset = 0
    if index is not False:
        index_offset = len(out)
        out += frame(Index(tuple(seek)) if index is True else index, extra=index_extra)
    if end is not False:
        out += frame(EndOfStream(frames, index_offset) if end is True else end)
    return bytes(out)

