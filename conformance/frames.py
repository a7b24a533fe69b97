"""Tier 2 of the conformance suite: a stream's decoded frames, their md5, and PSNR against reference frames.

The reference frames of a valid stream are what the reference engine (PyTorch on the
CPU in fp32) decodes with the tiny model; a decoder on another engine, device or
precision must come within a PSNR threshold of them (SPEC.md Annex B). Frames are RGB
24-bit, `height x width x 3` bytes each in row-major order, in display order; the md5
of a file's frames is the md5 of those bytes, and a `.rgb` reference file holds them.
"""
from __future__ import annotations

import hashlib

import numpy as np

from ..bitstream import Stream
from ..process import quality


class FrameDecoder:
    """Decodes streams with one generator, loaded once (loading is most of a small stream's time)."""

    def __init__(self, model: str, *, engine: str = "auto", device: str = "auto", precision: str = "auto") -> None:
        from ..models import load_generator

        self.generator = load_generator(model)
        self.engine = engine
        self.device = device
        self.precision = precision

    def decode(self, streams: list[Stream]) -> np.ndarray:
        """All frames of a file as uint8 [frames, height, width, 3], as pmtdec decodes them."""
        from ..decoder.decoder import Decoder

        decoder = Decoder(streams[0].header, generator=self.generator, engine=self.engine, device=self.device,
                          precision=self.precision)
        return np.stack([frame.image for frame in decoder.decode(streams)])


def frames_md5(frames: np.ndarray) -> str:
    """The tier-2 checksum: md5 of the frames' RGB bytes in display order."""
    return hashlib.md5(np.ascontiguousarray(frames, dtype=np.uint8).tobytes()).hexdigest()


def read_reference(data: bytes, width: int, height: int) -> np.ndarray:
    """Reference frames from the bytes of a `.rgb` file: uint8 [frames, height, width, 3]."""
    frame_size = width * height * 3
    if len(data) % frame_size:
        raise ValueError(f"a reference of {len(data)} bytes is not whole {width}x{height} RGB frames")
    return np.frombuffer(data, dtype=np.uint8).reshape(-1, height, width, 3)


def psnr(frames: np.ndarray, reference: np.ndarray) -> float:
    """The PSNR of a whole stream in dB: peak 255, MSE over every sample of every frame; inf when equal.

    Pooled over the stream rather than taken per frame, so that a frame of a few pixels
    (1 x 1 is a valid size) does not turn one rounding step into a failure.
    """
    if frames.shape != reference.shape:
        raise ValueError(f"{len(frames)} frames of {frames.shape[1:]} against a reference of "
                         f"{len(reference)} of {reference.shape[1:]}")
    return quality.psnr(frames, reference)
