"""Adaptive streaming end to end: `pmtenc -f dash` writes renditions, segments and an MPD
that a parser we did not write reads; `pmtdec -i http://…/manifest.mpd` fetches a path
through the renditions over a real HTTP server (loopback) and decodes, switching at
every segment boundary, exactly the frames of each segment's own rendition."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from mpegdash.parser import MPEGDASHParser
from network_helpers import error_line, no_proxy, run_cli, serve_folder  # noqa: F401 - no_proxy is autouse

from libpromptus.dash.manifest import MIME_TYPE, expand
from libpromptus.io.samples import write_sample

FRAMES, SIZE, SEGMENT_FRAMES = 12, 32, 6
FRAME_BYTES = SIZE * SIZE * 3
#: Three renditions by rank (fast and deterministic on the CPU); -b:v lists are measured in the README.
ENCODE = ["--model", "tiny", "-f", "dash", "--rank", "1,2,4", "-g", "3", "--iterations", "1",
          "--first-iterations", "1", "-seg_duration", "0.2"]


@pytest.fixture(scope="module")
def presentation(tmp_path_factory) -> Path:
    """A 12-frame 32×32 clip as three renditions of two 6-frame segments; the MPD's path."""
    folder = tmp_path_factory.mktemp("dash")
    write_sample(str(folder / "clip.y4m"), FRAMES, SIZE, SIZE)
    (folder / "out").mkdir()
    proc = run_cli("pmtenc", "-i", folder / "clip.y4m", *ENCODE, folder / "out" / "manifest.mpd", timeout=600)
    assert proc.returncode == 0, proc.stderr.decode()
    return folder / "out" / "manifest.mpd"


@pytest.fixture(scope="module")
def server(presentation):
    with serve_folder(presentation.parent) as url:
        yield url


