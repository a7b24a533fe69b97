"""The fuzz harness (libpromptus.conformance.fuzzing): its target, CRC fix-up, seed corpus and entry point.

The target must swallow exactly `InvalidDataError` and report everything else, so these
tests also check that it does report: a reader raising another exception, or a decoding
process yielding the wrong frames, must fail it.
"""
from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from libpromptus.bitstream import InvalidDataError, read_streams
from libpromptus.bitstream.framing import PREFIX_SIZE
from libpromptus.conformance import fuzzing


def test_every_seed_runs_clean():
    corpus = fuzzing.seed_corpus()
    # plain, CRCs fixed, short reads + resume, CRCs fixed + probe
    assert {data[0] for data in corpus.values()} >= {0, 1, 6, 9}
    assert any(name.startswith("hostile-") for name in corpus)
    for name, data in corpus.items():
        assert len(data) <= fuzzing.MAX_SEED_SIZE + 1, name
        fuzzing.fuzz_one(data)


def test_seed_corpus_is_deterministic():
    assert fuzzing.seed_corpus() == fuzzing.seed_corpus()


def test_seeded_streams_are_valid_and_compose():
    for seed in range(6):
        streams = read_streams(io.BytesIO(fuzzing.seeded_stream(seed, scenes=3)))
        frames = sum(s.frame_count for s in streams)
        assert fuzzing.check_conditioning(streams) == frames
        assert fuzzing.check_conditioning(streams, budget=1) == 1     # the budget bounds the work


def test_fix_crcs_repairs_every_unit_and_nothing_else():
    data = fuzzing.seeded_stream(1) + fuzzing.seeded_stream(2, scenes=1)
    assert fuzzing.fix_crcs(data) == data
    units = [(item.offset, item.size) for s in read_streams(io.BytesIO(data)) for item in s.units]
    broken = bytearray(data)
    for offset, size in units:
        broken[offset + size - 1] ^= 0xFF                         # the last CRC byte of every unit
    assert fuzzing.fix_crcs(bytes(broken)) == data
    # The walk stops where the framing stops: a truncated unit keeps its bytes.
    assert fuzzing.fix_crcs(bytes(broken[:PREFIX_SIZE + 7])) == bytes(broken[:PREFIX_SIZE + 7])
    assert fuzzing.fix_crcs(b"not a stream") == b"not a stream"


def test_fixed_crcs_reach_the_payload_parser():
    data = bytearray(fuzzing.seeded_stream(3))
    data[PREFIX_SIZE + 3] = 0xFF                                  # inside the header's model_name
    with pytest.raises(InvalidDataError) as plain:
        read_streams(io.BytesIO(bytes(data)))
    with pytest.raises(InvalidDataError) as fixed:
        read_streams(io.BytesIO(fuzzing.fix_crcs(bytes(data))))
    assert (plain.value.code, fixed.value.code) == ("crc_mismatch", "bad_field")


def test_short_reads_read_the_same_units():
    data = fuzzing.seeded_stream(4)
    whole = read_streams(io.BytesIO(data))
    pieces = read_streams(fuzzing._ShortReads(data))
    assert [(u.offset, u.size, u.unit_type) for u in whole[0].units] == [
        (u.offset, u.size, u.unit_type) for u in pieces[0].units]


def test_other_exceptions_are_crashes(monkeypatch):
    data = bytes((0,)) + fuzzing.seeded_stream(5)

    def broken_reader(source, **options):
        raise TypeError("a bug")

    monkeypatch.setattr(fuzzing, "read_streams", broken_reader)
    with pytest.raises(TypeError):
        fuzzing.fuzz_one(data)


def test_wrong_conditioning_is_a_crash(monkeypatch):
    data = bytes((0,)) + fuzzing.seeded_stream(5)
    monkeypatch.setattr(fuzzing, "frame_conditioning", lambda streams: iter([(0, np.zeros((2, 2), np.float32))]))
    with pytest.raises(AssertionError):
        fuzzing.fuzz_one(data)
    monkeypatch.setattr(fuzzing, "frame_conditioning", lambda streams: iter([]))
    with pytest.raises(AssertionError, match="stopped early"):
        fuzzing.fuzz_one(data)


def test_probe_mode_describes_what_pmtprobe_reads(monkeypatch):
    seen = []

    def describe(streams, size, **options):
        seen.append((streams, size))
        raise KeyError("a bug in the report")

    monkeypatch.setattr(fuzzing, "describe", describe)
    data = fuzzing.seeded_stream(7)
    with pytest.raises(KeyError):
        fuzzing.fuzz_one(bytes((8,)) + data)
    [(streams, size)] = seen
    assert size == len(data)
    keyframe = streams[0].scenes[0].keyframes[0].unit
    assert keyframe.u.strides == (0, 0) and keyframe.rank >= 1      # shapes without values, as pmtprobe reads


def test_invalid_data_is_not_a_crash():
    for data in (b"", b"\x00", b"\x01garbage", bytes((7,)) + fuzzing.seeded_stream(6)[:-3]):
        fuzzing.fuzz_one(data)


def test_module_imports_neither_torch_nor_atheris():
    code = ("import sys, libpromptus.conformance.fuzzing\n"
            "loaded = [m for m in sys.modules if m.split('.')[0] in ('torch', 'atheris')]\n"
            "assert not loaded, loaded[:5]\n")
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_atheris_entry_point(tmp_path):
    """`python -m libpromptus.conformance.fuzzing` writes the seeds and fuzzes (a few hundred runs)."""
    pytest.importorskip("atheris")
    corpus = tmp_path / "corpus"
    result = subprocess.run(
        [sys.executable, "-m", "libpromptus.conformance.fuzzing", "-runs=300", "-timeout=20", "-rss_limit_mb=1024",
         f"-artifact_prefix={tmp_path}/", str(corpus)], check=False, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Done 300 runs" in result.stderr
    assert len(list(corpus.iterdir())) >= len(fuzzing.seed_corpus())
    assert not [p for p in Path(tmp_path).iterdir() if p.name.startswith(("crash-", "timeout-", "oom-"))]
