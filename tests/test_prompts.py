"""The model-free decoding steps: dequantization, interpolation, composition, prompt dumps."""
from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from conftest import RICH_SPEC, build_stream, tiny_header
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from libpromptus.bitstream import (
    Coding,
    Keyframe,
    LatentCodec,
    SceneCut,
    SceneStart,
    StreamWriter,
    read_streams,
)

from libpromptus.decoder.prompt_dump import write_prompt_dump
from libpromptus.process.prompts import (
    compose,
    dequantize,
    frame_conditioning,
    interpolate,
    interpolation_weight,
    keyframe_factors,
)
from libpromptus.process.quantization import quantize_u8

# ---------------------------------------------------------------- dequantization


def test_dequantize_exact_values():
    got = dequantize(np.array([0, 3, 255], np.uint8), 0.5, 3)
    assert got.dtype == np.float32
    assert got.tolist() == [-1.5, 0.0, 126.0]


def test_dequantize_rounds_once_in_binary32():
    scale = float(np.float32(0.1))
    got = dequantize(np.array([[0, 1], [200, 255]], np.uint8), scale, 100)
    want = np.array([[-100, -99], [100, 155]], np.float64) * scale     # exact products, then one rounding
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want.astype(np.float32))


def test_keyframe_factors():
    kf = Keyframe(0, Coding.RAW, np.array([[1, 2]], np.uint8).T.copy(), np.array([[4, 6]], np.uint8),
                  0.25, 1, 2.0, 5)
    u, v = keyframe_factors(kf)
    assert u.tolist() == [[0.0], [0.25]]
    assert v.tolist() == [[-2.0, 2.0]]


# ---------------------------------------------------------------- composition

U4 = [[1, 2, 3, 4], [0, 1, 0, 1]]
V4 = [[1, 0, 2], [0, 1, 0], [1, 1, 1], [2, 0, 0]]
C4 = [[6.0, 2.5, 2.5], [1.0, 0.5, 0.0]]           # U4 @ V4 = [[12, 5, 5], [2, 1, 0]], / sqrt(4)


def test_compose_known_matrices():
    got = compose(np.array(U4, np.float32), np.array(V4, np.float32))
    assert got.dtype == np.float32
    assert got.tolist() == C4


def test_compose_torch_gives_the_same_result():
    got = compose(torch.tensor(U4, dtype=torch.float32), torch.tensor(V4, dtype=torch.float32))
    assert isinstance(got, torch.Tensor)
    assert got.tolist() == C4


def test_compose_rank_one_is_the_outer_product():
    got = compose(np.array([[2.0], [-1.0]], np.float32), np.array([[3.0, 0.5]], np.float32))
    assert got.tolist() == [[6.0, 1.0], [-3.0, -0.5]]


# ---------------------------------------------------------------- interpolation


def test_interpolation_weights():
    assert interpolation_weight(0, 10) == 0.0
    assert interpolation_weight(10, 10) == 1.0
    assert interpolation_weight(5, 10) == 0.5
    assert interpolation_weight(1, 3) == float(np.float32(1 / 3)) != 1 / 3
    assert interpolation_weight(3, 10) == float(np.float32(0.3))


def test_interpolation_endpoints_are_exact():
    rng = np.random.default_rng(1)
    a = (rng.standard_normal((5, 7)) * 100).astype(np.float32)
    b = (rng.standard_normal((5, 7)) * 100).astype(np.float32)
    at_a, at_b = interpolate(a, b, 0.0), interpolate(a, b, 1.0)
    assert at_a.dtype == at_b.dtype == np.float32
    np.testing.assert_array_equal(at_a, a)
    np.testing.assert_array_equal(at_b, b)
    assert interpolate(a, b, 0.5).tolist() == ((a + b) / np.float32(2)).tolist()


