"""pmteval end to end: the baselines at their rates, resumability, bad arguments, the tiny model.

The rate tolerance the baselines are held to is the rate matcher's: the whole file within
±3 % of the target (the encoders' own rate control alone misses by up to 70 % on clips
this short; see libpromptus.evaluation.ratematch).
"""
from __future__ import annotations

import json
import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from libpromptus.cli import pmteval

from libpromptus.evaluation.baselines import PyAVCodec
from libpromptus.evaluation.clip import Clip
from libpromptus.evaluation.metrics import psnr
from libpromptus.evaluation.promptus import PromptusCodec
from libpromptus.evaluation.ratematch import TOLERANCE
from libpromptus.evaluation.registry import create_codec
from libpromptus.io.samples import write_y4m
from libpromptus.models.procedural import random_clip

UVG = Path(__file__).resolve().parents[2] / "shared" / "reference" / "promptus-official" / "uvg" / "frames"


@pytest.fixture(scope="module")
def clip() -> Clip:
    """One second of a held-out procedural clip, 128x128 at 30 fps."""
    return Clip(tuple(random_clip(1_000_300, 30, 128, 128)[0]), Fraction(30))


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> str:
    """12 frames 64x64 of a held-out procedural clip as a y4m file."""
    path = tmp_path_factory.mktemp("source") / "clip.y4m"
    write_y4m(str(path), random_clip(1_000_301, 12, 64, 64)[0])
    return str(path)


@pytest.mark.parametrize("name", ["x265", "x264", "av1", "vp9"])
def test_baseline_lands_on_its_target_and_decodes(clip, tmp_path, name):
    codec = create_codec(name)
    path = tmp_path / f"out{codec.extension}"
    encoded = codec.encode(clip, 100e3, path, lambda text: None)
    bitrate = encoded.file_bytes * 8 / float(clip.duration)
    assert abs(bitrate / 100e3 - 1) <= TOLERANCE
    assert encoded.file_bytes == path.stat().st_size and 0 < encoded.payload_bytes <= encoded.file_bytes
    decoded = codec.decode(path, lambda text: None)
    assert len(decoded) == 30 and decoded[0].shape == (128, 128, 3)
    assert np.mean([psnr(a, b) for a, b in zip(clip.frames, decoded)]) > 25


@pytest.mark.parametrize("name", ["x265", "x264", "av1", "vp9"])
def test_baseline_encodes_are_repeatable(clip, tmp_path, name):
    """The same frames and target give the same bytes (SVT-AV1 only on one thread: with
    more, its rate control followed thread timing and the rate search could not converge)."""
    codec = create_codec(name)
    files = [tmp_path / f"out{n}{codec.extension}" for n in range(2)]
    for path in files:
        codec.encode(clip, 100e3, path, lambda text: None)
    assert files[0].read_bytes() == files[1].read_bytes()


def test_odd_sizes_are_refused_by_the_420_baselines():
    odd = Clip((np.zeros((15, 16, 3), np.uint8),), Fraction(30))
    with pytest.raises(ValueError, match="even width and height"):
        create_codec("x264").check(odd)


def _run(capsys, *argv) -> tuple[int, str]:
    status = pmteval.main(list(argv))
    return status, capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--codecs", "promptus,h266"], "unknown codec 'h266'"),
    (["--codecs", "x264,x264"], "given twice"),
    (["--bitrates", "100k,fast"], "not a bitrate"),
    (["--bitrates", "100k,-5k"], "must be positive"),
    (["-frames:v", "0"], "at least one frame"),
    (["--iterations", "-1"], "out of range"),
    (["--trace", "5g"], "no such file"),
    (["--segment-seconds", "0"], "must be positive"),
    (["--segment-seconds", "31"], "at most the 30-s buffer"),
    (["--bitrates", "100k,100000"], "given twice"),
    (["-s", "wide"], "not a size"),
    (["--abr", "fastest"], "expected bba, bba:RESERVOIR:CUSHION, throughput"),
    (["--abr", "fixed:0,1"], "a fixed path is for pmtdec"),
])
def test_bad_arguments_give_one_line_and_fail(capsys, tmp_path, source, argv, message):
    status, err = _run(capsys, "-i", source, "-o", str(tmp_path / "out"), *argv)
    assert status == 1 and err.count("\n") == 1 and err.startswith("pmteval: error: ") and message in err
    assert not (tmp_path / "out").exists()


def test_bad_input_and_output_give_one_line_and_fail(capsys, tmp_path, source):
    status, err = _run(capsys, "-i", str(tmp_path / "missing.y4m"), "-o", str(tmp_path / "out"), "--codecs", "x264")
    assert status == 1 and err.count("pmteval: error:") == 1 and "no such file" in err
    (tmp_path / "file").write_text("")
    status, err = _run(capsys, "-i", source, "-o", str(tmp_path / "file"), "--codecs", "x264")
    assert status == 1 and err.strip() == f"pmteval: error: {tmp_path / 'file'}: not a folder"
    with pytest.raises(SystemExit) as exit_info:
        pmteval.main(["-i", source])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and "-o" in err


