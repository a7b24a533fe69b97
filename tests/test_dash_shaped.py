"""Adaptive streaming over a shaped link: nginx serves a rendition set from a network
namespace the test creates, the kernel shapes the link by a throughput trace (`tc tbf` on
the server's side of a veth pair, as Mahimahi's link shell does), and `pmtdec` fetches
and decodes the MPD from the other side. The throughput drops mid-session and recovers:
the client must switch down within two segments of the drop, back up after it, and never
stall for longer than a segment.

Needs root, `ip`, `tc` and `nginx` (.ci/run installs nginx and iproute2); skipped with the
reason otherwise. Everything the test creates (namespace, veth pair, nginx) is removed
when it ends, passed or failed, and every wait is bounded.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from network_helpers import DEADLINE_S, stop

from libpromptus.bitstream import Coding, StreamWriter
from libpromptus.conformance import seeded
from libpromptus.dash.packager import package

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(tool) for tool in ("ip", "tc", "nginx")),
    reason="the shaped-link test needs root, ip, tc and nginx (.ci/run installs them)")

SIZE, RATE = 32, 30
SEGMENT_FRAMES, SEGMENTS = 15, 32            # 0.5-s segments, 16 s in all
SEGMENT_S = SEGMENT_FRAMES / RATE
RANKS = (1, 2, 4)                            # about 110, 210 and 420 kbit/s (raw 8-bit factors, 6 keyframes a segment)
HIGH_BPS, LOW_BPS = 2_000_000, 150_000
MAX_BUFFER_S = 2.0                           # four segments: the client fetches at the pace of playback
#: The trace, in segments so that a loaded machine (a slower decoder, a slower pace) sees
#: the same session: the link's rate once the client has fetched so many segments, from
#: HIGH_BPS at the start. Ten segments are more than the buffer holds, so playback runs.
TRACE = ((10, LOW_BPS), (17, HIGH_BPS))
PORT = 8080


def rendition(rank: int, seed: int) -> bytes:
    """A stream of SEGMENTS closed segments (a scene start at every boundary, a keyframe every 3 frames)."""
    header = seeded.tiny_header(SIZE, SIZE, frame_count=SEGMENT_FRAMES * SEGMENTS)
    rng = np.random.RandomState(seed)
    sink = io.BytesIO()
    with StreamWriter(sink, header) as writer:
        for first in range(0, SEGMENT_FRAMES * SEGMENTS, SEGMENT_FRAMES):
            writer.write(seeded.scene_start(rng, header, first))
            for frame in range(first, first + SEGMENT_FRAMES, 3):
                writer.write(seeded.keyframe(rng, header, frame, rank, coding=Coding.RAW))
            writer.write(seeded.keyframe(rng, header, first + SEGMENT_FRAMES - 1, rank, coding=Coding.RAW))
    return sink.getvalue()


def ip(*args: str, namespace: str | None = None) -> None:
    prefix = ["ip", "netns", "exec", namespace] if namespace else []
    subprocess.run([*prefix, *args], check=True, capture_output=True, timeout=DEADLINE_S)


@contextmanager
def shaped_link() -> Iterator[tuple[str, str, Callable[[int], None]]]:
    """A namespace joined to this one by a veth pair; yields (namespace, server address,
    set_rate(bits per second)), which shapes what the server sends."""
    tag = f"{os.getpid() % 100000}"
    namespace, here, there = f"pmtns{tag}", f"pmta{tag}", f"pmtb{tag}"
    subnet = f"10.213.{os.getpid() % 250}"
    ip("ip", "netns", "add", namespace)
    try:
        ip("ip", "link", "add", here, "type", "veth", "peer", "name", there)
        try:
            ip("ip", "link", "set", there, "netns", namespace)
            ip("ip", "addr", "add", f"{subnet}.1/30", "dev", here)
            ip("ip", "link", "set", here, "up")
            ip("ip", "addr", "add", f"{subnet}.2/30", "dev", there, namespace=namespace)
            ip("ip", "link", "set", there, "up", namespace=namespace)
            ip("ip", "link", "set", "lo", "up", namespace=namespace)
            ip("tc", "qdisc", "add", "dev", there, "root", "tbf", "rate", str(HIGH_BPS), "burst", "2kb",
               "latency", "400ms", namespace=namespace)

            def set_rate(bps: int) -> None:
                ip("tc", "qdisc", "change", "dev", there, "root", "tbf", "rate", str(bps), "burst", "2kb",
                   "latency", "400ms", namespace=namespace)

            yield namespace, f"{subnet}.2", set_rate
        finally:
            subprocess.run(["ip", "link", "del", here], capture_output=True, timeout=DEADLINE_S)
    finally:
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True, timeout=DEADLINE_S)


@contextmanager
def nginx(namespace: str, address: str, root: Path, work: Path) -> Iterator[str]:
    """nginx in `namespace`, serving `root` on `address`:PORT, in the foreground; yields its URL."""
    temp = work / "nginx"
    temp.mkdir()
    config = temp / "nginx.conf"
    config.write_text(f"""daemon off; master_process off; worker_processes 1;
