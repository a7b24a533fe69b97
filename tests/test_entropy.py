"""Tests of `libpromptus.bitstream.entropy` (SPEC.md, "Coded symbols").

The reference functions below (`ref_*`) are written from the SPEC text alone, in plain
Python integers, and are the yardstick: the module (which drives `constriction`) must
agree with them bit for bit in both directions.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import constriction
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from libpromptus.bitstream import InvalidDataError, entropy
from libpromptus.bitstream.leb128 import decode_leb128, encode_leb128

OFFICIAL = Path(__file__).resolve().parents[2] / "shared" / "reference" / "promptus-official"

M = 1 << 24
MASK32 = (1 << 32) - 1


# ------------------------------------------------------------ reference (from SPEC.md)

def ref_frequencies(model_type: int, center: int, scale: int) -> list[int] | None:
    """SPEC model construction, one symbol at a time; None when W == 0."""
    w = []
    for i in range(256):
        d = abs(256 * i - center)
        x = (64 * d) // scale if model_type == 1 else (64 * d * d) // (scale * scale)
        w.append(entropy.EXP2NEG[x & 63] >> (x >> 6) if (x >> 6) < 32 else 0)
    total = sum(w)
    if total == 0:
        return None
    f = [1 + (wi * (M - 256)) // total for wi in w]
    f[w.index(max(w))] += M - sum(f)
    return f


def cumulative(f: list[int]) -> list[int]:
    cdf = [0]
    for fi in f:
        cdf.append(cdf[-1] + fi)
    return cdf


def ref_encode(symbols: list[int], f: list[int]) -> list[int]:
    """SPEC encoder (informative part): words in data order."""
    cdf = cumulative(f)
    x, words = 1, []
    for s in reversed(symbols):
        if (x >> 40) >= f[s]:
            words.append(x & MASK32)
            x >>= 32
        x = ((x // f[s]) << 24) + cdf[s] + x % f[s]
    if x >> 32:
        words += [x & MASK32, x >> 32]
    else:
        words.append(x)
    return words


def ref_decode_raw(words: list[int], f: list[int], n: int) -> tuple[list[int], int, int]:
    """SPEC decoding process without the final checks: (symbols, words left, state)."""
    cdf = cumulative(f)
    p = len(words)
    x = words[p - 1]
    p -= 1
    if p > 0:
        x = (x << 32) | words[p - 1]
        p -= 1
    out = []
    for _ in range(n):
        q = x & (M - 1)
        s = 0
        while cdf[s + 1] <= q:
            s += 1
        x = f[s] * (x >> 24) + q - cdf[s]
        if x < (1 << 32) and p > 0:
            x = (x << 32) | words[p - 1]
            p -= 1
        out.append(s)
    return out, p, x


def ref_decode(words: list[int], f: list[int], n: int) -> list[int] | None:
    """SPEC decoding process with the conformance checks; None for entropy_error."""
    if not words or words[-1] == 0:
        return None
    out, p, x = ref_decode_raw(words, f, n)
    return out if p == 0 and x == 1 else None


def ref_decode_block(block: bytes, n: int) -> tuple[list[int], int] | str:
    """Whole-block SPEC decoder: (symbols, size) or the error code."""
    if not block:
        return "truncated"
    mt, pos = block[0], 1
    if mt == 0:
        return (list(block[1:1 + n]), 1 + n) if len(block) - 1 >= n else "truncated"
    if mt > 2:
        return "bad_field"
    if len(block) < 5:
        return "truncated"
    center, scale = int.from_bytes(block[1:3], "little"), int.from_bytes(block[3:5], "little")
    if center > 65280 or scale == 0:
        return "bad_field"
    pos, size, shift = 5, 0, 0
    for i in range(8):
        if pos >= len(block):
            return "truncated"
        b = block[pos]
        pos += 1
        size |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            if b == 0 and i > 0:
                return "noncanonical_leb128"
            break
    else:
        return "size_limit"
    if size == 0 or size % 4:
        return "bad_field"
    if size > 4 * n + 16 or size > len(block) - pos:
        return "size_limit"
    f = ref_frequencies(mt, center, scale)
    if f is None:
        return "bad_field"
    words = [int.from_bytes(block[pos + 4 * k:pos + 4 * k + 4], "little") for k in range(size // 4)]
    out = ref_decode(words, f, n)
    return "entropy_error" if out is None else (out, pos + size)


# ---------------------------------------------------------------------------- helpers

def random_table(rng: np.random.Generator, kind: str) -> list[int]:
    """256 frequencies >= 1 summing to 2^24, of a given shape."""
    if kind == "equal":
        return [M // 256] * 256
    if kind == "peak":                       # one symbol with all but 255 units
        f = [1] * 256
        f[int(rng.integers(256))] = M - 255
        return f
    if kind == "ones":                       # many symbols at frequency 1
        f = [1] * 256
        hot = rng.choice(256, size=int(rng.integers(1, 5)), replace=False)
        for k, i in enumerate(hot):
            f[int(i)] += (M - 256) // len(hot) + (((M - 256) % len(hot)) if k == 0 else 0)
        return f
    raw = rng.random(256) ** float(rng.choice([1.0, 4.0, 20.0]))
    f = [1 + int(v) for v in raw / raw.sum() * (M - 256)]
    f[int(np.argmax(raw))] += M - sum(f)
    return f


def sample(rng: np.random.Generator, f: list[int], n: int) -> list[int]:
    """n symbols drawn from f, mixed with a few uniform ones (to hit frequency-1 symbols)."""
    p = np.array(f, dtype=np.float64) / M
    out = rng.choice(256, size=n, p=p)
    mask = rng.random(n) < 0.1
    out[mask] = rng.integers(0, 256, int(mask.sum()))
    return [int(v) for v in out]


def module_encode(symbols: list[int], f: list[int]) -> list[int]:
    words, _ = entropy._rans_encode(np.array(symbols, dtype=np.int32), entropy._categorical(np.array(f, np.int64)))
    return [int(w) for w in words]


def module_decode(words: list[int], f: list[int], n: int) -> list[int]:
    out = entropy._rans_decode(np.array(words, dtype=np.uint32), entropy._categorical(np.array(f, np.int64)), n)
    return [int(v) for v in out]


# ------------------------------------------------------------------------------ tests

def test_exp2neg_is_exactly_rounded():
    """EXP2NEG[k] = round(65536 * 2^(-k/64)), checked with integers; no entry is a tie."""
    for k, t in enumerate(entropy.EXP2NEG):
        # t - 1/2 < 2^(16 - k/64) < t + 1/2  <=>  (2t-1)^64 < 2^(17*64 - k) < (2t+1)^64
        target = 1 << (17 * 64 - k)
        assert (2 * t - 1) ** 64 < target < (2 * t + 1) ** 64, k
    assert entropy.EXP2NEG[0] == 65536 and len(entropy.EXP2NEG) == 64


@pytest.mark.parametrize("model_type", [1, 2])
def test_frequency_table_matches_reference(model_type):
    rng = np.random.default_rng(model_type)
    params = [(0, 1), (65280, 1), (0, 65535), (65280, 65535), (32768, 256), (128 * 256, 7)]
    params += [(int(rng.integers(0, 65281)), int(rng.integers(1, 65536))) for _ in range(300)]
    params += [(int(rng.integers(0, 65281)), int(rng.integers(1, 600))) for _ in range(300)]
    for center, scale in params:
        want = ref_frequencies(model_type, center, scale)
        if want is None:
            with pytest.raises(InvalidDataError) as err:
                entropy.frequency_table(model_type, center, scale)
            assert err.value.code == "bad_field"
            continue
        got = entropy.frequency_table(model_type, center, scale)
        assert got.tolist() == want
        assert got.sum() == M and got.min() >= 1


def test_zero_total_weight_exists_and_is_bad_field():
    """W == 0 is reachable (small scale, center between symbols): it must be rejected."""
    assert ref_frequencies(1, 128, 1) is None
    assert ref_frequencies(2, 128, 20) is None
    assert ref_frequencies(1, 0, 1) is not None          # center on a symbol: W > 0


@pytest.mark.parametrize("kind", ["random", "equal", "peak", "ones"])
def test_rans_bit_exact_against_reference(kind):
    rng = np.random.default_rng(["random", "equal", "peak", "ones"].index(kind))
    for trial in range(40):
        f = random_table(rng, kind)
        assert sum(f) == M and min(f) >= 1
        n = [1, 2, 3][trial] if trial < 3 else int(rng.integers(1, 3000))
        symbols = sample(rng, f, n)
        ref_words = ref_encode(symbols, f)
        assert module_encode(symbols, f) == ref_words
        assert ref_decode(ref_words, f, n) == symbols
        assert module_decode(ref_words, f, n) == symbols
        assert len(ref_words) <= n + 2


def test_rans_worst_case_size_bound():
    """Every symbol at frequency 1 costs one word: n + 2 words at most, cap 4n + 16 holds."""
    f = [1] * 256
    f[0] = M - 255
    for n in (1, 2, 3, 10, 1000):
        words = ref_encode([255] * n, f)
        assert len(words) <= n + 2 and 4 * len(words) <= entropy.max_data_size(n)
        assert module_encode([255] * n, f) == words


def test_rans_arbitrary_words_decode_identically():
    """On arbitrary (mostly nonconforming) words constriction and the SPEC agree on
    every symbol, the words left and the final state."""
    rng = np.random.default_rng(7)
    for trial in range(300):
        f = random_table(rng, ["random", "equal", "peak", "ones"][trial % 4])
        words = [int(w) for w in rng.integers(0, 1 << 32, int(rng.integers(1, 12)), dtype=np.uint64)]
        words[-1] = words[-1] or 1
        n = int(rng.integers(0, 40))
        coder = constriction.stream.stack.AnsCoder(np.array(words, dtype=np.uint32))
        got = coder.decode(entropy._categorical(np.array(f, np.int64)), n).tolist() if n else []
        assert (got, *coder.pos()) == ref_decode_raw(words, f, n)


def test_initial_state_and_all_zero_symbols():
    """The coder starts in state 1: even a run of symbol 0 (cdf 0) leaves one word."""
    f = random_table(np.random.default_rng(1), "random")
    assert ref_encode([0] * 50, f) == [1] == module_encode([0] * 50, f)
    block = entropy.encode_symbols(np.zeros(20000, dtype=np.uint8))
    assert len(block) == 10 and block[0] == 1               # 5 header + 1 size + 1 word
    out, end = entropy.decode_symbols(block, 0, 20000)
    assert end == 10 and not out.any()


@st.composite
def symbol_arrays(draw):
    n = draw(st.integers(1, 20000))
    seed = draw(st.integers(0, 2**32 - 1))
    kind = draw(st.sampled_from(["uniform", "bell", "constant", "few", "laplace", "edge"]))
    rng = np.random.default_rng(seed)
    if kind == "uniform":
        return rng.integers(0, 256, n, dtype=np.uint8)
    if kind == "bell":
        spread = draw(st.integers(1, 40))
        return np.clip(rng.integers(0, spread, (8, n)).sum(0) + draw(st.integers(-80, 255)), 0, 255).astype(np.uint8)
    if kind == "constant":
        return np.full(n, draw(st.integers(0, 255)), dtype=np.uint8)
    if kind == "few":
        return rng.choice(np.array(draw(st.lists(st.integers(0, 255), min_size=1, max_size=4)), np.uint8), n)
    if kind == "laplace":
        mag = rng.geometric(1.0 / draw(st.integers(1, 30)), n) - 1
        return np.clip(np.where(rng.random(n) < 0.5, -mag, mag) + draw(st.integers(0, 255)), 0, 255).astype(np.uint8)
    return rng.choice(np.array([0, 1, 254, 255], np.uint8), n)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(symbol_arrays())
def test_round_trip(symbols):
    block = entropy.encode_symbols(symbols)
    assert len(block) <= symbols.size + 1                    # never worse than stored
    prefix = b"\xAA" * 3
    out, end = entropy.decode_symbols(memoryview(prefix + block + b"\x55"), 3, symbols.size)
    assert end == 3 + len(block)
    assert out.dtype == np.uint8 and np.array_equal(out, symbols)
    assert entropy.encode_symbols(symbols) == block          # deterministic


@pytest.mark.parametrize("n", [1, 2, 3, 616, 8192, 20000])
def test_round_trip_sizes(n):
    rng = np.random.default_rng(n)
    for symbols in (
        np.clip(np.rint(rng.normal(128, 32, n)), 0, 255).astype(np.uint8),
        np.clip(np.rint(rng.laplace(100, 10, n)), 0, 255).astype(np.uint8),
        rng.integers(0, 256, n, dtype=np.uint8),
        np.full(n, 255, dtype=np.uint8),
    ):
        block = entropy.encode_symbols(symbols)
        out, end = entropy.decode_symbols(block, 0, n)
        assert end == len(block) and np.array_equal(out, symbols)


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=1, max_size=300))
def test_round_trip_small_and_reference_decoder(raw):
    symbols = np.frombuffer(raw, dtype=np.uint8)
    block = entropy.encode_symbols(symbols)
    assert ref_decode_block(block, symbols.size) == (list(raw), len(block))


def test_encode_shapes_and_empty():
    assert entropy.encode_symbols(np.zeros(0, dtype=np.uint8)) == b"\x00"
    assert entropy.decode_symbols(b"\x00", 0, 0)[1] == 1
    a = np.random.default_rng(3).integers(100, 110, (77, 8)).astype(np.uint8)
    assert entropy.encode_symbols(a) == entropy.encode_symbols(a.ravel())
    assert entropy.encode_symbols(np.asfortranarray(a)) == entropy.encode_symbols(a.ravel())
    with pytest.raises(TypeError):
        entropy.encode_symbols(a.astype(np.int16))


def test_golden_bytes():
    """Pins the encoder's choices (integer-only input, so identical on every platform)."""
    rng = np.random.default_rng(20240601)
    bell = (rng.integers(0, 16, (8, 8192)).sum(0) + 68).astype(np.uint8)
    spiky = np.where(rng.integers(0, 4, 616) == 0, rng.integers(0, 256, 616), 120).astype(np.uint8)
    digest = hashlib.sha256(entropy.encode_symbols(bell) + entropy.encode_symbols(spiky)).hexdigest()
    assert digest == GOLDEN_DIGEST


