"""Shared helpers: tiny valid `.pmt` streams built in memory, hand-framed units, paths.

The tiny header (5 conditioning tokens of dimension 7, a 16x16 output with latent
downsampling 8, so a 4x2x2 latent) keeps a whole stream at a few hundred bytes, small
enough for exhaustive bit-flip and truncation loops.
"""
from __future__ import annotations

import dataclasses
import io
import struct
from dataclasses import dataclass, field
from pathlib import Path

import google_crc32c
import numpy as np
import pytest
from libpromptus.bitstream import (
    Coding,
    EndOfStream,
    Index,
    IndexEntry,
    Keyframe,
    LatentCodec,
    Metadata,
    SceneCut,
    SceneStart,
    SequenceHeader,
    StreamWriter,
    UnitType,
    UnknownUnit,
    lowest_minor_version,
)
from libpromptus.bitstream.framing import SIGNATURE
from libpromptus.conformance import seeded
from libpromptus.conformance.assemble import frame
from libpromptus.conformance.seeded import f32  # noqa: F401  (tests import it from here)

from libpromptus.process.profiles import SD_TURBO

# ---------------------------------------------------------------- official reference data

OFFICIAL = Path(__file__).resolve().parents[2] / "shared/reference/promptus-official"
OFFICIAL_REASON = "needs ../shared/reference/promptus-official (the official Promptus reference data)"
requires_official = pytest.mark.skipif(not OFFICIAL.is_dir(), reason=OFFICIAL_REASON)


@pytest.fixture
def official() -> Path:
    """The official reference data directory; skips the test when it is absent."""
    if not OFFICIAL.is_dir():
        pytest.skip(OFFICIAL_REASON)
    return OFFICIAL


# ---------------------------------------------------------------- the tiny header


TINY_HEADER = seeded.tiny_header(16, 16, profile=SD_TURBO, model_name="tiny-test", model_hash=bytes(range(32)),
                                  size_multiple=8, cond_tokens=5, cond_dim=7)
MAX_TINY_RANK = min(TINY_HEADER.cond_tokens, TINY_HEADER.cond_dim)   # 5


def tiny_header(**changes) -> SequenceHeader:
    return dataclasses.replace(TINY_HEADER, **changes)


# ---------------------------------------------------------------- unit factories (conformance/seeded.py's)


def make_keyframe(frame_index: int, rank: int, coding: Coding = Coding.RAW, *, seed: int = 0,
                  header: SequenceHeader = TINY_HEADER) -> Keyframe:
    rng = np.random.RandomState([seed, frame_index, rank])
    return seeded.keyframe(rng, header, frame_index, rank, coding=coding, kind=seeded.SHAPES[rng.randint(3)])


def make_scene_start(first_frame: int, codec: LatentCodec = LatentCodec.F32, coding: Coding = Coding.RAW, *,
                     seed: int = 0, header: SequenceHeader = TINY_HEADER) -> SceneStart:
    rng = np.random.RandomState([seed, first_frame, int(codec), 7])
    return seeded.scene_start(rng, header, first_frame, codec=codec, coding=coding)


# ---------------------------------------------------------------- stream descriptions


@dataclass(frozen=True)
class SceneSpec:
    """One scene: keyframe gaps after its first keyframe, their rank, the latent's codec."""

    gaps: tuple[int, ...] = (3,)
    rank: int = 2
    codec: LatentCodec = LatentCodec.F32
    coding: Coding = Coding.RAW                  # of the latent
    keyframe_codings: tuple[Coding, ...] = ()   # per keyframe; default: all `coding`
    cut: bool = False                           # a scene cut unit before it (not for scene 0)


@dataclass(frozen=True)
class StreamSpec:
    scenes: tuple[SceneSpec, ...] = (SceneSpec(),)
    metadata: tuple[tuple[str, str], ...] | None = (("encoder", "libpromptus tests"),)
    unknown: bytes | None = None                # an ignorable unit of type 100 after the header
    index: bool = True
    declare_frame_count: bool = False           # header frame_count: the real count, or 0
    seed: int = 0
    header: dict = field(default_factory=dict)  # changes to the tiny header