def _small_stream(keyframes, scenes=((0, False),)) -> list:
    """A 2x2-conditioning stream with the given keyframes; scenes: (first frame, cut)."""
    header = tiny_header(cond_tokens=2, cond_dim=2)
    sink = io.BytesIO()
    with StreamWriter(sink, header) as writer:
        for kf in keyframes:
            for first, cut in scenes:
                if kf.frame_index == first:
                    if cut:
                        writer.write(SceneCut(first))
                    writer.write(SceneStart(first, LatentCodec.F32, Coding.RAW, np.zeros((4, 2, 2), np.float32)))
            writer.write(kf)
    return read_streams(io.BytesIO(sink.getvalue()))


def _kf(frame, u, u_scale, u_zero, v, v_scale, v_zero, coding=Coding.RAW):
    return Keyframe(frame, coding, np.array(u, np.uint8), np.array(v, np.uint8), u_scale, u_zero, v_scale, v_zero)


# U_a = [[1], [2]], V_a = [[0.5, 1]]; U_b = [[3], [0]], V_b = [[0, 2]]
KF_A = _kf(0, [[2], [4]], 0.5, 0, [[6, 8]], 0.25, 4)
KF_B = _kf(2, [[6], [0]], 0.5, 0, [[4, 12]], 0.25, 4, Coding.ENTROPY)


def test_frame_conditioning_middle_frame():
    frames = list(frame_conditioning(_small_stream([KF_A, KF_B])))
    assert [f for f, _ in frames] == [0, 1, 2]
    assert all(c.dtype == np.float32 and c.shape == (2, 2) for _, c in frames)
    assert frames[0][1].tolist() == [[0.5, 1.0], [1.0, 2.0]]           # U_a V_a
    # u = (U_a + U_b) / 2 = [[2], [1]], v = (V_a + V_b) / 2 = [[0.25, 1.5]]: u v / sqrt(1)
    assert frames[1][1].tolist() == [[0.5, 3.0], [0.25, 1.5]]
    assert frames[2][1].tolist() == [[0.0, 6.0], [0.0, 0.0]]           # U_b V_b


def test_frame_conditioning_interpolates_factors_not_products():
    kf_a = _kf(0, [[10, 0], [0, 10]], 0.5, 0, [[2, 0], [0, 2]], 1.0, 0)
    kf_b = _kf(3, [[0, 10], [10, 0]], 0.5, 0, [[0, 4], [4, 0]], 1.0, 0)
    frames = dict(frame_conditioning(_small_stream([kf_a, kf_b])))
    assert sorted(frames) == [0, 1, 2, 3]
    ua, va = keyframe_factors(kf_a)
    ub, vb = keyframe_factors(kf_b)
    for step in (1, 2):
        w = step / 3
        u = (1 - w) * ua.astype(np.float64) + w * ub
        v = (1 - w) * va.astype(np.float64) + w * vb
        want = u @ v / math.sqrt(2)
        np.testing.assert_allclose(frames[step], want, rtol=1e-6, atol=1e-6)
        # Interpolating the products instead would give something else.
        product = ((1 - w) * (ua @ va) + w * (ub @ vb)) / math.sqrt(2)
        assert np.abs(frames[step] - product).max() > 1.0


def test_frame_conditioning_does_not_interpolate_across_scenes():
    kf_c = _kf(3, [[1], [1]], 1.0, 0, [[1, 2]], 1.0, 0)
    kf_d = _kf(5, [[3], [1]], 1.0, 0, [[1, 1]], 1.0, 0)
    streams = _small_stream([KF_A, KF_B, kf_c, kf_d], scenes=((0, False), (3, True)))
    frames = list(frame_conditioning(streams))
    assert [f for f, _ in frames] == [0, 1, 2, 3, 4, 5]
    assert frames[3][1].tolist() == [[1.0, 2.0], [1.0, 2.0]]           # kf_c alone
    assert frames[4][1].tolist() == [[2.0, 3.0], [1.0, 1.5]]           # u=[[2],[1]], v=[[1, 1.5]]
    assert frames[5][1].tolist() == [[3.0, 3.0], [1.0, 1.0]]


