"""The DCT8 first-frame latent (SPEC.md §4.2, §5.2, §8.1): an 8×8 integer transform coder.

Each channel of the latent is cut into 8×8 blocks (the last row and column of blocks
padded); a block's coefficients are quantized with the step `latent_step[c]` times the
ramp matrix `1 + u + v`, and grouped by zigzag band so that the entropy coder of §9 sees
each band's distribution apart. Reconstruction is exact integer arithmetic followed by
one binary32 rounding, so every decoder gets the same latent bit for bit (a floating
inverse DCT would not: its sums round differently from one library to the next).

`reconstruct` is the normative decoding process. `quantize` is the informative encoder
half: any coefficients a stream carries are valid, and an encoder may choose them
however it likes (rate-distortion optimised, for one).
"""
from __future__ import annotations

import numpy as np

BLOCK = 8
#: TRANSFORM[k][n]: basis function k at sample n, HEVC's 8-point integer DCT (SPEC.md §8.1).
#: Its rows are nearly orthogonal, each of squared norm close to 2^15: TRANSFORM ≈ 2^7.5 · (orthonormal DCT-II).
TRANSFORM = np.array([
    [64, 64, 64, 64, 64, 64, 64, 64],
    [89, 75, 50, 18, -18, -50, -75, -89],
    [83, 36, -36, -83, -83, -36, 36, 83],
    [75, -18, -89, -50, 50, 89, 18, -75],
    [64, -64, -64, 64, 64, -64, -64, 64],
    [50, -89, 18, 75, -75, -18, 89, -50],
    [36, -83, 83, -36, -36, 83, -83, 36],
    [18, -50, 75, -89, 89, -75, 50, -18],
], dtype=np.int64)
#: RAMP[u][v]: the quantization matrix, in units of `latent_step`.
RAMP = 1 + np.add.outer(np.arange(BLOCK), np.arange(BLOCK)).astype(np.int64)
#: The 64 positions (u, v) of a block in zigzag order (JPEG's): by u + v, then by rising u
#: where u + v is odd and by rising v where it is even.
ZIGZAG = tuple(sorted(((u, v) for u in range(BLOCK) for v in range(BLOCK)),
                      key=lambda p: (p[0] + p[1], p[0] if (p[0] + p[1]) % 2 else p[1])))
#: Zigzag index ranges of the band groups: each is coded as one symbol block per channel.
BAND_GROUPS = ((0, 1), (1, 3), (3, 6), (6, 10), (10, 15), (15, 21), (21, 28), (28, 36), (36, 64))
#: Rounding shifts of the two passes (their sum, 9, leaves 6 fractional bits: 15 - 9).
FIRST_SHIFT, SECOND_SHIFT = 7, 2
FRACTION_BITS = 6
#: The reconstructed integers are clipped to ±RECONSTRUCTION_LIMIT, exact in binary32.
RECONSTRUCTION_LIMIT = 2 ** 24 - 1
COEFFICIENT_MIN, COEFFICIENT_MAX = -32768, 32767


