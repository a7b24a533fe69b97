"""libpromptus: a codec library for Promptus video (video as Stable Diffusion prompts).

The public surface, PyAV-like:

    import libpromptus as pmt
    with pmt.open("clip.pmt") as container: ...            # read: info, demux(), decode()
    with pmt.open("out.pmt", "w", width=..., height=..., rate=...) as container: ...   # write: encode(frame)
    pmt.encode("clip.mp4", "clip.pmt", bitrate=100_000)    # whole files
    pmt.encode("clip.mp4", "clip.pmt", segment_seconds=2, cluster="auto")   # segments on a Ray cluster
    pmt.decode("clip.pmt", "clip.mkv")

`Encoder` and `Decoder` are the frame-level codec the functions above are built on;
every exception derives from `PromptusError`. Names are imported on first use (PEP 562),
so `import libpromptus` and the torch-free `libpromptus.bitstream` stay cheap.
"""
# ruff: noqa: F401 - the TYPE_CHECKING imports are for type checkers; __getattr__ serves the names
from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

__version__ = "0.1.0"

#: Each public name and the module that defines it.
_EXPORTS = {
    "open": "libpromptus.api",
    "encode": "libpromptus.api",
    "decode": "libpromptus.api",
    "Container": "libpromptus.api",
    "OutputContainer": "libpromptus.api",
    "LiveContainer": "libpromptus.api",
    "StreamInfo": "libpromptus.api",
    "EncodeResult": "libpromptus.api",
    "Encoder": "libpromptus.encoder.encoder",
    "EncoderSettings": "libpromptus.encoder.encoder",
    "Decoder": "libpromptus.decoder.decoder",
    "Frame": "libpromptus.decoder.decoding",
    "PromptusError": "libpromptus.errors",
    "InvalidDataError": "libpromptus.bitstream.errors",
    "ModelNotFoundError": "libpromptus.errors",
    "ModelIntegrityError": "libpromptus.errors",
    "ModelMismatchError": "libpromptus.errors",
    "EngineUnavailableError": "libpromptus.errors",
    "VideoInputError": "libpromptus.errors",
    "PromptDirectoryError": "libpromptus.errors",
    "CheckpointError": "libpromptus.errors",
    "OutputBusyError": "libpromptus.errors",
    "ClusterUnavailableError": "libpromptus.errors",
    "SegmentLostError": "libpromptus.errors",
    "NetworkError": "libpromptus.io.network",
    "NetworkTimeoutError": "libpromptus.io.network",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .api import (  # noqa: A004
        Container,
        EncodeResult,
        LiveContainer,
        OutputContainer,
        StreamInfo,
        decode,
        encode,
        open,
    )
    from .bitstream.errors import InvalidDataError
    from .decoder.decoder import Decoder
    from .decoder.decoding import Frame
    from .encoder.encoder import Encoder, EncoderSettings
    from .errors import (
        CheckpointError,
        ClusterUnavailableError,
        EngineUnavailableError,
        ModelIntegrityError,
        ModelMismatchError,
        ModelNotFoundError,
        OutputBusyError,
        PromptDirectoryError,
        PromptusError,
        SegmentLostError,
        VideoInputError,
    )
    from .io.network import NetworkError, NetworkTimeoutError


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'libpromptus' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
