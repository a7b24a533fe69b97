"""The interface every evaluated codec implements, in the style of CompressAI's benchmark codecs.

A `Codec` has a `name`, the `settings` that identify what it does (written into every
run's JSON, so that a finished run is redone when they change), and two methods:
`encode(clip, bitrate, path)` writes a file and says how many bytes it holds, and
`decode(path)` gives the frames back. Add a codec by subclassing `Codec` (or
`baselines.PyAVCodec` for anything FFmpeg encodes) and registering it in `registry`.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .clip import Clip

__all__ = ["Codec", "Encoded", "Progress"]

Progress = Callable[[str], None]   # one line of progress text


@dataclass(frozen=True)
class Encoded:
    """What `Codec.encode` wrote: the whole file's bytes and the codec payload's.

    `file_bytes` counts every byte of the file (container, headers, index); `payload_bytes`
    the coded video alone (for FFmpeg codecs the sum of the packets; for Promptus the
    units, i.e. the file less the signature). `details` holds codec-specific facts
    (e.g. the rate search's attempts).
    """

    file_bytes: int
    payload_bytes: int
    details: dict = field(default_factory=dict)


class Codec(ABC):
    """A video codec under evaluation."""

    name: str            # as given to --codecs
    extension: str       # of the files it writes, with the dot

    @property
    @abstractmethod
    def settings(self) -> dict:
        """What identifies this codec's output besides the clip and the bitrate (JSON values)."""

    @abstractmethod
    def encode(self, clip: Clip, bitrate: float, path: Path, progress: Progress) -> Encoded:
        """Encode `clip` at `bitrate` bits per second (the whole file counted) into `path`."""

    @abstractmethod
    def decode(self, path: Path, progress: Progress) -> list[np.ndarray]:
        """The frames of `path`, uint8 RGB [height, width, 3], in display order."""

    def check(self, clip: Clip) -> None:
        """Raise ValueError (one line) if this codec cannot encode `clip`; most codecs take any clip."""
