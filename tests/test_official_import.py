"""Importing the official Promptus prompt directories, checked against the files themselves.

The tests on the official data skip without ../shared/reference/promptus-official; the
refusal of hostile pickles uses synthetic files and always runs.
"""
from __future__ import annotations

import io
import json
import math
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import OFFICIAL, requires_official, write_prompt_dir
from libpromptus.bitstream import Coding, LatentCodec, read_streams

from libpromptus.encoder.promptus_dir import import_promptus_dir

SETS = ["sky", "uvg"]
FRAMES = 141
KEYFRAMES = list(range(0, FRAMES, 10))
RANK = 8


def prompt_dir(name: str) -> Path:
    return OFFICIAL / name / "prompts_rank8_interval10"


def load(path: Path):
    return torch.load(path, weights_only=True, map_location="cpu")


def cli(prog: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", f"libpromptus.cli.{prog}", *map(str, args)],
                          capture_output=True, timeout=300)


_ENCODED: dict[tuple, bytes] = {}


def encoded(name: str, **options) -> bytes:
    """The stream of an official set imported with the library API (cached per options)."""
    key = (name, tuple(sorted(options.items())))
    if key not in _ENCODED:
        sink = io.BytesIO()
        size = import_promptus_dir(prompt_dir(name), sink, **options)
        assert size == len(sink.getvalue())
        _ENCODED[key] = sink.getvalue()
    return _ENCODED[key]


def reference_prompts(name: str) -> np.ndarray:
    """Every frame's conditioning, computed independently from the official files in float64."""
    factors = {}
    for k in KEYFRAMES:
        d = load(prompt_dir(name) / f"frame_{k:05d}.prompt")
        u = (d["U"].double() - d["U_zero_point"].double()) * d["U_scale"].double()
        v = (d["V"].double() - d["V_zero_point"].double()) * d["V_scale"].double()
        factors[k] = (u, v)
    out = torch.empty(FRAMES, 77, 1024, dtype=torch.float64)
    for frame in range(FRAMES):
        a = frame // 10 * 10
        s = frame - a
        if s == 0:
            u, v = factors[a]
        else:
            w = s / 10
            u = (1 - w) * factors[a][0] + w * factors[a + 10][0]
            v = (1 - w) * factors[a][1] + w * factors[a + 10][1]
        out[frame] = u @ v / math.sqrt(RANK)
    return out.numpy()


# ---------------------------------------------------------------- the official data


@requires_official
@pytest.mark.parametrize("name", SETS)
def test_factors_are_bit_exact(name):
    [stream] = read_streams(io.BytesIO(encoded(name)))
    assert stream.frame_count == FRAMES
    assert len(stream.scenes) == 1
    keyframes = [item.unit for item in stream.scenes[0].keyframes]
    assert [k.frame_index for k in keyframes] == KEYFRAMES
    for kf in keyframes:
        d = load(prompt_dir(name) / f"frame_{kf.frame_index:05d}.prompt")
        assert kf.coding == Coding.ENTROPY and kf.rank == RANK
        assert kf.u.dtype == np.uint8 and np.array_equal(kf.u, d["U"].numpy())
        assert kf.v.dtype == np.uint8 and np.array_equal(kf.v, d["V"].numpy())
        assert kf.u_scale == float(d["U_scale"].reshape(()))
        assert kf.v_scale == float(d["V_scale"].reshape(()))
        assert kf.u_zero_point == int(d["U_zero_point"].reshape(()))
        assert kf.v_zero_point == int(d["V_zero_point"].reshape(()))


@requires_official
@pytest.mark.parametrize("name", SETS)
def test_init_latent_is_lossless_in_f32(name):
    [stream] = read_streams(io.BytesIO(encoded(name)))
    scene = stream.scenes[0].start.unit
    init = load(prompt_dir(name) / "init.pth")
    assert tuple(init.shape) == (1, 4, 64, 64) and init.dtype == torch.float32
    assert scene.latent_codec == LatentCodec.F32 and scene.first_frame == 0
    assert scene.latent.dtype == np.float32
    assert scene.latent.tobytes() == init[0].numpy().tobytes()
    header = stream.header
    assert (header.width, header.height, header.fps, header.model_name) == (512, 512, "30/1", "sd-turbo")
    assert (header.cond_tokens, header.cond_dim, header.latent_shape) == (77, 1024, (4, 64, 64))
    assert header.frame_count == FRAMES


@requires_official
def test_lossy_latents_and_raw_coding():
    init = load(prompt_dir("sky") / "init.pth")[0].numpy()
    [f16] = read_streams(io.BytesIO(encoded("sky", latent_codec=LatentCodec.F16)))
    assert np.array_equal(f16.scenes[0].start.unit.latent, init.astype(np.float16))
    [q8] = read_streams(io.BytesIO(encoded("sky", latent_codec=LatentCodec.Q8)))
    scene = q8.scenes[0].start.unit
    error = np.abs(scene.dequantized_latent().astype(np.float64) - init)
    for channel in range(4):
        assert error[channel].max() <= scene.q_scale[channel] * (0.5 + 1e-4)
    raw = encoded("sky", coding=Coding.RAW)
    [stream] = read_streams(io.BytesIO(raw))
    assert all(k.unit.coding == Coding.RAW for k in stream.scenes[0].keyframes)
    # Raw: every factor byte stored; entropy coding is smaller and decodes to the same factors.
    assert len(raw) > 15 * (77 + 1024) * RANK + 65536 > len(encoded("sky"))
    [coded] = read_streams(io.BytesIO(encoded("sky")))
    for a, b in zip(stream.scenes[0].keyframes, coded.scenes[0].keyframes):
        assert np.array_equal(a.unit.u, b.unit.u) and np.array_equal(a.unit.v, b.unit.v)


