"""The decoder: a stream's input read (strictly or concealing damage), its generator
checked against the stream, an engine built, and SPEC.md's decoding process run.

`Decoder` is what `libpromptus.open(...).decode`, `libpromptus.decode`, `pmtdec` and
the conformance runner all decode with, so a stream decodes to the same frames whichever
entry point a user takes. Importing it loads no torch (the engine and the decoding process
are imported when a `Decoder` is made), so `read_input` serves model-free tools too.
"""
from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, BinaryIO

from ..bitstream import ReadUnit, SequenceHeader, Stream, read_streams, read_units
from ..engines import DEFAULT_BATCH, create_engine
from ..errors import ModelMismatchError

if TYPE_CHECKING:
    from ..bitstream.concealment import ConcealmentReport
    from ..models import Generator
    from .decoding import Frame

log = logging.getLogger("libpromptus")


def read_input(source: BinaryIO | str | os.PathLike, *,
               conceal: bool = False) -> tuple[list[Stream], ConcealmentReport | None]:
    """The streams of `source` and, with `conceal`, the report of what was concealed.

    Strictly, any damage raises `InvalidDataError`. With `conceal` the streams are rebuilt
    from what survived (`libpromptus.bitstream.concealment`) and every concealment and
    note is logged as a warning, so each entry point tells the user the same.
    """
    if not conceal:
        return read_streams(source), None
    from ..bitstream.concealment import read_concealed

    streams, report = read_concealed(source)
    for record in report.concealed:
        log.warning("%s", record.describe())
    for note in report.notes:
        log.warning("%s", note)
    return streams, report


def read_arriving(source: BinaryIO | str | os.PathLike) -> tuple[SequenceHeader, Iterator[ReadUnit]]:
    """The first sequence header of `source` and an iterator over all its units, that
    header's included, each read and checked only as it arrives (a pipe, a socket).

    Nothing is read ahead: the caller can generate an interval's frames as soon as its
    closing keyframe is in. A bad unit raises `InvalidDataError` when the iteration
    reaches it, after the units before it were handed on.
    """
    units = read_units(source)
    first = next(units)
    return first.unit, itertools.chain([first], units)


def decoder_model(model: str | None, header: SequenceHeader) -> str:
    """The model to decode with: the one asked for, else $PROMPTUS_MODEL, else the stream's."""
    return model or os.environ.get("PROMPTUS_MODEL") or header.model_name


def check_model(header: SequenceHeader, generator: Generator, *, force: bool = False) -> None:
    """Refuse a generator the stream was not made for (SPEC.md §7), unless forced.

    Geometry (latent channels and downsampling, conditioning shape, block size) must
    fit even when forced: the network could not run otherwise.
    """
    profile = generator.profile
    fits = (header.latent_channels == profile.latent_channels
            and header.latent_downsampling == profile.latent_downsampling
            and (header.cond_tokens, header.cond_dim) == (profile.cond_tokens, profile.cond_dim)
            and header.size_multiple % profile.size_multiple == 0)
    if not fits:
        raise ModelMismatchError(f"model {generator.name} cannot decode this stream: its latent or conditioning "
                                 f"shape differs from the stream's")
    if header.model_name != generator.name:
        if not force:
            raise ModelMismatchError(f"the stream is for model {header.model_name}, not {generator.name} "
                                     f"(--force-model decodes it anyway)")
        log.warning("decoding a %s stream with model %s (forced)", header.model_name, generator.name)
        return
    if not any(header.model_hash):
        log.warning("the stream does not pin the %s weights (model hash unset)", header.model_name)
    elif header.model_hash != generator.identity():
        if not force:
            raise ModelMismatchError(f"the stream was made with other {header.model_name} weights (hash "
                                     f"{header.model_hash.hex()[:16]}…, loaded {generator.identity().hex()[:16]}…); "
                                     f"--force-model decodes it anyway")
        log.warning("decoding with %s weights whose hash differs from the stream's (forced)", generator.name)


class Decoder:
    """Decodes streams of one sequence header's kind with one checked generator and engine.

    `model` is a registered name or a path (default: $PROMPTUS_MODEL, else the model the
    header names), or pass an already loaded `generator` to decode many streams with one
    load. The generator is checked against `header` (`check_model`; `force_model` decodes
    a stream of another model anyway) before the engine is built, so model errors come
    first. `engine`, `device` and `precision` choose the engine (`engines.create_engine`).
    """

    def __init__(self, header: SequenceHeader, *, model: str | None = None, engine: str = "auto",
                 device: str = "auto", precision: str = "auto", force_model: bool = False,
                 generator: Generator | None = None) -> None:
        if generator is None:
            from ..models import load_generator

            generator = load_generator(decoder_model(model, header))
        check_model(header, generator, force=force_model)
        self.header = header
        self.generator = generator
        self.engine = create_engine(engine, generator, header, device=device, precision=precision)

    def decode(self, streams: list[Stream], *, batch: int = DEFAULT_BATCH, start_frame: int = 0,
               frame_count: int | None = None) -> Iterator[Frame]:
        """The frames `start_frame` .. `start_frame + frame_count - 1` of `streams`, in display order."""
        from .decoding import decode_frames

        return decode_frames(streams, self.engine, batch=batch, start_frame=start_frame, frame_count=frame_count)

    def decode_units(self, units: Iterable[ReadUnit], *, batch: int = DEFAULT_BATCH, start_frame: int = 0,
                     frame_count: int | None = None, first_frame: int = 0) -> Iterator[Frame]:
        """The same frames from units as they arrive (`read_arriving`) or from a seek point
        (`bitstream.read_from_frame`, whose display index of the first stream's frame 0 is
        `first_frame`): each interval is generated as soon as its closing keyframe is in,
        and only the chain latent and the last keyframe are held."""
        from .decoding import decode_units

        return decode_units(units, self.engine, batch=batch, start_frame=start_frame, frame_count=frame_count,
                            first_frame=first_frame)