@dataclass
class Built:
    data: bytes
    units: list            # every unit given to the writer, header first (no index / end)
    header: SequenceHeader
    frame_count: int


def frame_count_of(spec: StreamSpec) -> int:
    frames = 0
    for scene in spec.scenes:
        frames += sum(scene.gaps) + 1
    return frames


def stream_units(spec: StreamSpec) -> tuple[SequenceHeader, list]:
    """The units (header first) that describe `spec`, without index and end of stream."""
    frames = frame_count_of(spec)
    header = tiny_header(frame_count=frames if spec.declare_frame_count else 0, **spec.header)
    units: list = [header]
    if spec.unknown is not None:
        units.append(UnknownUnit(100, spec.unknown))
    if spec.metadata is not None:
        units.append(Metadata(spec.metadata))
    first = 0
    for number, scene in enumerate(spec.scenes):
        if scene.cut and number > 0:
            units.append(SceneCut(first))
        units.append(make_scene_start(first, scene.codec, scene.coding, seed=spec.seed, header=header))
        codings = scene.keyframe_codings or (scene.coding,) * (len(scene.gaps) + 1)
        frame = first
        for k, gap in enumerate((0, *scene.gaps)):
            frame += gap
            units.append(make_keyframe(frame, scene.rank, codings[k % len(codings)], seed=spec.seed, header=header))
        first = frame + 1
    return header, units


def build_stream(spec: StreamSpec = StreamSpec()) -> Built:
    """Write `spec` with StreamWriter into memory (version 1.1 when a keyframe is LAYERED)."""
    header, units = stream_units(spec)
    sink = io.BytesIO()
    with StreamWriter(sink, header, write_index=spec.index, minor=lowest_minor_version(units)) as writer:
        for unit in units[1:]:
            writer.write(unit)
    data = sink.getvalue()
    assert writer.size == len(data)
    return Built(data, units, header, frame_count_of(spec))


@pytest.fixture
def make_stream():
    """Factory fixture: `make_stream(StreamSpec(...))` or `make_stream(scenes=..., ...)` -> Built."""

    def factory(spec: StreamSpec | None = None, **changes) -> Built:
        return build_stream(dataclasses.replace(spec or StreamSpec(), **changes))

    return factory


#: A small stream with a bit of everything: two scenes (the second after a cut), every
#: latent codec across the suite's fixtures, raw and entropy coding, metadata, an unknown
#: ignorable unit and an index.
RICH_SPEC = StreamSpec(
    scenes=(
        SceneSpec(gaps=(2, 1), rank=2, codec=LatentCodec.Q8, coding=Coding.ENTROPY,
                  keyframe_codings=(Coding.RAW, Coding.ENTROPY, Coding.RAW)),
        SceneSpec(gaps=(4,), rank=3, codec=LatentCodec.F16, coding=Coding.RAW, cut=True,
                  keyframe_codings=(Coding.ENTROPY,)),
    ),
    metadata=(("encoder", "libpromptus tests"), ("note", "Grüße ✓")),
    unknown=b"\x01\x02\x03",
    declare_frame_count=True,
)

#: The smallest useful stream, for exhaustive loops over every byte.
SMALL_SPEC = StreamSpec(
    scenes=(SceneSpec(gaps=(2,), rank=1, codec=LatentCodec.Q8, coding=Coding.ENTROPY),),
    metadata=(("k", "v"),),
)


@pytest.fixture
def rich_stream() -> Built:
    return build_stream(RICH_SPEC)


@pytest.fixture
def small_stream() -> Built:
    return build_stream(SMALL_SPEC)


# ---------------------------------------------------------------- hand-framed streams

def crc32c_le(data: bytes) -> bytes:
    return struct.pack("<I", google_crc32c.value(data))


def frame_raw(header_byte: int, size_bytes: bytes, payload: bytes) -> bytes:
    """A unit with an arbitrary header byte and size coding, and a correct CRC-32C."""
    head = bytes((header_byte,)) + size_bytes + payload
    return head + crc32c_le(head)


def prefix(major: int = 1, minor: int = 0) -> bytes:
    return SIGNATURE + bytes((major, minor))


