"""The encoder at the API level: the closed loop with the decoder, determinism, rate
control, scene cuts and stream structure.

Everything runs the shipped `tiny` model on the CPU at 32x32..48x48 with a handful of
fitting iterations (its fitting costs about 0.02 s per frame-iteration at 64x64), so
the whole module takes a few tens of seconds. The model is untrained: its pictures look
nothing like the source (PSNR about 5 dB), which does not matter here. What is tested is
that the encoder fits, measures and writes exactly what a decoder reconstructs.

Fitting and fake quantization are in test_encoding_fitting.py, failure handling in
test_encoding_failures.py; what they share is in encoding_helpers.py.
"""
from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import encoding_helpers
import numpy as np
import pytest
from encoding_helpers import RATE, quick
from libpromptus.bitstream import (
    Index,
    InvalidDataError,
    Keyframe,
    SceneCut,
    SceneStart,
    UnitType,
    read_streams,
    read_units,
)
from libpromptus.engines import create_engine

import libpromptus.encoder.encoder as encoding_module
from libpromptus import encode
from libpromptus.decoder.decoding import decode_frames
from libpromptus.encoder.ratecontrol import describe_bitrate, parse_bitrate
from libpromptus.io import samples
from libpromptus.io.samples import sample_frames, write_sample
from libpromptus.io.video_input import open_video
from libpromptus.process.quality import psnr

# the module fixtures of encoding_helpers (the tiny generator and latent encoder; a work directory)
tiny, workdir = encoding_helpers.tiny, encoding_helpers.workdir


# ---------------------------------------------------------------- helpers


def write_y4m(path: Path, frames: list[np.ndarray], rate: int = RATE) -> Path:
    """Frames (RGB uint8) to a lossless 4:4:4 y4m file, as `write_sample` writes the sample clip."""
    samples.write_y4m(str(path), frames, rate)
    return path


def source_frames(path: Path) -> list[np.ndarray]:
    """The frames the encoder sees: the source read back through video_input."""
    with open_video(str(path)) as reader:
        return list(reader.frames())


def keyframe_indices(path: Path) -> list[list[int]]:
    """Per scene, the frame indices of its keyframes."""
    (stream,) = read_streams(path)
    return [[k.unit.frame_index for k in scene.keyframes] for scene in stream.scenes]


def stats_psnr(stats_path: Path) -> dict[int, float]:
    """Frame index -> PSNR, from a --stats JSONL file."""
    table: dict[int, float] = {}
    for line in stats_path.read_text().splitlines():
        record = json.loads(line)
        first, last = record["frames"]
        assert len(record["psnr"]) == last - first + 1, record
        for frame, value in zip(range(first, last + 1), record["psnr"]):
            assert frame not in table, f"frame {frame} reported twice"
            table[frame] = value
    return table


