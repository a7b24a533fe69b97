"""Streams that declare hostile sizes (libpromptus.conformance.fuzzing.hostile_streams) are refused.

Each stream declares a unit size, dimension, rank, count or coded symbol count at or
beyond its SPEC.md §10 cap. The reader must report the stream's error code, and every
CLI (pmtprobe, pmtdec with either output, pmtenc given it as input) must fail with one
line, exit status 1 and no output file, without importing torch. Memory is asserted
through tracemalloc (deterministic); speed targets live in benchmarks/hostile_sizes.py.
"""
from __future__ import annotations

import io
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest
from libpromptus.bitstream import InvalidDataError, read_streams
from libpromptus.bitstream.limits import MAX_UNIT_SIZE
from libpromptus.cli import pmtdec, pmtenc, pmtprobe
from libpromptus.conformance.fuzzing import HostileStream, hostile_streams

CASES = {case.name: case for case in hostile_streams()}
CHEAP = [name for name, case in CASES.items() if not case.expensive]
MiB = 1 << 20

#: Each CLI as a user runs it on a hostile input `IN` (outputs go beside it).
COMMANDS = {
    "pmtprobe": (pmtprobe.main, ["IN"]),
    "pmtdec-dump": (pmtdec.main, ["-i", "IN", "--dump-prompts", "OUT.npz"]),
    "pmtdec-video": (pmtdec.main, ["-i", "IN", "OUT.mkv"]),
    "pmtenc": (pmtenc.main, ["-i", "IN", "OUT.pmt"]),
}


def peak_while_reading(case: HostileStream, **options) -> tuple[str, int]:
    """(the error code, the peak bytes Python allocated) of reading `case` whole."""
    source = io.BytesIO(case.data)
    tracemalloc.start()
    try:
        with pytest.raises(InvalidDataError) as info:
            read_streams(source, **options)
        return info.value.code, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("name", sorted(set(CASES) - {"factors-at-caps-100-keyframes"}))   # see below
def test_reader_refuses_with_the_code(name):
    case = CASES[name]
    code, peak = peak_while_reading(case)
    assert code == case.code
    assert peak < MAX_UNIT_SIZE + 16 * MiB, peak     # one unit at its cap, besides the input (SPEC.md §12)


@pytest.mark.parametrize("name", ["metadata-count-2^20-empty-entries", "index-count-at-cap",
                                  "metadata-count-2^28-1", "unit-size-4-byte-max", "latent-16x4096x4096"])
def test_counts_and_sizes_are_refused_before_allocation(name):
    """Refused before anything of the declared size exists: the unit read whole, plus 2 MiB
    (building 2^20 metadata entries or 2^21 index entries first took seconds and 300+ MB)."""
    case = CASES[name]
    _, peak = peak_while_reading(case)
    assert peak < len(case.data) + 2 * MiB, peak


def test_values_false_keeps_memory_at_one_unit():
    """100 keyframes of 1.2 MB decoded factors each (120 MB when kept, as `read_streams`
    keeps them by default): shapes only, one keyframe's worth, as pmtprobe reads."""
    code, peak = peak_while_reading(CASES["factors-at-caps-100-keyframes"], values=False)
    assert code == "truncated"
    assert peak < 8 * MiB, peak


def test_entropy_coded_latent_at_the_cap_is_decoded_in_place():
    """A 32 MiB latent from 40 coded bytes: the latent once, plus one byte plane in flight."""
    code, peak = peak_while_reading(CASES["latent-f32-at-cap-then-truncated"])
    assert code == "truncated"
    assert peak < MAX_UNIT_SIZE * 5 // 4 + MiB, peak


def run_cli(command: str, case: HostileStream, directory: Path, capsys) -> str:
    """Run one CLI in-process on `case`; return its single stderr line after checking the rest."""
    main, template = COMMANDS[command]
    source = directory / "hostile.pmt"
    source.write_bytes(case.data)
    argv = [str(source) if arg == "IN" else str(directory / arg) if arg.startswith("OUT") else arg
            for arg in template]
    status = main(argv)
    out, err = capsys.readouterr()
    assert status == 1, err
    assert out == ""
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert sorted(p.name for p in directory.iterdir()) == ["hostile.pmt"]       # no output, no temporary file
    return err.rstrip("\n")


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("name", CHEAP)
def test_every_cli_refuses_in_one_line(command, name, tmp_path, capsys):
    case = CASES[name]
    line = run_cli(command, case, tmp_path, capsys)
    prog = command.split("-")[0]
    if prog == "pmtenc":
        assert line == (f"pmtenc: error: {tmp_path / 'hostile.pmt'}: a Promptus .pmt stream, not a video "
                        "(pmtenc encodes video; decode the stream with pmtdec first)")
    else:
        assert line.startswith(f"{prog}: error: invalid data: {case.code}: "), line


@pytest.mark.parametrize("name", sorted(set(CASES) - set(CHEAP)))
def test_pmtprobe_refuses_the_expensive_streams(name, tmp_path, capsys):
    line = run_cli("pmtprobe", CASES[name], tmp_path, capsys)
    assert line.startswith(f"pmtprobe: error: invalid data: {CASES[name].code}: "), line


@pytest.mark.parametrize("command", COMMANDS)
def test_clis_refuse_without_importing_torch(command, tmp_path):
    """In a fresh process: exit status 1, one line, and torch never loaded (the 300+ MB that
    would put a refusal over 100 MB)."""
    case = CASES["latent-16x4096x4096"]
    source = tmp_path / "hostile.pmt"
    source.write_bytes(case.data)
    main, template = COMMANDS[command]
    argv = [str(source) if arg == "IN" else str(tmp_path / arg) if arg.startswith("OUT") else arg for arg in template]
    code = (f"import sys\nfrom libpromptus.cli import {main.__module__.rsplit('.', 1)[1]} as cli\n"
            f"status = cli.main({argv!r})\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n"
            "sys.exit(status)\n")
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hostile.pmt"]


def test_pmtprobe_refuses_a_hostile_pipe():
    case = CASES["unit-size-at-cap-short-file"]
    result = subprocess.run([sys.executable, "-m", "libpromptus.cli.pmtprobe", "-"], check=False, input=case.data,
                            capture_output=True, timeout=120)
    assert result.returncode == 1
    assert result.stdout == b""
    assert result.stderr.decode().startswith("pmtprobe: error: invalid data: truncated: input ends inside a unit")
    assert len(result.stderr.splitlines()) == 1
