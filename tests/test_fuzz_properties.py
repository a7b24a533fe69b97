"""Hypothesis properties of the writer and the reader over arbitrary valid streams.

tests/test_bitstream.py varies scenes and keyframes under one fixed header; here every
field varies at once: any valid header (every latent downsampling, any rate, seed, noise
mix, timestep, colour code points, model name and hash), latents of any finite value
(subnormals, -0.0, the largest binary32 and binary16), factors of any bytes and scales,
metadata of any text, unknown ignorable units anywhere they may go. For such streams:

- writing then reading gives the same units, and writing those again the same bytes;
- any one byte changed, with or without the CRCs made to match again, and any proper
  prefix, gives `InvalidDataError` (or, rarely, another valid stream), never another
  exception; the model-free decoding process runs on whatever still reads.
"""
from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
from conftest import assert_unit_equal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from libpromptus.bitstream import (
    ERROR_CODES,
    Coding,
    EndOfStream,
    Index,
    InvalidDataError,
    Keyframe,
    LatentCodec,
    Metadata,
    NoiseAlgorithm,
    PredictionType,
    SceneCut,
    SceneStart,
    SequenceHeader,
    StreamWriter,
    UnknownUnit,
    lowest_minor_version,
    read_streams,
    read_units,
)
from libpromptus.bitstream import latent_transform
from libpromptus.bitstream.limits import (
    LATENT_DOWNSAMPLING,
    MAX_FPS_TERM,
    MAX_KEYFRAME_INTERVAL,
)
from libpromptus.conformance.fuzzing import check_conditioning, fix_crcs

# Streams of three scenes of 16-channel latents can overrun Hypothesis's choice buffer;
# those draws are discarded, which the health checks would count as filtering.
PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])

_UNIT_F32 = st.floats(0.0, 1.0, width=32)
_POSITIVE_F32 = st.floats(0.0, exclude_min=True, allow_infinity=False, width=32)
_TEXT_KEY = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,63}", fullmatch=True)
_U8 = st.integers(0, 255)


@st.composite
def headers(draw) -> SequenceHeader:
    """Any valid sequence header whose latent and prompt stay small (a few hundred values)."""
    downsampling = draw(st.sampled_from(LATENT_DOWNSAMPLING))
    multiple = downsampling * draw(st.integers(1, 2))
    return SequenceHeader(
        model_name=draw(_TEXT_KEY), model_hash=draw(st.binary(min_size=32, max_size=32)),
        width=draw(st.integers(1, 2 * multiple)), height=draw(st.integers(1, 2 * multiple)),
        fps_num=draw(st.integers(1, MAX_FPS_TERM)), fps_den=draw(st.integers(1, MAX_FPS_TERM)), frame_count=0,
        latent_channels=draw(st.integers(1, 16)), latent_downsampling=downsampling, size_multiple=multiple,
        cond_tokens=draw(st.integers(1, 6)), cond_dim=draw(st.integers(1, 9)),
        noise_algorithm=NoiseAlgorithm.MT19937_POLAR, noise_seed=draw(st.integers(0, 2**32 - 1)),
        prev_weight=draw(_UNIT_F32), noise_weight=draw(_UNIT_F32), timestep=draw(st.integers(0, 65535)),
        alpha_bar=draw(st.floats(0.0, 1.0, exclude_min=True, width=32)),
        prediction_type=draw(st.sampled_from(list(PredictionType))),
        colour_primaries=draw(_U8), transfer_characteristics=draw(_U8), matrix_coefficients=draw(_U8),
        full_range=draw(st.booleans()),
    )


_LATENT_CODINGS = [Coding.RAW, Coding.ENTROPY]      # LAYERED is for keyframes only


def _scene_start(draw, header: SequenceHeader, first: int) -> SceneStart:
    codec, coding = draw(st.sampled_from(list(LatentCodec))), draw(st.sampled_from(_LATENT_CODINGS))
    shape = header.latent_shape
    if codec == LatentCodec.Q8:
        scales = tuple(draw(st.lists(_POSITIVE_F32, min_size=shape[0], max_size=shape[0])))
        zeros = tuple(draw(st.lists(_U8, min_size=shape[0], max_size=shape[0])))
        return SceneStart(first, codec, coding, draw(hnp.arrays(np.uint8, shape)), scales, zeros)
    if codec == LatentCodec.DCT8:
        steps = tuple(draw(st.lists(_POSITIVE_F32, min_size=shape[0], max_size=shape[0])))
        blocks = (shape[0], latent_transform.padded_size(shape[1]), latent_transform.padded_size(shape[2]))
        return SceneStart(first, codec, coding, draw(hnp.arrays(np.int16, blocks)), steps, (), shape[1:])
    dtype, width = (np.float32, 32) if codec == LatentCodec.F32 else (np.float16, 16)
    values = st.floats(allow_nan=False, allow_infinity=False, width=width)
    return SceneStart(first, codec, coding, draw(hnp.arrays(dtype, shape, elements=values)))


