"""The MPD of a Promptus rendition set (SPEC.md Annex D.3), written and read with the
`mpegdash` package, and the SegmentTemplate URL templates of ISO/IEC 23009-1.

A `Presentation` is what a client needs from the MPD: the renditions (lowest bandwidth
first), the segment length, the frame rate and count, and the URL of every segment.
"""
from __future__ import annotations

import math
import re
import urllib.parse
from dataclasses import dataclass
from fractions import Fraction

from mpegdash.nodes import MPEGDASH, AdaptationSet, Period, Representation, SegmentTemplate
from mpegdash.parser import MPEGDASHParser

from ..errors import PromptusError

MIME_TYPE = "video/vnd.promptus"
#: FFmpeg's dash muxer's default segment names (`-init_seg_name`, `-media_seg_name`); `$ext$` is FFmpeg's, filled in before the MPD is written.
INIT_TEMPLATE = "init-stream$RepresentationID$.$ext$"
MEDIA_TEMPLATE = "chunk-stream$RepresentationID$-$Number%05d$.$ext$"
EXTENSION = "pmt"
_PROFILE = "urn:mpeg:dash:profile:full:2011"
_IDENTIFIER = re.compile(r"\$([^$]*)\$")


class ManifestError(PromptusError, ValueError):
    """An MPD that does not describe a Promptus rendition set (SPEC.md Annex D.3)."""


def codecs(model_name: str) -> str:
    """The MPD `@codecs` of streams made for `model_name`."""
    return f"pmt1.{model_name}"


def expand(template: str, *, representation: str, number: int | None = None, bandwidth: int | None = None) -> str:
    """A SegmentTemplate URL with its identifiers replaced (ISO/IEC 23009-1, 5.3.9.4.4):
    `$$`, `$RepresentationID$`, and `$Number$`/`$Bandwidth$` with an optional `%0Nd` width."""
    def value(match: re.Match) -> str:
        inner = match.group(1)
        if not inner:
            return "$"
        if inner == "RepresentationID":
            return representation
        name, _, width = inner.partition("%")
        given = {"Number": number, "Bandwidth": bandwidth}.get(name)
        if name not in ("Number", "Bandwidth") or (width and re.fullmatch(r"0\d+d", width) is None):
            raise ManifestError(f"template {template!r}: ${inner}$ is not an identifier (ISO/IEC 23009-1: "
                                "$RepresentationID$, $Number$, $Bandwidth$, with %0Nd for the last two)")
        if given is None:
            raise ManifestError(f"template {template!r}: ${name}$ is not available here")
        return format(given, width[:-1] + "d" if width else "d")
    if template.count("$") % 2:
        raise ManifestError(f"template {template!r}: an unpaired $")
    return _IDENTIFIER.sub(value, template)


@dataclass(frozen=True)
class Rendition:
    """One Representation: its id and `@bandwidth` (bit/s)."""

    id: str
    bandwidth: int


@dataclass(frozen=True)
class Presentation:
    """A static Promptus presentation: renditions by rising bandwidth, segment length in
    frames, frame rate, total frames, model, size and the segment URL templates."""

    renditions: tuple[Rendition, ...]
    segment_frames: int
    rate: Fraction
    total_frames: int
    model_name: str
    width: int
    height: int
    init_template: str
    media_template: str
    base_url: str = ""

    @property
    def segment_count(self) -> int:
        return math.ceil(self.total_frames / self.segment_frames)

    @property
    def segment_seconds(self) -> float:
        return float(self.segment_frames / self.rate)

    def segment_frame_count(self, number: int) -> int:
        """The frames media segment `number` (from 1) codes."""
        return min(self.segment_frames, self.total_frames - (number - 1) * self.segment_frames)

    def init_url(self, rendition: Rendition) -> str:
        return self._url(expand(self.init_template, representation=rendition.id, bandwidth=rendition.bandwidth))

    def media_url(self, rendition: Rendition, number: int) -> str:
        return self._url(expand(self.media_template, representation=rendition.id, number=number,
                                bandwidth=rendition.bandwidth))

    def _url(self, relative: str) -> str:
        return urllib.parse.urljoin(self.base_url, relative) if self.base_url else relative


def _seconds(value: Fraction) -> str:
    """An xs:duration of `value` seconds, to the microsecond."""
    return f"PT{float(value):.6f}S"


def _parse_seconds(text: str | None, what: str) -> Fraction:
    match = re.fullmatch(r"P(?:(\d+)D)?T?(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?", text or "")
    if not text or match is None or text in ("P", "PT"):
        raise ManifestError(f"{what} {text!r} is not a duration")
    days, hours, minutes, seconds = match.groups()
    return (Fraction(int(days or 0) * 86400 + int(hours or 0) * 3600 + int(minutes or 0) * 60)
            + Fraction(seconds or "0"))


