"""The DASH client: a path through a Promptus rendition set fetched over HTTP, one
rendition per segment, as one `.pmt` byte stream for the live decoder (SPEC.md Annex D).

A downloader thread fetches the MPD, one init segment, then media segments 1, 2, … in
order, each from the rendition the ABR rule (`dash.abr`) picks for it; the reader side
(`DashReader.read`) hands the bytes on as they come, so frames are generated while later
segments download. The client keeps a player's buffer: playback starts when the decoder
takes the first media segment and drains the buffer in real time; a segment that takes longer to
arrive than the buffer holds stalls playback for the difference (time the downloader
waits for a decoder slower than real time pauses the clock instead); while the buffer holds
`max_buffer` seconds the downloader waits. The decoder's own speed is not part of this
model (its latency is in each frame's `arrived` time): what is measured is the network.
Memory stays bounded by `max_buffer` seconds of segments, whatever the length.

Each segment's record (`SegmentRecord`: rendition, bytes, download time, throughput,
buffer, stall) goes to `on_segment` and, with `--abr-log`, to a JSON Lines file.
"""
from __future__ import annotations

import io
import json
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TextIO

from ..io import network
from .abr import BBA, Fixed, Observation, Rule
from .manifest import ManifestError, Presentation, parse_mpd

#: The largest MPD read (a Promptus MPD is about 1 KB).
MAX_MPD_BYTES = 1 << 20
#: Seconds of media the client holds at most before it waits (as pmteval's simulation).
MAX_BUFFER_S = 30.0
#: Throughput measurements kept for the rules (the throughput rule uses the last 3).
_KEPT = 8


def is_manifest_url(name: str) -> bool:
    """An http(s) URL of an MPD (its path ends with `.mpd`)."""
    if not network.is_url(name) or not name.lower().startswith(("http://", "https://")):
        return False
    return name.split("?", 1)[0].split("#", 1)[0].lower().endswith(".mpd")


@dataclass(frozen=True)
class SegmentRecord:
    """What fetching one segment was like: `t_s` is when it finished, from the client's
    start, and `time` the same instant as a Unix time (to line up with a network trace);
    `buffer_s` is the buffer after it arrived, `stall_s` how long playback waited for it."""

    segment: int
    rendition: str
    bandwidth: int
    bytes: int
    download_s: float
    throughput_bps: float
    buffer_s: float
    stall_s: float
    t_s: float
    time: float


def fetch(url: str, limit: int | None = None) -> bytes:
    """The whole body at `url`; `limit`: refuse a larger one (one line, before it is all read)."""
    with network.open_input(url) as handle:
        data = handle.read(limit + 1) if limit is not None else handle.read()
    if limit is not None and len(data) > limit:
        raise network.NetworkError(url, f"larger than {limit} bytes")
    return data


def load_presentation(url: str) -> Presentation:
    """The presentation of the MPD at `url`, one-line errors for a bad fetch or MPD."""
    data = fetch(url, MAX_MPD_BYTES)
    try:
        return parse_mpd(data.decode("utf-8"), url)
    except UnicodeDecodeError:
        raise ManifestError(f"{network.redact(url)}: not an MPD (not UTF-8 text)") from None
    except ManifestError as err:
        raise ManifestError(f"{network.redact(url)}: {err}") from None


class PlaybackClock:
    """A player's clock: playback starts when the decoder takes the first media segment
    and runs in real time; the buffer is the media downloaded minus the media played;
    playback stops (a stall) while the buffer is empty. Before playback starts (the
    decoder is still loading its model) nothing is played, so nothing stalls."""

    def __init__(self) -> None:
        self.started: float | None = None
        self.begun = threading.Event()
        self.downloaded = 0.0               # seconds of media
        self.stalled = 0.0                  # seconds playback waited

    def start(self, now: float) -> None:
        if self.started is None:
            self.started = now
            self.begun.set()

    def hold(self, seconds: float) -> None:
        """Playback waited `seconds` for the decoder: the clock stops for that long."""
        if self.started is not None:
            self.stalled += seconds

    def played(self, now: float) -> float:
        if self.started is None:
            return 0.0
        return min(self.downloaded, now - self.started - self.stalled)

    def buffer(self, now: float) -> float:
        return self.downloaded - self.played(now)

    def arrived(self, now: float, seconds: float) -> float:
        """A segment of `seconds` arrived at `now`: the stall it ended (0 if none)."""
        stall = 0.0
        if self.started is not None:
            stall = max(0.0, now - self.started - self.stalled - self.downloaded)
            self.stalled += stall
        self.downloaded += seconds
        return stall


