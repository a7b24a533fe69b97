"""Signature and unit framing (SPEC.md, "File structure").

A unit on the wire is `unit_header` (1 byte: `may_ignore` flag and `unit_type`),
`unit_size` as leb128(), the payload, and a CRC-32C of all of those, little-endian.
`UnitSource` reads units one by one from any binary file object, a pipe included: it
never seeks and never reads beyond the unit it returns.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO

import google_crc32c

from .errors import InvalidDataError
from .leb128 import decode_leb128, encode_leb128
from .limits import MAX_LEB128_BYTES, MAX_UNIT_SIZE

SIGNATURE = b"\x8aPMT\r\n\x1a\n"
VERSION_MAJOR = 1
#: The highest minor version this library reads and writes. It writes the lowest minor
#: version whose features a stream uses (1.0 unless a keyframe is LAYERED).
VERSION_MINOR = 2
PREFIX_SIZE = len(SIGNATURE) + 2


def stream_prefix(minor: int = 0) -> bytes:
    """The signature and version 1.`minor` that open a stream."""
    if not 0 <= minor <= VERSION_MINOR:
        raise ValueError(f"this library writes versions 1.0 to 1.{VERSION_MINOR}, not 1.{minor}")
    return SIGNATURE + bytes((VERSION_MAJOR, minor))


def frame_unit(unit_type: int, payload: bytes, may_ignore: bool) -> bytes:
    """Wrap a payload into a complete unit: header, size, payload, CRC-32C."""
    if len(payload) > MAX_UNIT_SIZE:
        raise InvalidDataError("size_limit", f"a {len(payload)}-byte payload exceeds the unit cap {MAX_UNIT_SIZE}")
    head = bytes(((0x80 if may_ignore else 0) | unit_type,)) + encode_leb128(len(payload))
    crc = google_crc32c.Checksum(head)
    crc.update(payload)
    return head + payload + crc.digest()[::-1]


@dataclass(frozen=True)
class RawUnit:
    """A unit as framed on the wire, CRC checked, payload not yet parsed."""

    offset: int          # byte offset of the unit header from the start of the input
    unit_type: int
    may_ignore: bool
    payload: bytes
    size: int            # bytes of the whole unit, header to CRC


class UnitSource:
    """Reads signatures and units sequentially from a binary stream."""

    def __init__(self, stream: BinaryIO, *, position: int = 0) -> None:
        """`position`: the offset in the input that `stream` is at (after a seek)."""
        self._stream = stream
        self.position = position

    def _read(self, count: int) -> bytes:
        chunks = []
        remaining = count
        while remaining:
            chunk = self._stream.read(remaining)
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        data = b"".join(chunks)
        self.position += len(data)
        return data

    def _read_exact(self, count: int, what: str, offset: int) -> bytes:
        data = self._read(count)
        if len(data) != count:
            raise InvalidDataError("truncated", f"input ends inside {what}", offset)
        return data

    def read_prefix(self) -> int | None:
        """Read a stream's signature and version; return its minor version.

        Returns None at a clean end of input (no byte left), which is where a file of
        concatenated streams ends.
        """
        offset = self.position
        signature = self._read(len(SIGNATURE))
        if not signature:
            return None
        if signature != SIGNATURE[: len(signature)] or len(signature) < len(SIGNATURE):
            if signature == SIGNATURE[: len(signature)]:
                raise InvalidDataError("truncated", "input ends inside the signature", offset)
            raise InvalidDataError("bad_signature", "not a .pmt stream (signature mismatch)", offset)
        major, minor = self._read_exact(2, "the version", offset)
        if major != VERSION_MAJOR:
            raise InvalidDataError("unsupported_version", f"stream version {major}.{minor}; this decoder reads 1.x",
                                   offset)
        return minor

    def read_unit(self) -> RawUnit:
        """Read one whole unit and check its size cap and CRC-32C."""
        offset = self.position
        head = bytearray(self._read_exact(1, "a unit header", offset))
        while len(head) < 1 + MAX_LEB128_BYTES and (len(head) == 1 or head[-1] & 0x80):
            head += self._read_exact(1, "a unit size", offset)
        try:
            size, _ = decode_leb128(bytes(head), 1, MAX_LEB128_BYTES)
        except InvalidDataError as err:   # its offset counts from `head`: report the unit's
            raise InvalidDataError(err.code, err.message, offset) from None
        if size > MAX_UNIT_SIZE:
            raise InvalidDataError("size_limit", f"unit size {size} exceeds the cap {MAX_UNIT_SIZE}", offset)
        payload = self._read_exact(size, "a unit payload", offset)
        stored = self._read_exact(4, "a unit CRC", offset)
        crc = google_crc32c.Checksum(bytes(head))
        crc.update(payload)
        if crc.digest()[::-1] != stored:
            raise InvalidDataError("crc_mismatch", f"unit CRC-32C mismatch (unit type {head[0] & 0x7F})", offset)
        return RawUnit(offset, head[0] & 0x7F, bool(head[0] & 0x80), payload, self.position - offset)
