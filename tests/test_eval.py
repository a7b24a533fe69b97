"""pmteval's pieces without encoding: metrics, BD-rate, traces, the ABR simulation, rate matching."""
from __future__ import annotations

import math
import time
from fractions import Fraction

import numpy as np
import pytest

from libpromptus.dash.abr import BBA, Observation
from libpromptus.evaluation.abr import Rung, simulate
from libpromptus.evaluation.metrics import (
    Metrics,
    SevereRule,
    mean_metrics,
    ms_ssim,
    psnr,
    ssim,
)
from libpromptus.evaluation.ratematch import OutOfReach, match_rate
from libpromptus.evaluation.rd import bd_rate, envelope, pchip_integral
from libpromptus.evaluation.report import bd_rates
from libpromptus.evaluation.traces import (
    SHIPPED,
    Trace,
    load_trace,
    read_mahimahi,
    read_throughput,
    write_throughput,
)


def _frame(seed: int, size: int = 64, low: int = 0, high: int = 256) -> np.ndarray:
    return np.random.default_rng(seed).integers(low, high, (size, size, 3), dtype=np.uint8)


# ---------------------------------------------------------------- metrics


def test_psnr_of_identical_frames_is_infinite_and_ssim_is_one():
    frame = _frame(1)
    assert psnr(frame, frame.copy()) == math.inf
    assert ssim([frame], [frame.copy()]) == [1.0]


@pytest.mark.parametrize("offset", [1, 3, 16])
def test_psnr_of_a_constant_offset_is_exact(offset):
    frame = _frame(2, low=0, high=200)
    assert psnr(frame, frame + np.uint8(offset)) == pytest.approx(20 * math.log10(255 / offset), abs=1e-12)


def test_ms_ssim_of_identical_frames_is_one_and_needs_161_pixels():
    frame = _frame(3, size=176)
    assert ms_ssim([frame], [frame.copy()]) == [pytest.approx(1.0, abs=1e-12)]
    with pytest.raises(ValueError, match="161x161"):
        ms_ssim([_frame(3)], [_frame(3)])


