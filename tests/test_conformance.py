"""The conformance suite (SPEC.md Annex B): its streams, its runner, pmtdec --verify, its regeneration.

The whole suite runs once per module in-process (one CPU thread, as the reference frames
were decoded); the command lines are run as a user runs them, on small folders.

Tier 2 is held to what Annex B asks of every decoder, the frames' md5 or a PSNR of at
least MIN_PSNR_DB against the reference frames: fp32 CPU kernels differ between x86-64
processors (AVX2 or AVX-512 paths in oneDNN), so the reference engine itself matches
the committed md5 bit for bit only on processors like the one that generated it.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from libpromptus.bitstream import (
    ERROR_CODES,
    Coding,
    InvalidDataError,
    Keyframe,
    LatentCodec,
    PredictionType,
    SceneStart,
    read_streams,
    read_units,
)
from libpromptus.bitstream.framing import SIGNATURE
from libpromptus.conformance import suite_dir
from libpromptus.conformance.canonical import compose, stream_conditioning, tier1_md5
from libpromptus.conformance.frames import FrameDecoder, psnr, read_reference
from libpromptus.conformance.generate import generate
from libpromptus.conformance.invalid import INVALID
from libpromptus.conformance.runner import Verifier, run
from libpromptus.conformance.suite import MANIFEST, MIN_PSNR_DB, manifest_text
from libpromptus.conformance.valid import VALID

from libpromptus.process.prompts import frame_conditioning

SUITE = suite_dir()
VALID_STREAMS = sorted((SUITE / "valid").glob("*.pmt"))
INVALID_STREAMS = sorted((SUITE / "invalid").glob("*.pmt"))
NAME = re.compile(r"[A-Z0-9]+_[A-Z]_[0-9]+\Z")
TIER2_PASS = re.compile(r"PASS (?P<name>\S+) tier1 tier2 \(psnr (?P<psnr>inf|\d+\.\d\d) dB\)\Z")


def assert_tier2_pass(line: str, name: str) -> None:
    """`line` is the runner's pass at both tiers for `name`, by md5 (inf dB) or by PSNR."""
    match = TIER2_PASS.match(line)
    assert match and match["name"] == name, line
    assert float(match["psnr"]) >= MIN_PSNR_DB, line


def cli(*args: str, module: str = "libpromptus.conformance") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True,
                          timeout=300, check=False)


@pytest.fixture(scope="module")
def one_thread():
    """torch on one CPU thread while this module runs (the reference frames' setting)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def report(one_thread) -> dict[str, str]:
    """The runner's line for every stream of the installed suite, by stream name, and its summary."""
    lines: list[str] = []
    failed = run([*VALID_STREAMS, *INVALID_STREAMS], Verifier(), lines.append)
    assert failed == 0, "\n".join(line for line in lines if line.startswith("FAIL"))
    return {line.split()[1]: line for line in lines[:-1]} | {"summary": lines[-1]}


def copy_stream(name: str, folder: Path) -> Path:
    """Copy a stream of the suite and the files beside it into `folder`; return the copy's .pmt."""
    for path in SUITE.rglob(f"{name}.*"):
        shutil.copy(path, folder / path.name)
    return folder / f"{name}.pmt"


# ---------------------------------------------------------------- the streams


def test_the_suite_has_every_stream_of_the_catalogue():
    assert [p.stem for p in VALID_STREAMS] == sorted(case.name for case in VALID)
    assert [p.stem for p in INVALID_STREAMS] == sorted(case.name for case in INVALID)
    assert len(VALID_STREAMS) == 49 and len(INVALID_STREAMS) == 157
    names = [p.stem for p in (*VALID_STREAMS, *INVALID_STREAMS)]
    assert len(set(names)) == len(names)
    assert all(NAME.match(name) for name in names), [n for n in names if not NAME.match(n)]
    files = {p.relative_to(SUITE).as_posix() for p in SUITE.rglob("*") if p.is_file()}
    expected = {MANIFEST} | {f"valid/{p.stem}{ext}" for p in VALID_STREAMS for ext in (".pmt", ".json", ".rgb")} \
        | {f"invalid/{p.stem}{ext}" for p in INVALID_STREAMS for ext in (".pmt", ".res")}
    assert files == expected


def test_the_suite_is_small():
    size = sum(p.stat().st_size for p in SUITE.rglob("*") if p.is_file())
    assert size < 3_000_000, size


