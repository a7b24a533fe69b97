"""The public surface: `libpromptus.__all__`, the error family, and `open(..., "w")`."""
from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
from libpromptus.bitstream import read_streams

import libpromptus as pmt
from libpromptus.io.samples import sample_frames, write_sample
from libpromptus.io.video_input import open_video

SURFACE = {"open", "encode", "decode", "Container", "LiveContainer", "OutputContainer", "StreamInfo", "EncodeResult", "Encoder",
           "EncoderSettings", "Decoder", "Frame", "PromptusError", "InvalidDataError", "ModelNotFoundError",
           "ModelIntegrityError", "ModelMismatchError", "EngineUnavailableError", "VideoInputError",
           "PromptDirectoryError", "CheckpointError", "OutputBusyError", "NetworkError", "NetworkTimeoutError",
           "ClusterUnavailableError", "SegmentLostError"}
#: Options of a fast encode with the tiny model: two iterations, no perceptual term.
FAST = dict(model="tiny", rank=1, interval=2, first_iterations=2, iterations=2, perceptual="none")


def test_all_lists_the_surface_and_every_name_resolves():
    assert set(pmt.__all__) == SURFACE
    for name in pmt.__all__:
        assert getattr(pmt, name) is not None
    assert set(pmt.__all__) <= set(dir(pmt))
    with pytest.raises(AttributeError, match="no attribute 'encoding'"):
        pmt.encoding  # noqa: B018 - the attribute access is the test


def test_importing_the_package_loads_no_torch():
    code = ("import sys, libpromptus, libpromptus.bitstream\n"
            "assert 'open' in libpromptus.__all__\n"
            "assert not [m for m in sys.modules if m == 'torch' or m.startswith('torch.')], 'torch imported'\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name, builtin", [
    ("InvalidDataError", ValueError), ("ModelNotFoundError", ValueError), ("ModelIntegrityError", ValueError),
    ("ModelMismatchError", ValueError), ("EngineUnavailableError", ValueError), ("VideoInputError", ValueError),
    ("PromptDirectoryError", ValueError), ("CheckpointError", ValueError), ("OutputBusyError", OSError),
    ("NetworkError", OSError), ("NetworkTimeoutError", TimeoutError), ("ClusterUnavailableError", ValueError),
    ("SegmentLostError", ConnectionError),
])
def test_every_error_is_a_promptus_error_and_the_builtin_a_caller_expects(name, builtin):
    error = getattr(pmt, name)
    assert issubclass(error, pmt.PromptusError) and issubclass(error, builtin)


def test_the_bitstream_raises_a_promptus_error(tmp_path):
    path = tmp_path / "bad.pmt"
    path.write_bytes(b"not a stream")
    with pytest.raises(pmt.PromptusError) as caught:
        pmt.open(path)
    assert isinstance(caught.value, pmt.InvalidDataError) and caught.value.code == "bad_signature"


def test_open_refuses_an_unknown_mode(tmp_path):
    with pytest.raises(ValueError, match="mode 'a'"):
        pmt.open(tmp_path / "x.pmt", "a")


def test_write_mode_writes_the_bytes_encode_writes(tmp_path):
    """Frames pushed through `open(path, "w")` and through a binary sink give the file `encode` writes."""
    source = tmp_path / "clip.y4m"
    write_sample(str(source), 5, 32, 32)
    expected = pmt.encode(str(source), str(tmp_path / "encoded.pmt"), **FAST)
    with open_video(str(source)) as reader:
        frames = list(reader.frames())                  # what encode reads (y4m is YUV, not the RGB written)
    with pmt.open(tmp_path / "written.pmt", "w", width=32, height=32, rate=30, frame_count=5, **FAST) as output:
        for frame in frames:
            output.encode(frame)
    assert (tmp_path / "written.pmt").read_bytes() == (tmp_path / "encoded.pmt").read_bytes()
    assert output.summary.frames == 5 and output.summary.bytes == expected.bytes
    sink = io.BytesIO()
    with pmt.open(sink, "w", width=32, height=32, rate=30, frame_count=5, **FAST) as output:
        for frame in frames:
            output.encode(frame)
    assert sink.getvalue() == (tmp_path / "encoded.pmt").read_bytes()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_write_mode_decides_by_trials_as_encode_does(tmp_path):
    """With -b:v the trials hold the first frames back: nothing is written until they have
    decided, and the file is the one `encode` writes from the same frames."""
    source = tmp_path / "clip.y4m"
    write_sample(str(source), 6, 32, 32)
    options = {**{k: v for k, v in FAST.items() if k not in ("rank", "interval")}, "bitrate": 150_000, "lookahead": 4}
    expected = pmt.encode(str(source), str(tmp_path / "encoded.pmt"), **options)
    with open_video(str(source)) as reader:
        frames = list(reader.frames())
    sink = io.BytesIO()
    with pmt.open(sink, "w", width=32, height=32, rate=30, frame_count=6, **options) as output:
        for number, frame in enumerate(frames[:3]):
            output.encode(frame)
            assert sink.getvalue() == b"", number                  # held for the trials
        for frame in frames[3:]:
            output.encode(frame)
    assert sink.getvalue() == (tmp_path / "encoded.pmt").read_bytes()
    assert (output.rank, output.interval) == (expected.rank, expected.interval)
    with pytest.raises(ValueError, match="frame 1 is \\(16, 16, 3\\) uint8, not \\(32, 32, 3\\)"):
        with pmt.open(io.BytesIO(), "w", width=32, height=32, rate=30, **options) as output:
            output.encode(frames[0])
            output.encode(np.zeros((16, 16, 3), np.uint8))     # refused at once, not when the window is full


def test_write_mode_leaves_no_file_when_the_block_fails(tmp_path):
    target = tmp_path / "broken.pmt"
    with pytest.raises(ValueError, match="not \\(32, 32, 3\\)"):
        with pmt.open(target, "w", width=32, height=32, rate=30, **FAST) as output:
            output.encode(np.zeros((16, 16, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_write_mode_refuses_input_options_and_an_existing_file(tmp_path):
    with pytest.raises(TypeError, match="max_frames"):
        pmt.open(tmp_path / "x.pmt", "w", width=32, height=32, rate=30, max_frames=3, **FAST)
    existing = tmp_path / "there.pmt"
    existing.write_bytes(b"keep")
    with pytest.raises(FileExistsError):
        pmt.open(existing, "w", width=32, height=32, rate=30, **FAST)
    assert existing.read_bytes() == b"keep"


def test_a_stream_written_frame_by_frame_reads_back(tmp_path):
    sink = io.BytesIO()
    with pmt.open(sink, "w", width=32, height=32, rate=30, **FAST) as output:
        for frame in sample_frames(3, 32, 32):
            output.encode(frame)
    streams = read_streams(io.BytesIO(sink.getvalue()))
    assert streams[0].frame_count == 3 and streams[0].header.frame_count == 0     # length unknown when it began
