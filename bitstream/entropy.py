"""Entropy coding of 8-bit symbol tensors: the `coded_symbols(n)` syntax of SPEC.md.

A block codes n uint8 symbols (n is known to the decoder from context) either stored
raw or with a two-parameter model (discrete Laplace or Gaussian over 0..255) whose
frequency table is built with integer arithmetic only, so that every decoder derives
bit-identical tables from the block header. The symbols are then coded with rANS
(32-bit words, 64-bit state, 24-bit precision) through `constriction`'s `AnsCoder`.

`constriction`'s `Categorical(probs, perfect=False)` does not keep given probabilities
as they are: it builds cdf_i = floor(sum_{j<i} p_j * (2^24 - K) / sum(p)) + i in float64
(K = alphabet size). Passing p_i = f_i - 1 (exact small integers) makes the scale factor
exactly 1.0 and every partial sum exact, so its cdf is exactly the normative one,
cdf_i = sum_{j<i} f_j. tests/test_entropy.py checks this bit for bit against a
pure-Python rANS written from SPEC.md.

The coder starts (encoder) and must end (decoder) in state 1 rather than constriction's
default 0, so a coded block always has at least one data word and a decoder can check
termination: after n symbols every word is consumed and the state is back to 1.

This module needs numpy and constriction only (no torch).
"""
from __future__ import annotations

import functools
import math

import constriction
import numpy as np

from .errors import InvalidDataError
from .leb128 import decode_leb128, encode_leb128

__all__ = [
    "EXP2NEG",
        "MODEL_GAUSSIAN",
    "MODEL_LAPLACE",
    "MODEL_STORED",
    "PRECISION",
    "decode_symbols",
    "encode_symbols",
    "frequency_table",
    "max_data_size",
]

MODEL_STORED = 0
MODEL_LAPLACE = 1
MODEL_GAUSSIAN = 2

PRECISION = 24                      # frequencies sum to exactly 2^PRECISION
_TOTAL = 1 << PRECISION
_NUM_SYMBOLS = 256
_CENTER_MAX = 255 * 256             # center is in 1/256 symbol units
_SCALE_MAX = 0xFFFF
_INITIAL_STATE = 1                  # rANS state before the first / after the last symbol
_MAX_LEB128_BYTES = 8               # data_size never needs more (see max_data_size)
_DECODE_CHUNK = 1 << 16             # symbols per decoder call: bounds its int32 output to 256 KiB

# EXP2NEG[k] = round(65536 * 2^(-k/64)), k = 0..63: the fractional part of the
# base-2 exponent of a model weight (exact values; none lies near a rounding tie).
EXP2NEG: tuple[int, ...] = (
    65536, 64830, 64132, 63441, 62757, 62081, 61413, 60751,
    60097, 59449, 58809, 58176, 57549, 56929, 56316, 55709,
    55109, 54515, 53928, 53347, 52773, 52204, 51642, 51085,
    50535, 49991, 49452, 48920, 48393, 47871, 47356, 46846,
    46341, 45842, 45348, 44859, 44376, 43898, 43425, 42958,
    42495, 42037, 41584, 41136, 40693, 40255, 39821, 39392,
    38968, 38548, 38133, 37722, 37316, 36914, 36516, 36123,
    35734, 35349, 34968, 34591, 34219, 33850, 33486, 33125,
)
_EXP2NEG = np.array(EXP2NEG, dtype=np.int64)
_SYMBOL_POS = np.arange(_NUM_SYMBOLS, dtype=np.int64) * 256   # symbol i at 256*i

_AnsCoder = constriction.stream.stack.AnsCoder
_Categorical = constriction.stream.model.Categorical


def max_data_size(n: int) -> int:
    """Cap on data_size for a block of n symbols: 4*n + 16 bytes.

    A conforming block has at most n + 2 words (two to load the state, at most one
    refill per symbol, and all must be consumed), i.e. at most 4*n + 8 bytes.
    """
    return 4 * n + 16


def frequency_table(model_type: int, center: int, scale: int) -> np.ndarray:
    """Return the 256 integer frequencies f_i (int64, sum 2^24, each >= 1) of a model.

    Implements SPEC.md's model construction exactly. Raises `InvalidDataError("bad_field")`
    when the parameters are out of range or every weight w_i is 0 (possible when the
    scale is small and the center lies far from every integer symbol).
    """
    if model_type not in (MODEL_LAPLACE, MODEL_GAUSSIAN):
        raise InvalidDataError("bad_field", f"model_type {model_type} has no frequency table")
    if not 0 <= center <= _CENTER_MAX:
        raise InvalidDataError("bad_field", f"center {center} outside 0..{_CENTER_MAX}")
    if not 1 <= scale <= _SCALE_MAX:
        raise InvalidDataError("bad_field", f"scale {scale} outside 1..{_SCALE_MAX}")
    d = np.abs(_SYMBOL_POS - center)
    if model_type == MODEL_LAPLACE:
        x = (64 * d) // scale
    else:
        x = (64 * d * d) // (scale * scale)
    # EXP2NEG entries are below 2^17, so any shift >= 17 (in particular >= 32) gives 0.
    w = _EXP2NEG[x & 63] >> np.minimum(x >> 6, 32)
    total_weight = int(w.sum())
    if total_weight == 0:
        raise InvalidDataError("bad_field", f"model {model_type} center {center} scale {scale} has no nonzero weight")
    f = 1 + (w * (_TOTAL - _NUM_SYMBOLS)) // total_weight
    f[int(np.argmax(w))] += _TOTAL - int(f.sum())     # argmax: lowest index on ties
    return f