def test_manifest_lists_every_file_with_its_sha256():
    text = (SUITE / MANIFEST).read_text()
    assert text == manifest_text(SUITE)
    listed = {}
    for line in text.splitlines():
        digest, path = line.split("  ")
        listed[path] = digest
    files = [p for p in SUITE.rglob("*") if p.is_file() and p.name != MANIFEST]
    assert len(listed) == len(files) == 3 * 49 + 2 * 157
    for path in files:
        assert listed[path.relative_to(SUITE).as_posix()] == hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("stream", INVALID_STREAMS, ids=lambda p: p.stem)
def test_every_error_points_at_the_start_of_its_unit(stream):
    """The offset an error reports is where the failing unit (or stream signature) begins in
    the file, also for faults found deep inside a payload (a leb128 in coded symbols)."""
    end = 0
    with pytest.raises(InvalidDataError) as caught:
        for unit in read_units(stream):
            end = unit.offset + unit.size
    assert caught.value.offset in (end, end + len(SIGNATURE) + 2)


@pytest.mark.parametrize("stream", INVALID_STREAMS, ids=lambda p: p.stem)
def test_every_res_names_what_the_reader_reports(stream):
    code = stream.with_suffix(".res").read_text().splitlines()[0]
    with pytest.raises(InvalidDataError) as caught:
        read_streams(stream)
    assert caught.value.code == code


def test_invalid_streams_cover_every_error_code():
    codes = {p.with_suffix(".res").read_text().splitlines()[0] for p in INVALID_STREAMS}
    assert codes == set(ERROR_CODES)


def _coded_block_models(payload: bytes, counts: tuple[int, ...], start: int) -> list[int]:
    """model_type of consecutive coded_symbols() blocks of a payload."""
    from libpromptus.bitstream.entropy import decode_symbols

    models = []
    for count in counts:
        models.append(payload[start])
        _, start = decode_symbols(payload, start, count)
    return models


def test_valid_streams_cover_every_unit_field_and_path():
    unit_types, codecs, ranks, models, predictions, minors = set(), set(), set(), set(), set(), set()
    keyframe_codings = set()
    intervals, padded, concatenated, no_index, unknown_count = set(), False, False, False, False
    for path in VALID_STREAMS:
        data = path.read_bytes()
        streams = read_streams(path)
        concatenated |= len(streams) > 1
        minors.add(data[len(SIGNATURE) + 1])
        for stream in streams:
            header = stream.header
            predictions.add(header.prediction_type)
            padded |= header.width % header.size_multiple != 0 and header.height % header.size_multiple != 0
            no_index |= stream.index is None and stream.end.index_offset == 0
            unknown_count |= header.frame_count == 0
            for scene in stream.scenes:
                frames = [k.unit.frame_index for k in scene.keyframes]
                intervals |= {b - a for a, b in itertools.pairwise(frames)}
        for item in read_units(path):
            unit = item.unit
            unit_types.add(item.unit_type)
            if isinstance(unit, SceneStart):
                codecs.add((unit.latent_codec, unit.coding))
            if isinstance(unit, Keyframe):
                ranks.add(unit.rank)
                keyframe_codings.add(unit.coding)
                if unit.coding == Coding.ENTROPY:
                    framed = data[item.offset:item.offset + item.size]
                    payload = framed[1 + len(_leb128_prefix(framed[1:])):-4]
                    models.update(_coded_block_models(payload, (unit.u.size, unit.v.size), 16))
    assert unit_types == {1, 2, 3, 4, 5, 6, 7, 8, 127}
    assert codecs == {(c, k) for c in LatentCodec for k in (Coding.RAW, Coding.ENTROPY)}
    assert keyframe_codings == set(Coding)
    assert {1, 77} <= ranks and max(ranks) == 77
    assert models == {0, 1, 2}                    # STORED, LAPLACE and GAUSSIAN factor blocks
    assert predictions == set(PredictionType)
    assert minors == {0, 1, 2, 3}                 # 1.0, 1.1 (LAYERED), 1.2 (DCT8) and a later version
    assert {1, 256} <= intervals and len(intervals) >= 6
    assert padded and concatenated and no_index and unknown_count


def _leb128_prefix(data: bytes) -> bytes:
    """The leb128() bytes at the start of `data`."""
    end = next(i for i, byte in enumerate(data) if not byte & 0x80)
    return data[:end + 1]


def test_canonical_composition_sums_in_order_without_fusing():
    u = np.array([[2.0 ** 24, 1.0, -(2.0 ** 24)]], dtype=np.float32)
    v = np.ones((3, 1), dtype=np.float32)
    assert compose(u, v)[0, 0] == 0.0             # (2^24 + 1) rounds to 2^24 before the subtraction
    u = np.array([[1.0, 2.0 ** -24, 2.0 ** -24]], dtype=np.float32)
    assert compose(u, v)[0, 0] == np.float32(1.0) / np.float32(np.sqrt(3))