def padded_size(size: int) -> int:
    """`size` rounded up to a whole number of blocks."""
    return -(-size // BLOCK) * BLOCK


def band_positions(group: int) -> tuple[tuple[int, int], ...]:
    """The (u, v) positions of band group `group`, in zigzag order."""
    start, end = BAND_GROUPS[group]
    return ZIGZAG[start:end]


def split_bands(coefficients: np.ndarray) -> list[np.ndarray]:
    """One channel's coefficients [Hp, Wp] (block layout) as its band groups' value arrays.

    Band group g holds, for each of its zigzag positions (u, v) in order, the coefficient
    at (u, v) of every block in raster order (SPEC.md §4.2).
    """
    blocks = coefficients.reshape(coefficients.shape[0] // BLOCK, BLOCK, coefficients.shape[1] // BLOCK, BLOCK)
    return [np.concatenate([blocks[:, u, :, v].reshape(-1) for u, v in band_positions(group)])
            for group in range(len(BAND_GROUPS))]


def join_bands(bands: list[np.ndarray], padded_height: int, padded_width: int) -> np.ndarray:
    """The inverse of `split_bands`: int16 [Hp, Wp] in block layout."""
    rows, columns = padded_height // BLOCK, padded_width // BLOCK
    blocks = np.empty((rows, BLOCK, columns, BLOCK), dtype=np.int16)
    for group, values in enumerate(bands):
        for n, (u, v) in enumerate(band_positions(group)):
            blocks[:, u, :, v] = values[n * rows * columns:(n + 1) * rows * columns].reshape(rows, columns)
    return blocks.reshape(padded_height, padded_width)


def _round_shift(values: np.ndarray, shift: int) -> np.ndarray:
    """(values + 2^(shift-1)) >> shift: round half up, on exact integers."""
    return (values + (1 << (shift - 1))) >> shift


def reconstruct(coefficients: np.ndarray, steps: tuple[float, ...], height: int, width: int) -> np.ndarray:
    """The latent L [C, height, width] float32 of DCT8 coefficients [C, Hp, Wp] (SPEC.md §8.1).

    Per block: d = q · RAMP; g = round_shift(TRANSFORMᵀ · d, 7) (columns);
    r = round_shift(g · TRANSFORM, 2) (rows); r clipped to ±(2^24 − 1); then
    L = binary32(latent_step · r · 2^−6), one rounding of the exact product. One channel
    at a time, so the int64 intermediates stay twice the channel's float32 size.
    """
    channels, padded_height, padded_width = coefficients.shape
    rows, columns = padded_height // BLOCK, padded_width // BLOCK
    latent = np.empty((channels, height, width), dtype=np.float32)
    for c in range(channels):
        blocks = coefficients[c].astype(np.int64).reshape(rows, BLOCK, columns, BLOCK).transpose(0, 2, 1, 3)
        dequantized = blocks * RAMP
        columns_done = _round_shift(np.einsum("ky,...kv->...yv", TRANSFORM, dequantized), FIRST_SHIFT)
        samples = _round_shift(np.einsum("...yv,vx->...yx", columns_done, TRANSFORM), SECOND_SHIFT)
        samples = np.clip(samples, -RECONSTRUCTION_LIMIT, RECONSTRUCTION_LIMIT)
        plane = samples.transpose(0, 2, 1, 3).reshape(padded_height, padded_width)[:height, :width]
        # |r| < 2^24 and a binary32 step: the product is exact in binary64, so the cast rounds once
        latent[c] = (np.float64(np.float32(steps[c])) * plane.astype(np.float64) * 2.0 ** -FRACTION_BITS
                     ).astype(np.float32)
    return latent


#: The forward transform's real matrix: the exact inverse of `reconstruct`'s (TRANSFORM / 2^7.5)ᵀ,
#: so that rounding to integers is the only loss besides quantization.
_BASIS = np.linalg.inv(TRANSFORM.astype(np.float64) / 2.0 ** 7.5).T


def transform(latent: np.ndarray) -> np.ndarray:
    """Informative: the real coefficients [C, Hp, Wp] (block layout) of a latent [C, H, W].

    The forward transform is the exact real inverse of `reconstruct`'s, applied to the
    latent padded by repeating its last row and column.
    """
    channels, height, width = latent.shape
    padded = np.pad(latent.astype(np.float64), ((0, 0), (0, padded_size(height) - height),
                                                 (0, padded_size(width) - width)), mode="edge")
    rows, columns = padded.shape[1] // BLOCK, padded.shape[2] // BLOCK
    blocks = padded.reshape(channels, rows, BLOCK, columns, BLOCK).transpose(0, 1, 3, 2, 4)
    coefficients = np.einsum("uy,...yx,vx->...uv", _BASIS, blocks, _BASIS)
    return coefficients.transpose(0, 1, 3, 2, 4).reshape(padded.shape)


def smallest_steps(coefficients: np.ndarray) -> tuple[float, ...]:
    """Informative: per channel, the smallest binary32 step at which no coefficient leaves int16's range."""
    ramp = np.tile(RAMP, (coefficients.shape[1] // BLOCK, coefficients.shape[2] // BLOCK))
    return tuple(float(np.nextafter(np.float32(np.abs(c / ramp).max() / COEFFICIENT_MAX), np.float32(np.inf)))
                 for c in coefficients)


def quantize(coefficients: np.ndarray, steps: tuple[float, ...]) -> np.ndarray:
    """Informative: the int16 coefficients [C, Hp, Wp] of `transform`'s at the given steps:
    each divided by `step · RAMP` and rounded to the nearest integer in int16's range."""
    ramp = np.tile(RAMP, (coefficients.shape[1] // BLOCK, coefficients.shape[2] // BLOCK))
    scale = np.asarray([np.float32(s) for s in steps], dtype=np.float64)[:, None, None] * ramp
    return np.clip(np.rint(coefficients / scale), COEFFICIENT_MIN, COEFFICIENT_MAX).astype(np.int16)
