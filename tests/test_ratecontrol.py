"""`RateController`: the fixed-cost estimate, the -b:v floor, the first choice and the
interval adapted after each keyframe, with exact values."""
from __future__ import annotations

import logging

import pytest

from libpromptus.bitstream.limits import MAX_KEYFRAME_INTERVAL
from libpromptus.encoder.ratecontrol import RateController, choose
from libpromptus.process.profiles import TINY

# 32x32 at 30 fps: a 4x4x4 latent, 64 values
HEADER = TINY.sequence_header(width=32, height=32, fps_num=30, fps_den=1, frame_count=90)


def test_fixed_bytes_and_floor():
    control = RateController(100_000, HEADER, frames=90)
    # prefix 10 + header 100 + metadata 200 + latent 64·2/8 (dct8, the default) + 64 + closing 18 + margin 8
    assert control.fixed_bytes == 416
    assert control.floor_bps() == 416 * 8 * 30 / 90
    assert RateController(100_000, HEADER, frames=90, latent_codec="q8").fixed_bytes == 416 - 16 + 56
    assert RateController(100_000, HEADER, frames=90, latent_codec="f32").fixed_bytes == 416 - 16 + 256


def test_an_unknown_length_plans_for_ten_seconds():
    control = RateController(100_000, HEADER, frames=None)
    assert control.planned_frames == 300
    assert control.choose() == choose(100_000, frames=300, rate=30.0, fixed_bytes=416, cond_tokens=77, cond_dim=1024)


def test_the_floor_warning_quotes_the_bitrate_as_written(caplog):
    with caplog.at_level(logging.WARNING, logger="libpromptus"):
        RateController(1_000, HEADER, frames=90).warn_if_below_floor()
        RateController(2_000, HEADER, frames=90).warn_if_below_floor()
    assert len(caplog.records) == 1
    assert caplog.records[0].getMessage().startswith("-b:v 1k is below what 90 frames cost before any keyframe")
    assert "1.1 kbit/s" in caplog.records[0].getMessage()      # 416 bytes over 3 s


@pytest.mark.parametrize("bitrate, frames, expected", [
    (10_000, 90, 7),          # (3750 - 1057) / 213 = 12.6 -> 13 keyframes for 80 frames
    (100_000, 90, 1),         # plenty: a keyframe every frame
    (10_000, None, 21),       # unknown length: (1057 + 213) / 41.67 - 10 frames
    (10_000, 10, 21),         # past the expected length: spent per frame, as unknown
    (1_000, 90, MAX_KEYFRAME_INTERVAL),   # nothing affordable: the longest interval
])
def test_next_interval(bitrate, frames, expected):
    control = RateController(bitrate, HEADER, frames=frames)
    # 1000 bytes written, 2 keyframes and 1 scene so far, the last keyframe 200 bytes, 10 frames done
    assert control.next_interval(200, 10, bytes_written=1000, keyframes=2, scenes=1) == expected


def test_reserved_bytes_are_spent_before_the_intervals():
    control = RateController(10_000, HEADER, frames=90)
    # 3750 - 1057 - 639 reserved (one cut ahead: a scene start and two keyframes) = 2054; / 213 = 9.6
    # -> 10 keyframes for 80 frames
    assert control.next_interval(200, 10, bytes_written=1000, keyframes=2, scenes=1, reserved=639) == 8
    # with refresh each interval but the last also pays its scene start and first keyframe:
    # (2693 + 426) / (213 + 400 + 26) = 4.9 -> 5 intervals for 80 frames
    assert control.next_interval(200, 10, bytes_written=1000, keyframes=2, scenes=1, extra_per_interval=400) == 16


