"""The engines: one function, several back ends.

The ONNX export (what TensorRT builds from) is checked against the PyTorch engine with
onnxruntime on the CPU; the compiled engine is checked against the eager one; the
TensorRT engine itself needs an NVIDIA GPU and TensorRT and is refused cleanly here.
"""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from libpromptus.engines import EngineUnavailableError, create_engine
from libpromptus.engines.buckets import BUCKETS, bucket, pad_batch
from libpromptus.engines.tensorrt_engine import cache_key
from libpromptus.models import load_generator


@pytest.fixture(scope="module")
def tiny():
    return load_generator("tiny")


@pytest.fixture(scope="module")
def header(tiny):
    # 48x32: a latent of 6x4, not square, so that a transposed axis would show
    return tiny.profile.sequence_header(width=48, height=32, fps_num=30, fps_den=1, frame_count=0,
                                        model_hash=tiny.identity())


def inputs(header, batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, *header.latent_shape, generator=g),
            torch.rand(batch, header.cond_tokens, header.cond_dim, generator=g))


def test_buckets():
    assert [bucket(b) for b in (1, 2, 3, 5, 9, 10, 11, 17, 64, 65)] == [1, 2, 4, 8, 10, 10, 16, 32, 64, 65]
    assert BUCKETS[0] == 1
    with pytest.raises(ValueError):
        bucket(0)
    t = torch.arange(6.0).reshape(3, 2)
    assert pad_batch(t, 5).tolist() == [[0, 1], [2, 3], [4, 5], [4, 5], [4, 5]]
    assert pad_batch(t, 3) is t


def test_auto_is_the_torch_engine_on_the_cpu(tiny, header):
    assert create_engine("auto", tiny, header, device="cpu").name == "torch"


def test_unknown_engine_is_refused(tiny, header):
    with pytest.raises(EngineUnavailableError, match="unknown engine 'fast'"):
        create_engine("fast", tiny, header, device="cpu")


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_tensorrt_without_tensorrt_says_what_to_install(tiny, header):
    with pytest.raises(EngineUnavailableError, match=r"pip install 'libpromptus\[tensorrt\]'"):
        create_engine("tensorrt", tiny, header, device="cpu")


def test_pmtdec_engine_tensorrt_is_one_line_and_no_output(tmp_path, tiny):
    if importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available():
        pytest.skip("TensorRT can run here")
    from decoding_helpers import CLI_SCENES, tiny_stream

    stream = tmp_path / "s.pmt"
    stream.write_bytes(tiny_stream(64, 64, CLI_SCENES).data)
    out = tmp_path / "out.y4m"
    result = subprocess.run([sys.executable, "-m", "libpromptus.cli.pmtdec", "-i", str(stream), "--engine",
                             "tensorrt", "--device", "cpu", "-loglevel", "error", str(out)], capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr == "pmtdec: error: engine tensorrt needs TensorRT: pip install 'libpromptus[tensorrt]'\n"
    assert not out.exists()


def test_cache_key_covers_everything_a_plan_depends_on(tiny, header):
    base = dict(identity=tiny.identity(), gpu="NVIDIA H100", trt_version="10.9", header=header, batch=10,
                precision="fp16")
    key = cache_key(**base)
    assert key == cache_key(**base) and len(key) == 32
    other_header = tiny.profile.sequence_header(width=64, height=32, fps_num=30, fps_den=1, frame_count=0,
                                                model_hash=tiny.identity())
    for change in (dict(identity=bytes(32)), dict(gpu="NVIDIA H200"), dict(trt_version="10.10"),
                   dict(header=other_header), dict(batch=16), dict(precision="bf16")):
        assert cache_key(**{**base, **change}) != key, change


def test_onnx_export_matches_the_torch_engine(tmp_path, tiny, header):
    """The exported graphs, run by onnxruntime, give the PyTorch engine's latents and images."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from libpromptus.engines.onnx_export import export_graphs

    batch = 3
    graphs = export_graphs(tiny, header, tmp_path, batch)
    z, c = inputs(header, batch)
    with torch.inference_mode():
        x0, image = create_engine("torch", tiny, header, device="cpu", precision="fp32").forward(z, c)
    step = ort.InferenceSession(str(graphs.step), providers=["CPUExecutionProvider"])
    decoder = ort.InferenceSession(str(graphs.decoder), providers=["CPUExecutionProvider"])
    (onnx_x0,) = step.run(None, {"latents": z.numpy(), "prompts": c.numpy()})
    (onnx_image,) = decoder.run(None, {"x0": x0.numpy()})
    assert onnx_x0.shape == (batch, *header.latent_shape) and onnx_image.shape == (batch, 3, 32, 48)
    latent_error = float(np.abs(onnx_x0 - x0.numpy()).max())
    image_error = float(np.abs(onnx_image - image.numpy()).max())
    print(f"largest difference: latent {latent_error:.2e}, image {image_error:.2e}")
    assert latent_error < 1e-4 and image_error < 1e-4


def test_compiled_engine_matches_the_torch_engine(tiny, header):
    """Inductor on the CPU, a batch of 3 padded to the bucket of 4."""
    compiled = create_engine("compiled", tiny, header, device="cpu")
    eager = create_engine("torch", tiny, header, device="cpu")
    z, c = inputs(header, 3, seed=1)
    with torch.inference_mode():
        expected = eager.generate(z, c)
    got = compiled.generate(z, c)
    assert compiled.name == "compiled" and got.latents.shape == (3, *header.latent_shape)
    assert float((got.latents - expected.latents).abs().max()) < 1e-4
    assert int((got.images.int() - expected.images.int()).abs().max()) <= 1


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU (CUDA)")


@needs_cuda
@pytest.mark.parametrize("name", ["compiled", "tensorrt"])
def test_gpu_engines_match_the_torch_engine(tmp_path, monkeypatch, tiny, header, name):
    """fp16 engines against the fp16 PyTorch engine: within a few levels of 255."""
    if name == "tensorrt" and importlib.util.find_spec("tensorrt") is None:
        pytest.skip("needs TensorRT (pip install 'libpromptus[tensorrt]')")
    monkeypatch.setenv("PROMPTUS_TRT_CACHE", str(tmp_path))
    z, c = inputs(header, 3, seed=2)
    expected = create_engine("torch", tiny, header, device="cuda", precision="fp16").generate(z, c)
    got = create_engine(name, tiny, header, device="cuda", precision="fp16").generate(z, c)
    assert got.images.shape == expected.images.shape
    assert int((got.images.int() - expected.images.int()).abs().max()) <= 4
    assert float((got.latents.cpu() - expected.latents.cpu()).abs().max()) < 0.05
