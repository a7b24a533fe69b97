"""Network input and output (`libpromptus.io.network`): http:// progressive downloads,
tcp:// clients and listeners, timeouts, one-line errors and redacted credentials.

Loopback only (127.0.0.1). Every server here is bounded: sockets carry timeouts, threads
are joined with a deadline, subprocesses run under a timeout, and each server is closed
when its test ends, passed or failed.
"""
from __future__ import annotations

import base64
import io
import json
import socket
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import RICH_SPEC, build_stream, write_prompt_dir
from libpromptus.bitstream import read_units

from libpromptus.io import network

from network_helpers import DEADLINE_S, LOOPBACK, error_line, no_proxy, run_cli, serve_folder  # noqa: F401 - no_proxy is autouse

#: The read timeout the stall tests run pmtdec with (seconds).
STALL_TIMEOUT = "1"


def assert_same_dump(got: Path, want: Path) -> None:
    """Two prompt dumps hold the same members, byte for byte (the zip's own timestamps may differ)."""
    with zipfile.ZipFile(got) as a, zipfile.ZipFile(want) as b:
        assert [(i.filename, i.CRC, i.file_size) for i in a.infolist()] == \
               [(i.filename, i.CRC, i.file_size) for i in b.infolist()]
        for name in a.namelist():
            assert a.read(name) == b.read(name)
    assert got.stat().st_size == want.stat().st_size


def nothing_written(folder: Path) -> bool:
    return list(folder.iterdir()) == []


@pytest.fixture(scope="module")
def stream_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("www") / "x.pmt"
    path.write_bytes(build_stream(RICH_SPEC).data)
    return path


@pytest.fixture(scope="module")
def local_dump(stream_file, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local") / "local.npz"
    proc = run_cli("pmtdec", "-i", stream_file, "--dump-prompts", out)
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="module")
def http_server(stream_file) -> Iterator[str]:
    """`python -m http.server` on a free loopback port, serving the folder of `stream_file`; yields its base URL."""
    with serve_folder(stream_file.parent) as url:
        yield url


@contextmanager
def serving(handler: Callable[[socket.socket, threading.Event], None]) -> Iterator[tuple[int, threading.Event]]:
    """A thread accepting one connection on a loopback port and running `handler` on it.

    Yields (port, release): a handler that stalls waits on `release`, which is set when
    the block ends, so the thread always finishes; it is joined with a deadline.
    """
    release = threading.Event()
    listener = socket.create_server((LOOPBACK, 0))
    listener.settimeout(DEADLINE_S)
    failures: list[BaseException] = []

    def serve() -> None:
        try:
            conn, _ = listener.accept()
        except OSError as err:            # nobody connected (a test that failed early)
            failures.append(err)
            return
        with conn:
            conn.settimeout(DEADLINE_S)
            try:
                handler(conn, release)
            except OSError:               # the client gave up first, as a timeout test's does
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], release
    finally:
        release.set()
        thread.join(timeout=5)            # a connection still in the backlog is served before the listener closes
        listener.close()
        thread.join(timeout=DEADLINE_S)
        assert not thread.is_alive()


def read_request(conn: socket.socket) -> bytes:
    """An HTTP request's head (bounded: 64 KiB)."""
    head = b""
    while b"\r\n\r\n" not in head and len(head) < 65536:
        chunk = conn.recv(4096)
        if not chunk:
            break
        head += chunk
    return head


def http_head(length: int) -> bytes:
    return f"HTTP/1.1 200 OK\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n".encode()


def free_port() -> int:
    with socket.create_server((LOOPBACK, 0)) as probe:
        return probe.getsockname()[1]