def splice_frames(width: int = 32) -> tuple[list[np.ndarray], int]:
    """12 frames of the sample clip's first scene, then 12 of a grey checkerboard that
    brightens slowly (nothing like the sample): a cut at frame 12 and nowhere else."""
    first = sample_frames(36, width, width)[:12]            # the sample's own cut is at 24
    y, x = np.mgrid[0:width, 0:width]
    board = ((x // 8 + y // 8) % 2) == 0
    second = [np.repeat(np.where(board, 20 + 2 * t, 230 - 2 * t)[..., None], 3, -1).astype(np.uint8)
              for t in range(12)]
    return first + second, len(first)


# ---------------------------------------------------------------- the closed loop


@pytest.fixture(scope="module")
def closed_loop(workdir):
    """The sample clip (24 frames 48x48, a cut at 16) encoded with rank 2, -g 4, 2 iterations."""
    directory = workdir / "closed-loop"
    directory.mkdir()
    write_sample(str(directory / "clip.y4m"), 24, 48, 48)
    with open(directory / "stats.jsonl", "w") as stats:
        result = encode(str(directory / "clip.y4m"), str(directory / "out.pmt"), stats=stats, model="tiny", rank=2,
                        interval=4, iterations=2, first_iterations=2)
    return directory, result


def test_closed_loop_decoded_frames_have_the_reported_psnr(closed_loop, tiny):
    directory, result = closed_loop
    source = source_frames(directory / "clip.y4m")
    reported = stats_psnr(directory / "stats.jsonl")
    assert sorted(reported) == list(range(24))
    streams = read_streams(directory / "out.pmt")
    engine = create_engine("torch", tiny[0], streams[0].header, device="cpu")
    frames = list(decode_frames(streams, engine))
    assert [f.index for f in frames] == list(range(24))
    differences = [abs(psnr(f.image, source[f.index]) - reported[f.index]) for f in frames]
    assert max(differences) < 0.05, differences
    # the summary's PSNR (unrounded) is the same measurement
    summary = {frame: value for k in result.summary.keyframes
               for frame, value in zip(range(k.first_frame, k.frame_index + 1), k.psnr)}
    assert all(abs(summary[f] - reported[f]) < 1e-3 for f in range(24))


def test_closed_loop_through_pmtdec(closed_loop):
    directory, _ = closed_loop
    proc = subprocess.run([sys.executable, "-m", "libpromptus.cli.pmtdec", "-i", "out.pmt", "-loglevel", "error",
                           "decoded.mkv"], cwd=directory, capture_output=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    decoded = source_frames(directory / "decoded.mkv")            # FFV1 RGB: lossless
    source = source_frames(directory / "clip.y4m")
    reported = stats_psnr(directory / "stats.jsonl")
    assert len(decoded) == 24
    differences = [abs(psnr(image, source[i]) - reported[i]) for i, image in enumerate(decoded)]
    assert max(differences) < 0.05, differences


def test_closed_loop_stream_structure(closed_loop, tiny):
    """Every unit decodes; scenes, keyframes and index are what the settings imply."""
    directory, result = closed_loop
    path = directory / "out.pmt"
    units = list(read_units(path))
    (stream,) = read_streams(path)
    assert stream.frame_count == 24 == result.frames
    assert stream.header.frame_count == 24            # y4m: the length is known up front
    assert stream.header.model_name == "tiny" and stream.header.model_hash == tiny[0].identity()
    assert (stream.header.width, stream.header.height) == (48, 48)
    assert [(s.first_frame, s.last_frame) for s in stream.scenes] == [(0, 15), (16, 23)]
    assert [s.cut is not None for s in stream.scenes] == [False, True]
    assert stream.scenes[1].cut.unit == SceneCut(16)
    assert keyframe_indices(path) == [[0, 4, 8, 12, 15], [16, 20, 23]]
    for scene in stream.scenes:
        assert scene.keyframes[0].unit.frame_index == scene.first_frame
        assert all(k.unit.rank == 2 for k in scene.keyframes)
    # the index lists every scene start and keyframe at its offset
    seek = [(UnitType.SCENE_START if isinstance(u.unit, SceneStart) else UnitType.KEYFRAME,
             u.unit.first_frame if isinstance(u.unit, SceneStart) else u.unit.frame_index, u.stream_offset)
            for u in units if isinstance(u.unit, (SceneStart, Keyframe))]
    assert isinstance(stream.index, Index)
    assert [(e.unit_type, e.frame_index, e.offset) for e in stream.index.entries] == seek
    assert path.stat().st_size == result.bytes == stream.size
    settings = dict(stream.metadata)["settings"]
    assert "rank=2" in settings and "interval=4" in settings and "iterations=2/2" in settings
    # the summary and the stats agree with the file
    stats = [json.loads(line) for line in (directory / "stats.jsonl").read_text().splitlines()]
    sizes = [u.size for u in units if isinstance(u.unit, Keyframe)]
    assert [r["keyframe"] for r in stats] == [0, 4, 8, 12, 15, 16, 20, 23]
    assert [r["bytes"] for r in stats] == sizes
    assert [r["scene"] for r in stats] == [0] * 5 + [1] * 3
    assert [r["iterations"] for r in stats] == [2] * 8
    assert result.bitrate_bps == pytest.approx(result.bytes * 8 / (24 / RATE))


def test_encoding_is_deterministic(closed_loop):
    directory, _ = closed_loop
    with open(directory / "stats-again.jsonl", "w") as stats:
        encode(str(directory / "clip.y4m"), str(directory / "again.pmt"), stats=stats, model="tiny", rank=2, interval=4,
               iterations=2, first_iterations=2)
    assert (directory / "again.pmt").read_bytes() == (directory / "out.pmt").read_bytes()
    assert (directory / "stats-again.jsonl").read_text() == (directory / "stats.jsonl").read_text()


@pytest.mark.parametrize("width, height, changes", [
    (40, 24, {}),                                                     # padded to the coded 48x32
    (32, 32, {"latent_codec": "f16", "warm_start": True}),
    (32, 32, {"latent_codec": "f32", "coding": "raw", "temporal_beta": 0.2}),
], ids=["padded", "f16-warm-start", "f32-raw-temporal"])
def test_closed_loop_holds_for_other_settings(tmp_path, tiny, width, height, changes):
    write_sample(str(tmp_path / "clip.y4m"), 9, width, height)
    result = encode(str(tmp_path / "clip.y4m"), str(tmp_path / "out.pmt"), rank=2, interval=3,
                    **quick(iterations=1, first_iterations=1, **changes))
    streams = read_streams(tmp_path / "out.pmt")
    header = streams[0].header
    assert (header.width, header.height) == (width, height)
    assert header.coded_width % 16 == 0 and header.coded_height % 16 == 0
    source = source_frames(tmp_path / "clip.y4m")
    frames = list(decode_frames(streams, create_engine("torch", tiny[0], header, device="cpu")))
    assert [f.image.shape for f in frames] == [(height, width, 3)] * 9
    reported = {frame: value for k in result.summary.keyframes
                for frame, value in zip(range(k.first_frame, k.frame_index + 1), k.psnr)}
    assert sorted(reported) == list(range(9))
    assert max(abs(psnr(f.image, source[f.index]) - reported[f.index]) for f in frames) < 0.05


# ---------------------------------------------------------------- rate control


@pytest.fixture(scope="module")
def three_seconds(workdir) -> Path:
    """90 frames (3 s at 30 fps) of the sample clip at 32x32 (a cut at frame 60)."""
    path = workdir / "three-seconds.y4m"
    write_sample(str(path), 90, 32, 32)
    return path


# Measured (iterations 0, 32x32, 90 frames): 50k -> -2.5 %, 200k -> -2.3 %; 75k, 100k, 150k
# land at -3.9 %, -4.3 %, -4.6 %: the interval is an integer, so one keyframe more or less
# (4.4 kB at rank 4, 12 kbit/s over 3 s) is the granularity.
@pytest.mark.parametrize("target", [50_000, 200_000])
def test_rate_control_hits_the_target_within_5_percent(workdir, three_seconds, target):
    output = workdir / f"rate-{target}.pmt"
    result = encode(str(three_seconds), str(output), bitrate=target, **quick())
    (stream,) = read_streams(output)
    duration = stream.frame_count / RATE
    assert stream.frame_count == 90
    achieved = output.stat().st_size * 8 / duration
    assert achieved == pytest.approx(result.bitrate_bps)
    keyframes = sum(len(s.keyframes) for s in stream.scenes)
    assert keyframes >= 4, "the target should need several keyframes"
    assert abs(achieved / target - 1) <= 0.05, (target, achieved, result.rank, keyframe_indices(output))


def test_rate_control_does_not_overshoot_a_high_target(workdir, three_seconds):
    output = workdir / "rate-300000.pmt"
    encode(str(three_seconds), str(output), bitrate=300_000, **quick())
    achieved = output.stat().st_size * 8 / 3.0
    assert abs(achieved / 300_000 - 1) <= 0.05, achieved


def test_a_target_below_the_first_frame_latent_is_warned_about(workdir, three_seconds, caplog):
    """30 frames of 32x32 cost about 3.3 kbit/s before any keyframe (header, dct8 latent, end):
    a lower -b:v cannot be met, and the encoder says so instead of silently missing it.
    The file itself confirms it: its bytes other than keyframes exceed 2 kbit/s.
    The -b:v is quoted as it is written (-b:v 1, not "0.0k")."""
    for target, written in ((1, "1"), (2_000, "2k"), (100_000, None)):
        caplog.clear()
        output = workdir / f"floor-{target}.pmt"
        with caplog.at_level(logging.WARNING, logger="libpromptus"):
            encode(str(three_seconds), str(output), bitrate=target, **quick(max_frames=30, scene_threshold=None))
        keyframe_bytes = sum(u.size for u in read_units(output) if isinstance(u.unit, Keyframe))
        unavoidable_bps = (output.stat().st_size - keyframe_bytes) * 8 / (30 / RATE)
        assert (unavoidable_bps > target) == (written is not None), unavoidable_bps
        floor = [r.getMessage() for r in caplog.records if "before any keyframe" in r.getMessage()]
        assert floor == ([f"-b:v {written} is below what 30 frames cost before any keyframe (the first-frame latent "
                          "and headers alone: 3.3 kbit/s), so the file will exceed it; a longer clip or a smaller -s "
                          "lowers that floor"] if written else [])


@pytest.mark.parametrize("bits_per_second, text", [(1, "1"), (800, "800"), (999.5, "999.5"), (1_000, "1k"),
                                                   (100_000, "100k"), (123_456, "123.456k"), (1_001, "1.001k"),
                                                   (1_500_000, "1.5M"), (2_000_000, "2M"), (0.5, "0.5")])
def test_describe_bitrate_writes_it_as_the_user_would(bits_per_second, text):
    assert describe_bitrate(bits_per_second) == text
    assert parse_bitrate(text) == bits_per_second


def test_describe_bitrate_round_trips_through_parse_bitrate():
    """Exact for every value: parse_bitrate scales in decimal ("1.001k" is 1001, which a
    float product makes 1000.9999999999999)."""
    rng = np.random.default_rng(0)
    values = [*map(int, rng.integers(1, 10**9, 2000)), *map(float, rng.uniform(1e-3, 1e8, 2000))]
    assert [parse_bitrate(describe_bitrate(v)) for v in values] == values


def test_rank_and_interval_override_the_rate_control(workdir, three_seconds):
    """--rank and -g win over -b:v: keyframes at exactly 0, g, 2g, ..., last."""
    output = workdir / "override.pmt"
    result = encode(str(three_seconds), str(output), bitrate=100_000, rank=3, interval=7,
                    **quick(max_frames=30, scene_threshold=None))
    assert (result.rank, result.interval) == (3, 7)
    assert keyframe_indices(output) == [[0, 7, 14, 21, 28, 29]]
    (stream,) = read_streams(output)
    assert {k.unit.rank for k in stream.scenes[0].keyframes} == {3}


@pytest.mark.parametrize("interval", [1, 5, 9])
def test_keyframe_interval(workdir, three_seconds, interval):
    output = workdir / f"gop-{interval}.pmt"
    encode(str(three_seconds), str(output), rank=1, interval=interval, **quick(max_frames=19, scene_threshold=None))
    want = list(range(0, 19, interval))
    if want[-1] != 18:
        want.append(18)
    assert keyframe_indices(output) == [want]


@pytest.mark.parametrize("changes", [{"rank": 78, "interval": 4}, {"rank": 1, "interval": 260}],
                         ids=["rank-78", "interval-260"])
def test_an_out_of_range_rank_or_interval_is_refused_before_any_fitting(tmp_path, monkeypatch, changes):
    write_sample(str(tmp_path / "clip.y4m"), 262, 16, 16)
    fits = [0]
    original = encoding_module.fit_keyframe

    def counting(*args, **kwargs):
        fits[0] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(encoding_module, "fit_keyframe", counting)
    with pytest.raises(ValueError) as caught:
        encode(str(tmp_path / "clip.y4m"), str(tmp_path / "out.pmt"), **quick(scene_threshold=None, **changes))
    assert not isinstance(caught.value, InvalidDataError), caught.value
    assert fits[0] == 0


# ---------------------------------------------------------------- scene cuts


@pytest.fixture(scope="module")
def spliced(workdir) -> tuple[Path, int]:
    frames, cut = splice_frames()
    return write_y4m(workdir / "spliced.y4m", frames), cut


def test_a_splice_starts_a_scene_at_exactly_the_splice_frame(workdir, spliced):
    source, cut = spliced
    output = workdir / "spliced.pmt"
    result = encode(str(source), str(output), rank=1, interval=4, **quick())
    units = [u.unit for u in read_units(output)]
    cuts = [u for u in units if isinstance(u, SceneCut)]
    assert cuts == [SceneCut(cut)]
    position = units.index(cuts[0])
    assert isinstance(units[position + 1], SceneStart) and units[position + 1].first_frame == cut
    assert keyframe_indices(output) == [[0, 4, 8, 11], [12, 16, 20, 23]]
    assert result.summary.scenes == 2
    (stream,) = read_streams(output)
    assert [(s.first_frame, s.last_frame) for s in stream.scenes] == [(0, 11), (12, 23)]


def test_scene_detection_off_gives_one_scene(workdir, spliced):
    source, _ = spliced
    output = workdir / "spliced-one-scene.pmt"
    result = encode(str(source), str(output), rank=1, interval=4, **quick(scene_threshold=None))
    units = [u.unit for u in read_units(output)]
    assert not any(isinstance(u, SceneCut) for u in units)
    assert sum(isinstance(u, SceneStart) for u in units) == 1
    assert keyframe_indices(output) == [[0, 4, 8, 12, 16, 20, 23]]
    assert result.summary.scenes == 1
