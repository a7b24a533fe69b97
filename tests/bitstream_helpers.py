"""Shared pieces of the `.pmt` container tests (test_bitstream*.py).

The tiny header as a framed unit and the offset of the unit after it, the first scene
start and keyframe of a tiny stream, and readers that read a whole stream and return
its units, or the InvalidDataError it must raise (with its code and offset checked).
"""
from __future__ import annotations

import io

import pytest
from conftest import TINY_HEADER, frame, make_keyframe, make_scene_start
from libpromptus.bitstream import ERROR_CODES, InvalidDataError, read_units
from libpromptus.bitstream.framing import PREFIX_SIZE

HEADER_UNIT = frame(TINY_HEADER)
AFTER_HEADER = PREFIX_SIZE + len(HEADER_UNIT)      # offset of the unit after the header
SS0 = make_scene_start(0)
KF0 = make_keyframe(0, 2)


def read_all(data: bytes) -> list:
    return list(read_units(io.BytesIO(data)))


def error_of(data: bytes) -> InvalidDataError:
    """Read `data` completely; return the InvalidDataError it must raise."""
    with pytest.raises(InvalidDataError) as info:
        read_all(data)
    assert info.value.code in ERROR_CODES
    return info.value


def assert_code(data: bytes, code: str, offset: int | None = None) -> InvalidDataError:
    err = error_of(data)
    assert err.code == code, str(err)
    if offset is not None:
        assert err.offset == offset, str(err)
    return err