class DashReader(io.RawIOBase):
    """The bytes of a path through the presentation at `url`, as they download.

    Use as a context manager (or `close()`): closing stops the downloader. An error in
    the downloader (HTTP, timeout, a bad MPD) is raised by the next `read`.
    """

    def __init__(self, url: str, rule: Rule | None = None, *, on_segment: Callable[[SegmentRecord], None] | None = None,
                 log: TextIO | None = None, max_buffer: float = MAX_BUFFER_S) -> None:
        self.url = url
        self.rule = rule or BBA()
        self.presentation = load_presentation(url)
        if max_buffer < self.presentation.segment_seconds:
            raise ValueError("the buffer must hold at least one segment")
        if isinstance(self.rule, Fixed):
            self.rule.check(len(self.presentation.renditions))
        self._on_segment, self._log, self._max_buffer = on_segment, log, max_buffer
        self._chunks: queue.Queue = queue.Queue()
        # the init segment and up to a full buffer of media segments wait for the decoder
        self._room = threading.Semaphore(max(1, int(max_buffer // self.presentation.segment_seconds)) + 1)
        self._playback = PlaybackClock()
        self._taken = 0
        self._stop = threading.Event()
        self._pending = b""
        self._thread = threading.Thread(target=self._download, name="dash-client", daemon=True)
        self._thread.start()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._pending:
            item = self._chunks.get()
            if item is None:
                return 0
            if isinstance(item, BaseException):
                raise item
            self._pending = item
            self._room.release()
            self._taken += 1
            if self._taken == 2:            # the first media segment: playback starts
                self._playback.start(time.monotonic())
        count = min(len(buffer), len(self._pending))
        buffer[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count

    def close(self) -> None:
        self._stop.set()
        super().close()

    def _download(self) -> None:
        try:
            self._fetch_all()
        except BaseException as err:      # handed to the reader, which raises it in its own thread
            self._chunks.put(err)
        else:
            self._chunks.put(None)

    def _put(self, data: bytes) -> bool:
        """Queue `data` for the reader once there is room; False when the reader closed.

        Time spent waiting here is the decoder's lag (it takes segments slower than real
        time), not the network's: it pauses the playback clock instead of draining the buffer."""
        waited_from = time.monotonic()
        while not self._room.acquire(timeout=0.1):
            if self._stop.is_set():
                return False
        self._playback.hold(time.monotonic() - waited_from)
        if self._stop.is_set():
            return False
        self._chunks.put(data)
        return True

    def _fetch_all(self) -> None:
        presentation = self.presentation
        renditions = presentation.renditions
        rates = [r.bandwidth for r in renditions]
        start = time.monotonic()
        if not self._put(fetch(presentation.init_url(renditions[0]))):
            return
        playback = self._playback
        throughputs: list[float] = []
        for number in range(1, presentation.segment_count + 1):
            length = presentation.segment_frame_count(number) / float(presentation.rate)
            while (wait := playback.buffer(time.monotonic()) + length - self._max_buffer) > 0:
                # the buffer is full: wait for playback to make room (or to start)
                if self._stop.wait(wait) if playback.begun.is_set() else self._wait_for_playback():
                    return
            seen = Observation(number, playback.buffer(time.monotonic()), tuple(throughputs))
            rendition = renditions[self.rule.choose(seen, rates)]
            began = time.monotonic()
            data = fetch(presentation.media_url(rendition, number))
            now = time.monotonic()
            took = max(now - began, 1e-6)
            stall = playback.arrived(now, length)
            throughputs.append(len(data) * 8 / took)
            del throughputs[:-_KEPT]
            record = SegmentRecord(number, rendition.id, rendition.bandwidth, len(data), round(took, 4),
                                   round(throughputs[-1], 1), round(playback.buffer(now), 4), round(stall, 4),
                                   round(now - start, 4), round(time.time(), 4))
            self._record(record)
            if not self._put(data):
                return

    def _wait_for_playback(self) -> bool:
        """Wait until playback starts; True when the reader closed meanwhile."""
        while not self._playback.begun.wait(0.1):
            if self._stop.is_set():
                return True
        return self._stop.is_set()

    def _record(self, record: SegmentRecord) -> None:
        if self._log is not None:
            self._log.write(json.dumps(asdict(record)) + "\n")
            self._log.flush()
        if self._on_segment is not None:
            self._on_segment(record)