def build_mpd(presentation: Presentation) -> MPEGDASH:
    """The MPD of `presentation` (SPEC.md Annex D.3)."""
    rate = presentation.rate
    template = SegmentTemplate()
    template.timescale = rate.numerator
    template.duration = presentation.segment_frames * rate.denominator
    template.start_number = 1
    template.initialization = presentation.init_template
    template.media = presentation.media_template
    adaptation = AdaptationSet()
    adaptation.id = 0
    adaptation.content_type = "video"
    adaptation.mime_type = MIME_TYPE
    adaptation.codecs = codecs(presentation.model_name)
    adaptation.segment_alignment = "true"
    adaptation.start_with_sap = 1
    adaptation.segment_templates = [template]
    adaptation.representations = []
    for rendition in presentation.renditions:
        representation = Representation()
        representation.id = rendition.id
        representation.bandwidth = rendition.bandwidth
        representation.width, representation.height = presentation.width, presentation.height
        representation.frame_rate = f"{rate.numerator}/{rate.denominator}"
        adaptation.representations.append(representation)
    period = Period()
    period.id = "0"
    period.start = "PT0S"
    period.adaptation_sets = [adaptation]
    mpd = MPEGDASH()
    mpd.xmlns = "urn:mpeg:dash:schema:mpd:2011"
    mpd.profiles = _PROFILE
    mpd.type = "static"
    mpd.media_presentation_duration = _seconds(presentation.total_frames / rate)
    mpd.min_buffer_time = _seconds(Fraction(presentation.segment_frames) / rate)
    mpd.periods = [period]
    return mpd


def mpd_text(presentation: Presentation) -> str:
    """The MPD of `presentation` as XML text."""
    return MPEGDASHParser.get_as_doc(build_mpd(presentation)).toprettyxml(indent="  ")


def parse_mpd(text: str, base_url: str = "") -> Presentation:
    """The Promptus presentation an MPD describes; `base_url`: where it was fetched from,
    against which the segment URLs resolve. Raises `ManifestError` for anything else."""
    if "<MPD" not in text:
        raise ManifestError("not an MPD (no <MPD> element)")
    try:
        mpd = MPEGDASHParser.parse(text)
    except Exception as err:          # minidom's ExpatError, or mpegdash's own on a malformed attribute
        raise ManifestError(f"malformed MPD: {err}") from None
    if mpd.type not in (None, "static"):
        raise ManifestError(f"MPD type {mpd.type!r}: only static presentations are read")
    sets = [a for p in mpd.periods or [] for a in p.adaptation_sets or [] if a.mime_type == MIME_TYPE]
    if len(mpd.periods or []) != 1 or len(sets) != 1:
        raise ManifestError(f"the MPD must have one period with one {MIME_TYPE} adaptation set")
    adaptation = sets[0]
    model = (adaptation.codecs or "").removeprefix("pmt1.")
    if not adaptation.codecs or model == adaptation.codecs or not model:
        raise ManifestError(f"codecs {adaptation.codecs!r}: expected pmt1.MODEL")
    templates = adaptation.segment_templates or []
    representations = adaptation.representations or []
    if len(templates) != 1 or not representations:
        raise ManifestError("the adaptation set needs one SegmentTemplate and at least one Representation")
    template = templates[0]
    if not (template.timescale and template.duration and template.media and template.initialization):
        raise ManifestError("the SegmentTemplate needs @timescale, @duration, @media and @initialization")
    if template.start_number not in (None, 1):
        raise ManifestError("the SegmentTemplate's @startNumber must be 1")
    first = representations[0]
    try:
        rate = Fraction(first.frame_rate or "")
    except (ValueError, ZeroDivisionError):
        raise ManifestError(f"frameRate {first.frame_rate!r} is not a frame rate") from None
    if rate <= 0 or template.timescale != rate.numerator or template.duration % rate.denominator:
        raise ManifestError("the SegmentTemplate's timescale and duration do not count frames of frameRate")
    total = round(_parse_seconds(mpd.media_presentation_duration, "mediaPresentationDuration") * rate)
    renditions = tuple(sorted((Rendition(r.id, int(r.bandwidth or 0)) for r in representations),
                              key=lambda r: r.bandwidth))
    if len({r.id for r in renditions}) != len(renditions) or any(not r.id or r.bandwidth <= 0 for r in renditions):
        raise ManifestError("every Representation needs its own @id and a positive @bandwidth")
    if total < 1 or not first.width or not first.height:
        raise ManifestError("the presentation has no frames or no size")
    return Presentation(renditions, template.duration // rate.denominator, rate, total, model, int(first.width),
                        int(first.height), template.initialization, template.media, base_url)
