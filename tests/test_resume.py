"""Interrupted encodes resume from their last keyframe and give the same bytes, or refuse."""
import io
import logging
import os
import subprocess
import sys

import pytest
from libpromptus.bitstream import InvalidDataError, StreamWriter, read_streams

import libpromptus.encoder.job
from libpromptus import encode
from libpromptus.encoder.checkpoint import Checkpoint, CheckpointError
from libpromptus.io.files import OutputBusyError, WorkDirectory
from libpromptus.io.samples import write_sample

#: The rate controller without the trials (a tenth of the time); the first test resumes an encode
#: that decided by trials, whose decisions the checkpoint must carry.
OPTIONS = dict(model="tiny", bitrate=80_000, iterations=2, first_iterations=3, decisions="formula")
WITH_TRIALS = {**OPTIONS, "decisions": "trial"}


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("resume") / "clip.y4m"
    write_sample(str(path), 30, 48, 48)
    return path


def _interrupt_after(count):
    seen = []

    def on_keyframe(report):
        seen.append(report.frame_index)
        if len(seen) == count:
            raise KeyboardInterrupt

    return on_keyframe


def test_resume_after_an_interruption_gives_identical_bytes(clip, tmp_path):
    full = tmp_path / "full.pmt"
    encode(str(clip), str(full), **WITH_TRIALS)
    resumed = tmp_path / "resumed.pmt"
    with pytest.raises(KeyboardInterrupt):
        encode(str(clip), str(resumed), on_keyframe=_interrupt_after(3), **WITH_TRIALS)
    work = tmp_path / ".resumed.pmt.resume"
    assert not resumed.exists()
    assert sorted(os.listdir(work)) == ["checkpoint.npz", "lock", "stream.partial"]
    result = encode(str(clip), str(resumed), resume=True, **WITH_TRIALS)
    assert resumed.read_bytes() == full.read_bytes()
    assert not work.exists()
    assert result.frames == 30 and read_streams(str(resumed))[0].frame_count == 30


def test_resume_truncates_bytes_written_after_the_last_checkpoint(clip, tmp_path):
    full = tmp_path / "full.pmt"
    encode(str(clip), str(full), **OPTIONS)
    out = tmp_path / "out.pmt"
    with pytest.raises(KeyboardInterrupt):
        encode(str(clip), str(out), on_keyframe=_interrupt_after(2), **OPTIONS)
    with open(tmp_path / ".out.pmt.resume" / "stream.partial", "ab") as partial:
        partial.write(b"half a unit written when the process was killed")
    encode(str(clip), str(out), resume=True, **OPTIONS)
    assert out.read_bytes() == full.read_bytes()


def test_resume_refuses_other_options_and_missing_checkpoints(clip, tmp_path):
    out = tmp_path / "out.pmt"
    with pytest.raises(ValueError, match="nothing to resume"):
        encode(str(clip), str(out), resume=True, **OPTIONS)
    assert os.listdir(tmp_path) == []                   # the refusal leaves no work folder
    with pytest.raises(KeyboardInterrupt):
        encode(str(clip), str(out), on_keyframe=_interrupt_after(2), **OPTIONS)
    with pytest.raises(ValueError, match="differ from the interrupted encode"):
        encode(str(clip), str(out), resume=True, **{**OPTIONS, "iterations": 3})


def test_other_failures_leave_nothing_behind(clip, tmp_path):
    out = tmp_path / "out.pmt"

    def fail(report):
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        encode(str(clip), str(out), on_keyframe=fail, **OPTIONS)
    assert os.listdir(tmp_path) == []


def test_writer_resume_checks_what_it_reads_back(clip, tmp_path):
    out = tmp_path / "out.pmt"
    encode(str(clip), str(out), **OPTIONS)
    data = out.read_bytes()
    streams = read_streams(str(out))
    last_keyframe = streams[0].scenes[-1].keyframes[-1]
    prefix = data[: last_keyframe.offset + last_keyframe.size]
    writer, units = StreamWriter.resume(open(os.devnull, "wb"), prefix)
    assert writer.size == len(prefix)
    assert units[-1].frame_index == last_keyframe.unit.frame_index == 29
    assert (units[-1].u == last_keyframe.unit.u).all() and (units[-1].v == last_keyframe.unit.v).all()
    damaged = bytearray(prefix)
    damaged[-3] ^= 0x01
    with pytest.raises(InvalidDataError) as err:
        StreamWriter.resume(open(os.devnull, "wb"), bytes(damaged))
    assert err.value.code == "crc_mismatch"


