"""The `.pmt` reader against damage: every bit flip and every truncation of a stream is
detected, damage behind a recomputed CRC and random bytes raise nothing but
InvalidDataError.
"""
from __future__ import annotations

import io

import numpy as np
import pytest
from bitstream_helpers import HEADER_UNIT, assert_code, error_of, read_all
from conftest import RICH_SPEC, SMALL_SPEC, assert_unit_equal, build_stream, prefix
from libpromptus.bitstream import ERROR_CODES, SIGNATURE, InvalidDataError, read_streams
from libpromptus.bitstream.framing import UnitSource, frame_unit

# ---------------------------------------------------------------- damage


@pytest.mark.parametrize("spec", [SMALL_SPEC, RICH_SPEC], ids=["small", "rich"])
def test_every_bit_flip_is_detected(spec):
    built = build_stream(spec)
    data = built.data
    reference = read_all(data)
    for i in range(len(data)):
        for bit in range(8):
            damaged = bytearray(data)
            damaged[i] ^= 1 << bit
            if i == len(SIGNATURE) + 1:
                # The minor version: a 1.x stream with the same units is still valid.
                got = read_all(bytes(damaged))
                assert len(got) == len(reference)
                for a, b in zip(got, reference):
                    assert_unit_equal(a.unit, b.unit)
                continue
            try:
                read_all(bytes(damaged))
            except InvalidDataError as err:
                code = err.code
            else:
                pytest.fail(f"flipping bit {bit} of byte {i} went unnoticed")
            if i < len(SIGNATURE):
                assert code == "bad_signature", (i, bit)
            elif i == len(SIGNATURE):
                assert code == "unsupported_version", (i, bit)
            else:
                assert code in {"crc_mismatch", "truncated", "noncanonical_leb128", "size_limit"}, (i, bit, code)


@pytest.mark.parametrize("spec", [SMALL_SPEC, RICH_SPEC], ids=["small", "rich"])
def test_every_truncation_is_detected(spec):
    data = build_stream(spec).data
    for cut in range(len(data)):
        err = assert_code(data[:cut], "truncated")
        assert err.offset is not None and err.offset <= cut


def test_truncated_concatenation(small_stream):
    data = small_stream.data * 2
    for cut in range(len(data)):
        if cut == len(small_stream.data):
            assert len(read_streams(io.BytesIO(data[:cut]))) == 1
        else:
            assert_code(data[:cut], "truncated")


def _raw_units(data: bytes):
    source = UnitSource(io.BytesIO(data))
    assert source.read_prefix() == 0
    units = []
    while source.position < len(data):
        units.append(source.read_unit())
    return units


def test_payload_damage_with_valid_crc_raises_only_invalid_data(small_stream):
    """Damage that the CRC cannot see (recomputed) still raises nothing but InvalidDataError."""
    units = _raw_units(small_stream.data)
    valid = 0
    for n, raw in enumerate(units):
        for i in range(len(raw.payload)):
            for mask in (0x01, 0x10, 0x80, 0xFF):
                payload = bytearray(raw.payload)
                payload[i] ^= mask
                unit = frame_unit(raw.unit_type, bytes(payload), raw.may_ignore)
                data = prefix() + b"".join(
                    unit if k == n else frame_unit(u.unit_type, u.payload, u.may_ignore) for k, u in enumerate(units))
                try:
                    read_all(data)
                    valid += 1
                except InvalidDataError as err:
                    assert err.code in ERROR_CODES
    assert valid > 0   # e.g. a changed factor value is a valid stream


@pytest.mark.parametrize("length", [1, 7, 8, 10, 11, 64, 300])
@pytest.mark.parametrize("seed", range(5))
def test_random_bytes(length, seed):
    rng = np.random.default_rng([seed, length])
    data = rng.integers(0, 256, length, dtype=np.uint8).tobytes()
    error_of(data)
    # After a valid signature and version, random units fail too.
    error_of(prefix() + data)
    error_of(prefix() + HEADER_UNIT + data)


def test_empty_input():
    assert_code(b"", "truncated", offset=0)