def connect_with_retries(port: int) -> socket.socket:
    """Connect to a loopback port that a subprocess is about to listen on (bounded: DEADLINE_S)."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        try:
            return socket.create_connection((LOOPBACK, port), timeout=DEADLINE_S)
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


# ---------------------------------------------------------------- http


def test_http_dump_equals_the_local_dump(http_server, local_dump, tmp_path):
    out = tmp_path / "out.npz"
    proc = run_cli("pmtdec", "-i", f"{http_server}/x.pmt", "--dump-prompts", out)
    assert proc.returncode == 0, proc.stderr
    assert_same_dump(out, local_dump)


def test_pmtprobe_reads_a_url(http_server, stream_file):
    remote = run_cli("pmtprobe", "-of", "json", "--show-units", f"{http_server}/x.pmt")
    local = run_cli("pmtprobe", "-of", "json", "--show-units", stream_file)
    assert remote.returncode == 0, remote.stderr
    assert json.loads(remote.stdout) == json.loads(local.stdout)


@pytest.mark.parametrize("path, message", [("missing.pmt", "HTTP 404 Not Found")])
def test_http_404_is_one_line_and_writes_nothing(http_server, tmp_path, path, message):
    url = f"{http_server}/{path}"
    line = error_line(run_cli("pmtdec", "-i", url, "--dump-prompts", tmp_path / "out.npz"), "pmtdec")
    assert line == f"pmtdec: error: {url}: {message}"
    assert nothing_written(tmp_path)


def test_http_500_is_one_line(tmp_path):
    def fail(conn, release):
        read_request(conn)
        conn.sendall(b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    with serving(fail) as (port, _):
        line = error_line(run_cli("pmtdec", "-i", f"http://{LOOPBACK}:{port}/x.pmt", "--dump-prompts",
                                  tmp_path / "out.npz"), "pmtdec")
    assert line == f"pmtdec: error: http://{LOOPBACK}:{port}/x.pmt: HTTP 500 Internal Server Error"
    assert nothing_written(tmp_path)


@pytest.mark.parametrize("scheme", ["http", "tcp"])
def test_connection_refused_is_one_line_and_writes_nothing(tmp_path, scheme):
    port = free_port()                    # nothing listens there any more
    url = f"{scheme}://{LOOPBACK}:{port}" + ("/x.pmt" if scheme == "http" else "")
    line = error_line(run_cli("pmtdec", "-i", url, "--dump-prompts", tmp_path / "out.npz"), "pmtdec")
    assert line == f"pmtdec: error: {url}: connection refused"
    assert nothing_written(tmp_path)


def test_credentials_are_redacted_in_errors(http_server, tmp_path):
    base = http_server.replace("http://", "http://alice:s3cret@")
    proc = run_cli("pmtdec", "-i", f"{base}/missing.pmt?token=t0k&n=1", "--dump-prompts", tmp_path / "out.npz")
    line = error_line(proc, "pmtdec")
    assert "s3cret" not in line and "t0k" not in line
    assert line == f"pmtdec: error: {http_server.replace('http://', 'http://alice:***@')}/missing.pmt?token=***&n=1: " \
                   f"HTTP 404 Not Found"


@pytest.mark.parametrize("url, shown", [
    ("http://u:pw@h/x.pmt", "http://u:***@h/x.pmt"),
    ("https://u@h:8443/x.pmt", "https://u@h:8443/x.pmt"),
    ("http://u:p%40ss@h/x?api_key=k&Signature=s&listen", "http://u:***@h/x?api_key=***&Signature=***&listen"),
    ("tcp://127.0.0.1:9000?listen", "tcp://127.0.0.1:9000?listen"),
    ("http://u:pw@[::1/x", "http://u:***@[::1/x"),           # unparsable: still hidden
])
def test_redact(url, shown):
    assert network.redact(url) == shown


def test_credentials_are_sent_as_basic_auth_and_the_body_is_read_as_it_arrives():
    """The first units are parsed while the server still holds the rest of the body."""
    data = build_stream(RICH_SPEC).data
    half = len(data) // 2
    seen: list[bytes] = []
    rest_sent = threading.Event()

    def dribble(conn, release):
        seen.append(read_request(conn))
        conn.sendall(http_head(len(data)) + data[:half])
        release.wait(DEADLINE_S)
        conn.sendall(data[half:])
        rest_sent.set()

    url = "http://alice:s3cret@{}:{}/x.pmt"
    with serving(dribble) as (port, release), network.open_input(url.format(LOOPBACK, port)) as handle:
        units = read_units(handle)
        first = next(units)
        assert not rest_sent.is_set()             # parsed from the first half alone
        release.set()
        rest = list(units)
    assert b"Authorization: Basic " + base64.b64encode(b"alice:s3cret") + b"\r\n" in seen[0]
    assert b"alice" not in seen[0].split(b"\r\n")[0]    # the request line carries no credentials
    local = list(read_units(io.BytesIO(data)))
    assert [u.offset for u in [first, *rest]] == [u.offset for u in local]


def test_a_short_body_is_an_error_not_a_shorter_stream():
    def short(conn, release):
        read_request(conn)
        conn.sendall(http_head(1000) + b"\x00" * 100)

    with serving(short) as (port, _), network.open_input(f"http://{LOOPBACK}:{port}/x.pmt") as handle, \
            pytest.raises(network.NetworkError, match="connection closed after 100 of 1000 bytes"):
        handle.read(1000)


# ---------------------------------------------------------------- tcp


def send_and_close(data: bytes):
    def handler(conn, release):
        conn.sendall(data)
    return handler


def test_tcp_client_dump_equals_the_local_dump(stream_file, local_dump, tmp_path):
    out = tmp_path / "out.npz"
    with serving(send_and_close(stream_file.read_bytes())) as (port, _):
        proc = run_cli("pmtdec", "-i", f"tcp://{LOOPBACK}:{port}", "--dump-prompts", out)
    assert proc.returncode == 0, proc.stderr
    assert_same_dump(out, local_dump)


def listening(prog: str, *args, talk: Callable[[socket.socket], object]) -> tuple[object, str]:
    """Run `prog` listening on `tcp://127.0.0.1:PORT?listen` (PORT given as `{port}` in `args`),
    connect to it and `talk`; return what `talk` returned and the command's stderr, the command
    having exited 0. The command is killed if it is still running at the end."""
    port = free_port()
    command = subprocess.Popen([sys.executable, "-m", f"libpromptus.cli.{prog}",
                                *(str(a).format(port=port) for a in args)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        with connect_with_retries(port) as client:
            client.settimeout(DEADLINE_S)
            result = talk(client)
        _, stderr = command.communicate(timeout=DEADLINE_S)
    finally:
        if command.poll() is None:
            command.kill()
            command.communicate(timeout=DEADLINE_S)
    assert command.returncode == 0, stderr
    return result, stderr.decode()


def test_tcp_listen_accepts_one_connection(stream_file, local_dump, tmp_path):
    out = tmp_path / "out.npz"
    url = f"tcp://{LOOPBACK}:{{port}}?listen"
    _, stderr = listening("pmtdec", "-i", url, "--dump-prompts", out,
                          talk=lambda client: client.sendall(stream_file.read_bytes()))
    assert f"listening on tcp://{LOOPBACK}:" in stderr
    assert_same_dump(out, local_dump)


def test_tcp_input_is_read_as_it_arrives(stream_file):
    data = stream_file.read_bytes()
    half = len(data) // 2
    rest_sent = threading.Event()

    def dribble(conn, release):
        conn.sendall(data[:half])
        release.wait(DEADLINE_S)
        conn.sendall(data[half:])
        rest_sent.set()

    with serving(dribble) as (port, release), network.open_input(f"tcp://{LOOPBACK}:{port}") as handle:
        units = read_units(handle)
        next(units)
        assert not rest_sent.is_set()
        release.set()
        assert len(list(units)) == len(list(read_units(io.BytesIO(data)))) - 1


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> tuple[Path, bytes]:
    """A prompt directory and the stream `pmtenc -f promptus-dir` makes of it as a file."""
    folder = tmp_path_factory.mktemp("import")
    prompts = write_prompt_dir(folder / "prompts")
    proc = run_cli("pmtenc", "-f", "promptus-dir", "-i", prompts, folder / "x.pmt")
    assert proc.returncode == 0, proc.stderr
    return prompts, (folder / "x.pmt").read_bytes()


def receive_all(conn: socket.socket, limit: int = 1 << 24) -> bytes:
    chunks, size = [], 0
    while size < limit:
        chunk = conn.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def test_pmtenc_writes_to_a_tcp_server(imported):
    prompts, want = imported
    got: list[bytes] = []
    with serving(lambda conn, release: got.append(receive_all(conn))) as (port, _):
        proc = run_cli("pmtenc", "-f", "promptus-dir", "-i", prompts, f"tcp://{LOOPBACK}:{port}")
    assert proc.returncode == 0, proc.stderr
    assert got == [want]


def test_pmtenc_listens_for_its_reader(imported):
    prompts, want = imported
    got, _ = listening("pmtenc", "-f", "promptus-dir", "-i", prompts, f"tcp://{LOOPBACK}:{{port}}?listen",
                       talk=receive_all)
    assert got == want


def test_an_aborted_output_resets_the_connection():
    """A failed write must not look like a shorter, complete stream to the reader."""
    outcome: list[object] = []

    def drain(conn, release):
        try:
            outcome.append(receive_all(conn))
        except ConnectionResetError as err:
            outcome.append(err)

    with serving(drain) as (port, _):
        sink = network.open_output(f"tcp://{LOOPBACK}:{port}")
        sink.write(b"partial")
        sink.abort()
    assert len(outcome) == 1 and isinstance(outcome[0], ConnectionResetError)


def test_http_output_is_refused(stream_file):
    url = f"http://{LOOPBACK}:1/out.npz"
    line = error_line(run_cli("pmtdec", "-i", stream_file, "--dump-prompts", url), "pmtdec")
    assert line.startswith(f"pmtdec: error: {url}: http:// output is not supported")


# ---------------------------------------------------------------- timeouts


@pytest.mark.parametrize("scheme, sent, message", [
    ("http", "head", "timed out waiting for the HTTP response after 1 s"),
    ("http", "body", "timed out waiting for data after 1 s"),
    ("tcp", "body", "timed out waiting for data after 1 s"),
])
def test_a_stalled_server_times_out_in_one_line(stream_file, tmp_path, scheme, sent, message):
    data = stream_file.read_bytes()

    def stall(conn, release):
        if scheme == "http":
            read_request(conn)
            if sent == "body":
                conn.sendall(http_head(len(data)) + data[:20])
        else:
            conn.sendall(data[:20])
        release.wait(DEADLINE_S)

    with serving(stall) as (port, _):
        url = f"{scheme}://{LOOPBACK}:{port}" + ("/x.pmt" if scheme == "http" else "")
        start = time.monotonic()
        proc = run_cli("pmtdec", "-i", url, "--dump-prompts", tmp_path / "out.npz",
                       env={network.RW_TIMEOUT_ENV: STALL_TIMEOUT})
        elapsed = time.monotonic() - start
    assert error_line(proc, "pmtdec") == f"pmtdec: error: {url}: {message}"
    assert elapsed < 20
    assert nothing_written(tmp_path)


def test_listen_timeout_is_one_line(tmp_path):
    url = f"tcp://{LOOPBACK}:{free_port()}?listen&listen_timeout=500"
    line = error_line(run_cli("pmtdec", "-loglevel", "error", "-i", url, "--dump-prompts", tmp_path / "o.npz"),
                      "pmtdec")
    assert line == f"pmtdec: error: {url}: timed out waiting for a connection after 0.5 s"


@pytest.mark.parametrize("url, message", [
    ("tcp://127.0.0.1", "a tcp:// URL is tcp://HOST:PORT[?listen]"),
    ("tcp://127.0.0.1:9?listen=2", "only one connection is accepted"),
    ("tcp://127.0.0.1:9?rcvbuf=1", "unknown tcp option 'rcvbuf'"),
    ("tcp://127.0.0.1:9?timeout=soon", "timeout=soon: not a whole number"),
])
def test_bad_tcp_urls(url, message):
    with pytest.raises(network.NetworkURLError, match=message.replace("?", r"\?").replace("[", r"\[")):
        network.open_input(url)


def test_a_bad_timeout_setting_is_one_line(tmp_path, http_server):
    line = error_line(run_cli("pmtdec", "-i", f"{http_server}/x.pmt", "--dump-prompts", tmp_path / "o.npz",
                              env={network.RW_TIMEOUT_ENV: "soon"}), "pmtdec")
    assert line == f"pmtdec: error: {network.RW_TIMEOUT_ENV}=soon: not a number of seconds >= 0 (0: no timeout)"
