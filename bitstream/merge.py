"""Joining independently encoded segments into one stream (segment-parallel encoding).

Each segment is a complete stream whose frames count from 0 and whose scenes start with
their own first-frame latent, so segments can be encoded anywhere (processes, GPUs,
machines) and joined here: one sequence header, the segments' scenes with their frame
indices shifted into place, one index and one end-of-stream unit. A segment boundary is
a scene start; it carries a scene-cut marker only when the caller says the content cuts
there.
"""
from __future__ import annotations

from dataclasses import replace
from typing import BinaryIO

from .errors import InvalidDataError
from .reader import Stream
from .units import Keyframe, Metadata, SceneCut
from .writer import StreamWriter


def merge_streams(segments: list[Stream], sink: BinaryIO, *, cuts: list[bool] | None = None,
                  metadata: Metadata | None = None) -> int:
    """Write `segments` (in display order) as one stream to `sink`; return its size.

    `cuts[k]` says whether segment k starts with a scene cut (k > 0). All segments must
    share the sequence header (but for its frame count).
    """
    if not segments:
        raise ValueError("nothing to merge")
    first = segments[0].header
    for segment in segments[1:]:
        if replace(segment.header, frame_count=first.frame_count) != first:
            raise InvalidDataError("stream_mismatch", "segments differ in their sequence headers")
    total = sum(s.frame_count for s in segments)
    writer = StreamWriter(sink, replace(first, frame_count=total), minor=max(s.minor for s in segments))
    if metadata is not None:
        writer.write(metadata)
    offset = 0
    for number, segment in enumerate(segments):
        for position, scene in enumerate(segment.scenes):
            start = scene.start.unit
            if scene.cut is not None or (position == 0 and number > 0 and cuts is not None and cuts[number]):
                writer.write(SceneCut(start.first_frame + offset))
            writer.write(replace(start, first_frame=start.first_frame + offset))
            for item in scene.keyframes:
                keyframe: Keyframe = item.unit
                writer.write(replace(keyframe, frame_index=keyframe.frame_index + offset))
        offset += segment.frame_count
    return writer.close()