@pytest.mark.parametrize("stream", VALID_STREAMS, ids=lambda p: p.stem)
def test_canonical_conditioning_is_the_decoders_up_to_rounding(stream):
    streams = read_streams(stream)
    canonical = [c for s in streams for c in stream_conditioning(s)]
    decoded = [c for _, c in frame_conditioning(streams)]
    assert len(canonical) == len(decoded) == sum(s.frame_count for s in streams)
    for a, b in zip(canonical, decoded):
        assert a.dtype == b.dtype == np.float32 and a.shape == b.shape == (77, 1024)
        assert float(np.abs(a - b).max()) <= 2e-6 * max(1.0, float(np.abs(b).max()))
    expected = json.loads(stream.with_suffix(".json").read_text())["tier1"]["md5"]
    assert tier1_md5(streams) == expected


# ---------------------------------------------------------------- the runner


def test_runner_passes_every_valid_stream_at_both_tiers(report):
    assert report["summary"] == "206 passed, 0 failed"
    for path in VALID_STREAMS:
        assert_tier2_pass(report[path.stem], path.stem)


def test_runner_reports_the_expected_code_of_every_invalid_stream(report):
    for path in INVALID_STREAMS:
        code = path.with_suffix(".res").read_text().splitlines()[0]
        assert report[path.stem] == f"PASS {path.stem} {code}"


def test_runner_skips_tier2_for_another_model():
    verdict = Verifier(model="sd-turbo").check(SUITE / "valid/RANK_A_1.pmt")
    assert verdict.line == "PASS RANK_A_1 tier1 (tier2 skipped: the reference frames are for model tiny, not sd-turbo)"


def test_runner_fails_on_altered_expectations(tmp_path, one_thread):
    valid = copy_stream("RANK_A_1", tmp_path)
    expected = json.loads(valid.with_suffix(".json").read_text())
    expected["tier1"]["md5"] = "0" * 32
    valid.with_suffix(".json").write_text(json.dumps(expected))
    invalid = copy_stream("CRC_A_1", tmp_path)
    invalid.with_suffix(".res").write_text("bad_field\n")
    lines: list[str] = []
    assert run([valid, invalid], Verifier(), lines.append) == 2
    tier1 = expected["tier1"]
    assert lines[0] == f"FAIL RANK_A_1 tier1: md5 {tier1_md5(read_streams(valid))}, expected {tier1['md5']}"
    assert lines[1].startswith("FAIL CRC_A_1 reported crc_mismatch: ") and lines[1].endswith(", expected bad_field")
    assert lines[2] == "0 passed, 2 failed"


def test_tier2_falls_back_to_psnr_against_the_reference(tmp_path, one_thread):
    stream = copy_stream("BASIC_A_1", tmp_path)
    # this machine's own decode as the reference, so that the PSNR below is exact here
    reference = bytearray(FrameDecoder("tiny", engine="torch", device="cpu").decode(read_streams(stream)).tobytes())
    expected = json.loads(stream.with_suffix(".json").read_text())
    expected["tier2"]["md5"] = "f" * 32          # the frames no longer match exactly
    stream.with_suffix(".json").write_text(json.dumps(expected))
    reference[100] ^= 1                           # one sample one step away: 100.7 dB
    stream.with_suffix(".rgb").write_bytes(reference)
    verdict = Verifier().check(stream)
    samples = len(reference)
    assert verdict.line == f"PASS BASIC_A_1 tier1 tier2 (psnr {10 * np.log10(255 ** 2 * samples):.2f} dB)"
    noisy = np.frombuffer(bytes(reference), np.uint8).astype(np.int16)
    noisy[::2] = np.clip(noisy[::2] + 8, 0, 255)  # well below the threshold
    stream.with_suffix(".rgb").write_bytes(noisy.astype(np.uint8).tobytes())
    verdict = Verifier().check(stream)
    assert not verdict.passed
    assert re.fullmatch(rf"FAIL BASIC_A_1 tier2: psnr \d+\.\d\d dB, below {MIN_PSNR_DB:g} dB", verdict.line)


def test_runner_refuses_a_stream_without_expectations(tmp_path):
    stream = copy_stream("RANK_A_1", tmp_path)
    stream.with_suffix(".json").unlink()
    verdict = Verifier().check(stream)
    assert verdict.line == f"FAIL RANK_A_1 {stream}: no conformance expectation beside it (RANK_A_1.json or RANK_A_1.res)"


