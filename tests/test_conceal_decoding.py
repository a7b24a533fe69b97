"""Concealed streams decoded with the tiny model: in this process (frames outside the
concealed chain are bit-identical, lost scene starts generate from the right latent);
through pmtdec, whose runs a module fixture starts together (two at a time), with and
without --conceal; and the API's concealment report.
"""
from __future__ import annotations

import io
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import conceal_helpers
import numpy as np
import pytest
from conceal_helpers import FRAMES, GARBAGE, SIZE, concealed, damage, skipped
from decoding_helpers import RecordingEngine
from libpromptus.bitstream import InvalidDataError, read_streams

from libpromptus.process.noise import noise_tensor
from libpromptus.process.prompts import frame_conditioning

# the module fixtures of conceal_helpers: the clean stream, its units' offsets, a work directory
clean, offsets, workdir = conceal_helpers.clean, conceal_helpers.offsets, conceal_helpers.workdir


# ---------------------------------------------------------------- frames (the tiny model)


@pytest.fixture(scope="module")
def engine(clean):
    from libpromptus.engines import create_engine

    from libpromptus.models import load_generator

    return create_engine("torch", load_generator("tiny"), read_streams(io.BytesIO(clean))[0].header, device="cpu")


def decode(streams, engine, **options) -> np.ndarray:
    from libpromptus.decoder.decoding import decode_frames

    return np.stack([frame.image for frame in decode_frames(streams, engine, **options)])


@pytest.fixture(scope="module")
def clean_frames(clean, engine) -> np.ndarray:
    return decode(read_streams(io.BytesIO(clean)), engine)


def differing(a: np.ndarray, b: np.ndarray) -> list[int]:
    return [i for i in range(len(a)) if not np.array_equal(a[i], b[i])]


def test_frames_outside_the_concealed_chain_are_bit_identical(clean, offsets, engine, clean_frames):
    """Keyframe 14 lost: frames 0..10 are the clean decode's; 11..18 (concealed) and 19
    (whose input latent is frame 18's) differ."""
    streams, report = concealed(damage(clean, offsets, ("keyframe", 14)))
    frames = decode(streams, engine)
    assert frames.shape == clean_frames.shape
    assert differing(frames, clean_frames) == list(range(11, 20))
    assert [*report.concealed[0].frames, *report.concealed[0].follow] == list(range(11, 20))


def test_an_end_of_scene_loss_changes_only_that_frame(clean, offsets, engine, clean_frames):
    streams, _ = concealed(damage(clean, offsets, ("keyframe", 9)))
    assert differing(decode(streams, engine), clean_frames) == [9]


def test_a_lost_scene_start_generates_from_the_previous_scenes_last_latent(clean, offsets, engine, clean_frames):
    streams, _ = concealed(damage(clean, offsets, ("scene_start", 10)))
    recorder = RecordingEngine(engine)
    frames = decode(streams, recorder)
    assert differing(frames, clean_frames) == list(range(10, 20))
    header = streams[0].header
    # Calls in order: frame 0; 1..4; 5..8; 9; then the scene's first frame 10, alone.
    generated = recorder.rows("generated")
    frame_9, frame_10_input = generated[9], recorder.rows("latents")[10]
    noise = noise_tensor(header)[0]
    assert np.array_equal(frame_10_input, np.float32(header.prev_weight) * frame_9
                          + np.float32(header.noise_weight) * noise)


def test_a_lost_first_scene_start_generates_from_a_zero_latent(clean, offsets, engine, clean_frames):
    streams, _ = concealed(damage(clean, offsets, ("scene_start", 0)))
    recorder = RecordingEngine(engine)
    frames = decode(streams, recorder)
    assert differing(frames, clean_frames) == list(range(10))
    header = streams[0].header
    assert np.array_equal(recorder.rows("latents")[0], np.float32(header.noise_weight) * noise_tensor(header)[0])


def test_a_start_frame_after_a_lost_scene_start_still_runs_the_chain(clean, offsets, engine):
    """Decoding from frame 12 must generate scene 0's chain first (batch 1: no reordering)."""
    streams, _ = concealed(damage(clean, offsets, ("scene_start", 10)))
    whole = decode(streams, engine, batch=1)
    assert np.array_equal(decode(streams, engine, batch=1, start_frame=12), whole[12:])


# ---------------------------------------------------------------- pmtdec


def pmtdec(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "libpromptus.cli.pmtdec", *map(str, args)], capture_output=True,
                          cwd=cwd, env={**os.environ, "PYTHONUNBUFFERED": "1"}, timeout=300, check=False)


@pytest.fixture(scope="module")
def runs(workdir, clean, offsets):
    """name -> (directory, finished process); the processes run two at a time."""
    inputs = {
        "keyframe": damage(clean, offsets, ("keyframe", 14)),
        "clean": clean,
        "header": damage(clean, offsets, ("sequenceheader", None)),
        "tail": clean + clean[-200:],
        "between": clean + GARBAGE["cut-signatures-inside"](clean) + clean,
    }
    jobs = {
        "default": ("keyframe", ["out.mkv"]),
        "conceal": ("keyframe", ["--conceal", "-f", "rawvideo", "-"]),
        "clean-conceal": ("clean", ["--conceal", "-f", "rawvideo", "-"]),
        "clean-plain": ("clean", ["-f", "rawvideo", "-"]),
        "header": ("header", ["--conceal", "out.mkv"]),
        "tail-conceal": ("tail", ["--conceal", "-f", "rawvideo", "-"]),
        "tail-dump": ("tail", ["--conceal", "--dump-prompts", "out.npz"]),
        "tail-strict": ("tail", ["--dump-prompts", "out.npz"]),
        "between-dump": ("between", ["--conceal", "--dump-prompts", "out.npz"]),
    }

    def run(name: str):
        source, arguments = jobs[name]
        directory = workdir / f"run-{name}"
        directory.mkdir()
        (directory / "in.pmt").write_bytes(inputs[source])
        return directory, pmtdec("-i", "in.pmt", "--model", "tiny", "-nostats", *arguments, cwd=directory)

    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(run, name) for name in jobs}
        yield {name: future.result() for name, future in futures.items()}


