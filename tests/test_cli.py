"""pmtenc, pmtdec and pmtprobe as a user runs them: exit codes, one-line errors, outputs."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    RICH_SPEC,
    SMALL_SPEC,
    SceneSpec,
    StreamSpec,
    build_stream,
    write_prompt_dir,
)
from libpromptus.bitstream import Keyframe, SceneStart, read_streams, read_units
from libpromptus.bitstream.framing import PREFIX_SIZE

from libpromptus.process.prompts import frame_conditioning


def cli(prog: str, *args, stdin: bytes | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", f"libpromptus.cli.{prog}", *map(str, args)], input=stdin,
                          capture_output=True, cwd=cwd, timeout=300)


def assert_one_line_error(proc: subprocess.CompletedProcess, prog: str, *, code: int = 1,
                          contains: str = "") -> str:
    stderr = proc.stderr.decode()
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"{prog}: error: "), stderr
    assert contains in lines[0], stderr
    assert proc.stdout == b""
    return lines[0]


def bad_inputs(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Damaged `.pmt` inputs, each with a fragment its error message must hold."""
    data = build_stream(SMALL_SPEC).data
    flipped = bytearray(data)
    flipped[130] ^= 0x04                                   # inside the scene start unit
    rng = np.random.default_rng(7)
    files = {
        "random": (rng.integers(0, 256, 200, dtype=np.uint8).tobytes(), "invalid data: bad_signature"),
        "empty": (b"", "invalid data: truncated"),
        "truncated": (data[: len(data) // 2], "invalid data: truncated"),
        "bitflip": (bytes(flipped), "invalid data: crc_mismatch"),
    }
    inputs = {}
    for name, (content, message) in files.items():
        path = tmp_path / f"{name}.pmt"
        path.write_bytes(content)
        inputs[name] = (path, message)
    inputs["missing"] = (tmp_path / "missing.pmt", "No such file or directory")
    return inputs


BAD = ["random", "empty", "truncated", "bitflip", "missing"]


@pytest.fixture
def rich_file(tmp_path) -> Path:
    path = tmp_path / "rich.pmt"
    path.write_bytes(build_stream(RICH_SPEC).data)
    return path


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("kind", BAD)
def test_pmtprobe_bad_input(kind, tmp_path):
    path, message = bad_inputs(tmp_path)[kind]
    assert_one_line_error(cli("pmtprobe", path), "pmtprobe", contains=message)


@pytest.mark.parametrize("kind", BAD)
def test_pmtdec_bad_input_leaves_no_file(kind, tmp_path):
    path, message = bad_inputs(tmp_path)[kind]
    out = tmp_path / "out"
    out.mkdir()
    assert_one_line_error(cli("pmtdec", "-i", path, "--dump-prompts", out / "p.npz"), "pmtdec", contains=message)
    assert list(out.iterdir()) == []


def _bad_prompt_dirs(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    good = write_prompt_dir(tmp_path / "good", frames=(0, 2))
    frame = (good / "frame_00000.prompt").read_bytes()
    dirs = {}

    def damaged(name: str, content: bytes, message: str, file: str = "frame_00000.prompt") -> None:
        directory = write_prompt_dir(tmp_path / name, frames=(0, 2))
        (directory / file).write_bytes(content)
        dirs[name] = (directory, message)

    rng = np.random.default_rng(3)
    damaged("random", rng.integers(0, 256, 500, dtype=np.uint8).tobytes(), "frame_00000.prompt: ")
    damaged("empty", b"", "frame_00000.prompt: ")
    damaged("truncated", frame[: len(frame) // 2], "frame_00000.prompt: ")
    damaged("bitflip", bytes([frame[0] ^ 0x01]) + frame[1:], "frame_00000.prompt: ")
    damaged("random-init", rng.integers(0, 256, 300, dtype=np.uint8).tobytes(), "init.pth: ", "init.pth")
    not_dir = tmp_path / "file.bin"
    not_dir.write_bytes(rng.integers(0, 256, 100, dtype=np.uint8).tobytes())
    dirs["not-a-directory"] = (not_dir, "not a directory")
    dirs["missing"] = (tmp_path / "missing", "not a directory")
    dirs["no-keyframes"] = ((tmp_path / "empty-dir"), "no frame_*.prompt files")
    (tmp_path / "empty-dir").mkdir()
    return dirs


@pytest.mark.parametrize("kind", ["random", "empty", "truncated", "bitflip", "random-init", "not-a-directory",
                                  "missing", "no-keyframes"])
def test_pmtenc_bad_input_leaves_no_file(kind, tmp_path):
    directory, message = _bad_prompt_dirs(tmp_path)[kind]
    out = tmp_path / "out"
    out.mkdir()
    assert_one_line_error(cli("pmtenc", "-f", "promptus-dir", "-i", directory, out / "x.pmt"), "pmtenc",
                          contains=message)
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("prog, args, message", [
    ("pmtprobe", [], "the following arguments are required: FILE (see pmtprobe -h)"),
    ("pmtprobe", ["-of", "xml", "x.pmt"], "argument -of/--output-format: invalid choice"),
    ("pmtdec", ["x.pmt"], "the following arguments are required: -i"),
    ("pmtenc", ["-f", "mp4", "-i", "x", "y.pmt"], "argument -f: invalid choice"),
])
def test_usage_errors_are_one_line(prog, args, message):
    assert_one_line_error(cli(prog, *args), prog, code=2, contains=message)


def test_pmtdec_needs_dump_prompts(rich_file):
    assert_one_line_error(cli("pmtdec", "-i", rich_file), "pmtdec", contains="--dump-prompts")


def test_pmtenc_bad_rate(prompt_dir, tmp_path):
    for rate in ("abc", "0", "-30", "1/0"):
        assert_one_line_error(cli("pmtenc", "-f", "promptus-dir", "-i", prompt_dir, "-r", rate, tmp_path / "x.pmt"),
                              "pmtenc", contains=f"-r {rate}: ")
    assert not (tmp_path / "x.pmt").exists()


# ---------------------------------------------------------------- pmtenc


def test_pmtenc_overwrite_rules(prompt_dir, tmp_path):
    out = tmp_path / "x.pmt"
    out.write_bytes(b"precious")
    for flags in ([], ["-n"]):
        assert_one_line_error(cli("pmtenc", "-f", "promptus-dir", "-i", prompt_dir, *flags, out), "pmtenc",
                              contains="already exists (use -y to overwrite)")
        assert out.read_bytes() == b"precious"
    proc = cli("pmtenc", "-f", "promptus-dir", "-i", prompt_dir, "-y", out)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b""
    [stream] = read_streams(out)
    assert stream.size == out.stat().st_size
    assert [k.unit.frame_index for s in stream.scenes for k in s.keyframes] == [0, 3, 5]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prompts", "x.pmt"]     # no temporary file left
    assert (out.stat().st_mode & 0o777) == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_pmtenc_to_stdout_and_options(prompt_dir, tmp_path):
    proc = cli("pmtenc", "-f", "promptus-dir", "-i", prompt_dir, "-r", "30000/1001", "--latent-codec", "q8",
               "--coding", "raw", "-loglevel", "error", "-")
    assert proc.returncode == 0 and proc.stderr == b""
    [stream] = read_streams(io.BytesIO(proc.stdout))
    assert stream.header.fps == "30000/1001"
    assert (stream.header.width, stream.header.height) == (64, 64)
    assert stream.scenes[0].start.unit.latent_codec.name == "Q8"
    assert all(k.unit.coding.name == "RAW" for k in stream.scenes[0].keyframes)
    assert dict(stream.metadata)["settings"] == "latent_codec=q8 coding=raw"


# ---------------------------------------------------------------- pmtdec


def test_pmtdec_dump_and_stdin(rich_file, tmp_path):
    out = tmp_path / "p.npz"
    proc = cli("pmtdec", "-i", "-", "--dump-prompts", out, stdin=rich_file.read_bytes())
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.decode().splitlines() == [f"pmtdec: wrote the conditioning of 9 frames to {out}"]
    streams = read_streams(rich_file)
    with np.load(out) as dump:
        assert dump["prompts"].shape == (9, 5, 7)
        for frame, c in frame_conditioning(streams):
            np.testing.assert_array_equal(dump["prompts"][frame], c)
    # Refuses to overwrite without -y, overwrites with -y.
    assert_one_line_error(cli("pmtdec", "-i", rich_file, "--dump-prompts", out), "pmtdec", contains="already exists")
    assert cli("pmtdec", "-y", "-i", rich_file, "--dump-prompts", out).returncode == 0
    # To standard output (a pipe: the zip is written without seeking).
    proc = cli("pmtdec", "-i", rich_file, "--dump-prompts", "-", "-loglevel", "quiet")
    assert proc.returncode == 0 and proc.stderr == b""
    with np.load(io.BytesIO(proc.stdout)) as dump:
        assert dump["frame_index"].tolist() == list(range(9))


# ---------------------------------------------------------------- pmtprobe


def test_pmtprobe_json(rich_file):
    proc = cli("pmtprobe", "-of", "json", rich_file)
    assert proc.returncode == 0 and proc.stderr == b""
    report = json.loads(proc.stdout)
    size = rich_file.stat().st_size
    items = list(read_units(rich_file))
    scenes = [i for i in items if isinstance(i.unit, SceneStart)]
    keyframes = [i for i in items if isinstance(i.unit, Keyframe)]
    assert report["format"] == {
        "version": "1.0", "streams": 1, "width": 16, "height": 16, "coded_width": 16, "coded_height": 16,
        "fps": "30/1", "frame_count": 9, "duration_s": 0.3, "size_bytes": size,
        "bitrate_bps": round(Fraction(size * 8 * 30, 9)),
    }
    assert report["model"] == {"name": "tiny-test", "hash": bytes(range(32)).hex()}
    assert report["scenes"] == [
        {"index": 0, "stream": 0, "first_frame": 0, "last_frame": 3, "scene_cut": False, "latent_codec": "q8",
         "coding": "entropy", "bytes": scenes[0].size},
        {"index": 1, "stream": 0, "first_frame": 4, "last_frame": 8, "scene_cut": True, "latent_codec": "f16",
         "coding": "raw", "bytes": scenes[1].size},
    ]
    assert report["keyframes"] == [
        {"frame_index": f, "scene": s, "rank": r, "coding": c, "bytes": k.size}
        for (f, s, r, c), k in zip([(0, 0, 2, "raw"), (2, 0, 2, "entropy"), (3, 0, 2, "raw"),
                                    (4, 1, 3, "entropy"), (8, 1, 3, "entropy")], keyframes)
    ]
    assert report["metadata"] == {"encoder": "libpromptus tests", "note": "Grüße ✓"}
    assert "units" not in report


def test_pmtprobe_show_units_of_concatenated_streams(tmp_path):
    data = build_stream(RICH_SPEC).data + build_stream(SMALL_SPEC).data
    path = tmp_path / "two.pmt"
    path.write_bytes(data)
    proc = cli("pmtprobe", "-of", "json", "--show-units", path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    units = report["units"]
    assert report["format"]["streams"] == 2 and report["format"]["frame_count"] == 12
    assert sum(u["size"] for u in units) == report["format"]["size_bytes"] - 2 * PREFIX_SIZE == len(data) - 20
    assert [u["type"] for u in units[:3]] == ["sequence_header", "unknown_100", "metadata"]
    assert [u["stream"] for u in units].count(1) == 7
    assert [(u["offset"], u["size"]) for u in units] == [(i.offset, i.size) for i in read_units(path)]
    assert [k["frame_index"] for k in report["keyframes"]] == [0, 2, 3, 4, 8, 9, 11]
    assert [(s["first_frame"], s["stream"]) for s in report["scenes"]] == [(0, 0), (4, 0), (9, 1)]


def test_pmtprobe_stdin_and_text(rich_file):
    proc = cli("pmtprobe", "--show-units", "-", stdin=rich_file.read_bytes())
    assert proc.returncode == 0 and proc.stderr == b""
    lines = proc.stdout.decode().splitlines()
    size = rich_file.stat().st_size
    assert lines[0] == f"Promptus stream v1.0, 1 stream(s): model tiny-test (hash {bytes(range(8)).hex()}…)"
    assert lines[1] == (f"  16x16 (coded 16x16), 30/1 fps, 9 frames, 0.300 s, {size} bytes, "
                        f"{round(Fraction(size * 80, 3))} bit/s")
    assert "  scene 1: frames 4..8 (cut), latent f16/raw, " in "\n".join(lines)
    assert lines[-1].startswith("  unit @") and lines[-1].endswith(", 18 bytes")
    assert sum(1 for line in lines if line.startswith("  unit @")) == 13


def test_pmtprobe_broken_pipe_is_quiet(tmp_path):
    """`pmtprobe ... | head -c 1`: the reader goes away; no error line, no traceback."""
    path = tmp_path / "long.pmt"
    path.write_bytes(build_stream(StreamSpec(scenes=(SceneSpec(gaps=(1,) * 3000, rank=1),))).data)
    proc = subprocess.run(f'"{sys.executable}" -m libpromptus.cli.pmtprobe -of json --show-units "{path}" '
                          f'| head -c 1', shell=True, capture_output=True, timeout=120)
    assert proc.stdout == b"{"
    assert proc.stderr == b"", proc.stderr


def test_only_a_broken_standard_output_is_quiet(capfd):
    """`| head` closing stdout ends a command quietly; a broken pipe naming anything else is an error line."""
    from libpromptus.cli.common import run

    def broken(filename):
        def main(argv):
            raise BrokenPipeError(32, "Broken pipe", filename) if filename else BrokenPipeError(32, "Broken pipe")
        return main

    stdout = os.dup(1)
    try:
        assert run("prog", broken(None), []) == 1
        assert run("prog", broken("-"), []) == 1
    finally:
        os.dup2(stdout, 1)
        os.close(stdout)
    assert capfd.readouterr().err == ""
    assert run("prog", broken("out.pmt"), []) == 1
    assert capfd.readouterr().err == "prog: error: out.pmt: Broken pipe\n"
