"""pmtenc as a user runs it (a subprocess): rate control, errors, --stats, -progress and
the input options.

Every run pays a few seconds of imports, so a module fixture starts them all at once
(two at a time, on the tiny model) and each test checks its own result. Clips are the
procedural sample clip (libpromptus.io.samples) at 32x32..64x64.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from decoding_helpers import empty_model_places, sd_turbo_stream
from libpromptus.bitstream import Keyframe, SceneStart, read_streams, read_units

from libpromptus.io.samples import write_sample

PROGRESS_KEYS = ["frame", "fps", "out_time_us", "out_time", "speed", "progress"]
RATE = 30


def command(module: str, *args, cwd: Path, env: dict | None = None, timeout: float = 300):
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    environment = {k: v for k, v in environment.items() if v is not None}
    return subprocess.run([sys.executable, "-m", f"libpromptus.cli.{module}", *map(str, args)], capture_output=True,
                          cwd=cwd, env=environment, timeout=timeout, check=False)


def pmtenc(*args, cwd: Path, env: dict | None = None):
    return command("pmtenc", *args, cwd=cwd, env=env)


def probe(path: Path, *extra) -> dict:
    proc = command("pmtprobe", "-of", "json", *extra, path.name, cwd=path.parent)
    assert proc.returncode == 0, proc.stderr.decode()
    return json.loads(proc.stdout)


def succeeded(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stderr.decode()
    assert "Traceback" not in proc.stderr.decode()
    return proc


def error_line(proc: subprocess.CompletedProcess, prog: str = "pmtenc") -> str:
    """The one and only stderr line `PROG: error: ...` of a failed run (no traceback)."""
    stderr = proc.stderr.decode()
    assert proc.returncode != 0, stderr
    assert "Traceback" not in stderr, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"{prog}: error: "), stderr
    return lines[0]


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


class Runs:
    """Named jobs on a small thread pool, each in its own directory; `result(name)` waits."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._pool = ThreadPoolExecutor(max_workers=2)
        self._jobs: dict[str, Future] = {}

    def submit(self, name: str, inputs: dict[str, Path], job) -> None:
        directory = self.workdir / name
        directory.mkdir()
        for link, source in inputs.items():
            (directory / link).write_bytes(source.read_bytes())
        self._jobs[name] = self._pool.submit(job, directory)

    def result(self, name: str):
        return self._jobs[name].result()

    def directory(self, name: str) -> Path:
        return self.workdir / name

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("pmtenc")
    clips = workdir / "clips"
    clips.mkdir()
    write_sample(str(clips / "long.y4m"), 90, 64, 64)         # 3 s at 30 fps, a cut at frame 60
    write_sample(str(clips / "small.y4m"), 24, 32, 32)
    write_sample(str(clips / "cut.y4m"), 24, 48, 48)          # a cut at frame 16 (too faint to detect at 32x32)
    write_sample(str(clips / "wide.y4m"), 60, 64, 48)         # a cut at frame 40
    (clips / "notes.txt").write_text("this is not a video\n" * 20)
    (clips / "sd.pmt").write_bytes(sd_turbo_stream().data)
    long, small, wide = {"clip.y4m": clips / "long.y4m"}, {"clip.y4m": clips / "small.y4m"}, \
        {"clip.y4m": clips / "wide.y4m"}
    runs = Runs(workdir)
    # The longest run first.
    runs.submit("bitrate", long, lambda d: pmtenc("--model", "tiny", "-i", "clip.y4m", "-b:v", "100k", "--decisions",
                                                  "formula", "--iterations", 1, "out.pmt", cwd=d))

    def missing_model(d: Path):
        env = empty_model_places(d / "env")
        return (pmtenc("-i", "clip.y4m", "out.pmt", cwd=d, env=env),
                command("pmtdec", "-i", "sd.pmt", "out.y4m", cwd=d, env=env))
    runs.submit("missing-model", {**small, "sd.pmt": clips / "sd.pmt"}, missing_model)
    runs.submit("stats", {"clip.y4m": clips / "cut.y4m"}, lambda d: pmtenc("--model", "tiny", "-i", "clip.y4m", "--rank", 1, "-g", 4,
                                                 "--iterations", 1, "--stats", "stats.jsonl", "out.pmt", cwd=d))
    runs.submit("progress", small, lambda d: pmtenc("--model", "tiny", "-i", "clip.y4m", "--rank", 1, "-g", 5,
                                                    "--iterations", 0, "--perceptual", "none", "-progress", "pipe:2",
                                                    "out.pmt", cwd=d))
    runs.submit("range", wide, lambda d: pmtenc("--model", "tiny", "-i", "clip.y4m", "-ss", "0.5", "-t", "0.4",
                                                "--rank", 1, "-g", 4, "--iterations", 0, "--perceptual", "none",
                                                "out.pmt", cwd=d))
    runs.submit("frames-size", wide, lambda d: pmtenc("--model", "tiny", "-i", "clip.y4m", "-frames:v", 5, "-s",
                                                      "32x32", "--fit", "pad", "--rank", 1, "-g", 4, "--iterations", 0,
                                                      "--perceptual", "none", "out.pmt", cwd=d))
    for name, arguments, inputs in BAD_INPUTS:
        runs.submit(f"bad-{name}", {k: clips / v for k, v in inputs.items()},
                    lambda d, arguments=arguments: pmtenc("--model", "tiny", *arguments, cwd=d))

    def existing(d: Path):
        (d / "out.pmt").write_bytes(b"an existing file")
        return pmtenc("--model", "tiny", "-i", "clip.y4m", "--iterations", 0, "out.pmt", cwd=d)
    runs.submit("existing", small, existing)
    yield runs
    runs.close()


