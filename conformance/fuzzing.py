"""Adversarial inputs for the `.pmt` reader: the fuzz target, its seed corpus, hostile sizes.

SPEC.md §12 treats every `.pmt` file as untrusted. This module is how the library checks
that on arbitrary bytes:

- `fuzz_one` is the fuzz target. It reads the input with `bitstream.read_streams` (the
  only acceptable exception is `InvalidDataError`) and runs the model-free decoding
  process (`prompts.frame_conditioning`) over whatever parses, checking the frame
  indices, shapes and dtype of the conditioning it yields, or makes pmtprobe's report
  of it. Any other exception is a bug.
- `seed_corpus` is where fuzzing starts: small valid streams that `StreamWriter` writes
  from seeded data, the `hostile_streams`, and the conformance suite's streams when it
  is installed.
- `hostile_streams` declare enormous sizes (a unit size at its cap in a short file,
  dimensions, ranks, counts and coded symbol counts at or above their caps, overlong
  leb128 values); every one must be refused with its error code, quickly and in little
  memory (tests/test_limits.py, benchmarks/hostile_sizes.py).

It lives in the package rather than under tests/ so that `python -m libpromptus.conformance.fuzzing`
runs in any installation (CI's fresh virtual environment included) and the tests and the
benchmark share one definition of each stream. Neither torch nor atheris is imported at
module level; atheris is needed only to fuzz (`pip install 'libpromptus[fuzz]'`):

    python -m libpromptus.conformance.fuzzing [LIBFUZZER_FLAGS] [CORPUS_DIR ...]

writes the seed corpus into the first corpus directory (a temporary one if none is
given) and fuzzes with libFuzzer's flags, e.g. `-max_total_time=60 -timeout=20
-rss_limit_mb=1024 -artifact_prefix=/tmp/fuzz_crashes/`.
"""
from __future__ import annotations

import dataclasses
import gc
import io
import itertools
import sys
import tempfile
import types
from dataclasses import dataclass
from pathlib import Path

import google_crc32c
import numpy as np

from ..bitstream import (
    Coding,
    EndOfStream,
    InvalidDataError,
    LatentCodec,
    Metadata,
    SceneCut,
    SequenceHeader,
    Stream,
    StreamWriter,
    UnitType,
    UnknownUnit,
    read_streams,
)
from ..bitstream.framing import SIGNATURE, frame_unit, stream_prefix
from ..bitstream.leb128 import encode_leb128
from ..bitstream.limits import (
    MAX_COND_DIM,
    MAX_COND_TOKENS,
    MAX_INDEX_ENTRIES,
    MAX_METADATA_VALUE,
    MAX_RANK,
    MAX_UNIT_SIZE,
)
from ..bitstream.probe import describe, format_text
from ..bitstream.syntax import KEYFRAME_HEAD, SCENE_START_HEAD, encode_payload
from ..process.prompts import frame_conditioning
from . import seeded

#: Multiply-adds of prompt composition one input may cost (about 20 ms on one core): the
#: reader's caps bound a stream's frames, but not to a number worth composing per input.
COMPOSE_BUDGET = 50_000_000

#: Larger seeds are left out: libFuzzer sizes its inputs after the largest seed, and small
#: inputs mutate faster.
MAX_SEED_SIZE = 16 << 10

#: The code whose coverage guides the fuzzer: the reader, its construct structs, the
#: decoding process, the probe report. (Instrumenting everything loaded, numpy
#: included, takes 30 s.)
INSTRUMENTED = ("libpromptus.bitstream", "libpromptus.process.prompts", "libpromptus.bitstream.probe", "construct")

# The first byte of a fuzz input says how the rest is read.
_FIX_CRCS = 1          # rewrite every unit's CRC-32C first, so mutations reach the payload parsers
_SHORT_READS = 2       # read through a source that returns at most 7 bytes per read (a pipe)
_RESUME = 4            # also read it as StreamWriter.resume does (pmtenc --resume)
_PROBE = 8             # read it as pmtprobe does (shapes only) and describe it, instead of composing


