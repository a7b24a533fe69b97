"""An interrupted encode's checkpoint: one file, replaced whole after every keyframe.

`pmtenc --resume` must never write other bytes than the uninterrupted run would. So a
checkpoint is a single `.npz` (the encoder's arrays, and its JSON state as one more
array: no pickles), written aside and renamed into place (`files.write_atomically`): a
kill at any moment leaves the previous checkpoint or the new one, never parts of both.
It also pins the partial stream it belongs to by length and SHA-256, so a resume
refuses a partial stream that is not the one the checkpoint was taken with.
"""
from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import CheckpointError
from ..io.files import write_atomically

#: The checkpoint layout; a checkpoint of another layout is refused, not misread.
FORMAT = 1
_STATE = "checkpoint_state"


@dataclass(frozen=True)
class Checkpoint:
    """The encoder's state after a keyframe, and what it must be resumed with."""

    state: dict                        # Encoder.checkpoint()'s values
    arrays: dict[str, np.ndarray]      # Encoder.checkpoint()'s arrays
    fingerprint: str                   # the input and options it was taken with
    stream_bytes: int                  # the partial stream's length then
    stream_sha256: str                 # and the SHA-256 of those bytes
    rank: int
    interval: int                      # the interval the encode started with (the rate control's first choice)

    def save(self, path: Path) -> None:
        """Replace the checkpoint at `path` with this one, atomically."""
        values = {"format": FORMAT, "state": self.state, "fingerprint": self.fingerprint,
                  "stream_bytes": self.stream_bytes, "stream_sha256": self.stream_sha256,
                  "rank": self.rank, "interval": self.interval}
        state = np.frombuffer(json.dumps(values).encode(), dtype=np.uint8)
        buffer = io.BytesIO()
        np.savez(buffer, **self.arrays, **{_STATE: state})
        write_atomically(path, buffer.getvalue())

    @classmethod
    def load(cls, path: Path) -> "Checkpoint":
        """Read a checkpoint; `CheckpointError` if it is not one this version wrote whole."""
        try:
            with np.load(io.BytesIO(path.read_bytes()), allow_pickle=False) as archive:
                arrays = {name: archive[name] for name in archive.files}
            values = json.loads(arrays.pop(_STATE).tobytes())
            if values.get("format") == FORMAT:
                return cls(values["state"], arrays, values["fingerprint"], values["stream_bytes"],
                           values["stream_sha256"], values["rank"], values["interval"])
        except (KeyError, TypeError, AttributeError, ValueError, zipfile.BadZipFile, EOFError) as err:
            raise CheckpointError(f"{path}: a damaged checkpoint ({err})") from None
        raise CheckpointError(f"{path}: a checkpoint of another libpromptus version")

    def check_stream(self, partial: bytes, name: str) -> bytes:
        """The prefix of `partial` this checkpoint was taken with; `CheckpointError` if it differs."""
        prefix = partial[:self.stream_bytes]
        if len(prefix) < self.stream_bytes or hashlib.sha256(prefix).hexdigest() != self.stream_sha256:
            raise CheckpointError(f"{name}: the partial stream does not match its checkpoint; "
                                  "start again without --resume")
        return prefix
