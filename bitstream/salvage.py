"""Framing damaged `.pmt` input: the units that survive, and where bytes were lost.

The strict reader (`read_units`) stops at the first unit whose CRC-32C fails. For error
concealment, `salvage` walks the whole input instead and yields, in input order, each
stream's prefix (`StreamPrefix`), every unit whose CRC-32C verifies (`RawUnit`, not yet
parsed) and a `LostBytes` record for each byte range in between. It works on the input
in memory, since resynchronising may need to look ahead.

Resynchronisation relies on units being self-delimiting (SPEC.md §2):

- A unit whose CRC fails but whose `unit_size` leads to a boundary (a unit whose CRC
  verifies, a stream signature, the end of the input, or a short chain of damaged units
  of defined types ending at one of those) is skipped as a whole. Its size field was
  intact, so its header byte most likely was too: `LostBytes.unit_type` names the type
  the lost unit claimed.
- Otherwise the size field itself is suspect: the input is scanned forward for the next
  signature or the next unit of a defined type whose CRC verifies. The scan is bounded:
  it hashes at most `SCAN_BUDGET` bytes, and when that is spent (or nothing is found)
  the rest of the input counts as lost. `LostBytes.unit_type` is then None: the range
  may have held any units.

After an end-of-stream unit only a signature may follow (SPEC.md §2). Bytes there that
are not one (trailing garbage, or garbage between concatenated streams) are one
`LostBytes` (code `bad_signature`) up to the next signature, which starts the next
stream; that scan is bounded too, by `SCAN_BUDGET` bytes, past which the rest of the
input counts as lost. The first stream's signature, and the version after any signature,
are not salvaged (nothing after a damaged one can be trusted to be a `.pmt` stream): they
raise `InvalidDataError` as the strict reader does.
"""
from __future__ import annotations

import io
import re
from collections.abc import Iterator
from dataclasses import dataclass

import google_crc32c

from .errors import InvalidDataError
from .framing import PREFIX_SIZE, SIGNATURE, RawUnit, UnitSource
from .leb128 import decode_leb128
from .limits import MAX_LEB128_BYTES, MAX_UNIT_SIZE
from .units import IGNORABLE_TYPES, UnitType

#: Bytes one resynchronisation scan may hash before it gives up on the rest of the input.
SCAN_BUDGET = 4 * MAX_UNIT_SIZE
#: Damaged units in a row that a skip may cross and still count as landing on a boundary.
MAX_DAMAGED_RUN = 3

_DEFINED_HEADERS = frozenset((0x80 if kind in IGNORABLE_TYPES else 0) | kind for kind in UnitType)
_CANDIDATE = re.compile(b"[" + b"".join(re.escape(bytes((h,))) for h in sorted(_DEFINED_HEADERS)) + b"]|"
                        + re.escape(SIGNATURE))


@dataclass(frozen=True)
class StreamPrefix:
    """A stream's signature and version at `offset` in the input."""

    offset: int
    minor: int


@dataclass(frozen=True)
class LostBytes:
    """Bytes `offset .. offset + size - 1` that hold no unit whose CRC-32C verifies.

    `code` says what was wrong where the loss starts (`crc_mismatch`, `truncated`,
    `size_limit`, `noncanonical_leb128`, or `bad_signature` for bytes after an
    end-of-stream unit that are not a stream); `unit_type` is the type the lost unit's
    header byte names when its size field proved intact, else None.
    """

    offset: int
    size: int
    code: str
    unit_type: int | None


Piece = StreamPrefix | RawUnit | LostBytes