def test_finished_runs_are_not_redone_unless_they_differ(capsys, caplog, tmp_path, source, monkeypatch):
    out = tmp_path / "out"
    argv = ["-i", source, "-o", str(out), "--codecs", "x264", "--bitrates", "60k,120k"]
    assert _run(capsys, *argv)[0] == 0
    first = {p.name: p.read_text() for p in (out / "runs").iterdir()}
    calls = []
    real_encode = PyAVCodec.encode

    def counting_encode(self, *args):
        calls.append(args[1])
        return real_encode(self, *args)

    monkeypatch.setattr(PyAVCodec, "encode", counting_encode)
    caplog.clear()
    assert _run(capsys, *argv)[0] == 0
    assert calls == [] and caplog.text.count("finished before, kept") == 2
    assert {p.name: p.read_text() for p in (out / "runs").iterdir()} == first
    record = json.loads(first["x264-60k.json"])
    (out / "runs" / "x264-60k.json").write_text(json.dumps({**record, "fingerprint": "stale"}))
    assert _run(capsys, *argv)[0] == 0 and calls == [60e3]        # only the stale run again
    assert not [p for p in out.rglob(".*.part")]


def test_evaluation_end_to_end_with_the_tiny_model(capsys, caplog, tmp_path, source):
    pytest.importorskip("diffusers")
    from libpromptus.cli.pmteval import REAL_SESSION

    trace = tmp_path / "slow.txt"
    trace.write_text("# 150 kbit/s for 4 seconds\n150\n150\n150\n150\n")
    out = tmp_path / "out"
    status, err = _run(capsys, "-i", source, "-o", str(out), "--codecs", "promptus,x264", "--bitrates", "100k,200k",
                       "--model", "tiny", "--iterations", "5", "--first-iterations", "5", "--trace", str(trace),
                       "--trace", "2g", "--segment-seconds", "0.2", "--abr", "throughput")
    assert status == 0, err
    assert "promptus-100k: keyframe" in caplog.text and "[4/4] x264-200k" in caplog.text   # progress
    summary = json.loads((out / "summary.json").read_text())
    runs = {(r["codec"], r["label"]): r for r in summary["runs"]}
    assert set(runs) == {("promptus", "100k"), ("promptus", "200k"), ("x264", "100k"), ("x264", "200k")}
    for run in runs.values():
        file = out / run["file"]
        assert run["file_bytes"] == file.stat().st_size
        assert run["bitrate_bps"] == pytest.approx(file.stat().st_size * 8 / 0.4)
    record = json.loads((out / "runs" / "promptus-100k.json").read_text())
    assert len(record["frames"]) == 12 and record["settings"]["model"] == "tiny"
    assert record["payload_bytes"] < record["file_bytes"]
    assert set(summary["bd_rate"]["psnr"]) == {"x264"}
    bd = summary["bd_rate"]["psnr"]["x264"]
    assert bd["percent"] is not None or bd["note"]
    markdown = (out / "summary.md").read_text()
    assert f"{runs[('x264', '100k')]['bitrate_bps'] / 1000:.1f}" in markdown and "LPIPS" in markdown
    for name in ("rd.png", "cdf.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    slow = json.loads((out / "abr-slow.json").read_text())
    assert set(slow["codecs"]) == {"promptus", "x264", REAL_SESSION} and slow["codecs"]["x264"]["segments"] == 20
    assert "x264" in (out / "abr-2g.md").read_text() and REAL_SESSION in (out / "abr-2g.md").read_text()
    # Promptus's rendition set, played by the real client through the 150 kbit/s link: two
    # 6-frame segments, every frame shown and measured with the rendition it came from.
    played = slow["codecs"][REAL_SESSION]
    log = played["segments_log"]
    assert [r["segment"] for r in log] == [1, 2] and played["frames_shown"] == len(played["frames"]) == 12
    assert set(played["chosen"]) <= {"100k", "200k"}
    assert [f["rendition"] for f in played["frames"]] == [played["chosen"][0]] * 6 + [played["chosen"][1]] * 6
    assert all(r["download_s"] >= r["bytes"] * 8 / 150e3 for r in log)          # no faster than the link
    assert json.loads((out / "dash" / "settings.json").read_text())["segment_seconds"] == 0.2
    assert slow["options"]["abr"] == "throughput" and "ABR `throughput`" in (out / "abr-slow.md").read_text()
    leftovers = [p for p in out.rglob("*") if p.name.startswith(".")]
    assert leftovers == []


@pytest.mark.skipif(not UVG.is_dir(), reason=f"the official uvg frames are not in {UVG}")
def test_uvg_frames_read_as_a_30_fps_sequence():
    from libpromptus.evaluation.clip import read_clip

    clip = read_clip(os.fspath(UVG / "%05d.png"), max_frames=21, rate=Fraction(30), size=(256, 256))
    assert len(clip.frames) == 21 and clip.rate == 30 and clip.frames[0].shape == (256, 256, 3)


def test_promptus_codec_settings_name_the_model():
    pytest.importorskip("diffusers")
    settings = PromptusCodec("tiny", 5, 7).settings
    assert settings["model"] == "tiny" and len(settings["model_hash"]) == 64
    assert (settings["iterations"], settings["first_iterations"]) == (5, 7)


@pytest.mark.parametrize("source, name", [
    ("clip.mp4", "clip.mp4"), ("/data/clips/clip.y4m", "clip.y4m"),
    ("../shared/reference/promptus-official/uvg/frames/%05d.png", "uvg/frames/%05d.png"), ("%03d.png", "%03d.png"),
])
def test_figures_name_an_image_sequence_by_its_folders(source, name):
    from libpromptus.cli.pmteval import _source_name

    assert _source_name(source) == name
