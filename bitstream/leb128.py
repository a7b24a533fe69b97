"""Unsigned LEB128 (SPEC.md, descriptor `leb128()`): 7 bits per byte, low group first.

Only the shortest encoding of a value is valid, so every value has exactly one coding
and streams stay byte-for-byte deterministic.
"""
from __future__ import annotations

from .errors import InvalidDataError


def encode_leb128(value: int) -> bytes:
    """Return the shortest leb128() coding of a non-negative integer."""
    if value < 0:
        raise ValueError("leb128 codes non-negative integers only")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def decode_leb128(data: bytes | memoryview, offset: int, max_bytes: int) -> tuple[int, int]:
    """Decode one leb128() from `data[offset:]`; return (value, offset after it).

    Raises `InvalidDataError` with code `truncated` when the data ends inside the value,
    `size_limit` when it needs more than `max_bytes` bytes and `noncanonical_leb128`
    when a shorter coding of the same value exists.
    """
    value = 0
    for i in range(max_bytes):
        if offset + i >= len(data):
            raise InvalidDataError("truncated", "input ends inside a leb128 value", offset)
        byte = data[offset + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if byte == 0 and i > 0:
                raise InvalidDataError("noncanonical_leb128", "leb128 value has a redundant zero byte", offset)
            return value, offset + i + 1
    raise InvalidDataError("size_limit", f"leb128 value longer than {max_bytes} bytes", offset)
