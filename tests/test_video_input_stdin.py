"""libpromptus.io.video_input: y4m inputs that end inside a frame (one warning, the partial
frame dropped, from a file and from standard input), and standard input itself (a real
pipe, with a selection and a size, a terminal, an input that is not y4m).
"""
from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import video_input_helpers
from video_input_helpers import H, N, W, read_all

# the module fixtures of video_input_helpers (the clips, built once in each test module)
clips, full = video_input_helpers.clips, video_input_helpers.full


# ------------------------------------------------------------------ a y4m cut inside a frame


FRAME_BYTES = W * H * 3                 # the clip is 4:4:4


def cut_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "ends inside frame" in r.getMessage()]


def cut_message(name: str, frame: int, present: int) -> str:
    complete = frame - 1
    return (f"{name}: the input ends inside frame {frame}, after {complete} complete "
            f"{'frame' if complete == 1 else 'frames'} ({present} of its {FRAME_BYTES} bytes are there); "
            f"the partial frame is dropped")


# (bytes cut off the end, the frame it ends inside, its bytes there): inside the last frame's
# data, inside its FRAME line, and inside the first frame of a one-frame file
@pytest.mark.parametrize("cut, frame, present", [(100, N, FRAME_BYTES - 100), (FRAME_BYTES + 3, N, 0),
                                                 ((N - 1) * (FRAME_BYTES + 6) + 1000, 1, FRAME_BYTES - 1000)])
def test_a_y4m_file_cut_inside_a_frame_warns_and_drops_it(tmp_path, clips, full, caplog, cut, frame, present):
    """FFmpeg's demuxer drops the partial frame silently; the reader says so once."""
    path = tmp_path / "cut.y4m"
    path.write_bytes(Path(clips["y4m"]).read_bytes()[:-cut])
    with caplog.at_level(logging.WARNING, logger="libpromptus"):
        _, read = read_all(str(path))
    assert len(read) == frame - 1
    assert all(np.array_equal(a, b) for a, b in zip(read, full["y4m"], strict=False))
    assert cut_warnings(caplog) == [cut_message(str(path), frame, present)]


def test_a_y4m_cut_inside_a_frame_from_standard_input(monkeypatch, clips, full, caplog):
    data = Path(clips["y4m"]).read_bytes()[:-100]
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))     # a file object, no fileno
    with caplog.at_level(logging.WARNING, logger="libpromptus"):
        _, read = read_all("-")
    assert len(read) == N - 1 and all(np.array_equal(a, b) for a, b in zip(read, full["y4m"], strict=False))
    assert cut_warnings(caplog) == [cut_message("standard input", N, FRAME_BYTES - 100)]
    # through a real pipe: the one warning on stderr (logging's last-resort handler)
    result = subprocess.run([sys.executable, "-c", STDIN_SCRIPT, "-", "{}"], input=data, capture_output=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.split()[0] == str(N - 1).encode()
    assert result.stderr.decode().splitlines() == [cut_message("standard input", N, FRAME_BYTES - 100)]


def test_whole_y4m_inputs_and_selections_that_stop_before_the_cut_do_not_warn(tmp_path, clips, caplog):
    data = Path(clips["y4m"]).read_bytes()
    header = data.index(b"FRAME")
    params = tmp_path / "params.y4m"        # FRAME lines with parameters: whole, though not bare
    params.write_bytes(data[:header] + b"".join(b"FRAME Ip\n" + f for f in data[header:].split(b"FRAME\n")[1:]))
    cut = tmp_path / "cut.y4m"
    cut.write_bytes(data[:-100])
    with caplog.at_level(logging.WARNING, logger="libpromptus"):
        assert len(read_all(clips["y4m"])[1]) == N
        assert len(read_all(str(params))[1]) == N
        assert len(read_all(str(cut), max_frames=N - 1)[1]) == N - 1     # the cut is never read
        assert len(read_all(str(cut), start=1.0)[1]) == N - 1 - 24       # a seek, then to the end
    assert cut_warnings(caplog) == [cut_message(str(cut), N, FRAME_BYTES - 100)]


# ------------------------------------------------------------------ standard input


STDIN_SCRIPT = """
import sys
from libpromptus.io.video_input import open_video
with open_video(sys.argv[1], **eval(sys.argv[2])) as reader:
    frames = list(reader.frames())
    info = reader.info
print(len(frames), info.width, info.height, info.rate, info.frame_count, sum(int(f.sum()) for f in frames))
"""


@pytest.mark.parametrize("name", ["-", "pipe:0", "pipe:"])
def test_standard_input(clips, full, name):
    data = Path(clips["y4m"]).read_bytes()       # through a real pipe: not seekable, no length
    result = subprocess.run([sys.executable, "-c", STDIN_SCRIPT, name, "{}"], input=data,
                            capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr.decode()
    result.stdout = result.stdout.decode()
    checksum = sum(int(f.sum()) for f in full["y4m"])
    assert result.stdout.split() == [str(N), str(W), str(H), "24", "None", str(checksum)]


def test_standard_input_with_selection_and_size(clips, full):
    options = "dict(start=0.5, duration=0.5, size=(32, 32))"
    result = subprocess.run([sys.executable, "-c", STDIN_SCRIPT, "-", options],
                            input=Path(clips["y4m"]).read_bytes(), capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr.decode()
    result.stdout = result.stdout.decode()
    expected = read_all(clips["y4m"], start=0.5, duration=0.5, size=(32, 32))[1]
    assert result.stdout.split()[:3] == ["12", "32", "32"]
    assert result.stdout.split()[5] == str(sum(int(f.sum()) for f in expected))


def test_standard_input_that_is_a_terminal():
    pty = pytest.importorskip("pty")
    leader, follower = pty.openpty()
    try:
        result = subprocess.run([sys.executable, "-c", STDIN_SCRIPT, "-", "{}"], stdin=follower,
                                capture_output=True, text=True, timeout=60)
    finally:
        os.close(leader)
        os.close(follower)
    assert result.returncode != 0 and "standard input is a terminal" in result.stderr


def test_standard_input_that_is_not_y4m(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("not a video\n" * 50)
    with open(text, "rb") as stdin:
        result = subprocess.run([sys.executable, "-c", STDIN_SCRIPT, "-", "{}"], stdin=stdin,
                                capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "VideoInputError: standard input:" in result.stderr
