"""Segment tasks on a Ray cluster: `pmtenc --cluster`, `libpromptus.encode(..., cluster=...)`.

Ray (`pip install 'libpromptus[cluster]'`) schedules the segments of a segmented encode
(`encoder.segments`): one task per segment, no scheduler of libpromptus's own.

- Which cluster. `local` starts a private Ray instance on this machine for the encode
  (usage statistics off unless `RAY_USAGE_STATS_ENABLED` says otherwise); `auto` joins the
  cluster this machine is a node of (`ray start` ran here, or `RAY_ADDRESS`); anything
  else is the head's address as `ray.init(address=...)` takes it (`HOST:PORT`), checked
  with a connection first so that a wrong address fails in seconds, not after Ray's
  long retries. A process that has called `ray.init` itself keeps that session.
- What a task asks for. One GPU when the encode is on CUDA (`device` `cuda`, or `auto`
  on a cluster that has GPUs), else `threads` CPUs; so Ray runs as many segments at once
  as the nodes have GPUs or cores to spare. The runner checks first that an alive node
  can run such a task, and fails in one line otherwise (Ray would wait for ever).
- Faults. A task whose worker process or node dies is run again, on any node, up to
  `MAX_RETRIES` times (Ray's `max_retries`); it gives the same bytes wherever it runs.
  A task's own exception (bad input) is not retried (`retry_exceptions=False`): it fails
  the encode as that exception. When the driver stops early it cancels what is left.
- Reports. Tasks send their start and keyframe reports to a small actor pinned to the
  driver's node (so it outlives any worker node), without waiting for it: a task that
  blocks in `ray.get` lends its CPU to the next task, which would then run beside it
  (`ray.util.queue.Queue.put` blocks so). The driver collects them in one call per poll.
- Logs. Workers' output stays in Ray's logs on their nodes (`log_to_driver=False`); Ray
  itself still tells the driver's terminal when it loses a node or retries a task.

Every node needs libpromptus and the model (the same files: the sequence headers of the
segments must agree, or the merge refuses them), and must see the source at the same
path, or a URL.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import socket
from collections.abc import Callable, Iterator

from ..errors import ClusterUnavailableError, SegmentLostError
from .segments import POLL_S, SegmentEvent, SegmentResult, SegmentTask, encode_segment

log = logging.getLogger("libpromptus")

#: Times a segment's task is run again after its worker process or node died.
MAX_RETRIES = 3
#: Seconds to wait for the head's port to accept a connection before giving up on an address.
CONNECT_TIMEOUT_S = 5.0


class RayRunner:
    """Runs segment tasks on the Ray cluster `cluster` (`local`, `auto` or an address) for an
    encode on `device` (`EncodeOptions.device`); see the module's docstring."""

    def __init__(self, cluster: str, *, device: str) -> None:
        try:
            import ray
        except ImportError:
            raise ClusterUnavailableError("--cluster needs Ray: pip install 'libpromptus[cluster]'") from None
        self._ray = ray
        self._device = device
        self._reports_lost = False
        self._owned = not ray.is_initialized()
        if self._owned:
            _connect(ray, cluster)

    def run(self, source: str, tasks: list[SegmentTask], threads: int | None,
            on_event: Callable[[SegmentEvent], None]) -> Iterator[SegmentResult]:
        ray = self._ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        resources, device = _task_resources(ray.nodes(), self._device, threads or 1)
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        reports = ray.remote(num_cpus=0, scheduling_strategy=here)(_Reports).remote()
        report = _SendReport(reports)
        remote = ray.remote(max_retries=MAX_RETRIES, retry_exceptions=False, **resources)(encode_segment)
        submitted = {}
        for task in tasks:
            task = dataclasses.replace(task, options={**task.options, "device": device})
            submitted[remote.options(name=f"segment {task.number}").remote(source, task, threads, report)] = task
        pending = list(submitted)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1, timeout=POLL_S)
                for event in self._take(reports):
                    on_event(event)
                for ref in done:
                    yield self._result(ref, submitted[ref])
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)
            ray.kill(reports)

    def _take(self, reports) -> list[SegmentEvent]:
        """The reports waiting in the actor; none once it is lost (each finished segment
        brings its keyframes' reports with it, so only the progress suffers)."""
        if self._reports_lost:
            return []
        try:
            return self._ray.get(reports.take.remote())
        except self._ray.exceptions.RayError:
            log.warning("the segments' progress reports were lost; the encode goes on without them")
            self._reports_lost = True
            return []

    def _result(self, ref, task: SegmentTask) -> SegmentResult:
        ray = self._ray
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as err:
            raise err.cause from None                # the task's own failure, as it raised it
        except ray.exceptions.RayError as err:
            raise SegmentLostError(f"segment {task.number} was lost {MAX_RETRIES + 1} times "
                                   f"({_first_line(err)})") from None

    def close(self) -> None:
        if self._owned and self._ray.is_initialized():
            self._ray.shutdown()


class _Reports:
    """The actor that holds the tasks' reports until the driver takes them."""

    def __init__(self) -> None:
        self._events: list[SegmentEvent] = []

    def add(self, event: SegmentEvent) -> None:
        self._events.append(event)

    def take(self) -> list[SegmentEvent]:
        events, self._events = self._events, []
        return events


@dataclasses.dataclass(frozen=True)
class _SendReport:
    """A task's `report`: hands an event to the reports actor without waiting (see the module's docstring)."""

    reports: object            # the `_Reports` actor's handle

    def __call__(self, event: SegmentEvent) -> None:
        self.reports.add.remote(event)


def _connect(ray, cluster: str) -> None:
    """`ray.init` for `cluster`, its failures as one line."""
    options = {"logging_level": logging.WARNING, "log_to_driver": False}
    if cluster == "local":
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        options.update(address="local", include_dashboard=False)
    else:
        address = os.environ.get("RAY_ADDRESS") if cluster == "auto" else cluster
        if address and address != "auto" and "://" not in address:
            _check_reachable(cluster, address)
        options["address"] = cluster
    try:
        ray.init(**options)
    except (ConnectionError, ValueError, RuntimeError) as err:
        raise ClusterUnavailableError(f"--cluster {cluster}: {_first_line(err)}") from None


def _check_reachable(cluster: str, address: str) -> None:
    """Fail in one line unless the head at `address` (`HOST:PORT`) accepts a connection."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterUnavailableError(f"--cluster {cluster}: not an address (use HOST:PORT, auto or local)")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as err:
        raise ClusterUnavailableError(f"--cluster {cluster}: cannot reach the head at {address} "
                                      f"({err.strerror or err}); start it with ray start --head") from None


def _task_resources(nodes: list[dict], device: str, threads: int) -> tuple[dict, str]:
    """What each segment's task asks Ray for on a cluster of `nodes` (`ray.nodes()`), and the
    device it fits on."""
    alive = [node["Resources"] for node in nodes if node.get("Alive")]
    has_gpu = any(resources.get("GPU", 0) >= 1 for resources in alive)
    if device.startswith("cuda") or (device == "auto" and has_gpu):
        if not has_gpu:
            raise ClusterUnavailableError(f"--device {device}: no node of the cluster has a GPU")
        return {"num_gpus": 1, "num_cpus": 1}, "cuda"       # Ray makes the task's GPU cuda:0
    if not any(resources.get("CPU", 0) >= threads for resources in alive):
        raise ClusterUnavailableError(f"no node of the cluster has {threads} CPU{'s' * (threads > 1)} for a segment "
                                      "(-threads); add worker nodes with ray start --address=HEAD:PORT")
    return {"num_cpus": threads}, "cpu"


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
