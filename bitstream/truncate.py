"""Cutting a lower-rank rung out of a stream without re-fitting (`pmtenc --scalable`).

A keyframe's conditioning is `U·V/√r`; a stream fitted with nested dropout makes every
rank prefix `U[:, :k]·V[:k]/√k` a usable prompt, so the rung of rank k keeps the first k
columns of U_q and rows of V_q of every keyframe, with the same scales and zero points
(their 8-bit values are unchanged). Everything else is copied as read. Keyframes of rank
k or less stay as they are. The result is a conforming stream of the source's version
(its INDEX is rewritten).

A LAYERED keyframe (SPEC.md §4.4) codes each rank component as its own block, so its
rank-k prefix is the first k blocks as they were: the cut keyframe's payload is a byte
prefix of the source's with the rank field changed (SPEC.md §5.4), and so is what this
writes (each block's coding is a function of its symbols alone).
"""
from __future__ import annotations

import dataclasses
from typing import BinaryIO

from .reader import Source, read_units
from .units import EndOfStream, Index, Keyframe, SequenceHeader
from .writer import StreamWriter


def truncate_rank(source: Source, sink: BinaryIO, rank: int) -> int:
    """Write `source`'s streams to `sink` with every keyframe cut to at most `rank`; return the bytes written."""
    if rank < 1:
        raise ValueError("a rung keeps at least rank 1")
    writer: StreamWriter | None = None
    written = 0
    for item in read_units(source):
        unit = item.unit
        if isinstance(unit, SequenceHeader):
            writer = StreamWriter(sink, unit, minor=item.minor)
        elif isinstance(unit, EndOfStream):
            written += writer.close()
        elif isinstance(unit, Index):
            continue                       # offsets change: close() writes the new one
        elif isinstance(unit, Keyframe) and unit.u.shape[1] > rank:
            writer.write(dataclasses.replace(unit, u=unit.u[:, :rank].copy(), v=unit.v[:rank].copy()))
        else:
            writer.write(unit)
    return written
