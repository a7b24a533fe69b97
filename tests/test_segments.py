"""Segment-parallel encoding: closed segments encoded independently, merged into one stream."""
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from libpromptus.bitstream import (
    Coding,
    InvalidDataError,
    Keyframe,
    LatentCodec,
    SceneCut,
    SceneStart,
    StreamWriter,
    merge_streams,
    read_streams,
)

from libpromptus import CheckpointError, encode
from libpromptus.io.samples import write_sample
from libpromptus.process.profiles import TINY


def _segment(frames: list[int], seed: int, *, width: int = 32) -> bytes:
    """A tiny-profile stream with keyframes at `frames` (the first is 0)."""
    header = TINY.sequence_header(width=width, height=32, fps_num=30, fps_den=1, frame_count=frames[-1] + 1)
    rng = np.random.default_rng(seed)
    sink = io.BytesIO()
    with StreamWriter(sink, header) as writer:
        writer.write(SceneStart(0, LatentCodec.Q8, Coding.ENTROPY,
                                rng.integers(0, 256, header.latent_shape, np.uint8), (0.1,) * 4, (128,) * 4))
        for index in frames:
            writer.write(Keyframe(index, Coding.ENTROPY, rng.integers(0, 256, (77, 2), np.uint8),
                                  rng.integers(0, 256, (2, 1024), np.uint8), 0.02, 100, 0.1, 120))
    return sink.getvalue()


def test_merge_shifts_frames_and_keeps_every_unit():
    first, second = _segment([0, 4, 9], 1), _segment([0, 3, 5], 2)
    segments = [read_streams(io.BytesIO(first))[0], read_streams(io.BytesIO(second))[0]]
    sink = io.BytesIO()
    merge_streams(segments, sink, cuts=[False, True])
    merged = read_streams(io.BytesIO(sink.getvalue()))
    assert len(merged) == 1 and merged[0].frame_count == 16 and merged[0].header.frame_count == 16
    scenes = merged[0].scenes
    assert [s.first_frame for s in scenes] == [0, 10]
    assert scenes[0].cut is None and isinstance(scenes[1].cut.unit, SceneCut) and scenes[1].cut.unit.frame_index == 10
    assert [k.unit.frame_index for s in scenes for k in s.keyframes] == [0, 4, 9, 10, 13, 15]
    originals = [k.unit for seg in segments for s in seg.scenes for k in s.keyframes]
    for original, item in zip(originals, [k for s in scenes for k in s.keyframes]):
        assert np.array_equal(original.u, item.unit.u) and np.array_equal(original.v, item.unit.v)
    assert np.array_equal(segments[1].scenes[0].start.unit.latent, scenes[1].start.unit.latent)


def test_merge_refuses_segments_with_other_headers():
    segments = [read_streams(io.BytesIO(_segment([0, 2], 1)))[0],
                read_streams(io.BytesIO(_segment([0, 2], 2, width=48)))[0]]
    with pytest.raises(InvalidDataError) as err:
        merge_streams(segments, io.BytesIO())
    assert err.value.code == "stream_mismatch"


def test_segmented_encode_is_one_valid_stream_of_closed_segments(tmp_path):
    clip = tmp_path / "clip.y4m"
    write_sample(str(clip), 40, 32, 32)
    out = tmp_path / "out.pmt"
    result = encode(str(clip), str(out), model="tiny", rank=2, interval=5, iterations=1, first_iterations=1,
                    scene_threshold=None, segment_seconds=0.5, jobs=1)
    stream = read_streams(str(out))[0]
    assert result.frames == 40 and stream.frame_count == 40
    assert [s.first_frame for s in stream.scenes] == [0, 15, 30]
    assert [k.unit.frame_index for s in stream.scenes for k in s.keyframes] == [0, 5, 10, 14, 15, 20, 25, 29, 30,
                                                                              35, 39]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.y4m", "out.pmt"]
    again = tmp_path / "again.pmt"
    encode(str(clip), str(again), model="tiny", rank=2, interval=5, iterations=1, first_iterations=1,
           scene_threshold=None, segment_seconds=0.5, jobs=1)
    assert again.read_bytes() == out.read_bytes()


# ------------------------------------------------------------------ where segments run, resuming them

#: A segmented encode of 24 frames at 32x32 in 4 segments of 6 frames, fast: two iterations, no perceptual term.
SEGMENTED = dict(model="tiny", rank=2, interval=3, iterations=2, first_iterations=2, perceptual="none",
                 scene_threshold=None, segment_seconds=0.2, threads=1)


