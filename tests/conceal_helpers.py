"""Shared pieces of the concealment tests (test_conceal*.py).

One stream for the tiny model, 20 frames 64x64 built from seeded factors and latents
(tests/decoding_helpers.py; benchmarks/concealment.py measures the same on a stream the
encoder made): rank 2, scene 0 with keyframes 0, 4, 8, 9 and, after a scene cut unit,
scene 1 with keyframes 10, 14, 18, 19; a metadata unit, an index. Unless a test says
otherwise, damage is one flipped byte in a unit's payload: its CRC-32C fails, its size
field survives. The module fixtures `workdir`, `clean` and `offsets` build the stream
once in each test module; GARBAGE and `skipped` are the bytes put after or between
streams and the note that names them skipped.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from decoding_helpers import SceneDef, tiny_stream
from libpromptus.bitstream import (
    Keyframe,
    LatentCodec,
    SceneCut,
    SceneStart,
    read_units,
)
from libpromptus.bitstream.concealment import read_concealed
from libpromptus.bitstream.framing import SIGNATURE

FRAMES, SIZE = 20, 64
SCENES = (SceneDef((0, 4, 8, 9), codec=LatentCodec.Q8), SceneDef((10, 14, 18, 19), codec=LatentCodec.Q8, cut=True))
LAYOUT = [[0, 4, 8, 9], [10, 14, 18, 19]]


# ---------------------------------------------------------------- the stream and its damage


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("conceal")


@pytest.fixture(scope="module")
def clean(workdir) -> bytes:
    return tiny_stream(SIZE, SIZE, SCENES, seed=7).write(workdir / "clean.pmt").read_bytes()


@pytest.fixture(scope="module")
def offsets(clean) -> dict:
    """Byte offset of each unit: ("keyframe", 14), ("scene_start", 10), ("metadata", None), ..."""
    names = {SceneStart: "scene_start", Keyframe: "keyframe", SceneCut: "scene_cut"}
    out = {}
    for item in read_units(io.BytesIO(clean)):
        unit = item.unit
        name = names.get(type(unit), type(unit).__name__.lower())
        out[(name, getattr(unit, "frame_index", getattr(unit, "first_frame", None)))] = item.offset
    return out


def flip(data: bytes, offset: int, mask: int = 0x55) -> bytes:
    """`data` with the byte at `offset` changed."""
    out = bytearray(data)
    out[offset] ^= mask
    return bytes(out)


def damage(clean: bytes, offsets: dict, unit: tuple) -> bytes:
    """The stream with byte 6 of `unit` flipped: past its header and size (a payload byte, or
    for the 10-byte scene cut unit a CRC byte)."""
    return flip(clean, offsets[unit] + 6)


def concealed(data: bytes):
    return read_concealed(io.BytesIO(data))


def layout(streams) -> list[list[int]]:
    return [[k.unit.frame_index for k in scene.keyframes] for stream in streams for scene in stream.scenes]


#: Bytes that are not a stream, put after the stream's end-of-stream unit: the stream's own
#: last 200 bytes (index and end-of-stream units), random bytes, and partial signatures.
GARBAGE = {
    "own-tail": lambda clean: clean[-200:],
    "random": lambda clean: bytes(np.random.default_rng(5).integers(0, 256, 300, dtype=np.uint8)),
    "cut-signature-first": lambda clean: SIGNATURE[:7] + bytes(20),
    "cut-signatures-inside": lambda clean: b"junk" + SIGNATURE[:4] + b"more" + SIGNATURE[:7],
}


def skipped(first: int, size: int, stream: int = 0) -> str:
    return f"bytes {first}..{first + size - 1} after the end of stream {stream} are not a stream: skipped"
