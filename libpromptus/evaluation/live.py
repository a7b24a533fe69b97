"""Streaming the real thing: Promptus's DASH output through the real client over a link
that a throughput trace shapes (`pmteval --trace`, beside the simulation of the baselines).

`pmteval` encodes the clip once more as a rendition set (`pmtenc -f dash` at the
evaluated bitrates, `--segment-seconds` segments), serves it over loopback HTTP and plays
it with `libpromptus.open(MPD, abr="bba")`: the client measures its downloads, chooses
renditions, keeps its buffer and decodes as segments arrive, and the frames it shows are
compared with the clip. Where the simulation assumes free switching, here every switch
is a real one (SPEC.md Annex D).

The link is `TraceLink`, a bottleneck in the server, in user space as Mahimahi's link
shell is: the server sends each response in 1500-byte packets, and a packet leaves when
the link, whose capacity follows the trace from the session's start, has carried every
packet queued before it. It needs no privileges; `tests/test_dash_shaped.py` shapes a
network namespace's veth with the kernel's `tc` instead. The session lasts as long as
the presentation (the clip, once), over the trace's first seconds.
"""
from __future__ import annotations

import functools
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from ..dash.manifest import parse_mpd
from .clip import Clip
from .metrics import Metrics, SevereRule, mean_metrics
from .traces import Trace

__all__ = ["TraceLink", "serve_shaped", "stream_presentation"]

PACKET = 1500           # bytes per paced write, as Mahimahi's delivery opportunities are per MTU-sized packet
LOOPBACK = "127.0.0.1"


class TraceLink:
    """A first-in first-out bottleneck whose capacity follows `trace` from `started` on.

    `reserve(size)` queues `size` bytes behind everything reserved before and returns the
    `time.monotonic()` instant at which they have crossed the link.
    """

    def __init__(self, trace: Trace, started: float) -> None:
        self.trace = trace
        self.started = started
        self._free_at = 0.0              # seconds from `started` at which the queue is empty
        self._lock = threading.Lock()

    def reserve(self, size: int) -> float:
        with self._lock:
            start = max(time.monotonic() - self.started, self._free_at)
            self._free_at = start + self.trace.download_time(start, size * 8)
            return self.started + self._free_at


class _PacedHandler(SimpleHTTPRequestHandler):
    """Serves a folder's files, each body paced through the server's `TraceLink`."""

    link: TraceLink

    def copyfile(self, source, outputfile) -> None:
        while packet := source.read(PACKET):
            delay = self.link.reserve(len(packet)) - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            outputfile.write(packet)

    def log_message(self, format: str, *args) -> None:   # noqa: A002 - the base class's name
        pass


@contextmanager
def serve_shaped(folder: Path, trace: Trace) -> Iterator[str]:
    """Serve `folder` on a free loopback port through a link shaped by `trace` (starting
    now); yield its base URL, and stop the server when the block ends."""
    handler = type("Handler", (_PacedHandler,), {"link": TraceLink(trace, time.monotonic())})
    server = ThreadingHTTPServer((LOOPBACK, 0), functools.partial(handler, directory=str(folder)))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="pmteval-http", daemon=True)
    thread.start()
    try:
        yield f"http://{LOOPBACK}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def stream_presentation(manifest: Path, labels: list[str], trace: Trace, clip: Clip, metrics: Metrics,
                        severe: SevereRule, *, model: str | None, abr: str = "bba") -> dict:
    """Play the rendition set of `manifest` (rendition i encoded at `labels[i]`) over a link
    shaped by `trace`; the session in the simulation's report form, with the client's log
    per segment (`segments_log`) and the metrics of every frame shown, each with the
    rendition it came from (`frames`)."""
    from ..api import open as open_stream

    presentation = parse_mpd(manifest.read_text(encoding="utf-8"))
    records = []
    with serve_shaped(manifest.parent, trace) as url:
        with open_stream(f"{url}/{manifest.name}", abr=abr, on_segment=records.append) as container:
            shown = [frame.image for frame in container.decode(model=model)]
    measured = metrics.measure(clip.frames[:len(shown)], shown)
    chosen = [labels[int(record.rendition)] for record in records]
    frames = [{**frame, "rendition": chosen[index // presentation.segment_frames]} for index, frame in enumerate(measured)]
    seconds = presentation.segment_seconds
    return {"segments": len(records), "segment_seconds": seconds,
            "mean_bitrate_bps": sum(r.bytes for r in records) * 8 / (len(records) * seconds),
            "startup_s": records[0].t_s, "stall_s": sum(r.stall_s for r in records),
            "stalls": sum(r.stall_s > 0 for r in records),
            "switches": sum(a != b for a, b in zip(chosen, chosen[1:])), "frames_shown": len(measured),
            "mean": mean_metrics(measured), "severe_share": severe.share(measured), "chosen": chosen,
            "segments_log": [asdict(r) for r in records], "frames": frames}