@pytest.fixture(scope="module")
def clip24(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("segments") / "clip.y4m"
    write_sample(str(path), 24, 32, 32)
    return path


@pytest.fixture(scope="module")
def uninterrupted(clip24) -> bytes:
    out = clip24.parent / "whole.pmt"
    encode(str(clip24), str(out), **SEGMENTED)
    return out.read_bytes()


def test_two_local_processes_write_the_bytes_one_process_writes(clip24, uninterrupted, tmp_path):
    records = []
    result = encode(str(clip24), str(tmp_path / "jobs.pmt"), jobs=2, on_segment=records.append, **SEGMENTED)
    assert (tmp_path / "jobs.pmt").read_bytes() == uninterrupted
    assert result.frames == 24 and result.interval == 3 and result.rank == 2
    assert sorted((r.segment, r.first, r.count, r.attempts, r.reused) for r in records) == [
        (0, 0, 6, 1, False), (1, 6, 6, 1, False), (2, 12, 6, 1, False), (3, 18, 6, 1, False)]


def test_keyframes_reach_on_keyframe_once_each_in_the_encodes_frame_numbers(clip24, tmp_path):
    reports = []
    result = encode(str(clip24), str(tmp_path / "out.pmt"), on_keyframe=reports.append, **SEGMENTED)
    assert [(k.first_frame, k.frame_index) for k in reports] == [
        (k.first_frame, k.frame_index) for k in result.summary.keyframes]
    assert [k.frame_index for k in reports] == [0, 3, 5, 6, 9, 11, 12, 15, 17, 18, 21, 23]
    assert sum(k.frame_index + 1 - k.first_frame for k in reports) == 24


class _Interrupt(KeyboardInterrupt):
    pass


def _interrupt_after(count: int):
    """An `on_segment` that interrupts the encode (as Ctrl-C would) once `count` segments are kept."""
    kept = []

    def on_segment(record) -> None:
        kept.append(record)
        if len(kept) == count:
            raise _Interrupt
    return on_segment


def test_an_interrupted_segmented_encode_resumes_with_the_unfinished_segments_only(clip24, uninterrupted, tmp_path):
    out = tmp_path / "out.pmt"
    with pytest.raises(_Interrupt):
        encode(str(clip24), str(out), on_segment=_interrupt_after(2), **SEGMENTED)
    work = tmp_path / ".out.pmt.resume"
    assert not out.exists()
    assert sorted(p.name for p in work.iterdir()) == ["00000.json", "00000.pmt", "00001.json", "00001.pmt", "lock",
                                                     "segments.json"]
    records, reports, stats = [], [], io.StringIO()
    encode(str(clip24), str(out), resume=True, on_segment=records.append, on_keyframe=reports.append, stats=stats,
           **SEGMENTED)
    assert out.read_bytes() == uninterrupted
    assert [(r.segment, r.reused) for r in records] == [(0, True), (1, True), (2, False), (3, False)]
    assert [k.frame_index for k in reports] == [12, 15, 17, 18, 21, 23]          # only the new segments were fitted
    lines = [json.loads(line) for line in stats.getvalue().splitlines()]
    assert [r["segment"] for r in lines if "attempts" in r] == [0, 1, 2, 3]
    assert [r["reused"] for r in lines if "attempts" in r] == [True, True, False, False]
    assert not work.exists()


def test_resuming_refuses_another_encodes_segments_and_an_empty_folder(clip24, tmp_path):
    out = tmp_path / "out.pmt"
    with pytest.raises(CheckpointError, match="nothing to resume"):
        encode(str(clip24), str(out), resume=True, **SEGMENTED)
    with pytest.raises(_Interrupt):
        encode(str(clip24), str(out), on_segment=_interrupt_after(1), **SEGMENTED)
    for changed in ({"rank": 3}, {"threads": 2}, {"segment_seconds": 0.3}):
        with pytest.raises(CheckpointError, match="differ from the interrupted encode; start again without --resume"):
            encode(str(clip24), str(out), resume=True, **{**SEGMENTED, **changed})
    assert (tmp_path / ".out.pmt.resume" / "00000.pmt").exists()        # refused, not thrown away
    (tmp_path / ".out.pmt.resume" / "00000.pmt").write_bytes(b"PMT")
    with pytest.raises(CheckpointError, match="segment 0 .* is damaged"):
        encode(str(clip24), str(out), resume=True, **SEGMENTED)


def test_a_failing_segment_leaves_no_output_and_no_work_folder(clip24, tmp_path):
    with pytest.raises(ValueError, match="--rank 99: model tiny allows ranks"):
        encode(str(clip24), str(tmp_path / "out.pmt"), jobs=2, **{**SEGMENTED, "rank": 99})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("arguments, message", [
    (dict(jobs=2), "--jobs and --cluster run segments: give --segment-seconds"),
    (dict(cluster="local"), "--jobs and --cluster run segments: give --segment-seconds"),
    (dict(segment_seconds=0.2, jobs=2, cluster="local"), "--jobs counts local processes"),
    (dict(segment_seconds=0), "--segment-seconds 0: must be positive"),
    (dict(segment_seconds=0.2, threads=0), "-threads 0: at least 1"),
])
def test_placement_options_are_checked_before_anything_runs(clip24, tmp_path, arguments, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        encode(str(clip24), str(tmp_path / "out.pmt"), model="tiny", **arguments)
    assert list(tmp_path.iterdir()) == []


def test_a_segmented_encode_cannot_read_a_pipe(tmp_path):
    with pytest.raises(ValueError, match="not a pipe"):
        encode("-", str(tmp_path / "out.pmt"), model="tiny", segment_seconds=1)


def _fitting_workers(parent: int) -> list[int]:
    """The `--jobs` worker processes of pmtenc `parent` that are fitting a segment (they hold
    files in its private folder, `libpromptus-segment-*`)."""
    found = []
    for name in os.listdir("/proc"):
        try:
            if not name.isdigit() or int(Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()[1]) != parent:
                continue
            if any("libpromptus-segment-" in os.readlink(f"/proc/{name}/fd/{fd}") for fd in os.listdir(f"/proc/{name}/fd")):
                found.append(int(name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def test_a_killed_local_worker_stops_the_encode_in_one_line_and_resume_finishes_it(tmp_path):
    clip = tmp_path / "clip.y4m"
    write_sample(str(clip), 24, 64, 64)
    options = ["--model", "tiny", "--rank", "2", "-g", "3", "--iterations", "30", "--first-iterations", "60",
               "--perceptual", "none", "--scene-threshold", "off", "--segment-seconds", "0.2", "-threads", "1",
               "-loglevel", "error"]
    pmtenc = [sys.executable, "-m", "libpromptus.cli.pmtenc", "-i", str(clip), *options]
    subprocess.run([*pmtenc, str(tmp_path / "whole.pmt")], check=True, timeout=600)
    out, work = tmp_path / "out.pmt", tmp_path / ".out.pmt.resume"
    encode_process = subprocess.Popen([*pmtenc, "--jobs", "2", str(out)], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not list(work.glob("0*.json")) and time.monotonic() < deadline:
            time.sleep(0.1)
        workers = _fitting_workers(encode_process.pid)
        assert workers and list(work.glob("0*.json")), "no worker or no finished segment"
        os.kill(workers[0], signal.SIGKILL)
        _, errors = encode_process.communicate(timeout=120)
    finally:
        encode_process.kill()
    assert encode_process.returncode == 1
    assert errors.strip().splitlines() == ["pmtenc: error: a segment's worker process died; the finished segments "
                                           "are kept: run again with --resume to encode the rest"]
    assert not out.exists() and list(work.glob("0*.pmt"))
    subprocess.run([*pmtenc, "--jobs", "2", "--resume", str(out)], check=True, timeout=600)
    assert out.read_bytes() == (tmp_path / "whole.pmt").read_bytes()
    assert not work.exists()


def _spawned_children() -> list[int]:
    """This process's `multiprocessing` spawned children, oldest first (a manager starts before its pool)."""
    children = []
    for name in os.listdir("/proc"):
        try:
            stat = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()
            if name.isdigit() and int(stat[1]) == os.getpid() and \
                    b"spawn_main" in Path(f"/proc/{name}/cmdline").read_bytes():
                children.append((int(stat[19]), int(name)))       # (start time, pid)
        except (OSError, ValueError, IndexError):
            continue
    return [pid for _, pid in sorted(children)]


def test_losing_the_local_report_queue_costs_the_progress_not_the_encode(clip24, uninterrupted, tmp_path, caplog):
    """The report queue's manager process killed at the first keyframe: the segments still
    finish, and the keyframes' reports come with them."""
    killed, reports = [], []

    def on_keyframe(report) -> None:
        reports.append(report)
        if not killed:
            killed.append(_spawned_children()[0])
            os.kill(killed[0], signal.SIGKILL)

    with caplog.at_level("WARNING", logger="libpromptus"):
        encode(str(clip24), str(tmp_path / "out.pmt"), jobs=2, on_keyframe=on_keyframe, **SEGMENTED)
    assert killed and (tmp_path / "out.pmt").read_bytes() == uninterrupted
    assert "the segments' progress reports were lost" in caplog.text
    assert sorted(k.frame_index for k in reports) == [0, 3, 5, 6, 9, 11, 12, 15, 17, 18, 21, 23]
