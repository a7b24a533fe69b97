"""The fixed noise tensor of a stream (SPEC.md, "The noise tensor").

Algorithm 1 (`mt19937_polar`) is numpy's legacy `RandomState(seed).randn`: MT19937 seeded
with `init_genrand(seed)`, 53-bit doubles, Marsaglia's polar method, then rounded to
binary32. It reproduces the official Promptus noise `RandomState(88).randn(1, 4, H/8, W/8)`.
"""
from __future__ import annotations

import numpy as np

from ..bitstream import NoiseAlgorithm, SequenceHeader


def noise_tensor(header: SequenceHeader) -> np.ndarray:
    """The stream's noise tensor, float32 [1, C, H/d, W/d] of its coded size."""
    if header.noise_algorithm != NoiseAlgorithm.MT19937_POLAR:
        raise ValueError(f"noise algorithm {header.noise_algorithm} is not implemented")
    shape = (1, *header.latent_shape)
    return np.random.RandomState(header.noise_seed).randn(*shape).astype(np.float32)
