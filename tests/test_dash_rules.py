"""The DASH pieces without a network: SegmentTemplate names, MPD round trips and
refusals, and the ABR rules' choices."""
import dataclasses
from fractions import Fraction

import pytest

from libpromptus.dash.abr import BBA, Fixed, Observation, Throughput, parse_rule
from libpromptus.dash.client import PlaybackClock
from libpromptus.dash.manifest import (
    INIT_TEMPLATE,
    MEDIA_TEMPLATE,
    ManifestError,
    Presentation,
    Rendition,
    expand,
    mpd_text,
    parse_mpd,
)

PRESENTATION = Presentation((Rendition("0", 60_000), Rendition("1", 120_000), Rendition("hi", 240_000)), 60,
                            Fraction(30000, 1001), 150, "sd-turbo", 512, 512,
                            INIT_TEMPLATE.replace("$ext$", "pmt"), MEDIA_TEMPLATE.replace("$ext$", "pmt"))


@pytest.mark.parametrize(("template", "name"), [
    ("chunk-stream$RepresentationID$-$Number%05d$.pmt", "chunk-stream7-00012.pmt"),
    ("$Bandwidth$/$Number$.pmt", "500/12.pmt"),
    ("a$$b-$Number%03d$", "a$b-012"),
])
def test_templates_expand_as_iso_23009_1_says(template, name):
    assert expand(template, representation="7", number=12, bandwidth=500) == name


@pytest.mark.parametrize(("template", "message"), [
    ("$Time$.pmt", r"\$Time\$ is not an identifier"),
    ("$RepresentationID%02d$", "is not an identifier"),
    ("$%02d$", "is not an identifier"),
    ("$Number%3d$", "is not an identifier"),
    ("a$Number$b$", "an unpaired"),
])
def test_templates_that_cannot_be_expanded_are_refused(template, message):
    with pytest.raises(ManifestError, match=message):
        expand(template, representation="0", number=1, bandwidth=1)


def test_an_mpd_round_trips_with_urls_resolved_against_its_own():
    read = parse_mpd(mpd_text(PRESENTATION), "http://host/v/manifest.mpd?k=1")
    assert read == dataclasses.replace(PRESENTATION, base_url="http://host/v/manifest.mpd?k=1")
    assert read.segment_count == 3 and [read.segment_frame_count(n) for n in (1, 2, 3)] == [60, 60, 30]
    assert read.media_url(read.renditions[2], 3) == "http://host/v/chunk-streamhi-00003.pmt"
    assert read.init_url(read.renditions[0]) == "http://host/v/init-stream0.pmt"


@pytest.mark.parametrize(("edit", "message"), [
    (lambda t: t.replace('type="static"', 'type="dynamic"'), "only static presentations"),
    (lambda t: t.replace("video/vnd.promptus", "video/mp4"), "one video/vnd.promptus adaptation set"),
    (lambda t: t.replace('codecs="pmt1.sd-turbo"', 'codecs="avc1"'), "expected pmt1.MODEL"),
    (lambda t: t.replace('startNumber="1"', 'startNumber="0"'), "@startNumber must be 1"),
    (lambda t: t.replace('timescale="30000"', 'timescale="25"'), "do not count frames"),
    (lambda t: t.replace('frameRate="30000/1001"', 'frameRate="x"'), "not a frame rate"),
    (lambda t: t.replace('mediaPresentationDuration="PT5.005000S"', 'mediaPresentationDuration="5"'),
     "is not a duration"),
    (lambda t: t.replace('id="hi"', 'id="1"'), "its own @id"),
    (lambda t: t.replace("<MPD", "<NotAnMPD"), "no <MPD> element"),
])
def test_an_mpd_that_is_not_a_promptus_rendition_set_is_refused(edit, message):
    text = mpd_text(PRESENTATION)
    assert edit(text) != text
    with pytest.raises(ManifestError, match=message):
        parse_mpd(edit(text))


RATES = [100.0, 200.0, 400.0]


def test_throughput_takes_the_highest_rate_under_a_safe_harmonic_mean():
    rule = Throughput()
    assert rule.choose(Observation(1, 0.0), RATES) == 0
    assert rule.choose(Observation(2, 0.0, (1000.0,)), RATES) == 2
    # harmonic mean of the last three (300, 300, 150) is 225; 0.9 × 225 = 202.5
    assert rule.choose(Observation(5, 0.0, (1e6, 300.0, 300.0, 150.0)), RATES) == 1
    assert rule.choose(Observation(5, 0.0, (50.0,)), RATES) == 0


def test_bba_follows_the_buffer_and_fixed_its_path():
    bba = BBA(reservoir=1, cushion=2)
    assert [bba.choose(Observation(2, b), RATES) for b in (0.5, 1.0, 1.6, 2.0, 3.0)] == [0, 0, 0, 1, 2]
    fixed = Fixed((0, 2, 1))
    assert [fixed.choose(Observation(n, 0.0), RATES) for n in range(1, 6)] == [0, 2, 1, 1, 1]
    with pytest.raises(ValueError, match="rendition 3 does not exist"):
        Fixed((0, 3)).check(3)


@pytest.mark.parametrize(("text", "rule"), [("bba", BBA()), ("bba:2:4", BBA(2.0, 4.0)), ("throughput", Throughput()),
                                            ("fixed:0,2,1", Fixed((0, 2, 1)))])
def test_rules_parse_and_print_back(text, rule):
    assert parse_rule(text) == rule
    assert parse_rule(str(rule)) == rule


@pytest.mark.parametrize("text", ["", "bba:1", "bba:a:b", "fixed:", "fixed:x", "throughput:2", "pensieve"])
def test_unknown_rules_are_refused(text):
    with pytest.raises(ValueError, match="expected bba"):
        parse_rule(text)


def test_the_playback_clock_counts_stalls_only_once_playback_has_begun():
    clock = PlaybackClock()
    assert clock.arrived(0.0, 2.0) == 0.0 and clock.arrived(5.0, 2.0) == 0.0   # prefetch while the model loads
    assert clock.buffer(9.0) == 4.0                                             # nothing played yet
    clock.start(10.0)
    assert clock.buffer(11.5) == 2.5
    assert clock.arrived(15.0, 2.0) == 1.0           # 4 s of media ran out at 14 s: a 1-s stall
    assert clock.buffer(15.0) == 2.0 and clock.buffer(16.0) == 1.0
    assert clock.buffer(30.0) == 0.0                 # stalled again, nothing more played than downloaded
