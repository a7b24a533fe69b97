"""DASH output (`pmtenc -f dash`): a rendition set of one video, cut into time-aligned
segments, with its MPD (SPEC.md Annex D).

Each rendition is a segmented encode (`encoder.segments`: a scene start
at every segment boundary, each segment fitted and rate-controlled on its own) at its
own `-b:v`, `--rank` or `-g`; `dash.packager` cuts the renditions into segments and
writes the MPD. Since every media segment starts its own scene, a client may switch
rendition at any boundary and decodes exactly what the encoder fitted. Nothing is
published unless every rendition was encoded.
"""
from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from ..bitstream import read_streams, truncate_rank
from ..dash.manifest import INIT_TEMPLATE, MEDIA_TEMPLATE, Presentation
from ..dash.packager import PackagedRendition, package, segment_templates
from .job import EncodeResult
from .segments import encode_segmented, segment_length

log = logging.getLogger("libpromptus")


@dataclass(frozen=True)
class DashResult:
    """What `encode_dash` wrote: the presentation of its MPD, and per rendition the
    encode's result and the packaged figures (`@bandwidth`, mean rate, segment sizes)."""

    presentation: Presentation
    encodes: tuple[EncodeResult, ...]
    renditions: tuple[PackagedRendition, ...]


def encode_dash(source: str, manifest: str, renditions: list[dict], *, segment_seconds: float,
                init_name: str = INIT_TEMPLATE, media_name: str = MEDIA_TEMPLATE, overwrite: bool = False,
                jobs: int = 1, cluster: str | None = None, threads: int | None = None, **options) -> DashResult:
    """Encode `source` once per entry of `renditions` (each the `EncodeOptions` that differ
    between rungs: `bitrate`, `rank`, `interval`) into segments of `segment_seconds`
    beside `manifest`, the MPD. `options`: the `EncodeOptions` every rendition shares.
    Representation ids are 0, 1, … in the order given. With `scalable=True` the
    renditions differ only in `rank`: one nested-dropout fit at the highest rank gives
    them all, each cut from it by `bitstream.truncate_rank` (no fitting per rung).
    `jobs`, `cluster` and `threads` say where the segments are fitted (`encode_segmented`)."""
    target = Path(manifest)
    if not renditions:
        raise ValueError("-f dash needs at least one rendition")
    if target.exists() and not overwrite:
        raise FileExistsError(f"{manifest}: already exists (use -y to overwrite)")
    segment_templates(init_name, media_name)        # refused before anything is fitted
    target.parent.mkdir(parents=True, exist_ok=True)  # as FFmpeg's dash muxer makes the manifest's folder
    placement = dict(jobs=jobs, cluster=cluster, threads=threads)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}.renditions.") as work:
        paths = [Path(work, f"{number}.pmt") for number in range(len(renditions))]
        if options.get("scalable"):
            encodes = _cut_renditions(source, paths, renditions, Path(work, "top.pmt"), segment_seconds, placement,
                                      options)
        else:
            encodes = [encode_segmented(source, str(path), overwrite=True, segment_seconds=segment_seconds,
                                        **placement, **{**options, **changes}) for path, changes in zip(paths, renditions)]
        header = read_streams(paths[0], values=False)[0].header
        rate = Fraction(header.fps_num, header.fps_den)
        presentation, packaged = package(paths, target, segment_length(segment_seconds, rate),
                                         init_name=init_name, media_name=media_name, overwrite=overwrite)
    for result, changes, rendition in zip(encodes, renditions, packaged):
        log.info("rendition %s: %d bytes in %d segments, %.1f kbit/s (largest segment %.1f kbit/s), rank %d, "
                 "keyframe interval %d", rendition.id, rendition.init_bytes + sum(rendition.segment_bytes),
                 len(rendition.segment_bytes), rendition.mean_bitrate_bps / 1000, rendition.bandwidth / 1000,
                 changes.get("rank") or result.rank, result.interval)
    return DashResult(presentation, tuple(encodes), packaged)


def _cut_renditions(source: str, paths: list[Path], renditions: list[dict], top: Path, segment_seconds: float,
                    placement: dict, options: dict) -> list[EncodeResult]:
    """`-f dash --scalable`: one fit at the highest `--rank`, each rendition cut from it."""
    ranks = [changes.get("rank") for changes in renditions]
    if any(rank is None for rank in ranks) or any(changes.get("bitrate") is not None for changes in renditions) \
            or len({changes.get("interval") for changes in renditions}) > 1:
        raise ValueError("-f dash --scalable cuts its renditions from one fit: give them as --rank R1,R2,... "
                         "(one -g for all, no -b:v)")
    result = encode_segmented(source, str(top), overwrite=True, segment_seconds=segment_seconds, **placement,
                              **{**options, **renditions[0], "rank": max(ranks)})
    for path, rank in zip(paths, ranks):
        with path.open("wb") as sink:
            truncate_rank(top, sink, rank)
    return [result] * len(paths)