@requires_official
@pytest.mark.parametrize("name", SETS)
def test_cli_import_dump_and_probe(name, tmp_path):
    out = tmp_path / f"{name}.pmt"
    proc = cli("pmtenc", "-f", "promptus-dir", "-i", prompt_dir(name), out)
    assert proc.returncode == 0, proc.stderr
    data = out.read_bytes()
    assert data == encoded(name)                              # the CLI writes what the API writes

    dump = tmp_path / f"{name}.npz"
    proc = cli("pmtdec", "-i", out, "--dump-prompts", dump)
    assert proc.returncode == 0, proc.stderr
    with np.load(dump) as archive:
        prompts = archive["prompts"]
        assert archive["frame_index"].tolist() == list(range(FRAMES))
    assert prompts.dtype == np.float32 and prompts.shape == (FRAMES, 77, 1024)
    want = reference_prompts(name)
    error = np.abs(prompts.astype(np.float64) - want).max()
    assert error <= 1e-5
    assert error <= 1e-6 * np.abs(want).max()

    proc = cli("pmtprobe", "-of", "json", out)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    size = out.stat().st_size
    assert report["format"]["frame_count"] == FRAMES
    assert report["format"]["fps"] == "30/1"
    assert report["format"]["duration_s"] == 4.7
    assert report["format"]["size_bytes"] == size
    assert report["format"]["bitrate_bps"] == round(size * 8 / 4.7)
    assert [(k["frame_index"], k["rank"], k["scene"]) for k in report["keyframes"]] == [
        (f, RANK, 0) for f in KEYFRAMES]
    assert len(report["keyframes"]) == 15
    assert report["scenes"] == [{"index": 0, "stream": 0, "first_frame": 0, "last_frame": 140, "scene_cut": False,
                                 "latent_codec": "f32", "coding": "entropy",
                                 "bytes": report["scenes"][0]["bytes"]}]
    assert report["model"] == {"name": "sd-turbo", "hash": "00" * 32}


# ---------------------------------------------------------------- hostile pickles (synthetic, always run)


class Boom:
    """Unpickled with full pickle, this would create a file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _assert_refused(directory: Path, tmp_path: Path, marker: Path) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = cli("pmtenc", "-f", "promptus-dir", "-i", directory, out_dir / "x.pmt")
    stderr = proc.stderr.decode()
    assert proc.returncode == 1, stderr
    assert "Traceback" not in stderr
    assert stderr.splitlines() == ["pmtenc: error: frame_00000.prompt: refused: holds objects other than plain tensors"]
    assert list(out_dir.iterdir()) == []
    assert not marker.exists()


def test_plain_pickle_is_refused(tmp_path):
    directory = write_prompt_dir(tmp_path / "d", frames=(0, 4))
    marker = tmp_path / "MARKER"
    (directory / "frame_00000.prompt").write_bytes(pickle.dumps({"U": Boom(marker)}))
    _assert_refused(directory, tmp_path, marker)


def test_torch_save_with_an_object_is_refused(tmp_path):
    directory = write_prompt_dir(tmp_path / "d", frames=(0, 4))
    marker = tmp_path / "MARKER"
    data = load(directory / "frame_00000.prompt")
    data["extra"] = Boom(marker)
    torch.save(data, directory / "frame_00000.prompt")
    _assert_refused(directory, tmp_path, marker)


def test_synthetic_prompt_dir_round_trip(tmp_path):
    """The importer's checks on a small directory in the official format (no official data needed)."""
    directory = write_prompt_dir(tmp_path / "d", frames=(0, 3, 5), rank=2)
    sink = io.BytesIO()
    import_promptus_dir(directory, sink, fps=(25, 1))
    [stream] = read_streams(io.BytesIO(sink.getvalue()))
    assert stream.frame_count == 6 and stream.header.fps == "25/1"
    for item in stream.scenes[0].keyframes:
        d = load(directory / f"frame_{item.unit.frame_index:05d}.prompt")
        assert np.array_equal(item.unit.u, d["U"].numpy()) and np.array_equal(item.unit.v, d["V"].numpy())
        assert item.unit.u_scale == float(d["U_scale"]) and item.unit.u_zero_point == int(d["U_zero_point"])
    assert dict(stream.metadata)["source"] == "promptus-dir"


@pytest.mark.parametrize("change, message", [
    ({"U": torch.zeros(76, 2, dtype=torch.uint8)}, "U is not a uint8 matrix"),
    ({"V": torch.zeros(2, 1024, dtype=torch.int64)}, "V is not a uint8 matrix"),
    ({"U_zero_point": torch.tensor([3.5])}, "U_zero_point 3.5 is not an integer in 0..255"),
    ({"V_scale": torch.tensor([1, 2])}, "V_scale is not a single float"),
    ({"U_scale": torch.tensor([0.0])}, "u_scale 0.0 is not a finite positive number"),
])
def test_importer_refuses_bad_prompt_files(change, message, tmp_path):
    directory = write_prompt_dir(tmp_path / "d", frames=(0, 2))
    data = load(directory / "frame_00000.prompt")
    data.update(change)
    torch.save(data, directory / "frame_00000.prompt")
    with pytest.raises(ValueError, match=message):
        import_promptus_dir(directory, io.BytesIO())


def test_importer_refuses_directories_not_starting_at_frame_0(tmp_path):
    directory = write_prompt_dir(tmp_path / "d", frames=(1, 2))
    with pytest.raises(ValueError, match="the first keyframe is frame 1, not 0"):
        import_promptus_dir(directory, io.BytesIO())
