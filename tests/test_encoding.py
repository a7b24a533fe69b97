"""The encoder at the API level: fitting, fake quantization, the closed loop with the
decoder, determinism, rate control, scene cuts, stream structure and failure handling.

Everything runs the shipped `tiny` model on the CPU at 32x32..48x48 with a handful of
fitting iterations (its fitting costs about 0.02 s per frame-iteration at 64x64), so
the whole module takes a few tens of seconds. The model is untrained: its pictures look
nothing like the source (PSNR about 5 dB), which does not matter here. What is tested is
that the encoder fits, measures and writes exactly what a decoder reconstructs.
"""
from __future__ import annotations

import json
import logging
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
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
from libpromptus.api import encode
from libpromptus.decoder.decoding import decode_frames
from libpromptus.encoder.encoder import psnr, scene_distance
from libpromptus.encoder.fitting import (
    FitSettings,
    fake_quantize,
    fit_keyframe,
    interval_prompts,
)
from libpromptus.encoder.losses import fitting_loss, make_perceptual_loss
from libpromptus.encoder.ratecontrol import describe_bitrate, parse_bitrate
from libpromptus.io.samples import sample_frames, write_sample
from libpromptus.io.video_input import open_video
from libpromptus.models import load_generator, load_latent_encoder
from libpromptus.process.noise import noise_tensor
from libpromptus.process.profiles import TINY
from libpromptus.process.prompts import dequantize
from libpromptus.process.quantization import quantize_u8

RATE = 30


# ---------------------------------------------------------------- helpers


def write_y4m(path: Path, frames: list[np.ndarray], rate: int = RATE) -> Path:
    """Frames (RGB uint8) to a lossless 4:4:4 y4m file, as `write_sample` writes the sample clip."""
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w", format="yuv4mpegpipe") as container:
        stream = container.add_stream("rawvideo", rate=Fraction(rate))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv444p"
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
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


def quick(**changes) -> dict:
    """Options of a fast encode with the tiny model (no fitting unless asked)."""
    options = {"model": "tiny", "iterations": 0, "first_iterations": 0, "perceptual": "none"}
    options.update(changes)
    return options


