"""The library's exceptions: one family under `PromptusError`.

Each error also derives from the builtin a caller would catch without knowing
libpromptus (PyAV's `InvalidDataError(FFmpegError, ValueError)` pattern): a bad stream,
model or option is a `ValueError`, an output another process is writing an `OSError`.
Messages are one line, ready for a command line's `error:`. `InvalidDataError`, the
bitstream's, lives with its stable error codes in `libpromptus.bitstream.errors`.
This module imports nothing, so every layer, `bitstream/` included, may use it.
"""
from __future__ import annotations

import errno
import os


class PromptusError(Exception):
    """Base of every exception libpromptus raises on purpose."""


class ModelNotFoundError(PromptusError, ValueError):
    """A model cannot be provided: its one-line message says which and how to get it."""


class ModelIntegrityError(ModelNotFoundError):
    """A model's files differ from its MANIFEST.json (the shipped weights were altered)."""


class ModelMismatchError(PromptusError, ValueError):
    """The stream was made for another generator than the one loaded."""


class EngineUnavailableError(PromptusError, ValueError):
    """The requested engine cannot run here (not built yet, or missing its runtime)."""


class VideoInputError(PromptusError, ValueError):
    """The input video cannot be read as asked; the message is one line."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


class PromptDirectoryError(PromptusError, ValueError):
    """The directory is not a valid official Promptus prompt directory."""


class CheckpointError(PromptusError, ValueError):
    """A checkpoint that cannot be resumed from (damaged, foreign, or not matching its stream)."""


class ClusterUnavailableError(PromptusError, ValueError):
    """A cluster encode cannot start: Ray is not installed, the cluster cannot be reached, or
    none of its nodes can run a segment's task."""


class SegmentLostError(PromptusError, ConnectionError):
    """A segment's worker (a local process, a cluster's worker or node) was lost for good;
    the finished segments are kept for `--resume`."""

    def __init__(self, message: str) -> None:
        super().__init__(f"{message}; the finished segments are kept: run again with --resume to encode the rest")


class OutputBusyError(PromptusError, OSError):
    """Another live process is writing the same output."""

    def __init__(self, target: str | os.PathLike, pid: str) -> None:
        super().__init__(errno.EBUSY, f"being written by process {pid}", str(target))