GOLDEN_DIGEST = "2b9b46045827d9197b1170b2b01fa1005d8a2926ee8fa1aa0253c495ce50bb09"


def coded(model_type: int, center: int, scale: int, size_leb: bytes, data: bytes) -> bytes:
    return bytes([model_type]) + center.to_bytes(2, "little") + scale.to_bytes(2, "little") + size_leb + data


def valid_coded_block() -> tuple[bytes, np.ndarray]:
    symbols = (np.random.default_rng(5).integers(0, 12, (4, 500)).sum(0) + 100).astype(np.uint8)
    block = entropy.encode_symbols(symbols)
    assert block[0] in (1, 2)
    return block, symbols


def crafted_errors() -> list[tuple[bytes, int, str]]:
    """(block, n, expected error code) for every error a coded_symbols block can have."""
    block, symbols = valid_coded_block()
    n = symbols.size
    size, data_pos = decode_leb128(memoryview(block), 5, 8)
    head, data = block[:5], block[data_pos:]
    assert len(data) == size
    word = (1).to_bytes(4, "little")
    tampered = bytearray(data)
    tampered[0] ^= 0x01                                      # first word: read last
    return [
        (b"", 1, "truncated"),
        (b"\x00abc", 4, "truncated"),
        (b"\x01\x00", 3, "truncated"),
        (b"\x02\x00\x80\x10", 3, "truncated"),
        (b"\x01\x00\x80\x10\x00", 3, "truncated"),
        (b"\x01\x00\x80\x10\x00\x84", 3, "truncated"),
        (b"\x03" + b"\x00" * 10, 3, "bad_field"),
        (b"\xff" + b"\x00" * 10, 3, "bad_field"),
        (coded(1, 65281, 10, b"\x04", word), 3, "bad_field"),
        (coded(2, 0, 0, b"\x04", word), 3, "bad_field"),
        (coded(1, 0, 10, b"\x00", b""), 3, "bad_field"),
        (coded(1, 0, 10, b"\x05", word + b"\x00"), 3, "bad_field"),
        (coded(1, 128, 1, b"\x04", word), 3, "bad_field"),        # W == 0
        (coded(1, 0, 10, b"\x84\x00", word), 3, "noncanonical_leb128"),
        (coded(1, 0, 10, b"\x80" * 8 + b"\x01", word), 3, "size_limit"),
        (coded(1, 0, 10, b"\x20", word * 8), 3, "size_limit"),     # 32 > 4*3 + 16
        (coded(1, 0, 10, b"\x08", word), 3, "size_limit"),         # more than is left
        (coded(1, 0, 10, b"\x04", b"\x00" * 4), 3, "entropy_error"),   # last word 0
        (coded(1, 0, 10, b"\x08", word + word), 3, "entropy_error"),   # words left over
        (coded(1, 0, 10, b"\x04", (5).to_bytes(4, "little")), 3, "entropy_error"),  # final state
        (head + encode_leb128(size + 4) + word + data, n, "entropy_error"),
        (block[:data_pos] + bytes(tampered), n, "entropy_error"),
    ]