def _categorical(frequencies: np.ndarray) -> constriction.stream.model.Categorical:
    """constriction model whose cdf is exactly cumsum(frequencies).

    `frequencies` are 256 integers >= 1 summing to 2^24. constriction computes
    cdf_i = floor(C_i * (2^24 - 256) / S) + i from the float64 partial sums C_i of what
    it is given (S = their total); given f_i - 1, S = 2^24 - 256, so the factor is
    exactly 1.0, every C_i is an exact integer and cdf_i = sum_{j<i} f_j.
    """
    return _Categorical((frequencies - 1).astype(np.float64), perfect=False)


@functools.lru_cache(maxsize=512)
def _coder_model(model_type: int, center: int, scale: int) -> constriction.stream.model.Categorical:
    """Cached constriction model of a parameter set (bad_field if the table is invalid)."""
    return _categorical(frequency_table(model_type, center, scale))


def _rans_encode(symbols: np.ndarray, model: constriction.stream.model.Categorical) -> tuple[np.ndarray, int]:
    """rANS-encode int32 `symbols` from state 1; return (data words, exact size in bits)."""
    coder = _AnsCoder(np.array([_INITIAL_STATE], dtype=np.uint32))
    coder.encode_reverse(symbols, model)
    return coder.get_compressed(), coder.num_valid_bits()


def _rans_decode(words: np.ndarray, model: constriction.stream.model.Categorical, n: int) -> np.ndarray:
    """Decode n symbols (uint8) from uint32 `words`, checking termination.

    Raises `InvalidDataError("entropy_error")` unless the last word is nonzero and, after
    n symbols, every word has been consumed and the state is 1. Decodes in chunks, so
    that a block of millions of symbols (10 bytes can code any number of zeros) costs
    n bytes of memory, not constriction's 4n-byte int32 array as well.
    """
    if len(words) == 0 or words[-1] == 0:
        raise InvalidDataError("entropy_error", "data does not end in a nonzero word")
    symbols = np.empty(n, dtype=np.uint8)
    try:
        coder = _AnsCoder(words)
        for start in range(0, n, _DECODE_CHUNK):
            count = min(_DECODE_CHUNK, n - start)
            symbols[start:start + count] = coder.decode(model, count)
        remaining, state = coder.pos()
    except Exception as exc:  # constriction reports its own errors as exceptions
        raise InvalidDataError("entropy_error", f"rANS decoder failed: {exc}") from None
    if remaining != 0:
        raise InvalidDataError("entropy_error", f"{remaining} data words left after {n} symbols")
    if state != _INITIAL_STATE:
        raise InvalidDataError("entropy_error", f"final rANS state {state} is not {_INITIAL_STATE}")
    return symbols


def _coded_block(model_type: int, center: int, scale: int, words: np.ndarray) -> bytes:
    """Serialise a coded (model_type 1 or 2) block around its rANS words."""
    data = words.astype("<u4").tobytes()
    return (
        bytes((model_type,)) + center.to_bytes(2, "little") + scale.to_bytes(2, "little")
        + encode_leb128(len(data)) + data
    )


# ---------------------------------------------------------------- encoder-side choice
# Everything below picks parameters with exact integer arithmetic and ranks candidates
# by their actual coded size, so the chosen block is identical on every platform.

_LN2_Q32 = 2977044472               # round(ln(2) * 2^32)
_TWO_LN2_Q32 = 2 * _LN2_Q32
# Scale candidates around the moment estimate: factors round(2^16 * 2^(k/8)), k = -4..4,
# then round(2^16 * 2^(k/32)), k = -3..3 without 0, around the best of those.
_COARSE_STEPS_Q16 = (46341, 50535, 55109, 60097, 65536, 71468, 77936, 84990, 92682)
_FINE_STEPS_Q16 = (61413, 62757, 64132, 66971, 68438, 69936)


def _clamp_scale(value: int) -> int:
    """Nearest valid scale (1..65535)."""
    return min(max(value, 1), _SCALE_MAX)


def _best_scale(symbols: np.ndarray, model_type: int, center: int, scale0: int) -> bytes | None:
    """Best block of one model type and center, searching the scale near `scale0`.

    Candidates (a coarse grid around `scale0`, then a fine grid around the best of it)
    are ranked by (block size, exact coded bits, scale): integers only. None if every
    candidate has W == 0.
    """
    best: tuple[int, int, int, bytes] | None = None
    for steps in (_COARSE_STEPS_Q16, _FINE_STEPS_Q16):
        base = scale0 if best is None else best[2]
        for step in steps:
            scale = _clamp_scale((base * step + 32768) >> 16)
            try:
                words, bits = _rans_encode(symbols, _coder_model(model_type, center, scale))
            except InvalidDataError:        # W == 0: not a valid parameter set
                continue
            block = _coded_block(model_type, center, scale, words)
            cand = (len(block), bits, scale, block)
            if best is None or cand[:3] < best[:3]:
                best = cand
    return None if best is None else best[3]