def test_frame_conditioning_of_concatenated_streams():
    one = build_stream(RICH_SPEC).data
    streams = read_streams(io.BytesIO(one + one))
    frames = list(frame_conditioning(streams))
    assert [f for f, _ in frames] == list(range(18))
    for (_, a), (_, b) in zip(frames[:9], frames[9:]):
        np.testing.assert_array_equal(a, b)


def test_prompt_dump_holds_every_frame():
    streams = read_streams(io.BytesIO(build_stream(RICH_SPEC).data))
    sink = io.BytesIO()
    assert write_prompt_dump(streams, sink) == 9
    sink.seek(0)
    with np.load(sink) as dump:
        assert sorted(dump.files) == ["frame_index", "prompts"]
        assert dump["frame_index"].dtype == np.int64 and dump["frame_index"].tolist() == list(range(9))
        prompts = dump["prompts"]
    assert prompts.dtype == np.float32 and prompts.shape == (9, 5, 7)
    for frame, c in frame_conditioning(streams):
        np.testing.assert_array_equal(prompts[frame], c)


# ---------------------------------------------------------------- quantization (NUMERICS.md rule)


@pytest.mark.parametrize("x, scale, zero_point, q", [
    ([-1.0, 0.0, 3.0], 4 / 255, 64, [0, 64, 255]),          # zero_point = round(255 - 3 / scale) = round(63.75)
    ([0.5, 2.0], 2 / 255, 0, [64, 255]),                    # all positive: the range starts at 0
    ([-2.0, -0.5], 2 / 255, 255, [0, 191]),                 # all negative: the range ends at 0
    ([0.0, 0.0], 1.0, 255, [255, 255]),                     # an empty range: scale 1
])
def test_quantize_u8_rule(x, scale, zero_point, q):
    got_q, got_scale, got_zero = quantize_u8(np.array(x, np.float32))
    assert got_scale == float(np.float32(scale))
    assert got_zero == zero_point
    assert got_q.dtype == np.uint8 and got_q.tolist() == q


_VALUES = hnp.arrays(np.float32, st.integers(1, 64),
                     elements=st.floats(-1e4, 1e4, width=32).filter(lambda v: v == 0 or abs(v) > 1e-3))


@settings(max_examples=100, deadline=None)
@given(x=_VALUES, zero_at=st.integers(0, 63))
def test_quantize_u8_round_trip(x, zero_at):
    x = x.copy()
    x[zero_at % x.size] = 0.0
    q, scale, zero_point = quantize_u8(x)
    assert q.shape == x.shape and q.dtype == np.uint8
    assert isinstance(zero_point, int) and 0 <= zero_point <= 255
    assert scale > 0 and float(np.float32(scale)) == scale
    # scale = (max - min) / 255 over a range that includes 0, computed in binary64, rounded once.
    high, low = max(float(x.max()), 0.0), min(float(x.min()), 0.0)
    assert scale == (float(np.float32((high - low) / 255)) if high > low else 1.0)
    assert zero_point == int(np.clip(np.round(255 - high / scale), 0, 255))
    x_hat = dequantize(q, scale, zero_point)
    # Zero is always representable exactly: it quantizes to the zero point.
    assert q[zero_at % x.size] == zero_point and x_hat[zero_at % x.size] == 0.0
    # Every value is within half a step (plus binary32 rounding of the arithmetic).
    err = np.abs(x_hat.astype(np.float64) - x.astype(np.float64))
    bound = scale / 2 + 4 * np.finfo(np.float32).eps * max(float(np.abs(x).max()), scale)
    assert err.max() <= bound
    # Extremes land on the ends of the code range.
    assert q.min() == 0 or x.min() >= 0
    assert q.max() == 255 or x.max() <= 0