BAD_INPUTS = [
    # name, arguments, input files copied into the run's directory
    ("missing-input", ["-i", "nowhere.y4m", "out.pmt"], {}),
    ("text-input", ["-i", "notes.txt", "out.pmt"], {"notes.txt": "notes.txt"}),
    ("size-0x10", ["-i", "clip.y4m", "-s", "0x10", "out.pmt"], {"clip.y4m": "small.y4m"}),
    ("rank-0", ["-i", "clip.y4m", "--rank", "0", "out.pmt"], {"clip.y4m": "small.y4m"}),
    ("bitrate-abc", ["-i", "clip.y4m", "-b:v", "abc", "out.pmt"], {"clip.y4m": "small.y4m"}),
    ("patience-negative", ["-i", "clip.y4m", "--patience", "-1", "out.pmt"], {"clip.y4m": "small.y4m"}),
]


# ---------------------------------------------------------------- rate control


def test_bitrate_target_is_met_and_reported(runs):
    """64x64, 90 frames, -b:v 100k: a 100k budget is 37.5 kB over 3 s, room for several
    rank-4 keyframes of about 4.4 kB each (one keyframe is 12 kbit/s of the rate)."""
    proc = succeeded(runs.result("bitrate"))
    directory = runs.directory("bitrate")
    output = directory / "out.pmt"
    report = probe(output)
    achieved = report["format"]["bitrate_bps"]
    assert report["format"]["frame_count"] == 90
    assert len(report["keyframes"]) >= 4
    assert abs(achieved / 100_000 - 1) <= 0.05, (achieved, [k["frame_index"] for k in report["keyframes"]])
    last = proc.stderr.decode().splitlines()[-1]
    match = re.fullmatch(r"pmtenc: wrote out\.pmt: 90 frames, (\d+) bytes, ([\d.]+) kbit/s "
                         r"\(rank (\d+), keyframe interval (\d+)\), PSNR ([\d.]+) dB", last)
    assert match, last
    assert int(match.group(1)) == output.stat().st_size == report["format"]["size_bytes"]
    assert float(match.group(2)) == pytest.approx(achieved / 1000, abs=0.05)
    assert int(match.group(3)) == report["keyframes"][0]["rank"]
    assert 0 < float(match.group(5)) < 100
    assert names(directory) == ["clip.y4m", "out.pmt"]