def error_line(proc: subprocess.CompletedProcess) -> str:
    stderr = proc.stderr.decode()
    assert proc.returncode == 1 and "Traceback" not in stderr, stderr
    assert len(stderr.splitlines()) == 1, stderr
    return stderr.splitlines()[0]


def test_pmtdec_stops_at_a_damaged_keyframe_and_writes_nothing(runs, offsets):
    directory, proc = runs["default"]
    assert error_line(proc) == (f"pmtdec: error: invalid data: crc_mismatch: unit CRC-32C mismatch (unit type 4) at "
                                f"byte {offsets[('keyframe', 14)]}")
    assert sorted(p.name for p in directory.iterdir()) == ["in.pmt"]


def test_pmtdec_conceal_decodes_every_frame_and_names_the_concealed_ones(runs, offsets, clean, engine):
    _, proc = runs["conceal"]
    assert proc.returncode == 0, proc.stderr.decode()
    lines = proc.stderr.decode().splitlines()
    assert f"pmtdec: concealed frames 11..18 (keyframe lost: crc_mismatch at byte {offsets[('keyframe', 14)]}); " \
           f"frame 19 follows from them" in lines
    frames = np.frombuffer(proc.stdout, dtype=np.uint8).reshape(FRAMES, SIZE, SIZE, 3)
    streams, _ = concealed(damage(clean, offsets, ("keyframe", 14)))
    assert np.array_equal(frames, decode(streams, engine))


def test_pmtdec_conceal_on_a_clean_stream_changes_nothing(runs):
    (_, with_conceal), (_, plain) = runs["clean-conceal"], runs["clean-plain"]
    assert with_conceal.returncode == 0 and plain.returncode == 0
    assert len(plain.stdout) == FRAMES * SIZE * SIZE * 3
    assert with_conceal.stdout == plain.stdout
    assert "conceal" not in with_conceal.stderr.decode()


def test_pmtdec_conceal_refuses_a_damaged_sequence_header(runs):
    directory, proc = runs["header"]
    assert error_line(proc) == ("pmtdec: error: invalid data: crc_mismatch: the sequence header is damaged: the "
                                "stream cannot be decoded at byte 10")
    assert sorted(p.name for p in directory.iterdir()) == ["in.pmt"]


def test_the_api_reports_concealment(workdir, clean, offsets):
    import libpromptus as pmt

    path = workdir / "api-damaged.pmt"
    path.write_bytes(damage(clean, offsets, ("keyframe", 14)))
    with pytest.raises(InvalidDataError):
        pmt.open(path)
    with pmt.open(path, conceal=True) as container:
        assert container.concealment.frames == tuple(range(11, 19))
        assert container.info.frame_count == FRAMES
    assert pmt.open(workdir / "clean.pmt", conceal=True).concealment.damaged is False
    assert pmt.open(workdir / "clean.pmt").concealment is None


TAIL_NOTE = "pmtdec: bytes 18674..18873 after the end of stream 0 are not a stream: skipped"


def test_pmtdec_conceal_decodes_every_frame_before_trailing_garbage(runs):
    _, proc = runs["tail-conceal"]
    assert proc.returncode == 0, proc.stderr.decode()
    assert TAIL_NOTE in proc.stderr.decode().splitlines()
    assert "conceal" not in proc.stderr.decode()
    assert len(proc.stdout) == FRAMES * SIZE * SIZE * 3
    assert proc.stdout == runs["clean-plain"][1].stdout


def dumped_prompts(directory: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(directory / "out.npz") as dump:
        return dump["frame_index"], dump["prompts"]


@pytest.mark.parametrize(("name", "intact", "note"), [
    ("tail-dump", 1, TAIL_NOTE),
    ("between-dump", 2, f"pmtdec: {skipped(18674, len(GARBAGE['cut-signatures-inside'](b'')))}"),
])
def test_pmtdec_conceal_dumps_the_prompts_of_every_intact_stream(runs, clean, name, intact, note):
    directory, proc = runs[name]
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stderr.decode().splitlines() == [note, f"pmtdec: wrote the conditioning of {intact * FRAMES} frames "
                                                       f"to out.npz"]
    frame_index, prompts = dumped_prompts(directory)
    assert frame_index.tolist() == list(range(intact * FRAMES))
    want = np.stack([c for _, c in frame_conditioning(read_streams(io.BytesIO(clean * intact)))])
    assert np.array_equal(prompts, want)


def test_pmtdec_without_conceal_refuses_trailing_garbage(runs):
    directory, proc = runs["tail-strict"]
    assert error_line(proc) == ("pmtdec: error: invalid data: bad_signature: not a .pmt stream (signature mismatch) "
                                "at byte 18674")
    assert sorted(p.name for p in directory.iterdir()) == ["in.pmt"]