def test_runner_command_exits_nonzero_on_failure(tmp_path):
    copy_stream("CRC_A_1", tmp_path).with_suffix(".res").write_text("truncated\n")
    copy_stream("SIGNATURE_A_1", tmp_path)
    proc = cli(tmp_path)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("FAIL CRC_A_1 reported crc_mismatch")
    assert lines[1:] == ["PASS SIGNATURE_A_1 bad_signature", "1 passed, 1 failed"]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("args, code, message", [
    (["--bogus"], 2, "libpromptus.conformance: error: unrecognized arguments: --bogus"),
    (["/no/such/suite"], 1, "libpromptus.conformance: error: /no/such/suite: no such file or directory"),
    (["--threads", "0"], 1, "libpromptus.conformance: error: --threads 0: must be at least 1"),
])
def test_runner_bad_arguments_are_one_line(args, code, message):
    proc = cli(*args)
    assert proc.returncode == code
    assert proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1 and proc.stderr.startswith(message), proc.stderr


def test_runner_refuses_a_folder_without_streams(tmp_path):
    proc = cli(tmp_path)
    assert proc.returncode == 1 and proc.stderr == f"libpromptus.conformance: error: no .pmt streams in {tmp_path}\n"


# ---------------------------------------------------------------- pmtdec --verify


def test_pmtdec_verify_a_stream_and_a_folder(tmp_path):
    proc = cli("-i", SUITE / "valid/RANK_A_1.pmt", "--verify", module="libpromptus.cli.pmtdec")
    assert proc.returncode == 0, proc.stderr
    verdict, summary = proc.stdout.splitlines()
    assert_tier2_pass(verdict, "RANK_A_1")
    assert summary == "1 passed, 0 failed"
    copy_stream("KEYFRAME_B_1", tmp_path).with_suffix(".res").write_text("rank_mismatch\n")
    proc = cli("-i", tmp_path, "--verify", module="libpromptus.cli.pmtdec")
    assert proc.returncode == 1
    assert proc.stdout.splitlines()[-1] == "0 passed, 1 failed"
    assert proc.stdout.startswith("FAIL KEYFRAME_B_1 reported frame_order: ")


@pytest.mark.parametrize("args, message", [
    (["-i", "IN.pmt", "--verify", "out.mkv"],
     "pmtdec: error: --verify writes nothing: give no OUTPUT and no --dump-prompts"),
    (["-i", "-", "--verify"], "pmtdec: error: --verify needs a .pmt file or a folder, not standard input"),
    (["-i", "IN.pmt", "--verify", "--conceal"],
     "pmtdec: error: --verify checks how damage is reported, so it does not go with --conceal"),
    (["-i", "missing.pmt", "--verify"], "pmtdec: error: missing.pmt: no such file or directory"),
])
def test_pmtdec_verify_bad_arguments(args, message):
    proc = cli(*args, module="libpromptus.cli.pmtdec")
    assert proc.returncode == 1 and proc.stderr == message + "\n" and proc.stdout == ""


# ---------------------------------------------------------------- regeneration


def test_regeneration_is_byte_identical(tmp_path):
    """Every stream, `.res` and tier-1 expectation byte for byte; the tier-2 reference frames
    (decoded on one CPU thread in fp32) within Annex B's threshold, since fp32 kernels
    differ between processors, and each expectation's tier-2 md5 is its regenerated frames'."""
    assert generate(tmp_path) == (49, 157)
    made = {p.relative_to(tmp_path).as_posix(): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    committed = {p.relative_to(SUITE).as_posix(): p.read_bytes() for p in SUITE.rglob("*") if p.is_file()}
    assert made.keys() == committed.keys()
    exact = [name for name in made if name.endswith((".pmt", ".res"))]
    assert len(exact) == 49 + 2 * 157 and [n for n in exact if made[n] != committed[n]] == []
    listed = {path: digest for digest, path in (line.split("  ") for line in made["SHA256SUMS"].decode().splitlines())}
    assert listed == {n: hashlib.sha256(data).hexdigest() for n, data in made.items() if n != "SHA256SUMS"}
    for name in (n for n in made if n.endswith(".json")):
        regenerated, expected = json.loads(made[name]), json.loads(committed[name])
        frames = made[name.removesuffix(".json") + ".rgb"]
        assert regenerated["tier2"].pop("md5") == hashlib.md5(frames).hexdigest()
        expected["tier2"].pop("md5")
        assert regenerated == expected, name
        reference = read_reference(committed[name.removesuffix(".json") + ".rgb"], expected["width"],
                                   expected["height"])
        assert psnr(read_reference(frames, expected["width"], expected["height"]), reference) >= MIN_PSNR_DB, name

