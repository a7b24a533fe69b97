"""Write the per-frame conditioning of a stream to `.npz` (`pmtdec --dump-prompts`).

The archive holds `prompts`, float32 [frame_count, T, D], the composed conditioning of
every frame (SPEC.md "Decoding process" steps 1-3, no model needed), and `frame_index`,
int64 [frame_count]. Frames are written one at a time into the zip entry, so memory stays
at one frame however long the video is.
"""
from __future__ import annotations

import zipfile
from typing import BinaryIO

import numpy as np

from ..bitstream import Stream
from ..process.prompts import frame_conditioning


def _write_npy(archive: zipfile.ZipFile, name: str, dtype: np.dtype, shape: tuple[int, ...], chunks) -> None:
    with archive.open(f"{name}.npy", "w", force_zip64=True) as entry:
        np.lib.format.write_array_header_1_0(entry, {"descr": np.lib.format.dtype_to_descr(dtype),
                                                     "fortran_order": False, "shape": shape})
        for chunk in chunks:
            entry.write(np.ascontiguousarray(chunk, dtype=dtype).tobytes())


def write_prompt_dump(streams: list[Stream], sink: BinaryIO) -> int:
    """Write the prompt dump of `streams` to `sink`; return the number of frames."""
    header = streams[0].header
    frame_count = sum(s.frame_count for s in streams)
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED) as archive:
        _write_npy(archive, "frame_index", np.dtype("<i8"), (frame_count,), [np.arange(frame_count)])
        _write_npy(archive, "prompts", np.dtype("<f4"), (frame_count, header.cond_tokens, header.cond_dim),
                   (c for _, c in frame_conditioning(streams)))
    return frame_count
