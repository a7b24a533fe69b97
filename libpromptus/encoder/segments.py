"""Segmented encoding: a video cut into closed segments, each encoded on its own, merged in order.

`encode_segmented` plans segments of `segment_seconds` (the last one shorter), runs one
task per segment (in this process, in `jobs` local worker processes, or as Ray tasks on
a cluster, `encoder.cluster`) and merges the finished segments into one stream
(`bitstream.merge_streams`). Every segment starts a scene with its own first-frame
latent, so segments do not depend on each other.

Where the data goes. A task opens the source itself (a path every worker sees, or a
URL) and seeks to its own first frame (`-ss`; frame g of a constant-rate source is
taken from half a frame before g/rate, which absorbs timestamps rounded to the
container's time base): no frame travels between machines. The task encodes into a
private folder of its own machine and returns the segment's bytes (on a cluster, through
Ray's object store). The driver, this process, writes each finished segment into the
encode's work folder (`.OUTPUT.resume/`, `io.files.WorkDirectory`) as it arrives.

Determinism. A segment's bytes depend on the source, the options and the torch threads
it fits with (`threads`: the number of cores divided by `jobs` locally, 1 on a cluster's
CPUs unless given), not on which process or node ran it or when; so the merged file is
the same whatever runs the tasks, at the same threads.

Resuming. The work folder keeps `segments.json` (the source, options, segment length and
threads: what the segments must agree on) and every finished segment (`NNNNN.pmt`, then
its record `NNNNN.json`, each written atomically). After an interruption (Ctrl-C, the
driver killed, the cluster lost) `resume=True` reuses every finished segment and runs
only the others; a folder of another encode is refused in one line. A task that fails
by itself (bad input) fails the encode with its own error and removes the folder, so no
partial output is left.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import logging
import math
import multiprocessing
import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Protocol, TextIO

from .. import __version__
from ..bitstream import Metadata, merge_streams, read_streams
from ..errors import CheckpointError, SegmentLostError
from ..io import network
from ..io.files import WorkDirectory, publish, write_atomically
from ..io.pipes import is_stdin
from .encoder import EncodeSummary, KeyframeReport, stats_psnr
from .job import EncodeOptions, EncodeResult, encode, fingerprint, naming_failed_writes

log = logging.getLogger("libpromptus")

#: The work folder's description of the encode its segments belong to, and the merged stream before it is published.
_PLAN, _MERGED = "segments.json", "merged.pmt"
#: How often (seconds) a runner looks for task reports while it waits for segments.
POLL_S = 0.25


@dataclass(frozen=True)
class SegmentTask:
    """Segment `number`: frames `first` .. `first + count - 1` of the encode, read and coded with `options`
    (`EncodeOptions` as a dict; its `start` and `max_frames` select the segment's frames)."""

    number: int
    first: int
    count: int
    options: dict

    @property
    def name(self) -> str:
        return f"{self.number:05d}"


@dataclass(frozen=True)
class SegmentEvent:
    """What a running task reports to the driver: that it started on `node` (`report` None),
    or that it finished a keyframe (`report`, numbered within the segment)."""

    segment: int
    node: str
    report: KeyframeReport | None = None


@dataclass(frozen=True)
class SegmentResult:
    """A finished segment: its stream's bytes, its encode's summary and keyframe interval, where
    it ran (`node`: the Ray node's id on a cluster, else the host's name; `host`) and its wall
    time in seconds."""

    segment: int
    data: bytes
    summary: EncodeSummary
    interval: int
    node: str
    host: str
    seconds: float


@dataclass(frozen=True)
class SegmentReport:
    """What `--stats` and `on_segment` get per segment: where and how long it ran, how many
    times it was started (more than once when a worker was lost), whether a resumed encode
    reused it from the interrupted one."""

    segment: int
    segments: int
    first: int
    count: int
    node: str
    host: str
    seconds: float
    attempts: int
    reused: bool = False

    def stats(self) -> dict:
        """The `--stats` record (one JSON line)."""
        return {"segment": self.segment, "frames": [self.first, self.first + self.count - 1], "node": self.node,
                "host": self.host, "seconds": round(self.seconds, 3), "attempts": self.attempts,
                "reused": self.reused}


@dataclass(frozen=True)
class KeptSegment:
    """A segment in the work folder: its record, summary and keyframe interval (`NNNNN.json`)."""

    record: SegmentReport
    summary: EncodeSummary
    interval: int


class SegmentRunner(Protocol):
    """Runs segment tasks somewhere and yields their results as they finish.

    `run` calls `on_event` in the calling thread with the tasks' reports. A task's own
    failure is raised as its exception; a task that could not finish because its worker
    was lost, after the runner's retries, raises `SegmentLostError`."""

    def run(self, source: str, tasks: list[SegmentTask], threads: int | None,
            on_event: Callable[[SegmentEvent], None]) -> Iterator[SegmentResult]: ...

    def close(self) -> None:
        """Let go of what `run` used (a cluster session this runner opened)."""


def segment_length(segment_seconds: float, rate: Fraction) -> int:
    """The frames of one segment of `segment_seconds` at `rate` (at least one)."""
    return max(1, round(segment_seconds * rate))


def node_name() -> str:
    """Where this code runs: the Ray node's id inside a Ray task, else the host's name."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        return ray.get_runtime_context().get_node_id()
    return socket.gethostname()


def encode_segment(source: str, task: SegmentTask, threads: int | None,
                   report: Callable[[SegmentEvent], None] | None) -> SegmentResult:
    """One segment's task, wherever a runner runs it: fit the segment into a private folder
    with `threads` torch threads and return its bytes; `report` receives its events."""
    node = node_name()
    if report is not None:
        report(SegmentEvent(task.number, node))
    on_keyframe = None if report is None else (lambda keyframe: report(SegmentEvent(task.number, node, keyframe)))
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="libpromptus-segment-") as folder:
        output = Path(folder, f"{task.name}.pmt")
        result = encode(source, str(output), threads=threads, on_keyframe=on_keyframe, **task.options)
        data = output.read_bytes()
    return SegmentResult(task.number, data, result.summary, result.interval, node, socket.gethostname(),
                         time.monotonic() - began)


class InProcessRunner:
    """The tasks one after another in this process (`jobs=1`)."""

    def run(self, source: str, tasks: list[SegmentTask], threads: int | None,
            on_event: Callable[[SegmentEvent], None]) -> Iterator[SegmentResult]:
        for task in tasks:
            yield encode_segment(source, task, threads, on_event)

    def close(self) -> None:
        return None


class ProcessPoolRunner:
    """The tasks in `jobs` local worker processes (spawned: each loads its own model); their
    reports come back through a queue of a `multiprocessing` manager, which each worker
    receives once, when it starts (a call that carried it could reach a worker after the
    manager has gone, when the pool is being torn down)."""

    def __init__(self, jobs: int) -> None:
        self.jobs = jobs

    def run(self, source: str, tasks: list[SegmentTask], threads: int | None,
            on_event: Callable[[SegmentEvent], None]) -> Iterator[SegmentResult]:
        context = multiprocessing.get_context("spawn")
        level = logging.getLogger("libpromptus").getEffectiveLevel()
        with context.Manager() as manager:
            events = manager.Queue()
            with concurrent.futures.ProcessPoolExecutor(max_workers=self.jobs, mp_context=context,
                                                        initializer=_start_worker, initargs=(level, events)) as pool:
                pending = {pool.submit(encode_segment, source, task, threads, _report_to_parent) for task in tasks}
                try:
                    while pending:
                        done, pending = concurrent.futures.wait(pending, timeout=POLL_S,
                                                                return_when=concurrent.futures.FIRST_COMPLETED)
                        if events is not None and not _drain(events, on_event):
                            events = None
                        for future in done:
                            try:
                                yield future.result()
                            except concurrent.futures.BrokenExecutor:
                                raise SegmentLostError("a segment's worker process died") from None
                finally:
                    pool.shutdown(wait=True, cancel_futures=True)

    def close(self) -> None:
        return None


#: A local worker process's queue to the driver (`ProcessPoolRunner`), set when the worker starts.
_parent_reports = None


def _start_worker(log_level: int, reports) -> None:
    """A local worker process: the parent's verbosity for the library's log, the queue for reports."""
    global _parent_reports
    logging.getLogger("libpromptus").setLevel(log_level)
    _parent_reports = reports


def _report_to_parent(event: SegmentEvent) -> None:
    """A local worker's `report`: the event onto the driver's queue, if it is still there
    (reports only feed the progress: a lost queue must not fail the segment)."""
    try:
        _parent_reports.put(event)
    except (OSError, EOFError):
        pass


def _drain(events, on_event: Callable[[SegmentEvent], None]) -> bool:
    """Hand every report waiting in `events` (a manager's queue) to `on_event`; False when the
    queue is lost (its manager process died): the driver goes on without reports, since
    each finished segment brings its keyframes' reports with it."""
    import queue

    while True:
        try:
            event = events.get_nowait()
        except queue.Empty:
            return True
        except (OSError, EOFError):
            log.warning("the segments' progress reports were lost; the encode goes on without them")
            return False
        on_event(event)


def default_threads(jobs: int, cluster: str | None) -> int | None:
    """Torch threads per task when not given: 1 on a cluster (its parallelism is the
    segments), the cores shared out between `jobs` local processes, torch's choice for one."""
    if cluster is not None:
        return 1
    if jobs > 1:
        return max(1, (os.cpu_count() or 1) // jobs)
    return None


def plan_segments(source: str, opts: EncodeOptions, segment_seconds: float) -> tuple[list[SegmentTask], Fraction, int]:
    """The segments of `segment_seconds` of the frames `opts` select from `source`, the
    frame rate and the frame count."""
    from ..io.video_input import exact_seconds, open_video

    with open_video(source, start=opts.start, duration=opts.duration, max_frames=opts.max_frames, size=opts.size,
                    fit=opts.fit, rate=opts.rate) as reader:
        info = reader.info
        total = info.frame_count if info.frame_count is not None else sum(1 for _ in reader.frames())
    if total == 0:
        raise ValueError(f"{source}: no frames to encode")
    length = segment_length(segment_seconds, info.rate)
    start = exact_seconds(opts.start, "-ss")
    offset = 0 if start is None else math.ceil(start * info.source_rate)   # the selection's first source frame
    base = asdict(opts)
    tasks = []
    for number, first in enumerate(range(0, total, length)):
        seek = opts.start if first == 0 else (offset + first - Fraction(1, 2)) / info.source_rate
        count = min(length, total - first)
        tasks.append(SegmentTask(number, first, count, {**base, "start": seek, "duration": None, "max_frames": count}))
    return tasks, info.rate, total


def encode_segmented(source: str, output: str, *, segment_seconds: float, jobs: int = 1, cluster: str | None = None,
                     threads: int | None = None, overwrite: bool = False, resume: bool = False,
                     stats: TextIO | None = None, on_start: Callable[[int | None, Fraction], None] | None = None,
                     on_keyframe: Callable[[KeyframeReport], None] | None = None,
                     on_segment: Callable[[SegmentReport], None] | None = None, **options) -> EncodeResult:
    """Encode `source` into `output` as closed segments of `segment_seconds`, `jobs` local
    processes at a time or as tasks on the Ray cluster at `cluster` (`auto`, `local` or an
    address, `encoder.cluster`), and merge them; `options`: see `EncodeOptions`.

    `resume=True` continues an interrupted segmented encode of the same input and options
    (see the module's docstring). Callbacks: `on_start(frame_count, rate)`;
    `on_keyframe(KeyframeReport)` with the encode's frame numbers, in the order keyframes
    finish on the workers, each keyframe once; `on_segment(SegmentReport)` as each segment
    is kept, reused ones first. `stats` receives each keyframe's record and each segment's.
    """
    opts = EncodeOptions(**options)
    if not segment_seconds > 0:
        raise ValueError(f"--segment-seconds {segment_seconds}: must be positive")
    if jobs < 1:
        raise ValueError(f"--jobs {jobs}: at least 1")
    if threads is not None and threads < 1:
        raise ValueError(f"-threads {threads}: at least 1")
    if cluster is not None and jobs != 1:
        raise ValueError("--jobs counts local processes; with --cluster every segment is a task of the cluster")
    if is_stdin(source):
        raise ValueError("--segment-seconds needs an input every segment can open and seek (a file or a URL), "
                         "not a pipe")
    if not network.is_url(source):
        source = os.path.abspath(source)           # tasks run in other working directories, on other machines
    if threads is None:
        threads = default_threads(jobs, cluster)
    target = Path(output)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{output}: already exists (use -y to overwrite)")
    with naming_failed_writes(output), WorkDirectory(target) as work:
        tasks, rate, total = plan_segments(source, opts, segment_seconds)
        plan = {"fingerprint": fingerprint(source, opts), "segment_seconds": segment_seconds, "threads": threads,
                "segments": len(tasks)}
        kept = _reusable_segments(work, plan, tasks) if resume else {}
        # connected before the folder is touched: a cluster that cannot be reached leaves it as it was
        runner = _runner(jobs, cluster, opts) if len(kept) < len(tasks) else None
        try:
            if not resume:
                _start_afresh(work, plan)
            if on_start is not None:
                on_start(total, rate)
            _Driver(work, tasks, kept, stats, on_keyframe, on_segment).run(source, runner, threads)
            size, rank = _merge(work, tasks, segment_seconds, target)
        except (KeyboardInterrupt, SegmentLostError):
            if not kept:                          # nothing finished: nothing to resume
                work.remove()
            raise
        except BaseException:
            work.remove()
            raise
        finally:
            if runner is not None:
                runner.close()
        work.remove()
    summaries = [kept[task.number].summary for task in tasks]
    keyframes = [dataclasses.replace(k, frame_index=k.frame_index + task.first, first_frame=k.first_frame + task.first)
                 for task, summary in zip(tasks, summaries) for k in summary.keyframes]
    merged = EncodeSummary(total, sum(s.scenes for s in summaries), keyframes, size)
    return EncodeResult.of(merged, rate, rank, kept[0].interval)


def _runner(jobs: int, cluster: str | None, opts: EncodeOptions) -> SegmentRunner:
    if cluster is not None:
        from .cluster import RayRunner

        return RayRunner(cluster, device=opts.device)
    return InProcessRunner() if jobs == 1 else ProcessPoolRunner(jobs)


class _Driver:
    """The driver's side of a segmented encode: it keeps each finished segment in the work
    folder, counts each task's starts and forwards each keyframe once (a retried task
    reports its keyframes again)."""

    def __init__(self, work: WorkDirectory, tasks: list[SegmentTask], kept: dict, stats: TextIO | None,
                 on_keyframe: Callable[[KeyframeReport], None] | None,
                 on_segment: Callable[[SegmentReport], None] | None) -> None:
        self.work, self.tasks, self.kept = work, tasks, kept
        self.stats, self.on_keyframe, self.on_segment = stats, on_keyframe, on_segment
        self.starts: dict[int, int] = {}
        self.reported: dict[int, int] = {}        # segment -> its last keyframe forwarded
        self.finished = 0                         # segments kept by this run

    def run(self, source: str, runner: SegmentRunner | None, threads: int | None) -> None:
        """Tell the reused segments, then run the others on `runner` (None when there are none)."""
        for number in sorted(self.kept):
            self._tell(self.kept[number].record)
        pending = [task for task in self.tasks if task.number not in self.kept]
        if pending:
            for result in runner.run(source, pending, threads, self._event):
                self._keep(result)

    def _event(self, event: SegmentEvent) -> None:
        if event.report is None:
            self.starts[event.segment] = self.starts.get(event.segment, 0) + 1
            return
        report = event.report
        if report.frame_index <= self.reported.get(event.segment, -1):
            return
        self.reported[event.segment] = report.frame_index
        first = self.tasks[event.segment].first
        shifted = dataclasses.replace(report, frame_index=report.frame_index + first,
                                      first_frame=report.first_frame + first)
        if self.stats is not None:
            self.stats.write(json.dumps({
                "keyframe": shifted.frame_index, "frames": [shifted.first_frame, shifted.frame_index],
                "scene": report.scene, "iterations": report.iterations, "loss": report.loss, "bytes": report.bytes,
                "psnr": stats_psnr(report.psnr), "segment": event.segment, "segment_start": first}) + "\n")
            self.stats.flush()
        if self.on_keyframe is not None:
            self.on_keyframe(shifted)

    def _keep(self, result: SegmentResult) -> None:
        """Write a finished segment into the work folder: its stream, then its record."""
        task = self.tasks[result.segment]
        for keyframe in result.summary.keyframes:       # any report the runner has not delivered
            self._event(SegmentEvent(task.number, result.node, keyframe))
        record = SegmentReport(task.number, len(self.tasks), task.first, task.count, result.node, result.host,
                               result.seconds, max(1, self.starts.get(task.number, 1)))
        write_atomically(self.work.path / f"{task.name}.pmt", result.data)
        kept = KeptSegment(record, result.summary, result.interval)
        write_atomically(self.work.path / f"{task.name}.json", json.dumps(asdict(kept)).encode())
        self.kept[task.number] = kept
        self.finished += 1
        self._tell(record)

    def _tell(self, record: SegmentReport) -> None:
        if self.stats is not None:
            self.stats.write(json.dumps(record.stats()) + "\n")
            self.stats.flush()
        if self.on_segment is not None:
            self.on_segment(record)


def _start_afresh(work: WorkDirectory, plan: dict) -> None:
    """A new segmented encode in `work`: an interrupted one's files are thrown away (said so)."""
    if work.files():
        log.warning("discarding the interrupted encode in %s (--resume continues it)", work.path)
        work.clear()
    write_atomically(work.path / _PLAN, json.dumps(plan, sort_keys=True).encode())


def _reusable_segments(work: WorkDirectory, plan: dict, tasks: list[SegmentTask]) -> dict[int, KeptSegment]:
    """The finished segments of the interrupted encode in `work`, by number, each record marked
    reused. Refused in one line when the folder holds another encode."""
    path = work.path / _PLAN
    if not path.exists():
        raise CheckpointError(f"{work.target}: nothing to resume (no segmented encode in {work.path})")
    try:
        interrupted = json.loads(path.read_bytes())
    except ValueError:
        interrupted = None
    if interrupted != plan:
        raise CheckpointError(f"{work.target}: the input, options, segment length or threads differ from the "
                              "interrupted encode; start again without --resume")
    kept = {}
    for task in tasks:
        stream, record_path = work.path / f"{task.name}.pmt", work.path / f"{task.name}.json"
        if not record_path.exists():
            continue
        try:
            saved = json.loads(record_path.read_bytes())
            record = dataclasses.replace(SegmentReport(**saved["record"]), reused=True)
            summary = EncodeSummary(**{**saved["summary"], "keyframes": [KeyframeReport(**k) for k in
                                                                         saved["summary"]["keyframes"]]})
            interval = int(saved["interval"])
            segment = read_streams(stream)[0]
        except (OSError, ValueError, TypeError, KeyError) as err:
            raise CheckpointError(f"{work.target}: segment {task.number} in {work.path} is damaged ({err}); "
                                  "start again without --resume") from None
        if segment.frame_count != task.count or record.first != task.first:
            raise CheckpointError(f"{work.target}: segment {task.number} in {work.path} does not match its plan; "
                                  "start again without --resume")
        kept[task.number] = KeptSegment(record, summary, interval)
    log.info("resuming %s: %d of %d segments already encoded", work.target, len(kept), len(tasks))
    return kept


def _merge(work: WorkDirectory, tasks: list[SegmentTask], segment_seconds: float, target: Path) -> tuple[int, int]:
    """Merge the kept segments, in order, into the published output; return its size and rank."""
    segments = [read_streams(work.path / f"{task.name}.pmt")[0] for task in tasks]
    temporary = work.path / _MERGED
    with temporary.open("wb") as sink:
        settings = dict(segments[0].metadata).get("settings", "")
        size = merge_streams(segments, sink, metadata=Metadata((
            ("encoder", f"libpromptus {__version__}"),
            ("settings", f"{settings} segment_seconds={segment_seconds}".strip()))))
    publish(temporary, target)
    return size, segments[0].scenes[0].keyframes[0].unit.rank
