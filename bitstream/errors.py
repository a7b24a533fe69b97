"""The one exception a malformed `.pmt` stream raises, with stable error codes.

Every problem the reader finds in its input is reported as `InvalidDataError`, a
`PromptusError` and `ValueError` carrying a machine-readable `code` (one of `ERROR_CODES`, listed with their
meaning in SPEC.md, "Error codes") and a one-line human message. Conformance `.res`
files name these codes, so they never change meaning once released.
"""
from __future__ import annotations

from ..errors import PromptusError

ERROR_CODES: dict[str, str] = {
    "bad_signature": "the bytes do not start with the .pmt signature",
    "unsupported_version": "the stream's major version is not 1",
    "truncated": "the input ends inside a unit or before the end-of-stream unit",
    "crc_mismatch": "a unit's CRC-32C does not match its bytes",
    "size_limit": "a declared size or count exceeds its cap in SPEC.md",
    "noncanonical_leb128": "a leb128() value is not in its shortest form",
    "unsupported_unit": "a unit type this decoder does not know, not marked ignorable",
    "bad_unit_order": "a unit appears where SPEC.md does not allow it",
    "bad_field": "a field holds a forbidden value",
    "bad_payload_size": "a payload is shorter or longer than its fields",
    "frame_order": "frame indices are not in the order SPEC.md requires",
    "rank_mismatch": "keyframes of one scene have different ranks",
    "entropy_error": "entropy-coded data does not decode to a valid terminated block",
    "bad_index": "the index unit does not list the stream's scenes and keyframes",
    "frame_count_mismatch": "a declared frame count differs from the frames coded",
    "stream_mismatch": "concatenated streams differ in a sequence header field other than frame_count and noise_seed",
}


class InvalidDataError(PromptusError, ValueError):
    """A `.pmt` input violates SPEC.md.

    `code` is one of `ERROR_CODES`; `offset` is the byte offset in the input where the
    offending unit (or field) starts, when known.
    """

    def __init__(self, code: str, message: str, offset: int | None = None) -> None:
        if code not in ERROR_CODES:
            raise AssertionError(f"unregistered error code {code!r}")
        self.code = code
        self.message = message
        self.offset = offset
        where = f" at byte {offset}" if offset is not None else ""
        super().__init__(f"{code}: {message}{where}")
