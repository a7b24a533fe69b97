"""The clip under evaluation: the source's frames, read once, that every codec encodes.

The frames are read by `libpromptus.io.video_input.open_video`, the reader `pmtenc` uses,
with the same options (`-ss`, `-t`, `-frames:v`, `-s`, `--fit`, `-r`), and kept in
memory: every codec, the Promptus encoder included, is handed these exact RGB frames,
and every metric compares against them. `-frames:v` bounds the memory (a 512x512 frame
is 768 KiB).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from ..io.video_input import open_video

__all__ = ["Clip", "read_clip"]


@dataclass(frozen=True)
class Clip:
    """RGB uint8 frames [height, width, 3] and the rate they play at."""

    frames: tuple[np.ndarray, ...]
    rate: Fraction

    @property
    def width(self) -> int:
        return int(self.frames[0].shape[1])

    @property
    def height(self) -> int:
        return int(self.frames[0].shape[0])

    @property
    def duration(self) -> Fraction:
        """Seconds: frame count over rate (what a bitrate is measured over)."""
        return len(self.frames) / self.rate

    def digest(self) -> str:
        """SHA-256 of the frames and the rate: what a finished run must have been made from."""
        sha = hashlib.sha256(f"{self.width}x{self.height}@{self.rate}:{len(self.frames)}".encode())
        for frame in self.frames:
            sha.update(frame.tobytes())
        return sha.hexdigest()


def read_clip(source: str, *, start: float | None = None, duration: float | None = None,
              max_frames: int | None = None, size: tuple[int, int] | None = None, fit: str = "crop",
              rate: Fraction | None = None) -> Clip:
    """Read the selected frames of `source` (any input `pmtenc -i` takes); see `open_video`."""
    with open_video(source, start=start, duration=duration, max_frames=max_frames, size=size, fit=fit,
                    rate=rate) as reader:
        frames = tuple(reader.frames())
        clip_rate = reader.info.rate
    if not frames:
        raise ValueError(f"{source}: no frames to evaluate")
    return Clip(frames, clip_rate)