def test_metrics_per_frame_with_lpips_missing_only_lpips():
    metrics = Metrics(64, 64)
    reference = [_frame(4), _frame(5)]
    decoded = [reference[0].copy(), reference[1] // 2]
    frames = metrics.measure(reference, decoded)
    assert "ms_ssim" not in metrics.names and "161x161" in metrics.notes["ms_ssim"]
    if metrics.lpips_error is not None:
        assert metrics.names == ["psnr", "ssim"] and "lpips" in metrics.notes["lpips"].lower()
    assert frames[0]["psnr"] is None and frames[0]["ssim"] == 1.0     # None: an infinite PSNR
    assert frames[1]["psnr"] == pytest.approx(psnr(reference[1], decoded[1]))
    assert mean_metrics(frames)["psnr"] is None
    assert mean_metrics(frames[1:])["psnr"] == frames[1]["psnr"]
    with pytest.raises(ValueError, match="1 decoded frames for 2"):
        metrics.measure(reference, decoded[:1])


def test_severe_share_uses_lpips_or_a_labelled_psnr_proxy():
    frames = [{"psnr": 15.0, "lpips": 0.1}, {"psnr": 25.0, "lpips": 0.5}, {"psnr": None, "lpips": 0.33}]
    assert SevereRule(lpips=True).share(frames) == pytest.approx(2 / 3)
    proxy = SevereRule(lpips=False, psnr_below=20)
    assert proxy.share(frames) == pytest.approx(1 / 3)
    assert "proxy" in proxy.label and "LPIPS unavailable" in proxy.label


# ---------------------------------------------------------------- BD-rate

ANCHOR = [(100e3, 30.0), (225e3, 32.5), (540e3, 34.0), (1000e3, 36.2)]


@pytest.mark.parametrize("factor", [0.5, 0.8, 1.25, 3.0])
def test_bd_rate_of_a_curve_scaled_in_rate_is_that_factor(factor):
    test = [(rate * factor, quality) for rate, quality in ANCHOR]
    result = bd_rate(ANCHOR, test)
    assert result.percent == pytest.approx((factor - 1) * 100, abs=1e-9)
    assert result.overlap == (30.0, 36.2)


def test_bd_rate_for_a_distance_reverses_the_quality_axis():
    anchor = [(100e3, 0.5), (200e3, 0.4), (400e3, 0.3)]
    test = [(rate * 0.9, lpips) for rate, lpips in anchor]
    assert bd_rate(anchor, test, higher_is_better=False).percent == pytest.approx(-10.0, abs=1e-9)
    assert bd_rate(anchor, test, higher_is_better=False).overlap == (0.3, 0.5)


def test_bd_rate_on_straight_lines_matches_the_closed_form():
    # two points per curve: PCHIP is the straight line log r = 10 + 0.2 q; the test curve
    # is the same line moved 1 dB up, so it needs exp(-0.2) times the rate
    anchor = [(math.exp(10 + 0.2 * q), q) for q in (30.0, 40.0)]
    test = [(math.exp(10 + 0.2 * (q - 1)), q) for q in (31.0, 41.0)]
    result = bd_rate(anchor, test)
    assert result.percent == pytest.approx(math.expm1(-0.2) * 100, abs=1e-9)
    assert result.overlap == (31.0, 40.0)


def test_bd_rate_without_overlap_and_with_too_few_points():
    assert bd_rate(ANCHOR, [(50e3, 40.0), (60e3, 41.0)]).note == "no overlap: the test covers 40 to 41, the anchor 30 to 36.2"
    # a distance: the quality axis is negated for the fit, the note gives the metric's own values
    assert bd_rate([(1e5, 0.5), (2e5, 0.4)], [(1e5, 0.3), (2e5, 0.2)], higher_is_better=False).note == \
        "no overlap: the test covers 0.2 to 0.3, the anchor 0.4 to 0.5"
    assert bd_rate(ANCHOR, [(50e3, 40.0)]).percent is None
    assert bd_rate(ANCHOR, [(50e3, 33.0), (60e3, None)]).note == "test: fewer than two usable points"


def test_envelope_drops_points_no_better_than_a_cheaper_one():
    kept, dropped = envelope([(300, 31.0), (100, 30.0), (200, 29.0), (400, 33.0)])
    assert kept == [(100, 30.0), (300, 31.0), (400, 33.0)] and dropped == [(200, 29.0)]
    assert "1 point(s)" in bd_rate(ANCHOR, [(150e3, 31.0), (200e3, 30.0), (500e3, 33.0)]).note


def test_pchip_integral_agrees_with_scipy():
    interpolate = pytest.importorskip("scipy.interpolate")
    rng = np.random.default_rng(7)
    for _ in range(20):
        x = np.sort(rng.uniform(20, 40, 5))
        y = rng.uniform(10, 14, 5)
        a, b = sorted(rng.uniform(x[0], x[-1], 2))
        expected = interpolate.PchipInterpolator(x, y).integrate(a, b)
        assert pchip_integral(x, y, a, b) == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_bd_rates_of_records_compare_promptus_with_each_baseline():
    records = [{"codec": codec, "bitrate_bps": rate * factor, "mean": {"psnr": q}}
               for codec, factor in (("x265", 1.0), ("promptus", 2.0)) for rate, q in ANCHOR]
    table = bd_rates(records, ["psnr"])
    assert table["psnr"]["x265"]["percent"] == pytest.approx(100.0, abs=1e-9)
    assert bd_rates([r for r in records if r["codec"] == "x265"], ["psnr"]) == {}


# ---------------------------------------------------------------- traces


def test_shipped_traces_are_what_the_generator_writes(tmp_path):
    for name in SHIPPED:
        write_throughput(tmp_path / f"{name}.txt", name)
        assert load_trace(name) == read_throughput(tmp_path / f"{name}.txt", name)
        assert load_trace(name).seconds == 120


def test_throughput_file_with_comments(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("# kbit/s\n100\n\n250.5  # a comment\n0\n")
    assert read_throughput(path).bps == (100e3, 250.5e3, 0.0)
    path.write_text("100\nfast\n")
    with pytest.raises(ValueError, match="t.txt:2: not a throughput"):
        read_throughput(path)
    path.write_text("0\n0\n")
    with pytest.raises(ValueError, match="zero throughout"):
        read_throughput(path)


def test_mahimahi_packets_become_per_second_throughput(tmp_path):
    path = tmp_path / "link.down"
    path.write_text("0\n500\n999\n1000\n1500\n2000\n")
    trace = load_trace(str(path))
    assert trace.bps == (3 * 12000.0, 3 * 12000.0)       # 2000 ms: two seconds; t=2000 goes to the last
    path.write_text("5\n3\n")
    with pytest.raises(ValueError, match="must not decrease"):
        read_mahimahi(path)
    with pytest.raises(ValueError, match="no such file"):
        load_trace(str(tmp_path / "missing.txt"))


def test_download_time_integrates_the_looping_trace():
    trace = Trace("t", (100e3, 0.0, 300e3))
    assert trace.download_time(0.0, 50e3) == 0.5
    assert trace.download_time(0.5, 100e3) == pytest.approx(2.0 + 50e3 / 300e3 - 0.5)   # across the outage
    assert trace.download_time(0.0, 400e3 * 2 + 100e3) == pytest.approx(3 * 2 + 1.0)   # two whole turns


# ---------------------------------------------------------------- ABR


def test_a_too_expensive_rung_stalls_by_hand_computed_amounts():
    # 200 kbit segments over 100 kbit/s: each takes 2 s; the first is the startup delay,
    # every later one finds 1 s in the buffer and stalls 1 s.
    rung = Rung("200k", 200e3, [{"psnr": 30.0}])
    session = simulate([rung], Trace("flat", (100e3,)), Fraction(1), segments=3)
    assert (session.startup_s, session.stall_s, session.stalls) == (2.0, 2.0, 2)
    assert len(session.shown) == 3


def test_bba_chooses_by_buffer_level():
    bba = BBA(reservoir=5, cushion=10)
    rates = [100.0, 200.0, 300.0]
    assert [bba.choose(Observation(2, level), rates) for level in (0, 5, 9.9, 10, 14.9, 15, 40)] == [0, 0, 0, 1, 1, 2, 2]


def test_fast_network_climbs_the_ladder_without_stalls_and_shows_looped_frames():
    frames_low = [{"psnr": 20.0 + i} for i in range(3)]
    frames_high = [{"psnr": 40.0 + i} for i in range(3)]
    ladder = [Rung("high", 300e3, frames_high), Rung("low", 100e3, frames_low)]
    session = simulate(ladder, Trace("fast", (10e6,)), Fraction(2), segments=40, max_buffer=30.0)
    assert session.stall_s == 0 and session.chosen[0] == "low" and session.chosen[-1] == "high"
    assert session.switches == 1
    # 2 frames per 1-s segment from a 3-frame clip: clip frames 0, 1, 2, 0, 1, 2, ...
    assert [f["psnr"] for f in session.shown[:4]] == [20.0, 21.0, 22.0, 20.0]
    assert len(session.shown) == 80


# ---------------------------------------------------------------- rate matching


def test_rate_matching_converges_on_a_nonlinear_encoder():
    calls = []

    def encode(target):
        calls.append(target)
        measured = 20 * target ** 0.8 + 5000          # overshoots twice, flattens, has a floor
        return measured, round(measured)

    best, attempts = match_rate(encode, 100e3)
    assert abs(best.bitrate / 100e3 - 1) <= 0.03 and attempts[-1] is best and len(calls) <= 8


def test_rate_matching_keeps_the_closest_when_the_encoder_saturates():
    best, attempts = match_rate(lambda target: (min(target, 140e3), None), 200e3)
    assert best.bitrate == 140e3 and len(attempts) <= 8


def test_rate_matching_stops_at_a_target_the_encoder_refuses():
    def encode(target):                             # a floor of 50 kbit/s, and no target below 10k
        if target < 10e3:
            raise OutOfReach(f"refused {target:.0f}")
        return max(50e3, 2 * target), None

    best, attempts = match_rate(encode, 40e3)
    # 40k -> 80k, 20k -> 50k (the floor), the secant's 14.4k -> 50k, then (the slope floored at
    # 0.2) 14.4k * exp(-log(50/40) / 0.2) = 4.7k is refused: the closest file is kept
    assert [round(a.encoder_bitrate) for a in attempts] == [40000, 20000, 14392] and best.bitrate == 50e3
    with pytest.raises(OutOfReach, match="refused 5000"):
        match_rate(encode, 5e3)                   # refused at once: nothing to keep


# ---------------------------------------------------------------- the shaped link of the real session


def test_the_trace_link_queues_bytes_at_the_traces_throughput():
    from libpromptus.evaluation.live import TraceLink

    link = TraceLink(Trace("t", (80e3, 8e3)), time.monotonic() + 1000)    # the session starts later: time 0
    assert link.reserve(5000) == link.started + 0.5                          # 40 kbit at 80 kbit/s
    assert link.reserve(5000) == link.started + 1.0                          # queued behind the first
    assert link.reserve(1000) == pytest.approx(link.started + 2.0)           # 1 s into the 8 kbit/s second


def test_the_shaped_server_sends_no_faster_than_its_trace(tmp_path):
    import urllib.request

    from libpromptus.evaluation.live import serve_shaped

    (tmp_path / "segment.pmt").write_bytes(bytes(range(256)) * 100)         # 25,600 bytes
    with serve_shaped(tmp_path, Trace("t", (400e3,))) as url:
        began = time.monotonic()
        with urllib.request.urlopen(f"{url}/segment.pmt", timeout=30) as response:
            body = response.read()
        elapsed = time.monotonic() - began
    assert body == bytes(range(256)) * 100
    assert elapsed >= 25_600 * 8 / 400e3                                      # 0.512 s