def _keyframe(draw, header: SequenceHeader, frame: int, rank: int) -> Keyframe:
    return Keyframe(frame, draw(st.sampled_from(list(Coding))),
                    draw(hnp.arrays(np.uint8, (header.cond_tokens, rank))),
                    draw(hnp.arrays(np.uint8, (rank, header.cond_dim))),
                    draw(_POSITIVE_F32), draw(_U8), draw(_POSITIVE_F32), draw(_U8))


def _extras(draw) -> list:
    """Units that may come anywhere in a scene or before the first: metadata, unknown ignorable units."""
    metadata = st.lists(st.tuples(_TEXT_KEY, st.text(max_size=20)), max_size=3).map(lambda e: Metadata(tuple(e)))
    unknown = st.builds(UnknownUnit, st.integers(8, 127), st.binary(max_size=12))
    return draw(st.lists(metadata | unknown, max_size=2))


@st.composite
def streams(draw) -> tuple[SequenceHeader, list, bool]:
    """(header, the units after it in stream order, whether an index is written): a valid stream."""
    header = draw(headers())
    units = _extras(draw)
    frame = 0
    for number in range(draw(st.integers(1, 3))):
        if number and draw(st.booleans()):
            units.append(SceneCut(frame))
        units.append(_scene_start(draw, header, frame))
        rank = draw(st.integers(1, min(header.cond_tokens, header.cond_dim)))
        gaps = draw(st.lists(st.integers(1, MAX_KEYFRAME_INTERVAL), max_size=2))
        for gap in (0, *gaps):
            frame += gap
            units.append(_keyframe(draw, header, frame, rank))
            units.extend(_extras(draw))
        frame += 1
    if draw(st.booleans()):
        header = dataclasses.replace(header, frame_count=frame)
    return header, units, draw(st.booleans())


def write(header: SequenceHeader, units: list, index: bool) -> bytes:
    sink = io.BytesIO()
    with StreamWriter(sink, header, write_index=index, minor=lowest_minor_version(units)) as writer:
        for unit in units:
            writer.write(unit)
    return sink.getvalue()


def outcome(data: bytes) -> list | None:
    """The streams `data` reads as (the decoding process run over their first frames), or
    None when it is refused, which must be with `InvalidDataError` and a registered code."""
    try:
        read = read_streams(io.BytesIO(data))
    except InvalidDataError as err:
        assert err.code in ERROR_CODES
        return None
    check_conditioning(read, budget=100_000)
    return read


@PROPERTY
@given(stream=streams())
def test_round_trip_is_bit_exact(stream):
    header, units, index = stream
    data = write(header, units, index)
    got = [item.unit for item in read_units(io.BytesIO(data))]
    assert_unit_equal(got[0], header)
    for read, written in zip(got[1:], units, strict=False):
        assert_unit_equal(read, written)
    assert len(got) == 1 + len(units) + (2 if index else 1)
    assert isinstance(got[-1], EndOfStream) and (isinstance(got[-2], Index) == index)
    # What was read writes back to the same bytes.
    assert write(got[0], got[1:len(units) + 1], index) == data
    [read] = outcome(data)
    assert read.frame_count == max(u.frame_index for u in units if isinstance(u, Keyframe)) + 1


@PROPERTY
@given(stream=streams(), data=st.data())
def test_any_changed_byte_raises_only_invalid_data(stream, data):
    encoded = write(*stream)
    position = data.draw(st.integers(0, len(encoded) - 1), label="position")
    value = data.draw(st.integers(0, 255).filter(lambda v: v != encoded[position]), label="value")
    damaged = encoded[:position] + bytes((value,)) + encoded[position + 1:]
    outcome(damaged)
    outcome(fix_crcs(damaged))      # damage the CRC cannot see reaches the payload parsers


@PROPERTY
@given(stream=streams(), data=st.data())
def test_any_proper_prefix_is_truncated(stream, data):
    encoded = write(*stream)
    cut = data.draw(st.integers(0, len(encoded) - 1), label="cut")
    with pytest.raises(InvalidDataError) as info:
        read_streams(io.BytesIO(encoded[:cut]))
    assert info.value.code == "truncated"
