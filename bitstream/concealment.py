"""Error concealment: decode a damaged `.pmt` file, replacing what was lost, and say what.

`read_concealed` reads a file as `read_streams` does, but a unit whose CRC-32C fails,
bytes lost to a damaged size field, or a truncated end no longer stop it: the units that
survive (`bitstream.salvage`) are rebuilt into `Stream`s that the decoding process
decodes as usual, and a `ConcealmentReport` names the concealed frames and the cause.
A file that reads cleanly is returned exactly as `read_streams` returns it, so
concealment changes nothing for undamaged input.

What replaces what, per stream (SPEC.md §5.3: never across a scene boundary):

- keyframes lost between good keyframes a and c of a scene: frames a+1..c are one
  interval a→c, interpolated with SPEC.md §8.3's weights over the longer interval
  (`s / (c − a)`), all generated from frame a's latent (one interval shares its input);
- keyframes lost at the end of a scene: the last good keyframe is repeated up to the
  scene's last frame (the frame before the next scene; for the stream's last scene, the
  last frame its end-of-stream or index unit declares);
- keyframes lost at the start of a scene: its first good keyframe is repeated back to
  the scene's first frame; a scene with no good keyframe holds the stream's nearest good
  keyframe (the previous one, else the next) over all its frames;
- a lost scene start: the scene continues the latent chain from the previous scene's
  last generated latent, or from a zero latent when it is the stream's first scene
  (`LostSceneStart`); a rank change after lost bytes also reveals a lost scene start;
- lost metadata, index, scene cut and reserved units: dropped, with a note;
- bytes after a stream's end-of-stream unit that are not a signature (trailing garbage,
  or garbage before the next concatenated stream): skipped up to the next signature,
  with a note naming the byte range; they cost no frames;
- a lost end-of-stream unit, or a truncated input: the stream ends at its last frame
  that survived (its last good keyframe, unless its surviving index lists later ones);
- a lost sequence header: nothing can decode the stream, `InvalidDataError`.

The frame ranges are exact when every lost range held one unit whose size field
survived; for bytes lost to a damaged size field the scene boundaries are inferred
(frames of unknown scene go to the later scene). Units whose CRC verifies are held to
SPEC.md as strictly as by the reader: only damage is concealed, never a malformed stream.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import BinaryIO, NamedTuple

from . import InvalidDataError, Stream, read_streams
from .framing import RawUnit
from .repair import Concealment, LostSceneStart, StreamRepair
from .salvage import StreamPrefix, salvage
from .validation import check_concatenation

__all__ = ["DAMAGE_CODES", "Concealed", "Concealment", "ConcealmentReport", "LostSceneStart", "read_concealed"]

#: Error codes that mean damage (bytes changed or missing), which concealment handles.
DAMAGE_CODES = frozenset({"crc_mismatch", "truncated", "size_limit", "noncanonical_leb128"})


@dataclass(frozen=True)
class ConcealmentReport:
    """Everything concealment did to a file: concealed frames and damage that cost none."""

    concealed: tuple[Concealment, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def frames(self) -> tuple[int, ...]:
        """Every concealed frame, ascending."""
        return tuple(sorted({f for record in self.concealed for f in record.frames}))

    @property
    def damaged(self) -> bool:
        return bool(self.concealed or self.notes)


class Concealed(NamedTuple):
    """`read_concealed`'s result: streams for `decode_frames` and what was concealed."""

    streams: list[Stream]
    report: ConcealmentReport


def _concealable(err: InvalidDataError) -> bool:
    """Whether the strict reader's error is damage: a damage code, or a `bad_signature`
    after the first stream (bytes after an end-of-stream unit; the first signature is
    never salvaged, so that concealment does not decode what is not a `.pmt` file)."""
    return err.code in DAMAGE_CODES or (err.code == "bad_signature" and (err.offset or 0) > 0)


def read_concealed(source: BinaryIO | str | os.PathLike) -> Concealed:
    """Read a whole `.pmt` file, concealing damage (see the module docstring).

    Raises `InvalidDataError` for what cannot be concealed: a damaged first signature,
    a damaged sequence header, a stream with no surviving keyframe, and any unit whose
    CRC verifies but which violates SPEC.md.
    """
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as handle:
            data = handle.read()
    else:
        data = source.read()
    try:
        return Concealed(read_streams(io.BytesIO(data)), ConcealmentReport())
    except InvalidDataError as err:
        if not _concealable(err):
            raise
    repairs: list[StreamRepair] = []
    for piece in salvage(data):
        if isinstance(piece, StreamPrefix):
            repairs.append(StreamRepair(piece, len(repairs)))
        elif isinstance(piece, RawUnit):
            repairs[-1].add_unit(piece)
        else:
            repairs[-1].add_loss(piece)
    streams: list[Stream] = []
    concealed: list[Concealment] = []
    notes: list[str] = []
    for repair in repairs:
        stream = repair.finish(sum(s.frame_count for s in streams))
        if streams:
            check_concatenation(streams[0].header, stream.header)
        streams.append(stream)
        concealed.extend(repair.concealed)
        notes.extend(repair.notes)
    return Concealed(streams, ConcealmentReport(tuple(concealed), tuple(notes)))