def test_fill_steps_and_the_step_that_spends_a_target():
    from libpromptus.bitstream import LatentCodec
    from libpromptus.encoder.ratecontrol import FILL_STEPS, MAX_FILL_STEP, fill_steps, finest_fitting

    steps = fill_steps(0.05, LatentCodec.DCT8)
    assert steps[0] == MAX_FILL_STEP and steps[-1] == 0.01 and steps == sorted(steps, reverse=True)
    assert 0.05 in steps and len(steps) == len(FILL_STEPS) + 1           # the asked step joins the ladder
    # neighbours about 6 % apart (40 to a decade, rounded to 4 digits)
    assert all(1.05 < coarse / fine < 1.07 for coarse, fine in zip(FILL_STEPS, FILL_STEPS[1:]))
    assert fill_steps(0.3, LatentCodec.DCT8)[:2] == [0.3, 0.1]          # never coarser than asked beyond 0.1
    assert fill_steps(0.05, LatentCodec.Q8) == [0.05]                    # q8 has no step
    sizes = {0.1: 200, 0.07: 250, 0.05: 300, 0.03: 450, 0.02: 700}
    asked: list[float] = []

    def fits(target):
        return lambda step: asked.append(step) or sizes[step] <= target

    assert finest_fitting(list(sizes), fits(300)) == 0.05                # the finest that fits
    assert asked == [0.1, 0.05, 0.03]                                     # by bisection: 3 of 5 coded
    assert finest_fitting(list(sizes), fits(10_000)) == 0.02
    assert finest_fitting(list(sizes), fits(100)) == 0.1                  # none fits: the coarsest
    assert finest_fitting([0.1], fits(100)) == 0.1


def test_a_scene_start_takes_what_lets_the_stream_end_on_budget():
    control = RateController(10_000, HEADER, frames=90)
    budget = 10_000 / 30 / 8 * 90                                        # 3750 bytes
    # spent: 600 written + 13 x (3 keyframes + 2 scenes + this one) + 18 closing = 696
    written = dict(keyframe_size=200, scene_size=300, bytes_written=600, keyframes=3, scenes=2)
    # frame 30, interval 20, a cut at 50 (the ones at 10 and 95 are behind and beyond): scenes
    # 30-49 (keyframes 30, 49) and 50-89 (50, 70, 89): 5 keyframes of 200, 1 scene start of 300
    target = control.scene_start_target(30, interval=20, refresh=False, cuts=[10, 50, 95], floor=0, **written)
    assert target == pytest.approx(budget - 696 - 5 * 213 - 1 * 313)
    # refresh at interval 9: 6 scenes of 10 frames, 5 of them ahead, 12 keyframes; less than
    # nothing is left, so the plan's interval lengthens until the coarsest step (floor) fits:
    # interval 14, 4 scenes of 15 frames (3 ahead, 8 keyframes) leave 411 bytes
    assert control.scene_start_target(30, interval=9, refresh=True, cuts=[], floor=100, **written) == \
        pytest.approx(budget - 696 - 8 * 213 - 3 * 313)
    # a floor of 500 takes interval 19: 3 scenes of 20 frames, 2 ahead, 6 keyframes
    assert control.scene_start_target(30, interval=9, refresh=True, cuts=[], floor=500, **written) == \
        pytest.approx(budget - 696 - 6 * 213 - 2 * 313)
    # a floor nothing reaches: the longest interval, this scene alone (2 keyframes)
    assert control.scene_start_target(30, interval=9, refresh=True, cuts=[], floor=1e9, **written) == \
        pytest.approx(budget - 696 - 2 * 213)
    # without refresh the plan is the plan: the cuts come whatever the budget
    assert control.scene_start_target(30, interval=20, refresh=False, cuts=[50], floor=1e9, **written) == target
    # an unknown length: to this scene's expected end (frame 40), two keyframes
    live = RateController(10_000, HEADER, frames=None)
    assert live.scene_start_target(30, interval=9, refresh=True, cuts=[], floor=100, **written) == \
        pytest.approx(10_000 / 30 / 8 * 40 - 696 - 2 * 213)


def test_the_structure_still_to_come():
    from libpromptus.encoder.ratecontrol import remaining_structure

    # refresh, interval 4: scenes of 5 frames; 12 frames: 3 scenes (the last of 2 frames), 6 keyframes
    assert remaining_structure(12, 4, refresh=True) == (2, 6)
    # 11 frames: the last scene is one frame, one keyframe
    assert remaining_structure(11, 4, refresh=True) == (2, 5)
    # a chain, interval 4, 12 frames: keyframes 0, 4, 8, 11
    assert remaining_structure(12, 4, refresh=False) == (0, 4)
    # a cut at 6: scenes 0-5 (keyframes 0, 4, 5) and 6-11 (6, 10, 11)
    assert remaining_structure(12, 4, refresh=False, cuts=[6]) == (1, 6)