def splice_frames(width: int = 32) -> tuple[list[np.ndarray], int]:
    """12 frames of the sample clip's first scene, then 12 of a grey checkerboard that
    brightens slowly (nothing like the sample): a cut at frame 12 and nowhere else."""
    first = sample_frames(36, width, width)[:12]            # the sample's own cut is at 24
    y, x = np.mgrid[0:width, 0:width]
    board = ((x // 8 + y // 8) % 2) == 0
    second = [np.repeat(np.where(board, 20 + 2 * t, 230 - 2 * t)[..., None], 3, -1).astype(np.uint8)
              for t in range(12)]
    return first + second, len(first)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("encoding")


@pytest.fixture(scope="module")
def tiny():
    """The tiny generator and its latent encoder, loaded once."""
    return load_generator("tiny"), load_latent_encoder("tiny")


# ---------------------------------------------------------------- fake quantization


def _random_tensors():
    rng = np.random.default_rng(1234)
    for trial in range(200):
        shape = (77, 1 + trial % 8) if trial % 2 else (1 + trial % 8, 1024)
        kind = trial % 5
        if kind == 0:
            x = rng.random(shape)                                        # U[0, 1): the initialisation
        elif kind == 1:
            x = rng.standard_normal(shape)
        elif kind == 2:
            x = -rng.random(shape) * 10 ** rng.uniform(-4, 4)            # all negative
        elif kind == 3:
            x = rng.standard_normal(shape) * 10 ** rng.uniform(-6, 6)
        else:
            x = rng.random(shape) * 3 + 0.5                              # all positive, away from 0
        yield x.astype(np.float32)


def test_fake_quantize_is_quantize_u8_then_dequantize():
    """Forward values: those of the stream's quantization (SPEC.md §8.1), the same codes,
    within two ulps (fake_quantize rounds the scale in binary32, quantize_u8 in binary64)."""
    for x in _random_tensors():
        got = fake_quantize(torch.from_numpy(x)).numpy()
        codes, scale, zero = quantize_u8(x)
        want = dequantize(codes, scale, zero)
        assert got.dtype == np.float32 and got.shape == x.shape
        # the same 8-bit code everywhere: the difference is far below one quantization step
        assert np.array_equal(np.round(got / np.float32(scale) + zero), codes.astype(np.float32))
        ulps = np.abs(got.astype(np.float64) - want) / np.spacing(np.maximum(np.abs(got), np.abs(want)))
        assert float(ulps.max()) <= 2.0, float(ulps.max())


def test_fake_quantize_keeps_zero_exact_and_handles_constant_tensors():
    rng = np.random.default_rng(5)
    for x in _random_tensors():
        x = x.copy()
        x.flat[rng.integers(0, x.size, 10)] = 0.0
        got = fake_quantize(torch.from_numpy(x)).numpy()
        assert np.all(got[x == 0.0] == 0.0), "zero must be exactly representable"
    zeros = fake_quantize(torch.zeros(5, 3)).numpy()
    assert np.all(zeros == 0.0)
    for value in (0.37, -2.5):
        constant = torch.full((4, 6), value)
        got = fake_quantize(constant).numpy()
        codes, scale, zero = quantize_u8(constant.numpy())
        np.testing.assert_allclose(got, dequantize(codes, scale, zero), rtol=2e-7)
        np.testing.assert_allclose(got, value, rtol=1e-6)


def test_fake_quantize_gradient_is_the_identity():
    """Straight-through: d fake_quantize(x) / dx = 1 everywhere."""
    x = (torch.randn(77, 3, generator=torch.Generator().manual_seed(0)) * 4).requires_grad_(True)
    upstream = torch.randn(77, 3, generator=torch.Generator().manual_seed(1))
    (fake_quantize(x) * upstream).sum().backward()
    assert torch.equal(x.grad, upstream)
    y = torch.rand(4, 1024, generator=torch.Generator().manual_seed(2)).requires_grad_(True)
    fake_quantize(y).sum().backward()
    assert torch.equal(y.grad, torch.ones_like(y))


# ---------------------------------------------------------------- fitting


def _synthetic_problem(tokens=6, dim=10, rank=2, size=4, seed=0):
    """A differentiable stand-in for the generator: images = tanh(mean prompt @ W)."""
    gen = torch.Generator().manual_seed(seed)
    weights = torch.randn(dim, 3 * size * size, generator=gen) / dim ** 0.5 * 3

    def forward(z, prompts):
        images = torch.tanh(prompts.mean(1) @ weights).reshape(prompts.shape[0], 3, size, size)
        return z, images

    def loss_fn(images, targets, prompts):
        return (images - targets).square().flatten(1).mean(1)

    u_true = torch.randn(tokens, rank, generator=gen)
    v_true = torch.randn(rank, dim, generator=gen)
    return forward, loss_fn, (u_true, v_true), (tokens, dim)


@pytest.mark.parametrize("interval", [None, 3])
def test_fit_keyframe_converges_on_a_differentiable_toy_problem(interval):
    """Adam through fake quantization (straight-through) and best-keeping, independently of
    the random model: the loss drops by more than half, the best iterate is returned."""
    forward, loss_fn, (u_true, v_true), cond_shape = _synthetic_problem()
    rank = u_true.shape[1]
    if interval is None:
        previous, steps = None, [0]
    else:
        gen = torch.Generator().manual_seed(7)
        previous = (torch.rand(cond_shape[0], rank, generator=gen), torch.rand(rank, cond_shape[1], generator=gen))
        steps = list(range(1, interval + 1))
    with torch.no_grad():
        targets = forward(None, interval_prompts(u_true, v_true, previous, steps, interval or 1))[1]
    z = torch.zeros(1, 4, 2, 2)
    values: list[float] = []
    result = fit_keyframe(forward, z, targets, loss_fn, rank=rank, cond_shape=cond_shape, previous=previous,
                          interval=interval or 1, settings=FitSettings(150, 0.1, 20),
                          generator=torch.Generator().manual_seed(3),
                          on_iteration=lambda i, loss: values.append(loss))
    assert len(values) == 150 and result.iterations == 150
    assert result.loss == min(values)
    assert result.loss < 0.5 * values[0], (values[0], result.loss)
    assert result.u.shape == (cond_shape[0], rank) and result.v.shape == (rank, cond_shape[1])
    # best-keeping: the returned factors, fake-quantized, give exactly the best loss
    with torch.no_grad():
        prompts = interval_prompts(fake_quantize(result.u), fake_quantize(result.v), previous, steps, interval or 1)
        again = float(loss_fn(forward(z, prompts)[1], targets, prompts).mean())
    assert again == result.loss


def test_fit_keyframe_lowers_the_loss_with_the_tiny_model(tiny):
    generator, latent_encoder = tiny
    header = TINY.sequence_header(width=32, height=32, fps_num=RATE, fps_den=1, frame_count=0)
    engine = create_engine("torch", generator, header, device="cpu")
    frame = sample_frames(3, 32, 32)[0]
    latent = latent_encoder.encode(torch.from_numpy(frame)[None])
    z = header.prev_weight * latent + header.noise_weight * torch.from_numpy(noise_tensor(header))
    targets = torch.from_numpy(frame)[None].permute(0, 3, 1, 2).float() / 127.5 - 1.0
    perceptual = make_perceptual_loss("ms-ssim")

    def loss_fn(images, targets, prompts):
        return fitting_loss(images, targets, prompts, perceptual)

    values: list[float] = []
    result = fit_keyframe(engine.forward, z, targets, loss_fn, rank=2, cond_shape=(header.cond_tokens, header.cond_dim),
                          previous=None, interval=1, settings=FitSettings(15, 0.1, 300),
                          generator=torch.Generator().manual_seed(0), on_iteration=lambda i, v: values.append(v))
    assert len(values) == 15
    assert result.loss == min(values)
    assert result.loss < values[0], values
    with torch.no_grad():
        prompts = interval_prompts(fake_quantize(result.u), fake_quantize(result.v), None, [0], 1)
        again = float(loss_fn(engine.forward(z, prompts)[1], targets, prompts).mean())
    assert again == pytest.approx(result.loss, rel=1e-5)


def test_scene_distance_scale():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(4, 4, 4, generator=gen)
    b = torch.randn(4, 4, 4, generator=gen)
    assert scene_distance(a, a) == 0.0
    assert scene_distance(a, 3 * a) == pytest.approx(scene_distance(a / 7, 3 * a / 7), rel=1e-5)
    assert 1.0 < scene_distance(a, b) < 3.0


def test_psnr():
    a = np.zeros((4, 4, 3), np.uint8)
    assert psnr(a, a) == 100.0
    b = a.copy()
    b[0, 0, 0] = 255          # MSE = 255² / 48
    assert psnr(a, b) == pytest.approx(10 * np.log10(48))


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
    """30 frames of 32x32 cost about 3.6 kbit/s before any keyframe (header, q8 latent, end):
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
                          "and headers alone: 3.6 kbit/s), so the file will exceed it; a longer clip or a smaller -s "
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


# ---------------------------------------------------------------- failures


@pytest.fixture(scope="module")
def small_clip(workdir) -> Path:
    path = workdir / "small.y4m"
    write_sample(str(path), 12, 32, 32)
    return path


def _isolated(tmp_path: Path, small_clip: Path) -> Path:
    source = tmp_path / "in.y4m"
    source.write_bytes(small_clip.read_bytes())
    return source


@pytest.mark.parametrize("where", ["fit_keyframe", "_close_interval"])
def test_a_failure_mid_way_leaves_no_output(tmp_path, small_clip, monkeypatch, where):
    source = _isolated(tmp_path, small_clip)
    calls = [0]
    if where == "fit_keyframe":
        original = encoding_module.fit_keyframe

        def failing(*args, **kwargs):
            calls[0] += 1
            if calls[0] == 3:
                raise RuntimeError("injected failure")
            return original(*args, **kwargs)

        monkeypatch.setattr(encoding_module, "fit_keyframe", failing)
    else:
        original = encoding_module.Encoder._close_interval

        def failing(self):
            calls[0] += 1
            if calls[0] == 3:
                raise RuntimeError("injected failure")
            return original(self)

        monkeypatch.setattr(encoding_module.Encoder, "_close_interval", failing)
    with pytest.raises(RuntimeError, match="injected failure"):
        encode(str(source), str(tmp_path / "out.pmt"), rank=1, interval=2, **quick())
    assert calls[0] == 3
    assert not (tmp_path / "out.pmt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.y4m"], "no partial or temporary file may be left"


def test_a_failure_keeps_an_existing_output_intact(tmp_path, small_clip, monkeypatch):
    source = _isolated(tmp_path, small_clip)
    (tmp_path / "out.pmt").write_bytes(b"the previous output")
    original = encoding_module.fit_keyframe
    calls = [0]

    def failing(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 2:
            raise RuntimeError("injected failure")
        return original(*args, **kwargs)

    monkeypatch.setattr(encoding_module, "fit_keyframe", failing)
    with pytest.raises(RuntimeError):
        encode(str(source), str(tmp_path / "out.pmt"), overwrite=True, rank=1, interval=4, **quick())
    assert (tmp_path / "out.pmt").read_bytes() == b"the previous output"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.y4m", "out.pmt"]


def test_an_existing_output_is_refused_without_overwrite(tmp_path, small_clip):
    source = _isolated(tmp_path, small_clip)
    output = tmp_path / "out.pmt"
    output.write_bytes(b"keep me")
    with pytest.raises(FileExistsError):
        encode(str(source), str(output), rank=1, interval=4, **quick())
    assert output.read_bytes() == b"keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.y4m", "out.pmt"]
    result = encode(str(source), str(output), overwrite=True, rank=1, interval=4, **quick())
    assert output.stat().st_size == result.bytes
    read_streams(output)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.y4m", "out.pmt"]


def test_an_input_without_frames_is_an_error_and_leaves_no_output(tmp_path, small_clip):
    source = _isolated(tmp_path, small_clip)
    with pytest.raises(ValueError):
        encode(str(source), str(tmp_path / "out.pmt"), rank=1, interval=4, **quick(max_frames=0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.y4m"]


def test_a_frame_of_the_wrong_shape_is_refused(tiny):
    """Encoder.push checks every frame against the header."""
    import io

    from libpromptus.bitstream import StreamWriter

    from libpromptus.encoder.encoder import Encoder, EncoderSettings

    generator, latent_encoder = tiny
    header = TINY.sequence_header(width=32, height=32, fps_num=RATE, fps_den=1, frame_count=0)
    engine = create_engine("torch", generator, header, device="cpu")
    encoder = Encoder(StreamWriter(io.BytesIO(), header), engine, latent_encoder, make_perceptual_loss("none"),
                      EncoderSettings(rank=1, interval=2, first_iterations=0, iterations=0))
    with pytest.raises(ValueError):
        encoder.push(np.zeros((32, 16, 3), np.uint8))
    with pytest.raises(ValueError):
        encoder.push(np.zeros((32, 32, 3), np.float32))


def test_patience_stops_a_fit_that_no_longer_improves():
    """A loss that never improves after the first iteration stops after `patience` more."""
    def flat_forward(z, prompts):
        image = torch.zeros(prompts.shape[0], 3, 4, 4) + 0.0 * prompts.mean()
        return z, image

    def loss_fn(images, targets, prompts):
        return ((images - targets) ** 2).mean(dim=(1, 2, 3))

    settings = FitSettings(iterations=50, learning_rate=0.1, plateau_window=20, patience=4)
    result = fit_keyframe(flat_forward, torch.zeros(1, 4, 1, 1), torch.ones(1, 3, 4, 4), loss_fn, rank=2,
                          cond_shape=(3, 5), previous=None, interval=1, settings=settings,
                          generator=torch.Generator().manual_seed(0))
    assert result.iterations == 5 and result.loss == pytest.approx(1.0)
