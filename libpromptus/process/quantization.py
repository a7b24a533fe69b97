"""Asymmetric unsigned 8-bit quantization of a whole tensor (SPEC.md, "Dequantization").

The rule of the official Promptus code (NUMERICS.md), used for prompt factors and for
8-bit first-frame latents: the range always includes zero, `scale = (max - min) / 255`,
`zero_point = round(255 - max / scale)` clamped to 0..255.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..bitstream import Coding, LatentCodec, SceneStart
from ..bitstream import latent_transform

if TYPE_CHECKING:
    import torch


def quantize_u8(x: np.ndarray) -> tuple[np.ndarray, float, int]:
    """Quantize float values to (uint8 codes, binary32 scale, zero point)."""
    x = np.asarray(x, dtype=np.float32)
    low = min(float(x.min()), 0.0)
    high = max(float(x.max()), 0.0)
    scale = np.float32((high - low) / 255.0) if high > low else np.float32(1.0)
    zero_point = int(np.clip(np.round(255.0 - high / float(scale)), 0, 255))
    q = np.clip(np.round(x / scale + np.float32(zero_point)), 0, 255).astype(np.uint8)
    return q, float(scale), zero_point


def fake_quantize(x: torch.Tensor) -> torch.Tensor:
    """`quantize_u8` then dequantization, on a torch tensor, with a straight-through gradient:
    what the encoder fits through is what the decoder will dequantize."""
    import torch

    low = torch.clamp(x.detach().min(), max=0.0)
    high = torch.clamp(x.detach().max(), min=0.0)
    scale = torch.clamp((high - low) / 255.0, min=torch.finfo(torch.float32).tiny)
    zero = torch.clamp(torch.round(255.0 - high / scale), 0, 255)
    q = torch.clamp(torch.round(x / scale + zero), 0, 255)
    return x + (scale * (q - zero) - x).detach()


#: DCT8's default step, relative to each channel's standard deviation: on the tiny model's
#: 512² latents of benchmarks/latent_codec.py, 28 % of Q8's bytes (4,082 of 14,780) at 0.04 dB below it.
DEFAULT_LATENT_STEP = 0.05


def dct8_steps(coefficients: np.ndarray, latent: np.ndarray, relative_step: float) -> tuple[float, ...]:
    """Per channel, `relative_step` times the channel's standard deviation as a binary32 step,
    raised where needed so that no coefficient leaves int16's range."""
    floor = latent_transform.smallest_steps(coefficients)
    return tuple(float(max(np.float32(relative_step * float(channel.std())), np.float32(low),
                           np.finfo(np.float32).tiny))
                 for channel, low in zip(latent, floor))


def scene_start(first_frame: int, latent: np.ndarray, codec: LatentCodec, coding: Coding, *,
                latent_step: float = DEFAULT_LATENT_STEP) -> SceneStart:
    """The scene start unit of a float latent [C, H, W] in the given codec (Q8: per channel;
    DCT8: at `latent_step` times each channel's standard deviation)."""
    if codec == LatentCodec.DCT8:
        coefficients = latent_transform.transform(latent)
        steps = dct8_steps(coefficients, latent, latent_step)
        return SceneStart(first_frame, codec, coding, latent_transform.quantize(coefficients, steps), steps, (),
                          latent.shape[1:])
    if codec == LatentCodec.Q8:
        codes, scales, zeros = zip(*(quantize_u8(channel) for channel in latent))
        return SceneStart(first_frame, codec, coding, np.stack(codes), tuple(scales), tuple(zeros))
    return SceneStart(first_frame, codec, coding, latent.astype(np.float32 if codec == LatentCodec.F32 else np.float16))
