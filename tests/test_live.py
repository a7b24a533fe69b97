"""Live streaming: frames out while units arrive, units out while frames are fitted.

`decode_units` (units as they arrive) and `decode_frames` (streams in memory) are one
process and give the same frames; pmtdec reading a pipe outputs each interval as soon as
its keyframe is in, and a stream cut short gives the frames of its complete intervals,
then one error line; pmtenc writing to standard output streams units a pmtdec pipeline
decodes as it goes, to the frames of a file decode.
"""
from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from decoding_helpers import TWO_SCENES, stack_frames, tiny_stream
from libpromptus.bitstream import Keyframe, SequenceHeader, read_streams, read_units
from libpromptus.engines import create_engine

from libpromptus.decoder.decoding import decode_frames, decode_units
from libpromptus.io.samples import write_sample
from libpromptus.models import load_generator

SIZE = 32
#: The pipeline's two processes fit and decode at once, so each gets one of the two cores: with
#: torch's default of a thread per core, their four threads spin against each other at every
#: operation: a pipeline that takes 20 s alone took 12 minutes in a fresh-clone run of the suite
#: (2026-12-08), and CI was killed inside this test.
#: The file encode it is compared with uses the same one thread, which its bytes depend on.
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}


def _run_pipeline(script: str, timeout: float) -> tuple[int, bytes]:
    """`bash -o pipefail -c script` in a process group of its own, killed whole when it runs past
    `timeout` or anything else interrupts the wait (pytest-timeout, CI's SIGINT): a timed-out
    `subprocess.run` kills only bash, and the commands of its pipeline would keep the output
    pipes open, so the test would wait for them without end."""
    with subprocess.Popen(["bash", "-o", "pipefail", "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          env=ONE_THREAD, start_new_session=True) as process:
        try:
            _, errors = process.communicate(timeout=timeout)
        except BaseException:
            os.killpg(process.pid, signal.SIGKILL)
            raise
    return process.returncode, errors


@pytest.fixture(scope="module")
def stream(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("live")
    data = tiny_stream(SIZE, SIZE, TWO_SCENES, seed=3).data
    path = folder / "two.pmt"
    path.write_bytes(data + data)               # two concatenated streams: 36 frames
    return path


@pytest.fixture(scope="module")
def engine(stream):
    return create_engine("torch", load_generator("tiny"), read_streams(stream)[0].header, device="cpu")


@pytest.fixture(scope="module")
def file_frames(stream, engine) -> np.ndarray:
    indices, frames = stack_frames(decode_frames(read_streams(stream), engine))
    assert indices == list(range(36))
    return frames


@pytest.mark.parametrize("options", [{}, {"frame_count": 7}, {"start_frame": 12, "frame_count": 15}, {"batch": 3}])
def test_units_as_they_arrive_give_the_frames_of_the_streams_in_memory(stream, engine, options):
    expected = stack_frames(decode_frames(read_streams(stream), engine, **options))
    got = stack_frames(decode_units(read_units(stream), engine, **options))
    assert got[0] == expected[0] and np.array_equal(got[1], expected[1])


def test_each_interval_comes_out_as_soon_as_its_keyframe_is_read(stream, engine):
    """When a frame is yielded, the last unit read is the keyframe closing its interval."""
    read = []

    def arriving():
        for item in read_units(stream):
            read.append(item.unit)
            yield item

    for frame in decode_units(arriving(), engine):
        headers = sum(isinstance(unit, SequenceHeader) for unit in read)
        local = frame.index - 18 * (headers - 1)          # each of the two streams has 18 frames
        closing = read[-1]
        assert isinstance(closing, Keyframe) and local <= closing.frame_index
        assert not any(isinstance(u, Keyframe) and u.frame_index < local for u in read[-1:])


def _pmtdec(*args, stdin: bytes) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "libpromptus.cli.pmtdec", "-loglevel", "error", *args],
                          input=stdin, capture_output=True, timeout=600, check=False)


def test_pmtdec_from_a_pipe_gives_the_file_decode(stream, file_frames):
    done = _pmtdec("-i", "-", "-f", "rawvideo", "-", stdin=stream.read_bytes())
    assert done.returncode == 0, done.stderr
    assert np.frombuffer(done.stdout, np.uint8).reshape(-1, SIZE, SIZE, 3).tolist() == file_frames.tolist()


def test_a_stream_cut_short_in_a_pipe_gives_its_complete_intervals_then_one_error(stream, file_frames):
    data = stream.read_bytes()
    units = list(read_units(io.BytesIO(data)))
    fifth = [u for u in units if isinstance(u.unit, Keyframe)][4]      # frame 13's keyframe
    done = _pmtdec("-i", "-", "-f", "rawvideo", "-", stdin=data[: fifth.offset + fifth.size - 1])
    frames = np.frombuffer(done.stdout, np.uint8).reshape(-1, SIZE, SIZE, 3)
    assert done.returncode == 1
    (line,) = done.stderr.decode().splitlines()
    assert line.startswith("pmtdec: error: invalid data: truncated: input ends inside a unit")
    assert line.endswith(f"at byte {fifth.offset}")
    assert len(frames) == 11 and frames.tolist() == file_frames[:11].tolist()   # up to frame 10, the cut's keyframe


def test_a_failed_decode_to_a_file_publishes_nothing(stream, tmp_path):
    data = stream.read_bytes()
    done = _pmtdec("-i", "-", str(tmp_path / "out.y4m"), stdin=data[: len(data) // 3])
    assert done.returncode == 1 and done.stderr.decode().count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_pmtenc_to_a_pipe_streams_what_pmtdec_decodes(tmp_path):
    """`pmtenc -i - ... - | tee | pmtdec -i - -f rawvideo -`: the recorded stream equals a file
    encode of the same pipe input, and the pipeline's frames equal a file decode of it."""
    clip = tmp_path / "clip.y4m"
    write_sample(str(clip), 6, SIZE, SIZE)
    options = ["--model", "tiny", "-g", "2", "--iterations", "2", "--first-iterations", "2", "--perceptual", "none"]
    script = (f"{sys.executable} -m libpromptus.cli.pmtenc -loglevel error -i - {' '.join(options)} -f pmt - "
              f"< {clip} | tee {tmp_path / 'live.pmt'} | "
              f"{sys.executable} -m libpromptus.cli.pmtdec -loglevel error -i - -f rawvideo - > {tmp_path / 'live.rgb'}")
    returncode, errors = _run_pipeline(script, timeout=300)
    assert returncode == 0, errors
    encoded = subprocess.run([sys.executable, "-m", "libpromptus.cli.pmtenc", "-loglevel", "error", "-i", "-",
                              *options, str(tmp_path / "file.pmt")], stdin=clip.open("rb"), capture_output=True,
                             env=ONE_THREAD, timeout=600, check=False)
    assert encoded.returncode == 0, encoded.stderr
    assert (tmp_path / "live.pmt").read_bytes() == (tmp_path / "file.pmt").read_bytes()
    decoded = subprocess.run([sys.executable, "-m", "libpromptus.cli.pmtdec", "-loglevel", "error", "-i",
                              str(tmp_path / "file.pmt"), "-f", "rawvideo", "-"], capture_output=True,
                             env=ONE_THREAD, timeout=600, check=False)
    assert decoded.returncode == 0 and len(decoded.stdout) == 6 * SIZE * SIZE * 3
    assert (tmp_path / "live.rgb").read_bytes() == decoded.stdout


@pytest.mark.parametrize("option", [["--resume"], ["--segment-seconds", "1"], ["--cluster", "auto"]])
def test_a_live_encode_refuses_resume_segments_and_a_cluster(tmp_path, option):
    done = subprocess.run([sys.executable, "-m", "libpromptus.cli.pmtenc", "-i", "-", "--model", "tiny", *option,
                           "-"], input=b"", capture_output=True, timeout=120, check=False)
    assert done.returncode == 1
    assert done.stderr.decode().strip() == ("pmtenc: error: --resume, --segment-seconds and --cluster need a file "
                                            "output: a live stream cannot be taken back")


def test_pmtenc_live_to_a_tcp_listener_sends_the_file_encode(tmp_path):
    """`pmtenc ... tcp://127.0.0.1:PORT`: a loopback listener receives the bytes of a file encode."""
    import socket
    import threading

    clip = tmp_path / "clip.y4m"
    write_sample(str(clip), 3, SIZE, SIZE)
    options = ["--model", "tiny", "-g", "2", "--iterations", "1", "--first-iterations", "1", "--perceptual", "none"]
    received = bytearray()
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(300)
        port = server.getsockname()[1]

        def receive() -> None:
            connection, _ = server.accept()
            with connection:
                connection.settimeout(300)
                while chunk := connection.recv(65536):
                    received.extend(chunk)

        receiver = threading.Thread(target=receive, daemon=True)
        receiver.start()
        sent = subprocess.run([sys.executable, "-m", "libpromptus.cli.pmtenc", "-loglevel", "error", "-i", str(clip),
                               *options, f"tcp://127.0.0.1:{port}"], capture_output=True, timeout=600, check=False)
        receiver.join(timeout=60)
    assert sent.returncode == 0, sent.stderr
    written = subprocess.run([sys.executable, "-m", "libpromptus.cli.pmtenc", "-loglevel", "error", "-i", str(clip),
                              *options, str(tmp_path / "file.pmt")], capture_output=True, timeout=600, check=False)
    assert written.returncode == 0, written.stderr
    assert bytes(received) == (tmp_path / "file.pmt").read_bytes()


def test_progress_reports_how_far_the_frames_lag_their_keyframes(stream, engine):
    done = _pmtdec("-i", "-", "-f", "rawvideo", "-", "-progress", "pipe:2", stdin=stream.read_bytes())
    assert done.returncode == 0, done.stderr
    blocks = done.stderr.decode().split("progress=")
    last = dict(line.split("=", 1) for line in blocks[-2].splitlines()[-9:] if "=" in line)
    assert done.stderr.decode().rstrip().endswith("progress=end")
    assert last["frame"] == "36" and 0 <= float(last["latency_s"]) <= float(last["latency_max_s"]) < 600
    for frame in decode_units(read_units(stream), engine, frame_count=3):
        assert frame.arrived is not None and frame.arrived <= time.monotonic()


def test_open_reads_a_file_object_as_it_arrives(stream, file_frames):
    import libpromptus as pmt

    data = stream.read_bytes()
    with pmt.open(io.BytesIO(data)) as container:
        assert isinstance(container, pmt.LiveContainer) and container.info.width == SIZE
        assert container.info.frame_count == 18                     # what the first header declares
        indices, frames = stack_frames(container.decode(model="tiny"))
        with pytest.raises(ValueError, match="once"):
            container.demux()
    assert indices == list(range(36)) and frames.tolist() == file_frames.tolist()
    with pmt.open(io.BytesIO(data)) as container:
        assert len(list(container.demux())) == len(list(read_units(stream)))