# ---------------------------------------------------------------- the fuzz target


def fuzz_one(data: bytes) -> None:
    """Check one fuzz input; raise only for a bug in the reader or the decoding process.

    `data[0]` selects the reading mode (bits: fix CRCs, short reads, resume, probe) and
    the rest is the stream. `InvalidDataError` is the expected outcome for most inputs
    and is swallowed; any other exception, and an `AssertionError` about the
    conditioning, is a crash.
    """
    if not data:
        return
    mode, stream = data[0], data[1:]
    if mode & _FIX_CRCS:
        stream = fix_crcs(stream)
    if mode & _RESUME:
        try:
            StreamWriter.resume(io.BytesIO(), stream)
        except InvalidDataError:
            pass
    source = _ShortReads(stream) if mode & _SHORT_READS else io.BytesIO(stream)
    try:
        streams = read_streams(source, values=not (mode & _PROBE))
    except InvalidDataError:
        return
    if mode & _PROBE:
        format_text(describe(streams, len(stream), show_units=True))
    else:
        check_conditioning(streams)


def check_conditioning(streams: list[Stream], budget: int = COMPOSE_BUDGET) -> int:
    """Compose the conditioning of the first frames of `streams` and check what comes out.

    Frames come in display order 0, 1, 2, … as float32 [cond_tokens, cond_dim] of their
    stream. Composes as many frames as `budget` multiply-adds allow (at least one);
    returns that number.
    """
    shapes = [(s.header.cond_tokens, s.header.cond_dim) for s in streams]
    costs = [t * d * scene.keyframes[0].unit.rank for s, (t, d) in zip(streams, shapes) for scene in s.scenes]
    limit = max(1, budget // max(costs))
    stream_of_frame = (n for n, s in enumerate(streams) for _ in range(s.frame_count))
    count = 0
    with np.errstate(all="ignore"):       # binary32 overflow of a conforming stream gives inf, not an error
        for (frame, conditioning), stream in zip(itertools.islice(frame_conditioning(streams), limit), stream_of_frame):
            assert frame == count, f"frame {frame} yielded where {count} was expected"
            assert conditioning.shape == shapes[stream], (conditioning.shape, shapes[stream])
            assert conditioning.dtype == np.float32, conditioning.dtype
            count += 1
    assert count == min(limit, sum(s.frame_count for s in streams)), "frame_conditioning stopped early"
    return count


def fix_crcs(data: bytes) -> bytes:
    """`data` with the CRC-32C of every unit it frames recomputed.

    Walks the framing as a reader does (signature and version, then units, another
    stream after an end-of-stream unit) and stops where it no longer parses, leaving
    the rest as it is. Random mutations of a stream almost always break a CRC; fixed up,
    they reach the payload parsers.
    """
    out = bytearray(data)
    pos = 0
    while out[pos:pos + len(SIGNATURE)] == SIGNATURE:
        pos += len(SIGNATURE) + 2
        kind = None
        while pos < len(out) and kind != UnitType.END_OF_STREAM:
            start, kind = pos, out[pos] & 0x7F
            size, pos = _lenient_leb128(out, pos + 1)
            end = pos + size
            if size < 0 or end + 4 > len(out):
                return bytes(out)
            out[end:end + 4] = google_crc32c.value(bytes(out[start:end])).to_bytes(4, "little")
            pos = end + 4
    return bytes(out)


def _lenient_leb128(data: bytearray, pos: int) -> tuple[int, int]:
    """A unit size as the reader would take it (at most 4 bytes); -1 when it ends early."""
    value = 0
    for i in range(4):
        if pos + i >= len(data):
            return -1, pos
        value |= (data[pos + i] & 0x7F) << (7 * i)
        if not data[pos + i] & 0x80:
            return value, pos + i + 1
    return value, pos + 4


class _ShortReads(io.RawIOBase):
    """A source that returns at most 7 bytes per read, as a pipe may."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        return self._data.read(7 if size < 0 else min(size, 7))


# ---------------------------------------------------------------- seed corpus

#: The header of the seed streams: a 16 x 16 video, a 4 x 2 x 2 latent, 5 x 7 prompts.
SEED_HEADER = seeded.tiny_header(16, 16, model_hash=bytes(range(32)), size_multiple=8, cond_tokens=5, cond_dim=7)


def seeded_stream(seed: int, *, header: SequenceHeader = SEED_HEADER, scenes: int = 2, index: bool = True) -> bytes:
    """A small valid stream written by `StreamWriter`, its choices drawn from `seed`.

    Scenes (some after a cut) with 1 to 3 keyframes at intervals of 1 to 3, every latent
    codec, raw and entropy coding, metadata and an unknown ignorable unit.
    """
    rng = np.random.RandomState(seed)
    sink = io.BytesIO()
    with StreamWriter(sink, header, write_index=index) as writer:
        writer.write(Metadata((("encoder", "libpromptus fuzzing"), ("seed", f"{seed} ✓"))))
        if rng.random_sample() < 0.5:
            writer.write(UnknownUnit(100, rng.bytes(3)))
        frame = 0
        for number in range(scenes):
            if number and rng.random_sample() < 0.5:
                writer.write(SceneCut(frame))
            codec, coding = LatentCodec(rng.randint(3)), Coding(rng.randint(2))
            writer.write(seeded.scene_start(rng, header, frame, codec=codec, coding=coding))
            rank = rng.randint(1, min(header.cond_tokens, header.cond_dim) + 1)
            for k in range(rng.randint(1, 4)):
                frame += rng.randint(1, 4) if k else 0
                writer.write(seeded.keyframe(rng, header, frame, rank, coding=Coding(rng.randint(2)),
                                             kind=seeded.SHAPES[rng.randint(3)]))
            frame += 1
    return sink.getvalue()


def seed_corpus() -> dict[str, bytes]:
    """Named fuzz inputs (mode byte first): seeded valid streams, hostile streams, the suite."""
    streams = {f"seeded-{seed}": seeded_stream(seed, scenes=1 + seed % 3, index=seed % 4 != 3) for seed in range(8)}
    streams["seeded-concatenated"] = seeded_stream(8) + seeded_stream(9, scenes=1)
    streams["seeded-wide"] = seeded_stream(10, header=dataclasses.replace(
        SEED_HEADER, width=40, height=8, latent_downsampling=1, size_multiple=2, latent_channels=1,
        cond_tokens=3, cond_dim=40))
    corpus = {}
    for name, data in streams.items():
        corpus[name] = bytes((0,)) + data
        corpus[f"{name}-fixcrc"] = bytes((_FIX_CRCS,)) + data
    corpus["seeded-0-pipe-resume"] = bytes((_SHORT_READS | _RESUME,)) + streams["seeded-0"]
    corpus["seeded-concatenated-probe"] = bytes((_FIX_CRCS | _PROBE,)) + streams["seeded-concatenated"]
    for case in hostile_streams():
        if not case.expensive and len(case.data) <= MAX_SEED_SIZE:
            corpus[f"hostile-{case.name}"] = bytes((_FIX_CRCS,)) + case.data
    for path in _suite_streams():
        if path.stat().st_size <= MAX_SEED_SIZE:
            corpus[f"suite-{path.parent.name}-{path.stem}"] = bytes((_FIX_CRCS,)) + path.read_bytes()
    return corpus


def _suite_streams() -> list[Path]:
    """The conformance suite's streams, if the suite is installed (it may not be yet)."""
    try:
        from . import suite_dir
    except ImportError:
        return []
    return sorted(suite_dir().glob("*/*.pmt"))


def write_corpus(directory: Path) -> int:
    """Write `seed_corpus()` into `directory` (one file per input); return the count."""
    directory.mkdir(parents=True, exist_ok=True)
    corpus = seed_corpus()
    for name, data in corpus.items():
        (directory / f"seed-{name}").write_bytes(data)
    return len(corpus)


# ---------------------------------------------------------------- hostile sizes


@dataclass(frozen=True)
class HostileStream:
    """A stream that declares an enormous size, and the error a reader must report."""

    name: str
    declares: str           # what it declares, in words
    code: str               # the SPEC.md §11 error code
    data: bytes
    expensive: bool = False  # legal work at a cap before it fails: about a second, not milliseconds


def _stream(*units: bytes, header: SequenceHeader = SEED_HEADER) -> bytes:
    """A stream prefix, `header` framed as is (unchecked), then ready-made units."""
    return stream_prefix() + frame_unit(UnitType.SEQUENCE_HEADER, encode_payload(header), False) + b"".join(units)


def _unit(kind: UnitType, payload: bytes) -> bytes:
    return frame_unit(kind, payload, kind in (UnitType.METADATA, UnitType.INDEX))


def _zero_block() -> bytes:
    """A 10-byte coded_symbols(n) block of n zeros, for any n (SPEC.md §9: LAPLACE at 0, scale 1)."""
    return bytes((1,)) + (0).to_bytes(2, "little") + (1).to_bytes(2, "little") + encode_leb128(4) + (1).to_bytes(4, "little")


def _keyframe_head(rank: int, coding: Coding, frame: int = 0) -> bytes:
    return KEYFRAME_HEAD.build({"frame_index": frame, "rank": rank, "coding": coding, "u_scale": 1.0,
                                "u_zero_point": 0, "v_scale": 1.0, "v_zero_point": 0})


def _latent_scene_start(codec: LatentCodec, blocks: int, channels: int = 0) -> bytes:
    head = SCENE_START_HEAD.build({"first_frame": 0, "latent_codec": codec, "coding": Coding.ENTROPY})
    q8 = b"".join(np.float32(1).tobytes() + b"\x00" for _ in range(channels))
    return _unit(UnitType.SCENE_START, head + q8 + _zero_block() * blocks)


def hostile_streams() -> list[HostileStream]:
    """Streams that declare sizes at or beyond SPEC.md §10's caps (100 bytes to 27 MB).

    Each must be refused with its `code`. A size above its cap is refused before anything
    is allocated from it; a size within its cap (a latent of MAX_UNIT_SIZE - 1024 bytes,
    factors of 512 x 255 and 255 x 4096) costs what the cap allows before the stream fails.
    """
    big = dataclasses.replace(SEED_HEADER, cond_tokens=MAX_COND_TOKENS, cond_dim=MAX_COND_DIM)
    # Latents just within the cap MAX_UNIT_SIZE - 1024 (counted as float32): one channel of
    # 2048 x 4095 (33,546,240 bytes) and 16 channels of 511 x 1024 (33,488,896 bytes).
    huge_f32 = dataclasses.replace(SEED_HEADER, width=4095, height=2048, latent_channels=1, latent_downsampling=1,
                                   size_multiple=1)
    huge_q8 = dataclasses.replace(huge_f32, width=1024, height=511, latent_channels=16)
    small_start = _latent_scene_start(LatentCodec.F32, 4)
    zero_keyframes = [_unit(UnitType.KEYFRAME, _keyframe_head(MAX_RANK, Coding.ENTROPY, frame) + _zero_block() * 2)
                      for frame in range(100)]
    coded_u = b"\x01\x00\x00\x01\x00"           # a LAPLACE block at 0, scale 1, before its data_size
    entries = 1 << 20
    return [
        HostileStream("unit-size-at-cap-short-file", f"a unit_size of MAX_UNIT_SIZE = {MAX_UNIT_SIZE} in a "
                      "146-byte file", "truncated", _stream(b"\x02" + encode_leb128(MAX_UNIT_SIZE) + bytes(40))),
        HostileStream("unit-size-above-cap", f"a unit_size of MAX_UNIT_SIZE + 1 = {MAX_UNIT_SIZE + 1}", "size_limit",
                      _stream(b"\x02" + encode_leb128(MAX_UNIT_SIZE + 1) + bytes(40))),
        HostileStream("unit-size-4-byte-max", "a unit_size of 2^28 - 1, the largest 4-byte leb128", "size_limit",
                      _stream(b"\x02\xff\xff\xff\x7f" + bytes(40))),
        HostileStream("unit-size-5-byte-leb128", "a unit_size coded in 5 leb128 bytes (2^32 - 1)", "size_limit",
                      _stream(b"\x02\xff\xff\xff\xff\x0f" + bytes(40))),
        HostileStream("width-65535", "width 65535 (cap 4096)", "size_limit",
                      _stream(header=dataclasses.replace(SEED_HEADER, width=65535))),
        HostileStream("height-65535", "height 65535 (cap 4096)", "size_limit",
                      _stream(header=dataclasses.replace(SEED_HEADER, height=65535))),
        HostileStream("latent-16x4096x4096", "a 16 x 4096 x 4096 latent (downsampling 1): 1 GiB as float32",
                      "size_limit", _stream(header=dataclasses.replace(
                          SEED_HEADER, width=4096, height=4096, latent_channels=16, latent_downsampling=1,
                          size_multiple=1))),
        HostileStream("latent-channels-255", "latent_channels 255 (cap 16)", "size_limit",
                      _stream(header=dataclasses.replace(SEED_HEADER, latent_channels=255))),
        HostileStream("size-multiple-65535", "size_multiple 65535 (cap 1024)", "size_limit",
                      _stream(header=dataclasses.replace(SEED_HEADER, size_multiple=65535))),
        HostileStream("cond-tokens-65535", "cond_tokens 65535 (cap 512)", "size_limit",
                      _stream(header=dataclasses.replace(SEED_HEADER, cond_tokens=65535))),
        HostileStream("cond-dim-65535", "cond_dim 65535 (cap 4096)", "size_limit",
                      _stream(header=dataclasses.replace(SEED_HEADER, cond_dim=65535))),
        HostileStream("frame-count-2^32-1", "frame_count 2^32 - 1 (cap 2^31 - 1)", "size_limit",
                      _stream(header=dataclasses.replace(SEED_HEADER, frame_count=(1 << 32) - 1))),
        HostileStream("rank-255-small-prompt", "rank 255 with 5 x 7 prompts (cap min(5, 7))", "bad_field",
                      _stream(small_start, _unit(UnitType.KEYFRAME, _keyframe_head(MAX_RANK, Coding.RAW) + bytes(64)))),
        HostileStream("factors-at-caps-stored-short", "rank 255 factors of 512 x 4096 prompts stored raw (1.2 MB) "
                      "in a 39-byte payload", "bad_payload_size",
                      _stream(small_start, _unit(UnitType.KEYFRAME, _keyframe_head(MAX_RANK, Coding.RAW) + bytes(24)),
                              header=big)),
        HostileStream("factors-at-caps-data-size-2^55", "a coded block of rank 255 factors whose data_size is "
                      "2^55 (8 leb128 bytes)", "size_limit",
                      _stream(small_start, _unit(UnitType.KEYFRAME, _keyframe_head(MAX_RANK, Coding.ENTROPY)
                                                 + coded_u + encode_leb128(1 << 55) + bytes(8)), header=big)),
        HostileStream("data-size-9-byte-leb128", "a coded block's data_size whose 8th leb128 byte has the high bit",
                      "size_limit", _stream(small_start, _unit(
                          UnitType.KEYFRAME, _keyframe_head(1, Coding.ENTROPY) + coded_u + b"\xff" * 9))),
        HostileStream("factors-at-caps-then-truncated", "rank 255 factors of 512 x 4096 prompts (1.2 MB) coded "
                      "in a 41-byte keyframe unit, then the input ends", "truncated",
                      _stream(small_start, zero_keyframes[0], header=big)),
        HostileStream("factors-at-caps-100-keyframes", "100 keyframes of rank 255 factors of 512 x 4096 prompts "
                      "(1.2 MB each) coded in 41 bytes each, then the input ends", "truncated",
                      _stream(small_start, *zero_keyframes, header=big), expensive=True),
        HostileStream("latent-f32-at-cap-then-truncated", "an entropy-coded f32 latent of 1 x 2048 x 4095 (32 MiB: "
                      "4 byte planes of 8.4 M symbols in 40 bytes), then the input ends", "truncated",
                      _stream(_latent_scene_start(LatentCodec.F32, 4), header=huge_f32), expensive=True),
        HostileStream("latent-q8-at-cap-then-truncated", "an entropy-coded q8 latent of 16 x 511 x 1024 (8.4 M "
                      "symbols in 160 bytes), then the input ends", "truncated",
                      _stream(_latent_scene_start(LatentCodec.Q8, 16, channels=16), header=huge_q8), expensive=True),
        HostileStream("metadata-count-2^28-1", "a metadata entry_count of 2^28 - 1 (cap 256) in a 6-byte payload",
                      "size_limit", _stream(_unit(UnitType.METADATA, b"\xff\xff\xff\x7f\x00\x00"))),
        HostileStream("metadata-count-2^20-empty-entries", f"a metadata entry_count of {entries} (cap 256), "
                      "followed by that many empty entries (2 MiB)", "size_limit",
                      _stream(_unit(UnitType.METADATA, encode_leb128(entries) + b"\x00\x00" * entries))),
        HostileStream("metadata-value-size-2^28-1", f"a metadata value_size of 2^28 - 1 (cap {MAX_METADATA_VALUE}) "
                      "in a 15-byte payload", "size_limit",
                      _stream(_unit(UnitType.METADATA, b"\x01\x01k\xff\xff\xff\x7f" + bytes(8)))),
        HostileStream("index-count-above-cap", f"an index entry_count of {MAX_INDEX_ENTRIES + 1} "
                      f"(cap {MAX_INDEX_ENTRIES}) in a 30-byte payload", "size_limit",
                      _stream(small_start, zero_keyframes[0], _unit(
                          UnitType.INDEX, encode_leb128(MAX_INDEX_ENTRIES + 1) + bytes(26)), header=big)),
        HostileStream("index-count-at-cap", f"an index of {MAX_INDEX_ENTRIES} entries (27 MB) in a stream of "
                      "2 seek points", "bad_index",
                      _stream(small_start, zero_keyframes[0], _unit(UnitType.INDEX, encode_leb128(MAX_INDEX_ENTRIES)
                                                                    + (b"\x04" + bytes(12)) * MAX_INDEX_ENTRIES),
                              _unit(UnitType.END_OF_STREAM, encode_payload(EndOfStream(1, 0))), header=big)),
    ]


# ---------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> None:
    """Fuzz `fuzz_one` with atheris (libFuzzer flags and corpus directories in `argv`)."""
    import atheris

    argv = list(sys.argv if argv is None else argv)
    corpora = [arg for arg in argv[1:] if not arg.startswith("-")]
    if not corpora:
        corpora = [tempfile.mkdtemp(prefix="pmt-fuzz-corpus-")]
        argv.append(corpora[0])
    count = write_corpus(Path(corpora[0]))
    print(f"libpromptus.conformance.fuzzing: {count} seed inputs in {corpora[0]}", file=sys.stderr, flush=True)
    for function in [f for f in gc.get_objects() if isinstance(f, types.FunctionType)]:
        if (function.__module__ or "").startswith(INSTRUMENTED):
            atheris.instrument_func(function)
    atheris.Setup(argv, fuzz_one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
