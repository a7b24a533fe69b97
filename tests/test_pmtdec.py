"""pmtdec as a user runs it (a subprocess): video outputs, frame ranges, progress, errors.

Every run that loads the model costs a few seconds of imports, so the runs are started
together by one module fixture (two at a time) and each test checks its own result.
The streams are 64x64 and 8 frames long (keyframes 0, 3, 7).
"""
from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from decoding_helpers import (
    CLI_SCENES,
    OFFICIAL,
    OFFICIAL_REASON,
    empty_model_places,
    max_difference,
    sd_turbo_stream,
    stack_frames,
    tiny_stream,
)
from libpromptus.bitstream import read_streams

FRAMES, SIZE = 8, 64
PROGRESS_KEYS = ["frame", "fps", "out_time_us", "out_time", "speed", "progress"]


def pmtdec(*args, cwd: Path, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    environment = {k: v for k, v in environment.items() if v is not None}
    return subprocess.run([sys.executable, "-m", "libpromptus.cli.pmtdec", *map(str, args)], capture_output=True,
                          cwd=cwd, env=environment, timeout=timeout, check=False)


def error_line(proc: subprocess.CompletedProcess, *, only_line: bool = True) -> str:
    """The one `pmtdec: error: ...` line of a failed run (exit 1, no traceback)."""
    stderr = proc.stderr.decode()
    assert proc.returncode == 1, stderr
    assert "Traceback" not in stderr, stderr
    lines = stderr.splitlines()
    errors = [line for line in lines if line.startswith("pmtdec: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], stderr
    if only_line:
        assert len(lines) == 1, stderr
    return errors[0]


def succeeded(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stderr.decode()
    return proc


def read_video(source, **kwargs) -> tuple[list[np.ndarray], av.video.stream.VideoStream, Fraction]:
    """Every frame (rgb24) of a video file or file-like object, its stream and rate."""
    with av.open(source, **kwargs) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate
        images = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
        return images, stream, rate


def leftovers(directory: Path, expected: set[str]) -> list[str]:
    """Names in `directory` other than `expected` (temporary files, partial outputs)."""
    return sorted(p.name for p in directory.iterdir() if p.name not in expected)


# ---------------------------------------------------------------- streams and API frames


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("pmtdec")


@pytest.fixture(scope="module")
def tiny_file(workdir) -> Path:
    return tiny_stream(SIZE, SIZE, CLI_SCENES, seed=5).write(workdir / "tiny.pmt")


@pytest.fixture(scope="module")
def sd_file(workdir) -> Path:
    return sd_turbo_stream(SIZE, SIZE, CLI_SCENES, seed=6).write(workdir / "sd.pmt")


def api_frames(path: Path, **options) -> np.ndarray:
    """The frames libpromptus.decode_frames gives (the model in this process), default batch."""
    from libpromptus.engines import create_engine

    from libpromptus.decoder.decoding import decode_frames
    from libpromptus.models import load_generator

    streams = read_streams(path)
    engine = create_engine("torch", load_generator("tiny"), streams[0].header, device="cpu")
    indices, frames = stack_frames(decode_frames(streams, engine, **options))
    assert indices == list(range(options.get("start_frame", 0), options.get("start_frame", 0) + len(indices)))
    return frames


@pytest.fixture(scope="module")
def tiny_frames(tiny_file) -> np.ndarray:
    return api_frames(tiny_file)


@pytest.fixture(scope="module")
def sd_frames(sd_file) -> np.ndarray:
    return api_frames(sd_file)


# ---------------------------------------------------------------- the runs, started together


def _job_dir(workdir: Path, name: str) -> Path:
    directory = workdir / name
    directory.mkdir()
    return directory


class Runs:
    """Named pmtdec runs on a small thread pool; `result(name)` waits for one."""

    def __init__(self, workdir: Path, tiny: Path, sd: Path) -> None:
        self.workdir, self.tiny, self.sd = workdir, tiny, sd
        self._pool = ThreadPoolExecutor(max_workers=2)
        self._jobs: dict[str, Future] = {}

    def submit(self, name: str, job) -> None:
        self._jobs[name] = self._pool.submit(job, _job_dir(self.workdir, name))

    def result(self, name: str):
        return self._jobs[name].result()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


OUTPUTS = {
    # name: (pmtdec output arguments, what the test reads back)
    "mp4": (["out.mp4"], "out.mp4"),
    "mp4-lossless": (["-c:v", "libx264rgb", "-crf", "0", "out.mp4"], "out.mp4"),
    "y4m": (["out.y4m"], "out.y4m"),
    "png": (["seq/%05d.png"], "seq"),
    "stdout-y4m": (["-"], None),
}


@pytest.fixture(scope="module")
def runs(workdir, tiny_file, sd_file):
    runs = Runs(workdir, tiny_file, sd_file)
    tiny, sd = tiny_file, sd_file

    # the slowest first
    if OFFICIAL.is_dir():
        def sky(d: Path):
            prompts = OFFICIAL / "sky" / "prompts_rank8_interval10"
            encode = subprocess.run([sys.executable, "-m", "libpromptus.cli.pmtenc", "-f", "promptus-dir", "-i",
                                     str(prompts), "-r", "30", "sky.pmt"], capture_output=True, cwd=d, timeout=300,
                                    env={**os.environ, "PYTHONUNBUFFERED": "1"}, check=False)
            if encode.returncode != 0:
                return encode, None
            return encode, pmtdec("-i", "sky.pmt", "--model", "tiny", "--force-model", "--start-frame", 131,
                                  "-loglevel", "error", "out.mkv", cwd=d)
        runs.submit("sky", sky)
    runs.submit("missing-model", lambda d: pmtdec("-i", sd, "out.y4m", cwd=d, env=empty_model_places(d / "env")))
    runs.submit("forced", lambda d: pmtdec("-i", sd, "--model", "tiny", "--force-model", "-loglevel", "error",
                                           "out.mkv", cwd=d))
    for name, (arguments, _) in OUTPUTS.items():
        runs.submit(name, lambda d, arguments=arguments: pmtdec("-i", tiny, "--model", "tiny", *arguments, cwd=d))
    runs.submit("range-raw-progress", lambda d: pmtdec(
        "-i", tiny, "--model", "tiny", "--start-frame", 3, "-frames:v", 4, "-progress", "pipe:2",
        "-f", "rawvideo", "-", cwd=d))

    def overwrite(d: Path):
        (d / "out.mkv").write_bytes(b"an existing file")
        refused = pmtdec("-i", tiny, "--model", "tiny", "out.mkv", cwd=d)
        after_refusal = (d / "out.mkv").read_bytes()
        replaced = pmtdec("-i", tiny, "--model", "tiny", "-y", "out.mkv", cwd=d)
        return refused, after_refusal, replaced
    runs.submit("overwrite", overwrite)
    yield runs
    runs.close()


# ---------------------------------------------------------------- models


def test_a_missing_model_is_one_line_and_leaves_nothing(runs):
    proc = runs.result("missing-model")
    line = error_line(proc)
    assert line.startswith("pmtdec: error: model sd-turbo not found"), line
    assert proc.stdout == b""
    directory = runs.workdir / "missing-model"
    assert leftovers(directory, {"env"}) == []


def test_force_model_decodes_an_sd_turbo_stream_with_tiny(runs, sd_frames):
    succeeded(runs.result("forced"))
    directory = runs.workdir / "forced"
    images, stream, rate = read_video(str(directory / "out.mkv"))
    assert len(images) == FRAMES
    assert (stream.width, stream.height, rate) == (SIZE, SIZE, 30)
    assert np.array_equal(np.stack(images), sd_frames)         # FFV1 bgr0 is lossless
    assert leftovers(directory, {"out.mkv"}) == []


def test_loglevel_error_keeps_a_successful_decode_silent(runs):
    """No log lines and no library warnings (diffusers warns on dtype casts) at -loglevel error."""
    proc = succeeded(runs.result("forced"))
    assert proc.stderr.decode() == ""


# ---------------------------------------------------------------- outputs


def test_mkv_output_is_pixel_exact(runs, tiny_frames):
    _, _, replaced = runs.result("overwrite")
    succeeded(replaced)
    images, stream, rate = read_video(str(runs.workdir / "overwrite" / "out.mkv"))
    assert (len(images), stream.width, stream.height, rate) == (FRAMES, SIZE, SIZE, 30)
    assert stream.codec_context.name == "ffv1"
    assert np.array_equal(np.stack(images), tiny_frames)


@pytest.mark.parametrize("name", list(OUTPUTS))
def test_outputs_read_back(runs, tiny_frames, name):
    proc = succeeded(runs.result(name))
    directory = runs.workdir / name
    target = OUTPUTS[name][1]
    if name == "png":
        files = sorted((directory / "seq").iterdir())
        first = 1 if files and files[0].name == "00001.png" else 0          # FFmpeg's image2 starts at 1
        assert [p.name for p in files] == [f"{i:05d}.png" for i in range(first, first + FRAMES)]
        images = []
        for file in files:
            frames, stream, _ = read_video(str(file))
            assert len(frames) == 1
            images.extend(frames)
        assert np.array_equal(np.stack(images), tiny_frames)
        assert leftovers(directory, {"seq"}) == []
        return
    if target is None:
        assert proc.stdout.startswith(b"YUV4MPEG2 ")
        images, stream, rate = read_video(io.BytesIO(proc.stdout), format="yuv4mpegpipe")
        assert leftovers(directory, set()) == []
    else:
        images, stream, rate = read_video(str(directory / target))
        assert leftovers(directory, {target}) == []
        assert proc.stdout == b""
    assert (len(images), stream.width, stream.height, rate) == (FRAMES, SIZE, SIZE, 30)
    got = np.stack(images)
    if name == "mp4":
        # the playable default, H.264 yuv420p at CRF 17: 33.7 dB measured on these frames
        assert (stream.codec_context.name, stream.codec_context.pix_fmt) == ("h264", "yuv420p")
        error = np.mean((got.astype(np.float64) - tiny_frames.astype(np.float64)) ** 2)
        assert 10 * np.log10(255 ** 2 / error) > 33.0
    elif name == "mp4-lossless":
        assert np.array_equal(got, tiny_frames)                   # H.264 RGB at CRF 0 is lossless
    else:
        # y4m is 4:4:4 YUV: only the RGB -> YUV -> RGB rounding differs
        difference = np.abs(got.astype(np.int16) - tiny_frames.astype(np.int16))
        assert difference.mean() < 3, difference.mean()


def test_a_range_of_frames_as_raw_rgb_with_progress(runs, tiny_frames):
    proc = succeeded(runs.result("range-raw-progress"))
    assert leftovers(runs.workdir / "range-raw-progress", set()) == []
    assert len(proc.stdout) == 4 * SIZE * SIZE * 3
    got = np.frombuffer(proc.stdout, dtype=np.uint8).reshape(4, SIZE, SIZE, 3)
    largest, count = max_difference(got, tiny_frames[3:7])
    assert largest <= 1, (largest, count)

    lines = [line for line in proc.stderr.decode().splitlines()
             if re.fullmatch(r"(frame|fps|out_time_us|out_time|speed|progress)=.*", line)]
    assert lines and len(lines) % len(PROGRESS_KEYS) == 0, lines
    blocks = [dict(line.split("=", 1) for line in lines[i:i + 6]) for i in range(0, len(lines), 6)]
    for number, (start, block) in enumerate(zip(range(0, len(lines), 6), blocks)):
        assert [line.split("=", 1)[0] for line in lines[start:start + 6]] == PROGRESS_KEYS
        frame = int(block["frame"])
        assert 0 <= frame <= 4
        assert float(block["fps"]) >= 0
        assert int(block["out_time_us"]) == frame * 1_000_000 // 30
        micro = int(block["out_time_us"])
        assert block["out_time"] == (f"{micro // 3_600_000_000:02d}:{micro // 60_000_000 % 60:02d}:"
                                     f"{micro // 1_000_000 % 60:02d}.{micro % 1_000_000:06d}")
        assert re.fullmatch(r"[0-9.e+-]+x", block["speed"]), block["speed"]
        assert block["progress"] == ("end" if number == len(blocks) - 1 else "continue")
    assert [int(b["frame"]) for b in blocks] == sorted(int(b["frame"]) for b in blocks)
    assert blocks[-1]["frame"] == "4"


def test_an_existing_output_is_kept_without_y_and_replaced_with_it(runs):
    refused, after_refusal, replaced = runs.result("overwrite")
    line = error_line(refused, only_line=False)          # after the info lines of the model load
    assert "out.mkv" in line and "already exists" in line, line
    assert after_refusal == b"an existing file"
    succeeded(replaced)
    directory = runs.workdir / "overwrite"
    assert (directory / "out.mkv").read_bytes()[:4] == bytes.fromhex("1a45dfa3")      # Matroska (EBML)
    assert leftovers(directory, {"out.mkv"}) == []


# ---------------------------------------------------------------- bad input


def _bad_inputs(tiny: Path) -> dict[str, bytes]:
    data = tiny.read_bytes()
    return {
        "random": np.random.RandomState(11).randint(0, 256, 300).astype(np.uint8).tobytes(),
        "empty": b"",
        "truncated": data[: len(data) * 2 // 3],
    }


@pytest.mark.parametrize("kind, message", [("random", "invalid data: bad_signature"),
                                           ("empty", "invalid data: truncated"),
                                           ("truncated", "invalid data: truncated")])
def test_bad_input_is_one_line_and_leaves_no_output(tmp_path, tiny_file, kind, message):
    (tmp_path / "in.pmt").write_bytes(_bad_inputs(tiny_file)[kind])
    proc = pmtdec("-i", "in.pmt", "--model", "tiny", "out.mkv", cwd=tmp_path)
    line = error_line(proc)
    assert message in line, line
    assert proc.stdout == b""
    assert leftovers(tmp_path, {"in.pmt"}) == []


@pytest.fixture
def in_process_pmtdec():
    """pmtdec's `main` in this process (cheap: the model is loaded here already)."""
    import logging

    from libpromptus.cli import pmtdec as command

    root = logging.getLogger()
    level = root.level
    yield command.main
    root.setLevel(level)


@pytest.mark.parametrize("arguments", [["-progress", "{dir}/no-such-dir/progress.txt"], ["-c:v", "no-such-codec"],
                                       ["-pix_fmt", "no-such-format"]], ids=["progress", "codec", "pix_fmt"])
def test_a_refused_output_option_leaves_no_temporary_file(tmp_path, tiny_file, in_process_pmtdec, capsys,
                                                          arguments):
    out = tmp_path / "out"
    out.mkdir()
    arguments = [a.format(dir=tmp_path) for a in arguments]
    code = in_process_pmtdec(["-i", str(tiny_file), "--model", "tiny", "-loglevel", "error", *arguments,
                              str(out / "out.mkv")])
    stderr = capsys.readouterr().err
    assert code == 1, stderr
    assert [line for line in stderr.splitlines() if line.startswith("pmtdec: error: ")], stderr
    assert list(out.iterdir()) == []


# ---------------------------------------------------------------- the official sky clip


def test_official_sky_clip_decodes_from_frame_131(runs):
    if not OFFICIAL.is_dir():
        pytest.skip(OFFICIAL_REASON)
    encode, decode = runs.result("sky")
    assert encode.returncode == 0, encode.stderr.decode()
    succeeded(decode)
    images, stream, rate = read_video(str(runs.workdir / "sky" / "out.mkv"))
    assert len(images) == 10                                  # frames 131..140
    assert (stream.width, stream.height, rate) == (512, 512, 30)
