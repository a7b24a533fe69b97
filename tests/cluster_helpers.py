"""A real Ray cluster on this machine for the tests and the cluster benchmark: a head that only
schedules (no CPUs) and worker nodes of one CPU each, as separate processes, inside a
network namespace of its own with nothing but a loopback interface (Ray binds and talks on
127.0.0.1 alone). Needs root and iproute2. Every wait is bounded; `close` kills every
process in the namespace and removes it.
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from libpromptus.io.samples import write_sample

#: The head's port inside the namespace.
PORT = 6379
#: The encode of the tests and the benchmark: the clip `write_clip` writes (24 frames of 128x128) in 4 segments
#: of 6 frames, one thread per task, about 6 s a segment on this machine's CPU.
ENCODE = ["--model", "tiny", "--rank", "2", "-g", "3", "--iterations", "15", "--first-iterations", "30",
          "--scene-threshold", "off", "--segment-seconds", "0.2", "-threads", "1", "-loglevel", "warning"]
#: Bounds of the waits (seconds): an encode, anything else.
ENCODE_TIMEOUT_S, WAIT_S = 300, 120


def write_clip(path: Path) -> Path:
    """The sample clip `ENCODE` is made for, at `path` (.y4m)."""
    write_sample(str(path), 24, 128, 128)
    return path


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def wait_for(condition, what: str, timeout: float = WAIT_S):
    """Poll `condition` until it returns something true (returned), for at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class LocalCluster:
    """A Ray head (no CPUs: it only schedules) and worker nodes of one CPU, in namespace `name`;
    `start(workers)` starts them."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.folder = Path(tempfile.mkdtemp(prefix="pmtray", dir="/tmp"))   # short: Ray's socket paths live here
        token = self.folder / "auth_token"                  # Ray's token authentication, with a token of our own
        token.write_text(secrets.token_hex(32))
        self.env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
                    "RAY_AUTH_TOKEN_PATH": str(token),
                    # a dead node is noticed within about 3 s instead of 15
                    "RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3"}
        self.ray = str(Path(sys.executable).parent / "ray")
        self.workers: list[tuple[int, str]] = []

    def open_namespace(self) -> None:
        """The network namespace alone, its loopback up (`start` opens it first)."""
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        subprocess.run(["ip", "-n", self.name, "link", "set", "lo", "up"], check=True)

    def start(self, workers: int = 2) -> None:
        self.open_namespace()
        self._ray_start("--head", f"--port={PORT}", "--num-cpus=0", "--include-dashboard=false",
                        "--disable-usage-stats", f"--temp-dir={self.folder}")
        self.workers = [self.start_worker() for _ in range(workers)]

    def command(self, *args: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *args]

    def pmtenc(self, *args: str, wait: bool = True, **popen) -> subprocess.Popen | subprocess.CompletedProcess:
        """Run pmtenc in the namespace, as a driver of this cluster (`wait=False`: started, not waited for)."""
        command = self.command(sys.executable, "-m", "libpromptus.cli.pmtenc", *args)
        if not wait:
            return subprocess.Popen(command, env=self.env, **popen)
        return subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=ENCODE_TIMEOUT_S)

    def _ray_start(self, *args: str) -> None:
        done = subprocess.run(self.command(self.ray, "start", "--node-ip-address=127.0.0.1",
                                           "--object-store-memory=80000000", *args),
                              env=self.env, capture_output=True, text=True, timeout=WAIT_S)
        assert done.returncode == 0, f"ray start {' '.join(args)} failed: {done.stderr[-2000:]}"

    def raylets(self) -> dict[int, str]:
        """This cluster's worker-node raylets: pid -> node id."""
        found = {}
        for pid in _pids():
            args = _cmdline(pid)
            if args and args[0].endswith("/raylet") and any(str(self.folder) in a for a in args) \
                    and not any("node:__internal_head__" in a for a in args):
                found[pid] = next(a.split("=", 1)[1] for a in args if a.startswith("--node_id="))
        return found

    def start_worker(self) -> tuple[int, str]:
        """Start a worker node of one CPU; return its raylet's pid and its node id."""
        before = set(self.raylets())
        self._ray_start(f"--address=127.0.0.1:{PORT}", "--num-cpus=1")
        new = wait_for(lambda: set(self.raylets()) - before, "the new raylet")
        pid = new.pop()
        return pid, self.raylets()[pid]

    def segment_workers(self, raylet: int | None = None, *, besides: frozenset[int] = frozenset()) -> list[int]:
        """Worker processes running a segment's task (`ray::segment N`), under `raylet` if given,
        other than `besides` (the workers of an earlier encode, which may still be exiting)."""
        return [pid for pid in _pids() if (_cmdline(pid) or [""])[0].startswith("ray::segment")
                and (raylet is None or _parent(pid) == raylet) and pid not in besides]

    def processes(self) -> list[int]:
        """Every process in the namespace."""
        listed = subprocess.run(["ip", "netns", "pids", self.name], capture_output=True, text=True)
        return [int(pid) for pid in listed.stdout.split()]

    def close(self) -> None:
        for pid in self.processes():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        wait_for(lambda: not self.processes(), "the cluster's processes to exit", timeout=30)
        subprocess.run(["ip", "netns", "del", self.name], check=False)
        shutil.rmtree(self.folder, ignore_errors=True)