def raw_stream(units, *, major: int = 1, minor: int = 0, index: bool | Index = False,
               end: EndOfStream | None | bool = True) -> bytes:
    """Frame `units` (unit objects or ready bytes) into a stream, without validation.

    `index=True` appends a correct index of the scene starts and keyframes (an `Index`
    appends that one instead); `end=True` appends a correct end-of-stream unit (an
    `EndOfStream` appends that one, `False`/None nothing).
    """
    out = bytearray(prefix(major, minor))
    seek = []
    last_frame = -1
    for unit in units:
        if isinstance(unit, SceneStart):
            seek.append(IndexEntry(UnitType.SCENE_START, unit.first_frame, len(out)))
        elif isinstance(unit, Keyframe):
            seek.append(IndexEntry(UnitType.KEYFRAME, unit.frame_index, len(out)))
            last_frame = unit.frame_index
        out += unit if isinstance(unit, (bytes, bytearray)) else frame(unit)
    index_offset = 0
    if index is not False:
        index_offset = len(out)
        out += frame(Index(tuple(seek)) if index is True else index)
    if end is True:
        out += frame(EndOfStream(last_frame + 1, index_offset))
    elif isinstance(end, EndOfStream):
        out += frame(end)
    return bytes(out)


# ---------------------------------------------------------------- comparing units


def assert_unit_equal(got, want) -> None:
    """Units are equal field by field; arrays equal in dtype, shape and every byte."""
    assert type(got) is type(want), (type(got), type(want))
    for f in dataclasses.fields(want):
        a, b = getattr(got, f.name), getattr(want, f.name)
        if isinstance(b, np.ndarray):
            assert isinstance(a, np.ndarray), f.name
            assert a.dtype == b.dtype, (f.name, a.dtype, b.dtype)
            assert a.shape == b.shape, (f.name, a.shape, b.shape)
            assert a.tobytes() == b.tobytes(), f.name
        else:
            assert type(a) is type(b) or (isinstance(a, int) and isinstance(b, int)), (f.name, a, b)
            assert a == b, (f.name, a, b)


def expected_tail(read_units_list, built: Built, index: bool) -> list:
    """The index and end-of-stream units a reader must find after `built.units`."""
    seek = [IndexEntry(UnitType.SCENE_START if isinstance(r.unit, SceneStart) else UnitType.KEYFRAME,
                       r.unit.first_frame if isinstance(r.unit, SceneStart) else r.unit.frame_index,
                       r.stream_offset)
            for r in read_units_list if isinstance(r.unit, (SceneStart, Keyframe))]
    tail = []
    index_offset = 0
    if index:
        index_offset = read_units_list[len(built.units)].stream_offset
        tail.append(Index(tuple(seek)))
    tail.append(EndOfStream(built.frame_count, index_offset))
    return tail


# ---------------------------------------------------------------- official-format prompt directories


def write_prompt_dir(directory: Path, frames=(0, 3, 5), rank: int = 2, latent_size: int = 8, seed: int = 0) -> Path:
    """A small directory in the official Promptus format: `frame_NNNNN.prompt` + `init.pth`.

    Factors are SD-Turbo shaped (77 x r, r x 1024); the latent is [1, 4, S, S] (S*8 pixels).
    """
    import torch

    directory.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    for frame_index in frames:
        torch.save({
            "U": torch.randint(0, 256, (77, rank), dtype=torch.uint8, generator=gen),
            "V": torch.randint(0, 256, (rank, 1024), dtype=torch.uint8, generator=gen),
            "U_scale": torch.tensor([0.015625 * (1 + frame_index)], dtype=torch.float32),
            "V_scale": torch.tensor([0.1], dtype=torch.float32),
            "U_zero_point": torch.tensor([float(100 + frame_index)], dtype=torch.float32),
            "V_zero_point": torch.tensor([120.0], dtype=torch.float32),
        }, directory / f"frame_{frame_index:05d}.prompt")
    torch.save(torch.randn(1, 4, latent_size, latent_size, generator=gen), directory / "init.pth")
    return directory


@pytest.fixture
def prompt_dir(tmp_path) -> Path:
    return write_prompt_dir(tmp_path / "prompts")