@pytest.fixture(scope="module")
def reference(clip, tmp_path_factory):
    """The uninterrupted encode's bytes."""
    path = tmp_path_factory.mktemp("reference") / "full.pmt"
    encode(str(clip), str(path), **OPTIONS)
    return path.read_bytes()


def _interrupted(clip, out, keyframes=2):
    with pytest.raises(KeyboardInterrupt):
        encode(str(clip), str(out), on_keyframe=_interrupt_after(keyframes), **OPTIONS)
    return out.parent / f".{out.name}.resume"


def test_the_checkpoint_is_one_file_pinned_to_its_partial_stream(clip, tmp_path):
    import hashlib

    work = _interrupted(clip, tmp_path / "out.pmt", keyframes=3)
    checkpoint = Checkpoint.load(work / "checkpoint.npz")
    partial = (work / "stream.partial").read_bytes()
    # interrupted inside the third keyframe's report: its unit is written, the checkpoint is the second's
    units = StreamWriter.resume(open(os.devnull, "wb"), partial[:checkpoint.stream_bytes])[1]
    assert [u.frame_index for u in units if hasattr(u, "u")] == [k["frame_index"] for k in
                                                                  checkpoint.state["keyframes"]]
    assert len(checkpoint.state["keyframes"]) == 2 and len(partial) > checkpoint.stream_bytes
    assert checkpoint.stream_sha256 == hashlib.sha256(partial[:checkpoint.stream_bytes]).hexdigest()
    assert checkpoint.state["next_frame"] == checkpoint.state["keyframes"][-1]["frame_index"] + 1
    assert set(checkpoint.arrays) == {"previous_latent", "last_scene_latent", "rng_state"}
    assert (work / "lock").read_text() == f"{os.getpid()}\n"