def encode_symbols(symbols: np.ndarray) -> bytes:
    """Return the smallest `coded_symbols(n)` block for a uint8 array (any shape, C order).

    Tries stored, then Laplace centred on the median and Gaussian centred on the mean,
    each with a scale searched around the moment estimate; the smallest block wins
    (stored, then Laplace, then Gaussian on equal size). Deterministic: parameters are
    derived with integer arithmetic and candidates are ranked by their exact coded size.
    """
    if not isinstance(symbols, np.ndarray) or symbols.dtype != np.uint8:
        raise TypeError("encode_symbols expects a numpy array of dtype uint8")
    flat = np.ascontiguousarray(symbols).reshape(-1)
    best = bytes((MODEL_STORED,)) + flat.tobytes()
    n = flat.size
    if n == 0:
        return best
    hist = np.bincount(flat, minlength=_NUM_SYMBOLS)
    stats = [(int(v), int(hist[v])) for v in np.nonzero(hist)[0]]   # (symbol, count), Python ints
    sym32 = flat.astype(np.int32)

    # Laplace: center at the (lower) median; scale = ln2 * mean |256*s - center|.
    cumulative, half = 0, (n + 1) // 2
    for median, count in stats:
        cumulative += count
        if cumulative >= half:
            break
    lap_center = median * 256
    abs_dev = sum(count * abs(256 * v - lap_center) for v, count in stats)
    lap_scale = _clamp_scale((abs_dev * _LN2_Q32 + (n << 31)) // (n << 32))
    # Gaussian: center at the mean (rounded); scale = sigma * sqrt(2 ln2).
    gau_center = (512 * sum(count * v for v, count in stats) + n) // (2 * n)
    sq_dev = sum(count * (256 * v - gau_center) ** 2 for v, count in stats)
    gau_scale = _clamp_scale(math.isqrt((sq_dev * _TWO_LN2_Q32) // (n << 32)))

    for model_type, center, scale0 in (
        (MODEL_LAPLACE, lap_center, lap_scale),
        (MODEL_GAUSSIAN, gau_center, gau_scale),
    ):
        block = _best_scale(sym32, model_type, center, scale0)
        if block is not None and len(block) < len(best):
            best = block
    return best


# --------------------------------------------------------------------------- decoder

def decode_symbols(data: bytes | bytearray | memoryview, offset: int, n: int) -> tuple[np.ndarray, int]:
    """Decode one `coded_symbols(n)` block starting at `data[offset]`.

    Returns (symbols as a uint8 array of length n, offset just after the block).
    Every malformed block raises `InvalidDataError`; nothing is allocated before the sizes
    it depends on have been checked against the buffer and the caps. n comes from the
    caller's syntax, which bounds it (a conforming coded block of n zeros can be 10 bytes
    for any n).
    """
    if offset < 0 or n < 0:
        raise ValueError("offset and n must be non-negative")
    buf = memoryview(data).cast("B")
    end = len(buf)
    if offset >= end:
        raise InvalidDataError("truncated", "block ends before model_type")
    model_type = buf[offset]
    pos = offset + 1
    if model_type == MODEL_STORED:
        if end - pos < n:
            raise InvalidDataError("truncated", f"stored block needs {n} bytes, {end - pos} left")
        return np.frombuffer(buf, dtype=np.uint8, count=n, offset=pos).copy(), pos + n
    if model_type not in (MODEL_LAPLACE, MODEL_GAUSSIAN):
        raise InvalidDataError("bad_field", f"unknown model_type {model_type}")
    if end - pos < 4:
        raise InvalidDataError("truncated", "block ends inside center/scale")
    center = buf[pos] | buf[pos + 1] << 8
    scale = buf[pos + 2] | buf[pos + 3] << 8
    if center > _CENTER_MAX:
        raise InvalidDataError("bad_field", f"center {center} above {_CENTER_MAX}")
    if scale == 0:
        raise InvalidDataError("bad_field", "scale is 0")
    data_size, pos = decode_leb128(buf, pos + 4, _MAX_LEB128_BYTES)
    if data_size == 0 or data_size % 4:
        raise InvalidDataError("bad_field", f"data_size {data_size} is not a positive multiple of 4")
    if data_size > max_data_size(n):
        raise InvalidDataError("size_limit", f"data_size {data_size} above the cap {max_data_size(n)} for n={n}")
    if data_size > end - pos:
        raise InvalidDataError("size_limit", f"data_size {data_size} exceeds the {end - pos} bytes left")
    model = _coder_model(model_type, center, scale)       # bad_field if W == 0
    words = np.frombuffer(buf, dtype="<u4", count=data_size // 4, offset=pos).astype(np.uint32)
    return _rans_decode(words, model, n), pos + data_size