pid {temp}/nginx.pid; error_log {temp}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log off; sendfile off;
    types {{ application/dash+xml mpd; application/octet-stream pmt; }}
    client_body_temp_path {temp}/body; proxy_temp_path {temp}/proxy; fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi; scgi_temp_path {temp}/scgi;
    server {{ listen {address}:{PORT}; root {root}; }}
}}
""")
    server = subprocess.Popen(["ip", "netns", "exec", namespace, "nginx", "-c", str(config), "-p", str(temp)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + DEADLINE_S
        while True:
            try:
                socket.create_connection((address, PORT), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None, server.stderr.read().decode()
                assert time.monotonic() < deadline, "nginx did not start"
                time.sleep(0.1)
        yield f"http://{address}:{PORT}"
    finally:
        stop(server)
        server.stderr.close()


class Trace(threading.Thread):
    """Plays TRACE on the link as the ABR log grows; `changes` holds each change's Unix time."""

    def __init__(self, set_rate: Callable[[int], None], log: Path) -> None:
        super().__init__(daemon=True)
        self.set_rate, self.log, self.changes, self.stop = set_rate, log, [], threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + 2 * DEADLINE_S
        for segments, bps in TRACE:
            while not (self.log.exists() and len(self.log.read_text().splitlines()) >= segments):
                if self.stop.wait(0.02) or time.monotonic() > deadline:
                    return
            self.set_rate(bps)
            self.changes.append(time.time())


def test_the_client_follows_a_throughput_drop_down_and_back_up(tmp_path):
    www = tmp_path / "www"
    www.mkdir()
    streams = []
    for number, rank in enumerate(RANKS):
        path = tmp_path / f"{number}.pmt"
        path.write_bytes(rendition(rank, number))
        streams.append(path)
    presentation, packaged = package(streams, www / "manifest.mpd", SEGMENT_FRAMES)
    assert [r.bandwidth for r in packaged] == sorted(r.bandwidth for r in packaged)
    assert packaged[0].bandwidth < LOW_BPS * 0.9 < packaged[1].bandwidth and packaged[2].bandwidth < HIGH_BPS * 0.5
    log = tmp_path / "abr.jsonl"
    with shaped_link() as (namespace, address, set_rate), nginx(namespace, address, www, tmp_path) as url:
        trace = Trace(set_rate, log)
        decoder = subprocess.Popen(
            [sys.executable, "-m", "libpromptus.cli.pmtdec", "-loglevel", "error", "-i", f"{url}/manifest.mpd", "--abr", "throughput",
             "--max-buffer", str(MAX_BUFFER_S), "--abr-log", str(log), "-f", "rawvideo", "-"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "no_proxy": address})
        trace.start()
        try:
            out, err = decoder.communicate(timeout=5 * DEADLINE_S)   # 16 s of media; generous for a loaded machine
        finally:
            trace.stop.set()
            trace.join(timeout=10)
            if decoder.poll() is None:
                decoder.kill()
                decoder.wait(timeout=10)
    assert decoder.returncode == 0, err.decode()
    assert len(out) == SEGMENT_FRAMES * SEGMENTS * SIZE * SIZE * 3
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["segment"] for r in records] == list(range(1, SEGMENTS + 1))
    drop, recovery = trace.changes
    rungs = [int(r["rendition"]) for r in records]
    began = [r["time"] - r["download_s"] for r in records]
    before = max(i for i, t in enumerate(began) if t < drop)            # the segment the drop found
    assert rungs[before - 1:before + 1] == [2, 2], rungs                 # the top rung before the drop
    assert min(rungs[before + 1:before + 3]) < rungs[before], rungs     # down within two segments
    low = [i for i, t in enumerate(began) if i >= before + 3 and t < recovery]
    assert len(low) >= 3, (rungs, began, drop, recovery)
    assert low and max(rungs[i] for i in low) == 0, (rungs, [(round(t - drop, 2), r["throughput_bps"]) for t, r in zip(began, records)])  # settling on what the link carries
    after = [i for i, t in enumerate(began) if t >= recovery + 1.0]
    assert after and max(rungs[i] for i in after) == 2, rungs           # back up once it recovers
    assert max(r["stall_s"] for r in records) <= SEGMENT_S, records
    print(json.dumps({"rungs": rungs, "stalls": [r["stall_s"] for r in records],
                      "throughput_kbps": [round(r["throughput_bps"] / 1000) for r in records]}))