# ---------------------------------------------------------------- errors


def test_sd_turbo_absent_is_one_line_like_pmtdec(runs):
    encoded, decoded = runs.result("missing-model")
    line = error_line(encoded)
    assert line.startswith("pmtenc: error: model sd-turbo not found"), line
    assert encoded.stdout == b""
    other = error_line(decoded, "pmtdec")
    assert line.removeprefix("pmtenc: ") == other.removeprefix("pmtdec: ")
    assert names(runs.directory("missing-model")) == ["clip.y4m", "env", "sd.pmt"]


def last_error_line(proc: subprocess.CompletedProcess, prog: str = "pmtenc") -> str:
    """A failed run's last stderr line, `PROG: error: ...` (non-zero exit, no traceback)."""
    stderr = proc.stderr.decode()
    assert proc.returncode != 0, stderr
    assert "Traceback" not in stderr, stderr
    lines = stderr.splitlines()
    assert lines and lines[-1].startswith(f"{prog}: error: "), stderr
    assert sum(line.startswith(f"{prog}: error: ") for line in lines) == 1, stderr
    return lines[-1]


BAD_IDS = [b[0] for b in BAD_INPUTS]
WHAT_THE_ERROR_NAMES = {"missing-input": "nowhere.y4m", "text-input": "notes.txt", "size-0x10": "-s 0x10",
                        "rank-0": "--rank 0", "bitrate-abc": "-b:v abc",
                        "patience-negative": "--patience -1 is out of range"}


@pytest.mark.parametrize("name, arguments, inputs", BAD_INPUTS, ids=BAD_IDS)
def test_bad_input_fails_with_an_error_line_and_leaves_nothing(runs, name, arguments, inputs):
    line = last_error_line(runs.result(f"bad-{name}"))
    assert WHAT_THE_ERROR_NAMES[name] in line, line
    assert names(runs.directory(f"bad-{name}")) == sorted(inputs)


@pytest.mark.parametrize("name, arguments, inputs", [
    b
    for b in BAD_INPUTS], ids=BAD_IDS)
def test_bad_input_is_exactly_one_line(runs, name, arguments, inputs):
    error_line(runs.result(f"bad-{name}"))


def test_an_existing_output_is_refused(runs):
    proc = runs.result("existing")
    line = error_line(proc)
    assert "out.pmt" in line and "already exists" in line, line
    directory = runs.directory("existing")
    assert (directory / "out.pmt").read_bytes() == b"an existing file"
    assert names(directory) == ["clip.y4m", "out.pmt"]


# ---------------------------------------------------------------- --stats


def test_stats_has_one_record_per_keyframe_and_accounts_for_the_file(runs):
    succeeded(runs.result("stats"))
    directory = runs.directory("stats")
    output = directory / "out.pmt"
    records = [json.loads(line) for line in (directory / "stats.jsonl").read_text().splitlines()]
    assert all(set(r) == {"keyframe", "frames", "scene", "iterations", "loss", "bytes", "psnr"} for r in records)
    (stream,) = read_streams(output)
    keyframes = [k.unit.frame_index for scene in stream.scenes for k in scene.keyframes]
    assert keyframes == [0, 4, 8, 12, 15, 16, 20, 23]             # -g 4, the sample's cut at 16
    assert [r["keyframe"] for r in records] == keyframes
    assert [r["scene"] for r in records] == [0] * 5 + [1] * 3
    assert [r["frames"] for r in records] == [[0, 0], [1, 4], [5, 8], [9, 12], [13, 15], [16, 16], [17, 20],
                                              [21, 23]]
    assert all(r["iterations"] == 1 and len(r["psnr"]) == r["frames"][1] - r["frames"][0] + 1 for r in records)
    assert all(np.isfinite(r["loss"]) for r in records)
    report = probe(output, "--show-units")
    units = report["units"]
    keyframe_sizes = [u["size"] for u in units if u["type"] == "keyframe"]
    assert keyframe_sizes == [r["bytes"] for r in records]
    assert [k["bytes"] for k in report["keyframes"]] == [r["bytes"] for r in records]
    others = sum(u["size"] for u in units if u["type"] != "keyframe")
    prefix = units[0]["offset"]                                   # signature and version bytes
    assert prefix + others + sum(r["bytes"] for r in records) == output.stat().st_size
    # the same split, unit by unit, from the reader
    read = list(read_units(output))
    assert [u.size for u in read if isinstance(u.unit, Keyframe)] == keyframe_sizes
    assert sum(isinstance(u.unit, SceneStart) for u in read) == 2


