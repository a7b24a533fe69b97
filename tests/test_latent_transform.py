"""The DCT8 first-frame latent (SPEC.md §4.2, §8.1): exact reconstruction, the encoder's
quantizer, the band layout, and the version rules around it."""
from __future__ import annotations

import io
import struct

import numpy as np
import pytest

from libpromptus.bitstream import Coding, InvalidDataError, LatentCodec, SceneStart, StreamWriter, read_units
from libpromptus.bitstream import latent_transform as lt
from libpromptus.bitstream.reader import parse_unit
from libpromptus.bitstream.syntax import encode_payload
from libpromptus.bitstream.validation import check_unit
from libpromptus.conformance import seeded
from libpromptus.process.quantization import scene_start


def spec_reconstruction(coefficients: np.ndarray, steps, height: int, width: int) -> np.ndarray:
    """SPEC.md §8.1 transcribed with Python integers, one sample at a time: a second implementation."""
    table = [[int(t) for t in row] for row in lt.TRANSFORM]
    limit = 2 ** 24 - 1
    channels = coefficients.shape[0]
    out = np.empty((channels, height, width), dtype=np.float32)
    for c in range(channels):
        for i in range(coefficients.shape[1] // 8):
            for j in range(coefficients.shape[2] // 8):
                d = [[int(coefficients[c, 8 * i + u, 8 * j + v]) * (1 + u + v) for v in range(8)] for u in range(8)]
                g = [[(sum(table[u][y] * d[u][v] for u in range(8)) + 64) >> 7 for v in range(8)] for y in range(8)]
                for y in range(8):
                    for x in range(8):
                        r = max(-limit, min(limit, (sum(g[y][v] * table[v][x] for v in range(8)) + 2) >> 2))
                        if 8 * i + y < height and 8 * j + x < width:
                            # float(step) * r is exact in binary64 (24 + 24 bits); 2^-6 is exact
                            out[c, 8 * i + y, 8 * j + x] = np.float32(float(np.float32(steps[c])) * r / 64)
    return out


def test_zigzag_and_band_groups_follow_the_spec():
    assert lt.ZIGZAG[:7] == ((0, 0), (0, 1), (1, 0), (2, 0), (1, 1), (0, 2), (0, 3))
    assert lt.ZIGZAG[-1] == (7, 7) and sorted(lt.ZIGZAG) == [(u, v) for u in range(8) for v in range(8)]
    assert [end - start for start, end in lt.BAND_GROUPS] == [1, 2, 3, 4, 5, 6, 7, 8, 28]
    gram = lt.TRANSFORM.T @ lt.TRANSFORM
    assert np.abs(gram - 2 ** 15 * np.eye(8)).max() / 2 ** 15 < 0.01      # T is 2^7.5 x nearly orthonormal


@pytest.mark.parametrize("height, width", [(4, 4), (8, 8), (13, 21)])
def test_reconstruction_matches_the_spec_text_bit_for_bit(height, width):
    rng = np.random.RandomState(height * width)
    shape = (2, lt.padded_size(height), lt.padded_size(width))
    coefficients = rng.randint(-40, 41, size=shape).astype(np.int16)
    coefficients[:, ::8, ::8] = rng.randint(-32768, 32768, size=coefficients[:, ::8, ::8].shape)  # extreme DCs
    steps = (0.0123, 3.5e-5)
    got = lt.reconstruct(coefficients, steps, height, width)
    assert got.dtype == np.float32 and got.shape == (2, height, width)
    assert got.tobytes() == spec_reconstruction(coefficients, steps, height, width).tobytes()


def test_extreme_coefficients_clip_instead_of_overflowing():
    coefficients = np.full((1, 8, 8), 32767, dtype=np.int16)
    coefficients[0, 1::2] = -32768
    got = lt.reconstruct(coefficients, (1.0,), 8, 8)
    assert np.abs(got).max() <= (2 ** 24 - 1) / 64
    assert got.tobytes() == spec_reconstruction(coefficients, (1.0,), 8, 8).tobytes()


def test_quantize_then_reconstruct_is_within_the_step():
    rng = np.random.RandomState(5)
    latent = (rng.standard_normal((4, 13, 21)) * 2).astype(np.float32)
    coefficients = lt.transform(latent)
    steps = tuple(max(0.001, low) for low in lt.smallest_steps(coefficients))
    restored = lt.reconstruct(lt.quantize(coefficients, steps), steps, 13, 21)
    # the largest quantization error: half a step of every coefficient, ramp up to 15
    assert np.sqrt(np.mean((restored - latent) ** 2)) < 0.003
    assert np.abs(restored - latent).max() < 0.01


def test_the_step_floor_keeps_coefficients_in_int16():
    latent = np.full((1, 8, 8), 500.0, dtype=np.float32)       # DC 8 x 500 = 4000
    coefficients = lt.transform(latent)
    [floor] = lt.smallest_steps(coefficients)
    assert floor == pytest.approx(4000 / 32767, rel=1e-3)
    unit = scene_start(0, latent, LatentCodec.DCT8, Coding.ENTROPY, latent_step=1e-9)
    assert unit.q_scale[0] >= floor and np.abs(unit.latent.astype(np.int32)).max() <= 32767
    assert np.abs(unit.dequantized_latent() - latent).max() < 0.1


def test_bands_split_and_join():
    rng = np.random.RandomState(1)
    channel = rng.randint(-300, 300, size=(16, 24)).astype(np.int16)
    bands = lt.split_bands(channel)
    assert [len(b) for b in bands] == [6 * n for n in (1, 2, 3, 4, 5, 6, 7, 8, 28)]
    assert bands[1][:6].tolist() == channel[0::8, 1::8].reshape(-1).tolist()    # zigzag 1 = (0, 1), raster blocks
    assert np.array_equal(lt.join_bands(bands, 16, 24), channel)


def _dct8_stream(minor: int) -> tuple[bytes, SceneStart]:
    header = seeded.tiny_header(40, 24, frame_count=1)
    unit = seeded.scene_start(np.random.RandomState(3), header, 0, codec=LatentCodec.DCT8, coding=Coding.ENTROPY)
    sink = io.BytesIO()
    with StreamWriter(sink, header, minor=minor) as writer:
        writer.write(unit)
        writer.write(seeded.keyframe(np.random.RandomState(4), header, 0, 2))
    return sink.getvalue(), unit


def test_a_dct8_stream_round_trips_as_version_1_2():
    data, unit = _dct8_stream(2)
    assert data[9] == 2
    [start] = [item.unit for item in read_units(io.BytesIO(data)) if isinstance(item.unit, SceneStart)]
    assert np.array_equal(start.latent, unit.latent) and start.q_scale == unit.q_scale
    assert start.dequantized_latent().tobytes() == unit.dequantized_latent().tobytes()
    # band group 0 of channel 0 (its one DC) is wide exactly when the DC leaves -128..127
    payload = encode_payload(unit)
    assert payload[6 + 16] == (not -128 <= int(unit.latent[0, 0, 0]) <= 127)


def test_the_writer_refuses_dct8_below_version_1_2():
    with pytest.raises(InvalidDataError, match="latent_codec DCT8 needs a version 1.2 stream; this one is 1.1"):
        _dct8_stream(1)


def test_a_reader_refuses_dct8_in_a_version_1_1_stream():
    data, _ = _dct8_stream(2)
    older = data[:9] + b"\x01" + data[10:]
    with pytest.raises(InvalidDataError, match="latent_codec 3 \\(DCT8\\) is not defined in version 1.1") as info:
        list(read_units(io.BytesIO(older)))
    assert info.value.code == "bad_field"


def test_the_encoder_default_is_a_quarter_of_q8_on_a_smooth_latent():
    """The unit sizes the rate control counts on: a smooth 4 x 64 x 64 latent, DCT8 at the default step."""
    y, x = np.mgrid[0:64, 0:64] / 64.0
    latent = np.stack([np.sin(3 * x + c) * np.cos(2 * y - c) + 0.05 * np.sin(40 * x * y) for c in range(4)])
    latent = latent.astype(np.float32)
    q8 = len(encode_payload(scene_start(0, latent, LatentCodec.Q8, Coding.ENTROPY)))
    dct8 = scene_start(0, latent, LatentCodec.DCT8, Coding.ENTROPY)
    assert len(encode_payload(dct8)) < q8 / 3
    assert dct8.q_scale == tuple(float(np.float32(0.05 * float(c.std()))) for c in latent)
    error = dct8.dequantized_latent() - latent
    assert np.sqrt(np.mean(error ** 2)) < 0.05 * latent.std()


def test_a_zero_step_is_refused():
    header = seeded.tiny_header(16, 16, frame_count=1)
    unit = seeded.scene_start(np.random.RandomState(3), header, 0, codec=LatentCodec.DCT8, coding=Coding.RAW)
    payload = bytearray(encode_payload(unit))
    payload[6:10] = struct.pack("<f", 0.0)
    parsed = parse_unit(2, False, bytes(payload), header, 2)
    with pytest.raises(InvalidDataError, match="latent_step 0.0 is not a finite positive number"):
        check_unit(parsed, header)