def decode(source, *args) -> np.ndarray:
    proc = run_cli("pmtdec", "-loglevel", "error", "-i", source, *args, "-f", "rawvideo", "-", timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()
    return np.frombuffer(proc.stdout, np.uint8).reshape(-1, SIZE, SIZE, 3)


def rendition_file(presentation: Path, rendition: int, tmp_path: Path) -> Path:
    """Rendition `rendition` whole: its init segment and every media segment."""
    folder = presentation.parent
    parts = [folder / f"init-stream{rendition}.pmt",
             *(folder / f"chunk-stream{rendition}-{n:05d}.pmt" for n in (1, 2))]
    path = tmp_path / f"r{rendition}.pmt"
    path.write_bytes(b"".join(p.read_bytes() for p in parts))
    return path


def test_the_mpd_parses_with_mpegdash_and_names_segments_that_exist(presentation):
    mpd = MPEGDASHParser.parse(presentation.read_text())
    assert mpd.type == "static" and mpd.media_presentation_duration == "PT0.400000S"
    (period,) = mpd.periods
    (adaptation,) = period.adaptation_sets
    assert (adaptation.mime_type, adaptation.codecs, adaptation.content_type) == (MIME_TYPE, "pmt1.tiny", "video")
    (template,) = adaptation.segment_templates
    assert (template.timescale, template.duration, template.start_number) == (30, SEGMENT_FRAMES, 1)
    representations = adaptation.representations
    assert [r.id for r in representations] == ["0", "1", "2"]
    assert all((r.width, r.height, r.frame_rate) == (SIZE, SIZE, "30/1") for r in representations)
    bandwidths = [r.bandwidth for r in representations]
    assert bandwidths == sorted(bandwidths) and bandwidths[0] > 0           # rank 1 < 2 < 4
    named = set()
    for r in representations:
        named.add(expand(template.initialization, representation=r.id))
        named.update(expand(template.media, representation=r.id, number=n) for n in (1, 2))
    written = {p.name for p in presentation.parent.iterdir()} - {"manifest.mpd"}
    assert named == written                    # every segment named exists, and nothing else was written
    for r in representations:                  # @bandwidth covers the largest media segment in one duration
        largest = max((presentation.parent / expand(template.media, representation=r.id, number=n)).stat().st_size
                      for n in (1, 2))
        assert largest * 8 / 0.2 <= r.bandwidth < largest * 8 / 0.2 + 1


def test_a_decode_that_switches_at_every_boundary_equals_each_segments_own_rendition(presentation, server, tmp_path):
    own = [decode(rendition_file(presentation, r, tmp_path)) for r in range(3)]
    assert all(frames.shape[0] == FRAMES for frames in own)
    log = tmp_path / "abr.jsonl"
    for path in ((0, 2), (2, 1), (1, 0)):
        got = decode(f"{server}/manifest.mpd", "--abr", "fixed:" + ",".join(map(str, path)), "--abr-log", log)
        want = np.concatenate([own[r][n * SEGMENT_FRAMES:(n + 1) * SEGMENT_FRAMES] for n, r in enumerate(path)])
        assert np.array_equal(got, want)
        records = [json.loads(line) for line in log.read_text().splitlines()]
        assert [(r["segment"], r["rendition"]) for r in records] == [(1, str(path[0])), (2, str(path[1]))]
        sizes = [(presentation.parent / f"chunk-stream{r}-{n + 1:05d}.pmt").stat().st_size for n, r in enumerate(path)]
        assert [r["bytes"] for r in records] == sizes
        assert records[0]["stall_s"] == 0 and all(r["download_s"] > 0 and r["buffer_s"] > 0 for r in records)
    # the renditions differ, so the switches above were real
    assert not np.array_equal(own[0], own[2])


def test_the_api_opens_an_mpd_as_a_live_container(presentation, server, tmp_path):
    import libpromptus as pmt

    own = decode(rendition_file(presentation, 1, tmp_path))
    records = []
    with pmt.open(f"{server}/manifest.mpd", abr="fixed:1", on_segment=records.append) as container:
        assert (container.info.width, container.info.height, container.info.frame_count) == (SIZE, SIZE, FRAMES)
        frames = [frame.image for frame in container.decode(model="tiny")]
    assert np.array_equal(np.stack(frames), own)
    assert [(r.segment, r.rendition) for r in records] == [(1, "1"), (2, "1")]
    with pytest.raises(ValueError, match="abr and on_segment apply to an MPD"):
        pmt.open("-", abr="bba")


def test_a_bad_abr_rule_and_a_rendition_that_does_not_exist_are_one_line(server, tmp_path):
    line = error_line(run_cli("pmtdec", "-i", f"{server}/manifest.mpd", "--abr", "fast", tmp_path / "o.y4m"), "pmtdec")
    assert "--abr fast: expected bba" in line
    line = error_line(run_cli("pmtdec", "-i", f"{server}/manifest.mpd", "--abr", "fixed:0,7", tmp_path / "o.y4m"),
                      "pmtdec")
    assert "rendition 7 does not exist (the MPD has 3)" in line
    assert list(tmp_path.iterdir()) == []


def test_abr_options_need_an_mpd(tmp_path):
    line = error_line(run_cli("pmtdec", "-i", "x.pmt", "--abr", "bba", tmp_path / "o.y4m"), "pmtdec")
    assert line.endswith("--abr, --abr-log and --max-buffer need an MPD input (http://HOST/PATH/NAME.mpd)")


def test_a_missing_mpd_and_a_file_that_is_not_one_are_one_line(server, tmp_path):
    line = error_line(run_cli("pmtdec", "-i", f"{server}/nothing.mpd", tmp_path / "o.y4m"), "pmtdec")
    assert line.endswith("nothing.mpd: HTTP 404 Not Found")
    www = tmp_path / "www"
    www.mkdir()
    (www / "bad.mpd").write_text("<MPD><Period/></MPD>")
    (www / "binary.mpd").write_bytes(b"\x89PNG\r\n")
    (www / "broken.mpd").write_text("<MPD><Period>")
    with serve_folder(www) as url:
        lines = [error_line(run_cli("pmtdec", "-i", f"{url}/{name}.mpd", tmp_path / "o.y4m"), "pmtdec")
                 for name in ("bad", "binary", "broken")]
    assert lines[0].endswith("bad.mpd: the MPD must have one period with one video/vnd.promptus adaptation set")
    assert lines[1].endswith("binary.mpd: not an MPD (not UTF-8 text)")
    assert "broken.mpd: malformed MPD: " in lines[2]
    assert list(tmp_path.glob("o.*")) == []


def test_pmtenc_refuses_dash_options_without_dash_and_lists_without_dash(tmp_path):
    line = error_line(run_cli("pmtenc", "-i", "clip.y4m", "-seg_duration", "2", tmp_path / "o.pmt"), "pmtenc")
    assert line.endswith("-seg_duration, -init_seg_name and -media_seg_name are options of -f dash")
    line = error_line(run_cli("pmtenc", "-i", "clip.y4m", "--rank", "1,2", tmp_path / "o.pmt"), "pmtenc")
    assert line.endswith("--rank 1,2: a list of values makes renditions, for -f dash")
    line = error_line(run_cli("pmtenc", "-i", "clip.y4m", "-f", "dash", "--rank", "1,2", "-g", "2,3,4",
                              tmp_path / "m.mpd"), "pmtenc")
    assert line.endswith("lists must have one length (a single value applies to every rendition)")
    assert list(tmp_path.iterdir()) == []


def test_a_scalable_rendition_set_is_cut_from_one_fit(tmp_path):
    from libpromptus.bitstream import Coding, read_streams

    write_sample(str(tmp_path / "clip.y4m"), FRAMES, SIZE, SIZE)
    # out/ does not exist yet: pmtenc makes the manifest's folder, as FFmpeg's dash muxer does
    args = ["--model", "tiny", "-f", "dash", "--rank", "1,3", "-g", "3", "--iterations", "1", "--first-iterations", "1",
            "-seg_duration", "0.2", "--scalable"]
    proc = run_cli("pmtenc", "-i", tmp_path / "clip.y4m", *args, tmp_path / "out" / "manifest.mpd", timeout=600)
    assert proc.returncode == 0, proc.stderr.decode()
    low, high = (read_streams(rendition_file(tmp_path / "out" / "manifest.mpd", r, tmp_path))[0] for r in (0, 1))
    pairs = [(a.unit, b.unit) for s, t in zip(low.scenes, high.scenes) for a, b in zip(s.keyframes, t.keyframes)]
    assert pairs and all(a.u.shape[1] == 1 and b.u.shape[1] == 3 for a, b in pairs)
    # version 1.2 (the default DCT8 latent), which allows LAYERED keyframes as 1.1 does
    assert low.minor == high.minor == 2 and {a.coding for pair in pairs for a in pair} == {Coding.LAYERED}
    assert all(np.array_equal(a.u, b.u[:, :1]) and np.array_equal(a.v, b.v[:1]) for a, b in pairs)
    line = error_line(run_cli("pmtenc", "-i", tmp_path / "clip.y4m", "--model", "tiny", "-f", "dash", "-b:v",
                              "50k,90k", "--scalable", tmp_path / "m.mpd"), "pmtenc")
    assert line.endswith("give them as --rank R1,R2,... (one -g for all, no -b:v)")