def test_every_error_code():
    cases = crafted_errors()
    seen = set()
    for block, n, code in cases:
        with pytest.raises(InvalidDataError) as err:
            entropy.decode_symbols(block, 0, n)
        assert err.value.code == code, (block[:12], err.value)
        assert ref_decode_block(block, n) == code
        assert isinstance(err.value, ValueError) and err.value.message
        seen.add(code)
    assert seen == {"truncated", "bad_field", "noncanonical_leb128", "size_limit", "entropy_error"}


def test_truncation_at_every_offset():
    rng = np.random.default_rng(11)
    arrays = [
        valid_coded_block()[1],
        (rng.integers(0, 6, (8, 300)).sum(0) + 90).astype(np.uint8),
        rng.integers(0, 256, 50).astype(np.uint8),                     # stored
        np.full(40, 7, dtype=np.uint8),
    ]
    for symbols in arrays:
        block = entropy.encode_symbols(symbols)
        for cut in range(len(block)):
            with pytest.raises(InvalidDataError):
                entropy.decode_symbols(block[:cut], 0, symbols.size)


def test_corruption_raises_only_entropy_error():
    rng = np.random.default_rng(12)
    block, symbols = valid_coded_block()
    for _ in range(1000):
        bad = bytearray(block)
        for _ in range(int(rng.integers(1, 4))):
            bad[int(rng.integers(len(bad)))] = int(rng.integers(256))
        n = symbols.size + int(rng.integers(-2, 3))
        try:
            out, end = entropy.decode_symbols(bytes(bad), 0, n)
        except InvalidDataError as err:
            assert ref_decode_block(bytes(bad), n) == err.code
        else:
            assert ref_decode_block(bytes(bad), n) == (out.tolist(), end)


def official_keyframes() -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    torch = pytest.importorskip("torch", reason="torch is needed to read the official .prompt files")
    clips = {}
    for clip in ("sky", "uvg"):
        files = sorted((OFFICIAL / clip / "prompts_rank8_interval10").glob("frame_*.prompt"))
        if not files:
            pytest.skip(f"official prompts not found under {OFFICIAL}")
        clips[clip] = []
        for path in files:
            d = torch.load(path, weights_only=True, map_location="cpu")
            clips[clip].append((d["U"].numpy(), d["V"].numpy()))
    return clips


@pytest.mark.skipif(not OFFICIAL.is_dir(), reason=f"official reference data absent ({OFFICIAL})")
def test_official_prompts_save_at_least_ten_percent():
    for clip, keyframes in official_keyframes().items():
        raw = coded_total = 0
        for u, v in keyframes:
            for a in (u, v):
                block = entropy.encode_symbols(a)
                out, end = entropy.decode_symbols(block, 0, a.size)
                assert end == len(block) and np.array_equal(out, a.ravel())
                raw += a.size
                coded_total += len(block)
        assert coded_total <= 0.9 * raw, (clip, raw, coded_total)
