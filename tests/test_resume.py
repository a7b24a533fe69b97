"""Interrupted encodes resume from their last keyframe and give the same bytes."""
import os

import pytest

from libpromptus.api import encode
from libpromptus.bitstream import InvalidDataError, StreamWriter, read_streams
from libpromptus.samples import write_sample

OPTIONS = dict(model="tiny", bitrate=80_000, iterations=2, first_iterations=3)


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
    encode(str(clip), str(full), **OPTIONS)
    resumed = tmp_path / "resumed.pmt"
    with pytest.raises(KeyboardInterrupt):
        encode(str(clip), str(resumed), on_keyframe=_interrupt_after(3), **OPTIONS)
    work = tmp_path / ".resumed.pmt.resume"
    assert not resumed.exists()
    assert sorted(os.listdir(work)) == ["state.json", "state.npz", "stream.partial"]
    result = encode(str(clip), str(resumed), resume=True, **OPTIONS)
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