def salvage(data: bytes) -> Iterator[Piece]:
    """Yield the prefixes, verified units and lost byte ranges of `data`, in order."""
    yield _prefix(data, 0)
    position = PREFIX_SIZE
    expect_prefix = False          # after an end-of-stream unit only a signature may follow
    after_loss = False             # a lost end-of-stream unit may hide a stream boundary
    while position < len(data):
        if expect_prefix or (after_loss and data.startswith(SIGNATURE, position)):
            if expect_prefix and len(data) - position < PREFIX_SIZE and SIGNATURE.startswith(data[position:]):
                yield LostBytes(position, len(data) - position, "truncated", None)
                return
            if not data.startswith(SIGNATURE, position):
                end = _next_signature(data, position + 1)
                yield LostBytes(position, end - position, "bad_signature", None)
                position = end
                continue
            yield _prefix(data, position)
            position += PREFIX_SIZE
            expect_prefix = after_loss = False
            continue
        unit, code, end = _frame(data, position)
        if unit is not None:
            yield unit
            position = end
            expect_prefix = unit.unit_type == UnitType.END_OF_STREAM
            after_loss = False
            continue
        if end is not None and _is_boundary(data, end, MAX_DAMAGED_RUN):
            yield LostBytes(position, end - position, code, _claimed_type(data[position]))
        else:
            end = _scan(data, position + 1)
            yield LostBytes(position, end - position, code, None)
        position = end
        after_loss = True


def _prefix(data: bytes, offset: int) -> StreamPrefix:
    """A stream prefix at `offset`, checked as the strict reader checks it."""
    minor = UnitSource(io.BytesIO(data[offset:offset + PREFIX_SIZE])).read_prefix()
    if minor is None:
        raise InvalidDataError("truncated", "empty input", offset)
    return StreamPrefix(offset, minor)


def _frame(data: bytes, position: int) -> tuple[RawUnit | None, str, int | None]:
    """The unit at `position` if its CRC verifies; else (None, what is wrong, its declared end or None)."""
    try:
        size, payload_start = decode_leb128(data, position + 1, MAX_LEB128_BYTES)
    except InvalidDataError as err:
        return None, err.code, None
    if size > MAX_UNIT_SIZE:
        return None, "size_limit", None
    payload_end = payload_start + size
    end = payload_end + 4
    if end > len(data):
        return None, "truncated", None
    if google_crc32c.value(data[position:payload_end]).to_bytes(4, "little") != data[payload_end:end]:
        return None, "crc_mismatch", end
    head = data[position]
    return RawUnit(position, head & 0x7F, bool(head & 0x80), data[payload_start:payload_end], end - position), "", end


def _is_boundary(data: bytes, position: int, damaged_run: int) -> bool:
    """Whether a unit (or a signature, or the end of input) plausibly starts at `position`."""
    if position == len(data) or data.startswith(SIGNATURE, position):
        return True
    unit, _, end = _frame(data, position)
    if unit is not None:
        return True
    return (damaged_run > 0 and end is not None and data[position] in _DEFINED_HEADERS
            and _is_boundary(data, end, damaged_run - 1))


def _claimed_type(head: int) -> int | None:
    """The unit type a header byte names, if its `may_ignore` bit is consistent with it."""
    kind, may_ignore = head & 0x7F, bool(head & 0x80)
    if head in _DEFINED_HEADERS or (kind > max(UnitType) and may_ignore):
        return kind
    return None


def _scan(data: bytes, start: int) -> int:
    """The next signature or verifying unit of a defined type from `start`, else the end of input."""
    budget = SCAN_BUDGET
    for match in _CANDIDATE.finditer(data, start):
        position = match.start()
        if data.startswith(SIGNATURE, position):
            return position
        try:
            size, payload_start = decode_leb128(data, position + 1, MAX_LEB128_BYTES)
        except InvalidDataError:
            continue
        end = payload_start + size + 4
        if size > MAX_UNIT_SIZE or end > len(data):
            continue
        budget -= end - position
        if budget < 0:
            break
        if _frame(data, position)[0] is not None:
            return position
    return len(data)


def _next_signature(data: bytes, start: int) -> int:
    """The next signature within `SCAN_BUDGET` bytes from `start`, else the end of input."""
    found = data.find(SIGNATURE, start, start + SCAN_BUDGET)
    return len(data) if found < 0 else found
