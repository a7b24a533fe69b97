"""Cluster encoding on a real Ray cluster: a head and two worker nodes of one CPU each, as
separate processes on this machine, inside a network namespace of the test's own that has
only a loopback interface (so Ray binds and talks on 127.0.0.1 alone).

It checks what issue 17 must show: the cluster's file equals `--jobs 2`'s at the same
threads and both worker nodes ran segments; a worker node killed (`kill -9` of its raylet)
mid-segment costs a retry, not a different file; the driver killed and `--resume`d
re-runs only the unfinished segments; a segment's bad input fails the encode in one line
and leaves nothing behind. Every wait is bounded; the namespace and every process in it
are removed at the end.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cluster_helpers import ENCODE, ENCODE_TIMEOUT_S, PORT, WAIT_S, LocalCluster, wait_for, write_clip

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                       reason="Ray is not installed (pip install 'libpromptus[cluster]')"),
    pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None,
                       reason="the test cluster runs in a network namespace: needs root and iproute2"),
]

def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def cluster():
    made = LocalCluster(f"pmtray{os.getpid()}")
    try:
        made.start()
        yield made
    finally:
        made.close()


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return write_clip(tmp_path_factory.mktemp("cluster") / "clip.y4m")


@pytest.fixture(scope="module")
def expected(clip) -> str:
    """The md5 of the encode with two local processes (`--jobs 2`) at one thread each (no network)."""
    out = clip.parent / "jobs.pmt"
    subprocess.run([sys.executable, "-m", "libpromptus.cli.pmtenc", "-i", str(clip), *ENCODE, "--jobs", "2",
                    str(out)], check=True, capture_output=True, timeout=ENCODE_TIMEOUT_S)
    return _md5(out)


def _segments(stats: Path) -> list[dict]:
    return [r for r in map(json.loads, stats.read_text().splitlines()) if "attempts" in r]


def test_the_cluster_writes_the_file_jobs_2_writes_using_both_worker_nodes(cluster, clip, expected, tmp_path):
    out, stats = tmp_path / "cluster.pmt", tmp_path / "stats.jsonl"
    encode = cluster.pmtenc("-i", str(clip), *ENCODE, "--cluster", f"127.0.0.1:{PORT}", "--stats", str(stats),
                            str(out), wait=False, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    running = []                 # segments running at once, sampled: never more than the worker nodes' 2 CPUs
    deadline = time.monotonic() + ENCODE_TIMEOUT_S
    while encode.poll() is None and time.monotonic() < deadline:
        running.append(len(cluster.segment_workers()))
        time.sleep(0.1)
    _, errors = encode.communicate(timeout=WAIT_S)
    assert encode.returncode == 0, errors
    assert _md5(out) == expected
    assert max(running) == 2
    records = _segments(stats)
    assert [r["segment"] for r in sorted(records, key=lambda r: r["segment"])] == [0, 1, 2, 3]
    assert [r["frames"] for r in sorted(records, key=lambda r: r["segment"])] == [[0, 5], [6, 11], [12, 17], [18, 23]]
    assert {r["node"] for r in records} == {node for _, node in cluster.workers}
    assert all(r["attempts"] == 1 and not r["reused"] and r["seconds"] > 0 for r in records)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cluster.pmt", "stats.jsonl"]


def test_a_worker_node_killed_mid_segment_costs_a_retry_not_the_file(cluster, clip, expected, tmp_path):
    out, stats = tmp_path / "cluster.pmt", tmp_path / "stats.jsonl"
    earlier = frozenset(cluster.segment_workers())
    encode = cluster.pmtenc("-i", str(clip), *ENCODE, "--cluster", f"127.0.0.1:{PORT}", "--stats", str(stats),
                            str(out), wait=False, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        victim, victim_node = cluster.workers[1]
        busy = wait_for(lambda: cluster.segment_workers(victim, besides=earlier), "a segment on the second worker node")
        time.sleep(2.0)                                   # past loading the model: fitting
        assert cluster.segment_workers(victim, besides=earlier) == busy, "the segment finished before the kill"
        os.kill(victim, signal.SIGKILL)
        _, errors = encode.communicate(timeout=ENCODE_TIMEOUT_S)
    finally:
        encode.kill()
    assert encode.returncode == 0, errors
    assert _md5(out) == expected
    records = _segments(stats)
    assert sorted(r["segment"] for r in records) == [0, 1, 2, 3]
    retried = [r for r in records if r["attempts"] > 1]      # the killed segment, and any Ray sent to the
    assert retried                                           # dead node before it noticed its death
    assert {r["node"] for r in retried} == {cluster.workers[0][1]} != {victim_node}
    cluster.workers[1] = cluster.start_worker()           # two worker nodes again for the next tests


def test_a_killed_driver_resumes_with_only_the_unfinished_segments(cluster, clip, expected, tmp_path):
    out = tmp_path / "cluster.pmt"
    work = tmp_path / ".cluster.pmt.resume"
    command = ["-i", str(clip), *ENCODE, "--cluster", f"127.0.0.1:{PORT}", str(out)]
    driver = cluster.pmtenc(*command, "--stats", str(tmp_path / "first.jsonl"), wait=False,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: list(work.glob("0*.json")), "a finished segment in the work folder")
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=WAIT_S)
    finished = sorted(int(p.stem) for p in work.glob("0*.json"))
    assert 1 <= len(finished) < 4 and not out.exists()
    wait_for(lambda: not cluster.segment_workers(), "Ray to end the dead driver's tasks")   # their CPUs free
    stats = tmp_path / "resumed.jsonl"
    done = cluster.pmtenc(*command, "--resume", "--stats", str(stats))
    assert done.returncode == 0, done.stderr
    assert _md5(out) == expected
    records = {r["segment"]: r for r in _segments(stats)}
    assert sorted(records) == [0, 1, 2, 3]
    assert sorted(n for n, r in records.items() if r["reused"]) == finished
    keyframes = [r for r in map(json.loads, stats.read_text().splitlines()) if "keyframe" in r]
    assert {r["segment"] for r in keyframes} == {0, 1, 2, 3} - set(finished)   # reused ones were not fitted
    assert not work.exists()


def test_bad_input_in_one_segment_fails_in_one_line_and_leaves_nothing(cluster, tmp_path):
    clip = write_clip(tmp_path / "broken.y4m")
    data = bytearray(clip.read_bytes())
    header = data.index(b"\n") + 1
    frame = (len(data) - header) // 24
    assert data[header + 14 * frame: header + 14 * frame + 6] == b"FRAME\n"
    data[header + 14 * frame: header + 14 * frame + 6] = b"FRAMX\n"       # frame 14, in the third segment
    clip.write_bytes(bytes(data))
    out = tmp_path / "broken.pmt"
    done = cluster.pmtenc("-i", str(clip), *ENCODE, "--cluster", f"127.0.0.1:{PORT}", str(out))
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("pmtenc: error: ") and "broken.y4m" in last, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.y4m"]


def test_cluster_local_starts_a_private_ray_for_the_encode_and_stops_it(clip, expected, tmp_path):
    """`--cluster local`, in a namespace of its own: this machine's two CPUs as one node, gone afterwards."""
    alone = LocalCluster(f"pmtlocal{os.getpid()}")
    try:
        alone.open_namespace()
        out, stats = tmp_path / "local.pmt", tmp_path / "stats.jsonl"
        done = alone.pmtenc("-i", str(clip), *ENCODE, "--cluster", "local", "--stats", str(stats), str(out))
        assert done.returncode == 0, done.stderr
        assert _md5(out) == expected
        records = _segments(stats)
        assert sorted(r["segment"] for r in records) == [0, 1, 2, 3] and len({r["node"] for r in records}) == 1
        wait_for(lambda: not alone.processes(), "the private Ray to stop", timeout=60)
    finally:
        alone.close()