@pytest.mark.parametrize("damage", ["checkpoint bytes", "stream byte", "stream cut", "other checkpoint"])
def test_resume_refuses_a_checkpoint_that_does_not_match_its_stream(clip, tmp_path, damage):
    out = tmp_path / "out.pmt"
    work = _interrupted(clip, out, keyframes=3)
    checkpoint_path, partial = work / "checkpoint.npz", work / "stream.partial"
    if damage == "checkpoint bytes":
        data = bytearray(checkpoint_path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        checkpoint_path.write_bytes(bytes(data[: len(data) - 7]))
    elif damage == "stream byte":
        data = bytearray(partial.read_bytes())
        data[100] ^= 0x01
        partial.write_bytes(bytes(data))
    elif damage == "stream cut":
        partial.write_bytes(partial.read_bytes()[:Checkpoint.load(checkpoint_path).stream_bytes - 1])
    else:
        # A checkpoint taken further on than the partial stream it is read with reaches
        # (the old two-file design's torn checkpoint was of this kind).
        later = _interrupted(clip, tmp_path / "later.pmt", keyframes=6)
        os.replace(later / "checkpoint.npz", checkpoint_path)
    with pytest.raises(CheckpointError) as err:
        encode(str(clip), str(out), resume=True, **OPTIONS)
    assert "\n" not in str(err.value)
    assert ("damaged checkpoint" if damage == "checkpoint bytes" else "does not match its checkpoint") in str(err.value)
    assert not out.exists() and (work / "checkpoint.npz").exists()


def test_an_earlier_consistent_checkpoint_resumes_to_the_same_bytes(clip, tmp_path, reference):
    out = tmp_path / "out.pmt"
    work = _interrupted(clip, out, keyframes=5)
    earlier = _interrupted(clip, tmp_path / "early.pmt", keyframes=2)
    os.replace(earlier / "checkpoint.npz", work / "checkpoint.npz")
    encode(str(clip), str(out), resume=True, **OPTIONS)
    assert out.read_bytes() == reference


def test_a_kill_between_the_final_rename_and_the_clean_up_is_recognised(clip, tmp_path, reference, monkeypatch,
                                                                         caplog):
    out = tmp_path / "out.pmt"
    published = libpromptus.encoder.job.publish

    def publish_then_die(temporary, target):
        published(temporary, target)
        raise KeyboardInterrupt                # as if killed right after the rename

    monkeypatch.setattr(libpromptus.encoder.job, "publish", publish_then_die)
    with pytest.raises(KeyboardInterrupt):
        encode(str(clip), str(out), **OPTIONS)
    monkeypatch.undo()
    work = tmp_path / ".out.pmt.resume"
    assert out.read_bytes() == reference
    assert sorted(os.listdir(work)) == ["checkpoint.npz", "lock"]
    with pytest.raises(FileExistsError):
        encode(str(clip), str(out), resume=True, **OPTIONS)
    with caplog.at_level(logging.INFO, logger="libpromptus"):
        result = encode(str(clip), str(out), resume=True, overwrite=True, **OPTIONS)
    assert "the interrupted encode had already finished; nothing to resume" in caplog.text
    assert out.read_bytes() == reference and not work.exists()
    assert (result.frames, result.bytes) == (30, len(reference))
    assert [k.frame_index for k in result.summary.keyframes] == \
        [k.unit.frame_index for s in read_streams(str(out))[0].scenes for k in s.keyframes]


def test_a_plain_rerun_discards_the_interrupted_encode_and_says_so(clip, tmp_path, reference, caplog):
    out = tmp_path / "out.pmt"
    _interrupted(clip, out)
    with caplog.at_level(logging.WARNING, logger="libpromptus"):
        encode(str(clip), str(out), **OPTIONS)
    assert "discarding the interrupted encode in" in caplog.text
    assert out.read_bytes() == reference and os.listdir(tmp_path) == ["out.pmt"]


def test_a_second_encode_of_the_same_output_fails_at_once(clip, tmp_path):
    out = tmp_path / "out.pmt"
    with WorkDirectory(out):
        with pytest.raises(OutputBusyError) as err:
            encode(str(clip), str(out), **OPTIONS)
        assert str(err.value) == f"[Errno 16] being written by process {os.getpid()}: '{out}'"
        with pytest.raises(OutputBusyError):
            encode(str(clip), str(out), resume=True, **OPTIONS)
        assert sorted(os.listdir(tmp_path / ".out.pmt.resume")) == ["lock"]
    assert not out.exists() and os.listdir(tmp_path) == []


def test_a_dead_process_lock_is_taken_over(clip, tmp_path, reference):
    out = tmp_path / "out.pmt"
    holder = ("import sys, os; from libpromptus.io.files import WorkDirectory; "
              "w = WorkDirectory(sys.argv[1]).open(); (w.path / 'stream.partial').write_bytes(b'x'); os._exit(0)")
    subprocess.run([sys.executable, "-c", holder, str(out)], check=True)
    work = tmp_path / ".out.pmt.resume"
    assert sorted(os.listdir(work)) == ["lock", "stream.partial"]   # the dead process's lock, left as a kill leaves it
    encode(str(clip), str(out), **OPTIONS)
    assert out.read_bytes() == reference and not work.exists()


def test_a_failed_write_names_the_output(clip, tmp_path, monkeypatch):
    out = tmp_path / "out.pmt"

    def full_disk(self, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(StreamWriter, "_emit", full_disk)
    with pytest.raises(OSError) as err:
        encode(str(clip), str(out), **OPTIONS)
    assert (err.value.errno, err.value.filename) == (28, str(out))
    assert os.listdir(tmp_path) == []


def test_a_checkpoint_taken_at_a_scene_cut_resumes_to_the_same_bytes(clip, tmp_path, reference):
    """The old scene's last keyframe is checkpointed while the cut's frame is being pushed:
    the checkpoint must send a resume back to that frame (found by killing at every call)."""
    keyframes = [(scene_number, k.unit.frame_index) for scene_number, scene in
                 enumerate(read_streams(io.BytesIO(reference))[0].scenes) for k in scene.keyframes]
    first_of_second_scene = next(n for n, (scene, _) in enumerate(keyframes) if scene == 1)
    out = tmp_path / "out.pmt"
    # interrupted in the report of the new scene's first keyframe: the checkpoint on disk is the mid-cut one
    work = _interrupted(clip, out, keyframes=first_of_second_scene + 1)
    checkpoint = Checkpoint.load(work / "checkpoint.npz")
    assert checkpoint.state["next_frame"] == keyframes[first_of_second_scene - 1][1] + 1
    encode(str(clip), str(out), resume=True, **OPTIONS)
    assert out.read_bytes() == reference


def test_a_checkpoint_of_another_layout_is_refused_not_misread(tmp_path):
    import json

    import numpy as np

    path = tmp_path / "checkpoint.npz"
    buffer = io.BytesIO()
    np.savez(buffer, checkpoint_state=np.frombuffer(json.dumps({"format": 2}).encode(), dtype=np.uint8))
    path.write_bytes(buffer.getvalue())
    with pytest.raises(CheckpointError, match="^.*checkpoint.npz: a checkpoint of another libpromptus version$"):
        Checkpoint.load(path)
    path.write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(CheckpointError, match="a damaged checkpoint"):
        Checkpoint.load(path)
