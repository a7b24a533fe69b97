"""Asymmetric unsigned 8-bit quantization of a whole tensor (SPEC.md, "Dequantization").

The rule of the official Promptus code (NUMERICS.md), used for prompt factors and for
8-bit first-frame latents: the range always includes zero, `scale = (max - min) / 255`,
`zero_point = round(255 - max / scale)` clamped to 0..255.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..bitstream import Coding, LatentCodec, SceneStart

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


def scene_start(first_frame: int, latent: np.ndarray, codec: LatentCodec, coding: Coding) -> SceneStart:
    """The scene start unit of a float latent [C, H, W] in the given codec (Q8: per channel)."""
    if codec == LatentCodec.Q8:
        codes, scales, zeros = zip(*(quantize_u8(channel) for channel in latent))
        return SceneStart(first_frame, codec, coding, np.stack(codes), tuple(scales), tuple(zeros))
    return SceneStart(first_frame, codec, coding, latent.astype(np.float32 if codec == LatentCodec.F32 else np.float16))