# ---------------------------------------------------------------- -progress


def _progress_blocks(stderr: str) -> list[dict[str, str]]:
    lines = [line for line in stderr.splitlines() if re.fullmatch(r"[a-z_]+=\S*", line)]
    blocks, current = [], []
    for line in lines:
        current.append(line)
        if line.startswith("progress="):
            blocks.append(current)
            current = []
    assert current == [], lines
    parsed = []
    for block in blocks:
        keys = [line.split("=", 1)[0] for line in block]
        assert keys == PROGRESS_KEYS, block
        parsed.append(dict(line.split("=", 1) for line in block))
    return parsed


def test_progress_blocks_end_with_progress_end(runs):
    proc = succeeded(runs.result("progress"))
    blocks = _progress_blocks(proc.stderr.decode())
    assert blocks, proc.stderr.decode()
    assert [b["progress"] for b in blocks] == ["continue"] * (len(blocks) - 1) + ["end"]
    frames = [int(b["frame"]) for b in blocks]
    assert frames == sorted(frames) and frames[-1] == 24
    assert proc.stderr.decode().splitlines()[-1].startswith("pmtenc: wrote out.pmt: 24 frames")


def test_progress_out_time_follows_the_frame_rate(runs):
    proc = succeeded(runs.result("progress"))
    end = _progress_blocks(proc.stderr.decode())[-1]
    assert int(end["out_time_us"]) == 24 * 1_000_000 // RATE
    assert end["out_time"] == "00:00:00.800000"


# ---------------------------------------------------------------- input options


def test_start_and_duration_reach_the_encoder(runs):
    succeeded(runs.result("range"))
    directory = runs.directory("range")
    report = probe(directory / "out.pmt")
    # -ss 0.5 -t 0.4 at 30 fps: frames 15..26 of the source
    assert report["format"]["frame_count"] == 12
    assert (report["format"]["width"], report["format"]["height"]) == (64, 48)
    assert [k["frame_index"] for k in report["keyframes"]] == [0, 4, 8, 11]
    # the first-frame latent is that of source frame 15, not of frame 0 or 14
    import torch

    from libpromptus.io.video_input import open_video
    from libpromptus.models import load_latent_encoder
    from libpromptus.process.quantization import scene_start

    with open_video(str(directory / "clip.y4m")) as reader:
        frames = list(reader.frames())
    encoder = load_latent_encoder("tiny")
    start = next(u.unit for u in read_units(directory / "out.pmt") if isinstance(u.unit, SceneStart))

    def codes(frame: np.ndarray) -> np.ndarray:
        """The DCT8 coefficients (pmtenc's default latent codec) of a frame's latent."""
        with torch.no_grad():
            latent = encoder.encode(torch.from_numpy(frame)[None])[0].numpy()
        return scene_start(0, latent, start.latent_codec, start.coding).latent

    assert np.array_equal(start.latent, codes(frames[15]))
    assert not np.array_equal(start.latent, codes(frames[14]))


def test_frames_size_and_fit_reach_the_encoder(runs):
    succeeded(runs.result("frames-size"))
    report = probe(runs.directory("frames-size") / "out.pmt")
    assert report["format"]["frame_count"] == 5
    assert (report["format"]["width"], report["format"]["height"]) == (32, 32)
    assert [k["frame_index"] for k in report["keyframes"]] == [0, 4]
