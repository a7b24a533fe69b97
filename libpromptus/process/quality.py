"""PSNR, the one quality figure every part of the codec reports.

The encoder's per-frame report, pmteval's metrics and the conformance suite's tier-2
threshold all call `psnr`, so identical frames score the same everywhere: infinity.
"""
from __future__ import annotations

import math

import numpy as np


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 arrays of one shape (a frame, or a stream's frames, pooled
    over every sample): peak 255; `math.inf` when they are equal."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0 ** 2 / mse)
