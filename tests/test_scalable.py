"""Scalable rungs (`pmtenc --scalable`): nested-dropout fitting makes every rank prefix of
a keyframe usable, and `truncate_rank` cuts a rung out of a stream without re-encoding."""
import io

import numpy as np
import pytest
import torch

from libpromptus.bitstream import Coding, InvalidDataError, StreamWriter, UnitType, read_streams, truncate_rank
from libpromptus.bitstream.framing import UnitSource
from libpromptus.bitstream.probe import describe
from libpromptus.conformance import seeded
from libpromptus.encoder.fitting import FitSettings, fit_keyframe
from libpromptus.process.prompts import compose

TOKENS, DIM, RANK = 8, 12, 4


def toy_fit(nested: bool, seed: int = 0):
    """Fit rank-4 factors to a rank-4 conditioning seen directly as the 'image'."""
    target = torch.from_numpy(np.random.RandomState(7).randn(TOKENS, RANK) @ np.random.RandomState(8).randn(RANK, DIM)
                              / 2).float()
    images = target.reshape(1, 3, 4, 8)

    def forward(z, prompts):
        return z, prompts.reshape(prompts.shape[0], 3, 4, 8)

    def loss(got, want, prompts):
        return ((got - want) ** 2).mean(dim=(1, 2, 3))

    result = fit_keyframe(forward, torch.zeros(1, 1), images, loss, rank=RANK, cond_shape=(TOKENS, DIM),
                          previous=None, interval=1, settings=FitSettings(400, nested=nested),
                          generator=torch.Generator().manual_seed(seed))
    return result, target


def prefix_error(result, target, k: int) -> float:
    return float(((compose(result.u[:, :k], result.v[:k]) - target) ** 2).mean())


def test_nested_dropout_makes_the_rank_prefixes_good_and_is_deterministic():
    nested, target = toy_fit(True)
    plain, _ = toy_fit(False)
    again, _ = toy_fit(True)
    assert torch.equal(nested.u, again.u) and torch.equal(nested.v, again.v)
    # the full rank stays a good fit, and every prefix is far better than a plain fit's
    assert prefix_error(nested, target, RANK) < 0.05
    for k in (1, 2, 3):
        assert prefix_error(nested, target, k) < prefix_error(plain, target, k) / 2, k


def stream(ranks: list[int]) -> bytes:
    header = seeded.tiny_header(32, 32, frame_count=6)
    rng = np.random.RandomState(0)
    sink = io.BytesIO()
    with StreamWriter(sink, header) as writer:
        writer.write(seeded.scene_start(rng, header, 0))
        for frame in (0, 2):
            writer.write(seeded.keyframe(rng, header, frame, ranks[0], coding=Coding.ENTROPY))
        writer.write(seeded.scene_start(rng, header, 3))
        for frame in (3, 5):
            writer.write(seeded.keyframe(rng, header, frame, ranks[1], coding=Coding.RAW))
    return sink.getvalue()


def test_a_rung_is_cut_without_re_encoding():
    data = stream([4, 1])
    sink = io.BytesIO()
    size = truncate_rank(io.BytesIO(data), sink, 2)
    assert size == len(sink.getvalue()) < len(data)
    whole, cut = read_streams(io.BytesIO(data))[0], read_streams(io.BytesIO(sink.getvalue()))[0]
    assert cut.index is not None and cut.frame_count == whole.frame_count
    for scene_whole, scene_cut in zip(whole.scenes, cut.scenes):
        assert scene_cut.start.unit.first_frame == scene_whole.start.unit.first_frame
        for a, b in zip(scene_whole.keyframes, scene_cut.keyframes):
            a, b = a.unit, b.unit
            k = min(2, a.u.shape[1])
            assert np.array_equal(b.u, a.u[:, :k]) and np.array_equal(b.v, a.v[:k])
            assert (b.u_scale, b.u_zero_point, b.v_scale, b.v_zero_point, b.coding) == \
                   (a.u_scale, a.u_zero_point, a.v_scale, a.v_zero_point, a.coding)


