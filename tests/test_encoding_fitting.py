"""The encoder's fitting: fake quantization (the stream's quantization forward, the
identity backward), fit_keyframe on a differentiable toy problem and with the tiny
model, patience, the scene distance and PSNR.
"""
from __future__ import annotations

import math

import encoding_helpers
import numpy as np
import pytest
import torch
from encoding_helpers import RATE
from libpromptus.engines import create_engine

from libpromptus.encoder.encoder import scene_distance
from libpromptus.encoder.fitting import FitSettings, fit_keyframe, interval_prompts
from libpromptus.encoder.losses import fitting_loss, make_perceptual_loss
from libpromptus.io.samples import sample_frames
from libpromptus.process.noise import noise_tensor
from libpromptus.process.profiles import SD_TURBO, TINY
from libpromptus.process.prompts import dequantize
from libpromptus.process.quality import psnr
from libpromptus.process.quantization import fake_quantize, quantize_u8

# the module fixtures of encoding_helpers (the tiny generator and latent encoder; a work directory)
tiny = encoding_helpers.tiny


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
    assert psnr(a, a) == math.inf            # identical frames, as pmteval and the conformance suite say
    b = a.copy()
    b[0, 0, 0] = 255          # MSE = 255² / 48
    assert psnr(a, b) == pytest.approx(10 * np.log10(48))


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


@pytest.mark.parametrize("given, used", [(None, TINY.patience), (0, None), (7, 7)])
def test_patience_defaults_to_the_models_and_0_turns_it_off(given, used):
    from fractions import Fraction

    from libpromptus.encoder.job import EncodeOptions, EncoderSetup

    setup = EncoderSetup(EncodeOptions(model="tiny", patience=given), width=32, height=32, rate=Fraction(30),
                         frame_count=4)
    assert setup.settings.patience == used
    assert TINY.patience is not None and SD_TURBO.patience is None     # SD-Turbo keeps the official budgets


def test_a_negative_patience_is_refused():
    from fractions import Fraction

    from libpromptus.encoder.job import EncodeOptions, EncoderSetup

    with pytest.raises(ValueError, match=r"^--patience -1: iterations without a better loss, 0 \(off\) or more$"):
        EncoderSetup(EncodeOptions(model="tiny", patience=-1), width=32, height=32, rate=Fraction(30), frame_count=4)
