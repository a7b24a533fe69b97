"""Packaging a rendition set for DASH (SPEC.md Annex D): aligned `.pmt` streams in, init
and media segments and an MPD out, published into the MPD's folder together.

Model-free: `encoder.dash` packages the renditions it fits, and any set of streams
encoded with a scene start every `segment_frames` frames can be packaged as they are.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from ..bitstream import read_streams
from ..bitstream.segments import Segment, split_stream
from ..io.files import TemporaryOutput
from .manifest import EXTENSION, INIT_TEMPLATE, MEDIA_TEMPLATE, Presentation, Rendition, expand, mpd_text


@dataclass(frozen=True)
class PackagedRendition:
    """One rendition as published: its id, MPD `@bandwidth` (its largest media segment's
    rate, rounded up), mean rate over its init and media segments, and segment sizes."""

    id: str
    bandwidth: int
    mean_bitrate_bps: float
    init_bytes: int
    segment_bytes: tuple[int, ...]


def package(streams: list[str | os.PathLike], manifest: str | os.PathLike, segment_frames: int, *,
            init_name: str = INIT_TEMPLATE, media_name: str = MEDIA_TEMPLATE,
            overwrite: bool = False) -> tuple[Presentation, tuple[PackagedRendition, ...]]:
    """Cut each of `streams` (rendition i gets the id `i`) into segments of
    `segment_frames` frames beside `manifest` and write the MPD. The streams must have
    equal sequence headers (`ValueError` otherwise) and a scene start at every boundary."""
    target = Path(manifest)
    if not streams:
        raise ValueError("a rendition set needs at least one stream")
    if target.exists() and not overwrite:
        raise FileExistsError(f"{os.fspath(manifest)}: already exists (use -y to overwrite)")
    init_name, media_name = segment_templates(init_name, media_name)
    first, renditions = None, []
    with TemporaryOutput(target, directory=True) as staging:
        for number, path in enumerate(streams):
            stream = read_streams(path, values=False)[0]
            if first is None:
                first = stream
            elif stream.header != first.header or stream.minor != first.minor:
                raise ValueError(f"rendition {number} has another sequence header or version than rendition 0 "
                                 "(SPEC.md D.2: the renditions of a set differ only in their units)")
            rate = Fraction(stream.header.fps_num, stream.header.fps_den)
            segments = list(split_stream(path, segment_frames))
            for segment in segments:
                (staging.path / segment_name(segment, str(number), init_name, media_name)).write_bytes(segment.data)
            renditions.append(_figures(str(number), segments, segment_frames, rate))
        header = first.header
        presentation = Presentation(tuple(Rendition(r.id, r.bandwidth) for r in renditions), segment_frames, rate,
                                    first.frame_count, header.model_name, header.width, header.height, init_name,
                                    media_name)
    with TemporaryOutput(target) as mpd:
        mpd.path.write_text(mpd_text(presentation))
    return presentation, tuple(renditions)


def segment_templates(init_name: str, media_name: str) -> tuple[str, str]:
    """The init and media templates with FFmpeg's `$ext$` filled in, checked to keep
    segment names in the manifest's folder and to name each segment once."""
    init_name, media_name = (name.replace("$ext$", EXTENSION) for name in (init_name, media_name))
    for option, template in (("-init_seg_name", init_name), ("-media_seg_name", media_name)):
        probe = expand(template, representation="0", number=1, bandwidth=1)
        if "/" in probe or probe in ("", ".", ".."):
            raise ValueError(f"{option} {template!r}: segment names stay in the manifest's folder")
    if "$RepresentationID$" not in init_name or "$RepresentationID$" not in media_name \
            or "$Number" not in media_name:
        raise ValueError("-init_seg_name needs $RepresentationID$ and -media_seg_name $RepresentationID$ and "
                         "$Number$, so that every segment has its own name")
    return init_name, media_name


def segment_name(segment: Segment, rendition: str, init_name: str, media_name: str) -> str:
    """The file name of `segment` of `rendition` under the (expanded-`$ext$`) templates."""
    if segment.number == 0:
        return expand(init_name, representation=rendition)
    return expand(media_name, representation=rendition, number=segment.number)


def _figures(rendition: str, segments: list[Segment], frames: int, rate: Fraction) -> PackagedRendition:
    init, media = segments[0], segments[1:]
    duration = Fraction(frames) / rate
    peak = max(math.ceil(len(s.data) * 8 / duration) for s in media)
    seconds = Fraction(sum(s.frames for s in media)) / rate
    mean = float((len(init.data) + sum(len(s.data) for s in media)) * 8 / seconds)
    return PackagedRendition(rendition, peak, mean, len(init.data), tuple(len(s.data) for s in media))
