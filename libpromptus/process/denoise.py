"""Single-step denoising and pixel conversion (SPEC.md §8.6), for numpy or torch values.

Kept apart from the engines so that every engine, and the encoder's fitting loop,
computes the same formulas.
"""
from __future__ import annotations

import math

from ..bitstream import PredictionType


def denoised_latent(z, network_output, alpha_bar: float, prediction_type: PredictionType):
    """The generated latent x0 from the input latent z and the network's prediction."""
    sqrt_ab = math.sqrt(alpha_bar)
    sqrt_one_minus_ab = math.sqrt(1.0 - alpha_bar)
    if prediction_type == PredictionType.EPSILON:
        return (z - sqrt_one_minus_ab * network_output) / sqrt_ab
    if prediction_type == PredictionType.V_PREDICTION:
        return sqrt_ab * z - sqrt_one_minus_ab * network_output
    return network_output


def to_uint8(image):
    """`floor((clamp(x, -1, 1) + 1) / 2 * 255)` as uint8 (torch tensors)."""
    import torch

    return ((image.clamp(-1.0, 1.0) + 1.0) / 2.0 * 255.0).floor().to(torch.uint8)
