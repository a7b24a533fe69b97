"""DASH output (`pmtenc -f dash`): a rendition set of one video, cut into time-aligned
segments, with its MPD (SPEC.md Annex D).

Each rendition is a segmented encode (`encode(..., segment_seconds=...)`: a scene start
at every segment boundary, each segment fitted and rate-controlled on its own) at its
own `-b:v`, `--rank` or `-g`; `bitstream.segments` cuts it into an init segment and
media segments, and `dash.manifest` describes them. Since every media segment starts its
own scene, a client may switch rendition at any boundary and decodes exactly what the
encoder fitted. Nothing is published unless every rendition was encoded: the segments
are moved into the output folder together, then the MPD is renamed into place.
"""
from __future__ import annotations

import logging
import math
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from ..bitstream import read_streams
from ..bitstream.segments import Segment, split_stream
from ..dash.manifest import EXTENSION, INIT_TEMPLATE, MEDIA_TEMPLATE, Presentation, Rendition, expand, mpd_text
from ..io.files import TemporaryOutput
from .job import EncodeResult, encode, segment_length

log = logging.getLogger("libpromptus")


@dataclass(frozen=True)
class RenditionResult:
    """One rendition as published: its id, the encode's result, its MPD `@bandwidth`
    (the largest media segment's rate) and its mean rate over init and media segments."""

    id: str
    encode: EncodeResult
    bandwidth: int
    mean_bitrate_bps: float
    segment_bytes: tuple[int, ...]
    init_bytes: int


@dataclass(frozen=True)
class DashResult:
    """What `encode_dash` wrote: the presentation of its MPD and each rendition's figures."""

    presentation: Presentation
    renditions: tuple[RenditionResult, ...]


def encode_dash(source: str, manifest: str, renditions: list[dict], *, segment_seconds: float,
                init_name: str = INIT_TEMPLATE, media_name: str = MEDIA_TEMPLATE, overwrite: bool = False,
                jobs: int = 1, **options) -> DashResult:
    """Encode `source` once per entry of `renditions` (each the `EncodeOptions` that differ
    between rungs: `bitrate`, `rank`, `interval`) into segments of `segment_seconds`
    beside `manifest`, the MPD. `options`: the `EncodeOptions` every rendition shares.
    Representation ids are 0, 1, … in the order given."""
    target = Path(manifest)
    if not renditions:
        raise ValueError("-f dash needs at least one rendition")
    if target.exists() and not overwrite:
        raise FileExistsError(f"{manifest}: already exists (use -y to overwrite)")
    init_name, media_name = (name.replace("$ext$", EXTENSION) for name in (init_name, media_name))
    _check_templates(init_name, media_name)
    folder = target.parent
    results = []
    with tempfile.TemporaryDirectory(dir=folder, prefix=f".{target.name}.renditions.") as work, \
            TemporaryOutput(target, directory=True) as staging:
        header = None
        for number, changes in enumerate(renditions):
            path = Path(work, f"{number}.pmt")
            result = encode(source, str(path), overwrite=True, segment_seconds=segment_seconds, jobs=jobs,
                            **{**options, **changes})
            stream = read_streams(path, values=False)[0]
            if header is None:
                header, first = stream.header, stream
            elif stream.header != header:
                raise ValueError(f"rendition {number} has another sequence header than rendition 0: "
                                 "its options change more than the rate")
            rate = Fraction(header.fps_num, header.fps_den)
            frames = segment_length(segment_seconds, rate)
            segments = list(split_stream(path, frames))
            for segment in segments:
                name = _segment_name(segment, str(number), init_name, media_name)
                (staging.path / name).write_bytes(segment.data)
            results.append(_figures(str(number), result, segments, frames, rate))
            log.info("rendition %d: %d bytes in %d segments, %.1f kbit/s (peak segment %.1f kbit/s), rank %d, "
                     "keyframe interval %d", number, sum(results[-1].segment_bytes) + results[-1].init_bytes,
                     len(segments) - 1, results[-1].mean_bitrate_bps / 1000, results[-1].bandwidth / 1000,
                     result.rank, result.interval)
        presentation = Presentation(tuple(Rendition(r.id, r.bandwidth) for r in results), frames, rate,
                                    first.frame_count, header.model_name, header.width, header.height, init_name,
                                    media_name)
    with TemporaryOutput(target) as mpd:
        mpd.path.write_text(mpd_text(presentation))
    return DashResult(presentation, tuple(results))


def _check_templates(init_name: str, media_name: str) -> None:
    """Segment names that stay in the output folder and name each segment once."""
    for option, template in (("-init_seg_name", init_name), ("-media_seg_name", media_name)):
        probe = expand(template, representation="0", number=1, bandwidth=1)
        if "/" in probe or probe in ("", ".", ".."):
            raise ValueError(f"{option} {template!r}: segment names stay in the manifest's folder")
    if "$RepresentationID$" not in init_name or "$RepresentationID$" not in media_name \
            or "$Number" not in media_name:
        raise ValueError("-init_seg_name needs $RepresentationID$ and -media_seg_name $RepresentationID$ and "
                         "$Number$, so that every segment has its own name")


def _segment_name(segment: Segment, rendition: str, init_name: str, media_name: str) -> str:
    if segment.number == 0:
        return expand(init_name, representation=rendition)
    return expand(media_name, representation=rendition, number=segment.number)


def _figures(rendition: str, result: EncodeResult, segments: list[Segment], frames: int,
             rate: Fraction) -> RenditionResult:
    """A rendition's `@bandwidth` (SPEC.md Annex D.3: its largest media segment over one
    segment duration, rounded up) and mean rate."""
    init, media = segments[0], segments[1:]
    duration = Fraction(frames) / rate
    peak = max(math.ceil(len(s.data) * 8 / duration) for s in media)
    seconds = Fraction(sum(s.frames for s in media)) / rate
    mean = float((len(init.data) + sum(len(s.data) for s in media)) * 8 / seconds)
    return RenditionResult(rendition, result, peak, mean, tuple(len(s.data) for s in media), len(init.data))
