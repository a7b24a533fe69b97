"""What the network tests share: the loopback address, a deadline for every step, the
command lines run as subprocesses, their one-line errors, and `python -m http.server`
serving a folder."""
from __future__ import annotations

import os
import select
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

LOOPBACK = "127.0.0.1"
#: The longest any one step here may take (a subprocess, a thread, a wait for a server).
DEADLINE_S = 60


def run_cli(prog: str, *args, env: dict[str, str] | None = None, timeout: float = DEADLINE_S) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", f"libpromptus.cli.{prog}", *map(str, args)], capture_output=True,
                          check=False, timeout=timeout, env={**os.environ, **(env or {})})


def error_line(proc: subprocess.CompletedProcess, prog: str) -> str:
    """The one `PROG: error: ...` line of a failed run (exit 1, no traceback, nothing on stdout)."""
    stderr = proc.stderr.decode()
    assert proc.returncode == 1, stderr
    assert "Traceback" not in stderr and proc.stdout == b""
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), stderr
    return lines[0]


@contextmanager
def serve_folder(folder: Path, *, bind: str = LOOPBACK, command: list[str] | None = None) -> Iterator[str]:
    """`python -m http.server` on a free port of `bind`, serving `folder`; yields its base
    URL and stops the server when the block ends. `command` runs it another way (e.g. in
    a network namespace: `["ip", "netns", "exec", NAME]`)."""
    server = subprocess.Popen([*(command or []), sys.executable, "-u", "-m", "http.server", "0", "--bind", bind,
                               "--directory", str(folder)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        # "Serving HTTP on 127.0.0.1 port NNNNN (...)": port 0 lets the server pick, so no race for a port.
        ready, _, _ = select.select([server.stdout], [], [], DEADLINE_S)
        assert ready, "http.server did not start"
        words = server.stdout.readline().decode().split()
        port = int(words[words.index("port") + 1])
        yield f"http://{bind}:{port}"
    finally:
        stop(server)
        server.stdout.close()


def stop(process: subprocess.Popen) -> None:
    """End a server process: SIGTERM, then SIGKILL if it has not gone within 10 s."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    """Loopback requests go straight to the test's servers, whatever proxy the environment
    names (autouse in every module that imports it)."""
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(name, LOOPBACK)
