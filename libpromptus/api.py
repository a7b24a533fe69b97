"""The PyAV-like Python API: `open` a .pmt file, `demux` its units, `decode` its frames.

    import libpromptus as pmt
    with pmt.open("clip.pmt") as container:
        print(container.info.width, container.info.frame_count)
        for frame in container.decode(model="tiny"):
            frame.image                      # numpy uint8 [height, width, 3]
    pmt.decode("clip.pmt", "clip.mkv", model="tiny")
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

from .bitstream import ReadUnit, SequenceHeader, Stream, read_streams, read_units
from .decoding import Frame, decode_frames
from .engines import DEFAULT_BATCH

log = logging.getLogger("libpromptus")


class ModelMismatchError(ValueError):
    """The stream was made for another generator than the one loaded."""


@dataclass(frozen=True)
class StreamInfo:
    """What a player needs to know before decoding."""

    width: int
    height: int
    rate: Fraction
    frame_count: int
    model_name: str
    model_hash: bytes
    header: SequenceHeader


class Container:
    """An opened .pmt file (all its concatenated streams)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = path
        self.streams: list[Stream] = read_streams(path)
        header = self.streams[0].header
        self.info = StreamInfo(header.width, header.height, Fraction(header.fps_num, header.fps_den),
                               sum(s.frame_count for s in self.streams), header.model_name, header.model_hash,
                               header)

    def demux(self) -> Iterator[ReadUnit]:
        """Yield every unit of the file, in order."""
        yield from read_units(self.path)

    def decode(self, *, model: str | None = None, engine: str = "auto", device: str = "auto",
               precision: str = "auto", batch: int = DEFAULT_BATCH, start_frame: int = 0, frame_count: int | None = None,
               force_model: bool = False, tensors: bool = False) -> Iterator[Frame]:
        """Return an iterator over the decoded frames (SPEC.md §8), in display order.

        `model` is a registered name or a path (default: $PROMPTUS_MODEL, else the model
        the stream names);
        `force_model` decodes with it even when the stream names another model. The
        model is loaded and checked before this returns, so its errors come first.
        With `tensors=True` each `Frame.image` is a torch uint8 tensor instead of a numpy array.
        """
        from .engines import create_engine
        from .models import load_generator

        generator = load_generator(decoder_model(model, self.info.header))
        check_model(self.info.header, generator, force=force_model)
        runner = create_engine(engine, generator, self.info.header, device=device, precision=precision)
        frames = decode_frames(self.streams, runner, batch=batch, start_frame=start_frame, frame_count=frame_count)
        if tensors:
            import torch

            return (Frame(f.index, torch.from_numpy(f.image)) for f in frames)
        return frames

    def __enter__(self) -> "Container":
        return self

    def __exit__(self, *exc) -> None:
        return None


def open(path: str | os.PathLike) -> Container:  # noqa: A001 - the PyAV-style name is the point
    """Open a .pmt file: reads and checks all its units (no model needed)."""
    return Container(path)


def decoder_model(model: str | None, header: SequenceHeader) -> str:
    """The model to decode with: the one asked for, else $PROMPTUS_MODEL, else the stream's."""
    return model or os.environ.get("PROMPTUS_MODEL") or header.model_name


def check_model(header: SequenceHeader, generator, *, force: bool = False) -> None:
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


def decode(path: str | os.PathLike, output: str, *, codec: str | None = None, crf: int | None = None,
           overwrite: bool = False, **options) -> int:
    """Decode a whole .pmt file into a video file (or image sequence); return the frame count."""
    from .video_output import VideoWriter, output_format

    container = open(path)
    info = container.info
    frames = container.decode(**options)
    writer = VideoWriter(output, info.width, info.height, info.rate,
                         output_format(output, codec=codec, crf=crf), overwrite=overwrite)
    try:
        for frame in frames:
            writer.write(frame.image)
    except BaseException:
        writer.abort()
        raise
    writer.close()
    return writer.frames