def raw_keyframes(data: bytes) -> list[bytes]:
    """The payloads of the keyframe units of a one-stream file, as framed."""
    source = UnitSource(io.BytesIO(data))
    source.read_prefix()
    payloads = []
    while (raw := source.read_unit()).unit_type != UnitType.END_OF_STREAM:
        if raw.unit_type == UnitType.KEYFRAME:
            payloads.append(raw.payload)
    return payloads


def test_a_layered_rung_is_a_byte_prefix_of_each_keyframe():
    """SPEC.md §5.4: the rank-k prefix of a LAYERED keyframe is its first 16 bytes with the
    rank byte set to k, then its first k layers as they are; the stream stays version 1.1."""
    header = seeded.tiny_header(32, 32, frame_count=6)
    rng = np.random.RandomState(3)
    sink = io.BytesIO()
    with StreamWriter(sink, header, minor=1) as writer:
        writer.write(seeded.scene_start(rng, header, 0))
        for frame, kind in ((0, "gaussian"), (2, "laplace"), (5, "uniform")):
            writer.write(seeded.keyframe(rng, header, frame, 5, coding=Coding.LAYERED, kind=kind))
    data = sink.getvalue()
    assert describe(read_streams(io.BytesIO(data)), len(data))["format"]["version"] == "1.1"      # pmtprobe
    for rank in (1, 2, 4):
        cut = io.BytesIO()
        truncate_rank(io.BytesIO(data), cut, rank)
        assert cut.getvalue()[:10] == data[:10] and data[9] == 1           # signature and version 1.1
        for whole, part in zip(raw_keyframes(data), raw_keyframes(cut.getvalue()), strict=True):
            assert part[4] == rank and whole[4] == 5
            assert part[:4] + part[5:] == whole[:4] + whole[5:len(part)] and len(part) < len(whole)


def test_layered_keyframes_need_a_version_1_1_stream():
    header = seeded.tiny_header(32, 32, frame_count=1)
    rng = np.random.RandomState(4)
    writer = StreamWriter(io.BytesIO(), header)
    writer.write(seeded.scene_start(rng, header, 0))
    with pytest.raises(InvalidDataError, match="needs a version 1.1 stream") as info:
        writer.write(seeded.keyframe(rng, header, 0, 2, coding=Coding.LAYERED))
    assert info.value.code == "bad_field"


def test_a_rung_keeps_at_least_rank_one():
    with pytest.raises(ValueError, match="at least rank 1"):
        truncate_rank(io.BytesIO(stream([2, 2])), io.BytesIO(), 0)


def test_pmtenc_scalable_writes_a_stream_whose_cut_rungs_decode(tmp_path):
    import subprocess
    import sys

    from libpromptus.io.samples import write_sample

    write_sample(str(tmp_path / "clip.y4m"), 4, 32, 32)
    run = [sys.executable, "-m", "libpromptus.cli.pmtenc", "-loglevel", "error", "-i", str(tmp_path / "clip.y4m"),
           "--model", "tiny", "--rank", "3", "-g", "3", "--iterations", "3", "--first-iterations", "3", "--scalable",
           str(tmp_path / "top.pmt")]
    assert subprocess.run(run, capture_output=True, timeout=300).returncode == 0
    top = read_streams(tmp_path / "top.pmt")[0]
    assert dict(top.metadata)["settings"].endswith(" scalable")
    # version 1.2 for the default DCT8 latent; LAYERED keyframes are allowed from 1.1 on
    assert top.minor == 2 and {k.unit.coding for s in top.scenes for k in s.keyframes} == {Coding.LAYERED}
    with (tmp_path / "one.pmt").open("wb") as sink:
        truncate_rank(tmp_path / "top.pmt", sink, 1)
    decoded = subprocess.run([sys.executable, "-m", "libpromptus.cli.pmtdec", "-loglevel", "error", "-i",
                              str(tmp_path / "one.pmt"), "-f", "rawvideo", "-"], capture_output=True, timeout=300)
    assert decoded.returncode == 0 and len(decoded.stdout) == 4 * 32 * 32 * 3
