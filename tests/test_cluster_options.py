"""`pmtenc --cluster` and segmented encodes without a cluster: what is checked before any task
runs (Ray missing, a head that cannot be reached, resources no node has), and the progress
a segmented encode reports. The real cluster is in tests/test_cluster.py."""
from __future__ import annotations

import importlib.util
import json
import time

import pytest
from test_pmtenc import _progress_blocks, error_line, names, pmtenc, succeeded

from libpromptus.encoder.cluster import _task_resources
from libpromptus.errors import ClusterUnavailableError
from libpromptus.io.samples import write_sample

FAST = ["--model", "tiny", "--rank", "1", "-g", "3", "--iterations", "1", "--perceptual", "none",
        "--scene-threshold", "off"]


@pytest.fixture
def clip(tmp_path):
    write_sample(str(tmp_path / "clip.y4m"), 12, 32, 32)
    return tmp_path


def test_without_ray_the_flag_says_what_to_install(clip):
    hidden = clip / "no-ray"
    (hidden / "ray").mkdir(parents=True)
    (hidden / "ray" / "__init__.py").write_text("raise ImportError(\"No module named 'ray'\")\n")
    proc = pmtenc("-i", "clip.y4m", *FAST, "--segment-seconds", "0.2", "--cluster", "auto", "out.pmt", cwd=clip,
                  env={"PYTHONPATH": str(hidden)})
    assert error_line(proc) == "pmtenc: error: --cluster needs Ray: pip install 'libpromptus[cluster]'"
    assert names(clip) == ["clip.y4m", "no-ray"]


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="Ray is not installed")
def test_a_head_that_cannot_be_reached_fails_in_seconds(clip):
    began = time.monotonic()
    proc = pmtenc("-i", "clip.y4m", *FAST, "--segment-seconds", "0.2", "--cluster", "127.0.0.1:1", "out.pmt", cwd=clip)
    assert error_line(proc).startswith("pmtenc: error: --cluster 127.0.0.1:1: cannot reach the head at 127.0.0.1:1 ")
    assert time.monotonic() - began < 60
    assert names(clip) == ["clip.y4m"]


@pytest.mark.parametrize("arguments, message", [
    (["--cluster", "auto"], "--cluster runs segments as tasks: give --segment-seconds S"),
    (["--segment-seconds", "0.2", "--cluster", "auto", "--jobs", "2"], "--jobs counts local processes"),
    (["--segment-seconds", "0.2", "-threads", "0"], "-threads 0 is out of range"),
    (["--cluster", "not-an-address", "--segment-seconds", "0.2"], "--cluster not-an-address: not an address"),
])
def test_placement_errors_are_one_line(clip, arguments, message):
    if "not-an-address" in arguments and importlib.util.find_spec("ray") is None:
        pytest.skip("Ray is not installed")
    proc = pmtenc("-i", "clip.y4m", *FAST, *arguments, "out.pmt", cwd=clip)
    assert message in error_line(proc)
    assert names(clip) == ["clip.y4m"]


def _node(cpus: float, gpus: float = 0, alive: bool = True) -> dict:
    return {"Alive": alive, "Resources": {"CPU": cpus, **({"GPU": gpus} if gpus else {})}}


def test_a_task_asks_for_a_gpu_on_cuda_and_for_its_threads_otherwise():
    assert _task_resources([_node(0), _node(4)], "auto", 2) == ({"num_cpus": 2}, "cpu")
    assert _task_resources([_node(0), _node(8, gpus=2)], "auto", 1) == ({"num_gpus": 1, "num_cpus": 1}, "cuda")
    assert _task_resources([_node(8, gpus=2)], "cpu", 4) == ({"num_cpus": 4}, "cpu")
    assert _task_resources([_node(8, gpus=1)], "cuda:1", 1) == ({"num_gpus": 1, "num_cpus": 1}, "cuda")


@pytest.mark.parametrize("nodes, device, threads, message", [
    ([_node(4)], "cuda", 1, "--device cuda: no node of the cluster has a GPU"),
    ([_node(0), _node(2)], "auto", 4, "no node of the cluster has 4 CPUs for a segment (-threads)"),
    ([_node(0), _node(8, alive=False)], "cpu", 1, "no node of the cluster has 1 CPU for a segment"),
])
def test_a_task_no_node_can_run_is_refused_before_it_waits_for_ever(nodes, device, threads, message):
    with pytest.raises(ClusterUnavailableError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _task_resources(nodes, device, threads)


def test_a_segmented_encode_reports_progress_over_the_whole_video_and_its_segments(clip):
    proc = succeeded(pmtenc("-i", "clip.y4m", *FAST, "--segment-seconds", "0.2", "--jobs", "2", "-threads", "1",
                            "-progress", "pipe:2", "--stats", "stats.jsonl", "out.pmt", cwd=clip))
    blocks = _progress_blocks(proc.stderr.decode())
    assert blocks[-1]["progress"] == "end" and blocks[-1]["frame"] == "12"
    frames = [int(b["frame"]) for b in blocks]
    assert frames == sorted(frames)
    records = [json.loads(line) for line in (clip / "stats.jsonl").read_text().splitlines()]
    segments = sorted((r["segment"], tuple(r["frames"])) for r in records if "attempts" in r)
    assert segments == [(0, (0, 5)), (1, (6, 11))]
    keyframes = sorted(r["keyframe"] for r in records if "keyframe" in r)
    assert keyframes == [0, 3, 5, 6, 9, 11]


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="Ray is not installed")
def test_resuming_on_a_cluster_that_cannot_be_reached_keeps_the_finished_segments(clip):
    from libpromptus import ClusterUnavailableError, encode

    options = dict(model="tiny", rank=1, interval=3, iterations=1, perceptual="none", scene_threshold=None,
                   segment_seconds=0.2, threads=1)

    def interrupt(report) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        encode(str(clip / "clip.y4m"), str(clip / "out.pmt"), on_segment=interrupt, **options)
    work = clip / ".out.pmt.resume"
    before = sorted(p.name for p in work.iterdir())
    assert before == ["00000.json", "00000.pmt", "lock", "segments.json"]
    with pytest.raises(ClusterUnavailableError, match="cannot reach the head"):
        encode(str(clip / "clip.y4m"), str(clip / "out.pmt"), resume=True, cluster="127.0.0.1:1", **options)
    assert sorted(p.name for p in work.iterdir()) == before
