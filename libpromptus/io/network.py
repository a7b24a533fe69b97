"""Network inputs and outputs, named as FFmpeg names them: `http://`, `https://` and `tcp://`.

- `open_input("http://host:port/x.pmt")` (or `https://`) is a progressive download: the
  returned binary file object yields the body as it arrives, so
  `libpromptus.bitstream.read_units` parses the first units while the rest is still on
  the wire. `http://user:pass@host/...` sends the credentials as HTTP Basic
  authentication (never to a host it is redirected to).
- `open_input("tcp://host:port")` connects to a server and reads what it sends;
  `tcp://host:port?listen` listens there and accepts one connection.
  `open_output(url)` writes to the same two `tcp://` forms.

Timeouts (seconds; the environment variables override them, 0 meaning none):

- connecting (TCP connect, TLS handshake): `CONNECT_TIMEOUT_S`, 10 s, `$PROMPTUS_CONNECT_TIMEOUT`;
- reading or writing, the longest wait for the next byte: `HTTP_RW_TIMEOUT_S`, 30 s, for
  HTTP; none for `tcp://` (FFmpeg's default), because a live encoder may say nothing for
  minutes while it fits a keyframe; a peer that is gone is still noticed, by TCP
  keepalive, within about a minute (`KEEPALIVE_*`). `$PROMPTUS_RW_TIMEOUT` sets both;
- `tcp://...?listen` waits for its connection without limit (FFmpeg's default).

A `tcp://` URL also takes FFmpeg's options `timeout=MICROSECONDS` (reading, writing and
connecting) and `listen_timeout=MILLISECONDS`.

Every failure is a `NetworkError` (an `OSError`; `NetworkTimeoutError` is also a
`TimeoutError`) whose `str()` is one line, `URL: what happened`, with the URL passed
through `redact`: a password, or a query value that looks like a secret, never appears
in a message.

Only the standard library is used (urllib.request and socket): it streams, verifies TLS,
follows redirects and honours `$http_proxy`, which is all this needs, so the codec takes
no extra dependency for it.
"""
from __future__ import annotations

import base64
import errno
import http
import http.client
import io
import logging
import math
import os
import re
import socket
import ssl
import struct
import urllib.error
import urllib.request
from typing import BinaryIO
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

from ..errors import PromptusError

log = logging.getLogger("libpromptus")

SCHEMES = ("http", "https", "tcp")
CONNECT_TIMEOUT_S = 10.0
HTTP_RW_TIMEOUT_S = 30.0
TCP_RW_TIMEOUT_S: float | None = None
#: TCP keepalive on `tcp://` sockets: probe after 30 s of silence, every 10 s, give up after 3.
KEEPALIVE_IDLE_S, KEEPALIVE_INTERVAL_S, KEEPALIVE_PROBES = 30, 10, 3
CONNECT_TIMEOUT_ENV = "PROMPTUS_CONNECT_TIMEOUT"
RW_TIMEOUT_ENV = "PROMPTUS_RW_TIMEOUT"
_BUFFER = 64 * 1024
_SECRET_NAME = re.compile(r"pass|pwd|secret|token|key|auth|credential|signature|^sig$", re.IGNORECASE)


class NetworkError(PromptusError, OSError):
    """A network input or output failed; `str()` is `URL: reason`, the URL redacted."""

    def __init__(self, url: str, reason: str, code: int = errno.EIO) -> None:
        super().__init__(code, " ".join(reason.split()), redact(url))

    def __str__(self) -> str:
        return f"{self.filename}: {self.strerror}"


class NetworkTimeoutError(NetworkError, TimeoutError):
    """A connect, read or write took longer than its timeout."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(url, reason, errno.ETIMEDOUT)


class NetworkURLError(PromptusError, ValueError):
    """A URL or timeout setting that cannot be used; the message is one line."""


def is_url(name: str) -> bool:
    """`name` is a network URL this module opens (`http://`, `https://`, `tcp://`)."""
    scheme, sep, _ = str(name).partition("://")
    return bool(sep) and scheme.lower() in SCHEMES


def redact(url: str) -> str:
    """`url` fit to print: a password becomes `***`, and so does a query value named like a secret."""
    url = str(url)
    try:
        parts = urlsplit(url)
    except ValueError:          # e.g. an unbalanced "[" in the host: hide any userinfo by pattern
        return re.sub(r"//([^/?#@:]*):[^/?#]*@", r"//\1:***@", url)
    userinfo, at, host = parts.netloc.rpartition("@")
    if at and ":" in userinfo:
        userinfo = userinfo.partition(":")[0] + ":***"
    query = "&".join(_redact_pair(pair) for pair in parts.query.split("&")) if parts.query else ""
    netloc = f"{userinfo}@{host}" if at else host
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _redact_pair(pair: str) -> str:
    name, eq, value = pair.partition("=")
    return f"{name}=***" if eq and value and _SECRET_NAME.search(unquote(name)) else pair


def open_input(url: str, *, connect_timeout: float | None = None, rw_timeout: float | None = None) -> BinaryIO:
    """A binary file object reading `url` as the bytes arrive; close it when done.

    `read(n)` returns fewer than `n` bytes only at the end of the body or connection.
    Timeouts are in seconds, None for the default (see the module docstring), 0 for none.
    """
    scheme = _scheme(url)
    connect = _pick(connect_timeout, CONNECT_TIMEOUT_ENV, CONNECT_TIMEOUT_S)
    if scheme in ("http", "https"):
        return _open_http(url, connect, _pick(rw_timeout, RW_TIMEOUT_ENV, HTTP_RW_TIMEOUT_S))
    sock = _open_tcp(url, connect, _pick(rw_timeout, RW_TIMEOUT_ENV, TCP_RW_TIMEOUT_S))
    return io.BufferedReader(_SocketReader(url, sock), _BUFFER)   # type: ignore[return-value]


def open_output(url: str, *, connect_timeout: float | None = None,
                rw_timeout: float | None = None) -> NetworkOutput:
    """A binary file object writing to `tcp://host:port` (or `?listen`): `close()` ends the
    stream cleanly, `abort()` resets the connection so the reader sees a failure, not a shorter stream."""
    scheme = _scheme(url)
    if scheme != "tcp":
        raise NetworkURLError(f"{redact(url)}: {scheme}:// output is not supported (write to tcp://HOST:PORT "
                              f"or tcp://HOST:PORT?listen)")
    sock = _open_tcp(url, _pick(connect_timeout, CONNECT_TIMEOUT_ENV, CONNECT_TIMEOUT_S),
                     _pick(rw_timeout, RW_TIMEOUT_ENV, TCP_RW_TIMEOUT_S))
    return NetworkOutput(url, sock)


# ---------------------------------------------------------------- settings


def _scheme(url: str) -> str:
    if not is_url(url):
        raise NetworkURLError(f"{redact(url)}: not a network URL (http://, https:// or tcp://)")
    return str(url).partition("://")[0].lower()


def _seconds(text: str, what: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise NetworkURLError(f"{what}: not a number of seconds >= 0 (0: no timeout)")
    return value or None


def _pick(given: float | None, variable: str, default: float | None) -> float | None:
    """The timeout to use: `given` (0: none), else `$variable` (0: none), else `default`."""
    if given is not None:
        return _seconds(str(given), f"timeout {given}")
    text = os.environ.get(variable, "").strip()
    return _seconds(text, f"{variable}={text}") if text else default


def _describe(err: BaseException) -> str:
    """One line for a socket-level failure."""
    if isinstance(err, socket.gaierror):
        return f"cannot resolve the host name ({err.strerror or err})"
    if isinstance(err, ssl.SSLCertVerificationError):
        return f"TLS certificate not accepted: {err.verify_message or err.reason}"
    if isinstance(err, ssl.SSLError):
        return f"TLS error: {err.reason or err}"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror[:1].lower() + err.strerror[1:]
    return str(err) or type(err).__name__


def _timed_out(url: str, what: str, seconds: float | None) -> NetworkTimeoutError:
    limit = f" after {seconds:g} s" if seconds else ""
    return NetworkTimeoutError(url, f"timed out {what}{limit}")


# ---------------------------------------------------------------- http(s)


def _connection(base: type[http.client.HTTPConnection], rw_timeout: float | None):
    """`base`, but switching from the connect timeout to `rw_timeout` once connected."""

    class Connection(base):            # type: ignore[valid-type,misc]
        def connect(self) -> None:
            super().connect()          # TCP connect (and, for https, the TLS handshake) under the connect timeout
            self.sock.settimeout(rw_timeout)

    return Connection


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, rw_timeout: float | None) -> None:
        super().__init__()
        self._class = _connection(http.client.HTTPConnection, rw_timeout)

    def http_open(self, req):
        return self.do_open(self._class, req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, rw_timeout: float | None) -> None:
        super().__init__()
        self._class = _connection(http.client.HTTPSConnection, rw_timeout)

    def https_open(self, req):
        return self.do_open(self._class, req, context=self._context)


def _open_http(url: str, connect: float | None, rw: float | None) -> BinaryIO:
    parts = urlsplit(url)
    userinfo, at, host = parts.netloc.rpartition("@")
    request = urllib.request.Request(urlunsplit(parts._replace(netloc=host)) if at else url)
    if at:
        user, _, password = userinfo.partition(":")
        token = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode("ascii")
        request.add_unredirected_header("Authorization", f"Basic {token}")
    opener = urllib.request.build_opener(_HTTPHandler(rw), _HTTPSHandler(rw))
    try:
        response = opener.open(request, timeout=connect)
    except urllib.error.HTTPError as err:
        err.close()
        try:
            phrase = http.HTTPStatus(err.code).phrase
        except ValueError:
            phrase = str(err.reason or "")
        raise NetworkError(url, f"HTTP {err.code} {phrase}".rstrip()) from None
    except urllib.error.URLError as err:
        if isinstance(err.reason, TimeoutError):
            raise _timed_out(url, "connecting", connect) from None
        reason = err.reason if isinstance(err.reason, BaseException) else str(err.reason)
        raise NetworkError(url, reason if isinstance(reason, str) else _describe(reason)) from None
    except TimeoutError:
        raise _timed_out(url, "waiting for the HTTP response", rw) from None
    except http.client.HTTPException as err:
        raise NetworkError(url, f"bad HTTP response ({type(err).__name__})") from None
    except (OSError, ValueError) as err:   # ValueError: http.client's InvalidURL (a bad port), ...
        raise NetworkError(url, _describe(err)) from None
    length = response.headers.get("Content-Length")
    expected = int(length) if length and length.isdigit() else None
    return io.BufferedReader(_HTTPReader(url, response, expected, rw), _BUFFER)   # type: ignore[return-value]


class _HTTPReader(io.RawIOBase):
    """An HTTP response body as a raw stream whose every failure is a one-line NetworkError."""

    def __init__(self, url: str, response, expected: int | None, rw: float | None) -> None:
        self._url, self._response, self._expected, self._rw = url, response, expected, rw
        self.received = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        # read1: what has arrived (one socket read at most); readinto would wait to fill all of `buffer`
        try:
            data = self._response.read1(len(buffer))
        except TimeoutError:
            raise _timed_out(self._url, "waiting for data", self._rw) from None
        except http.client.IncompleteRead:
            raise NetworkError(self._url, f"connection closed after {self.received} bytes, inside a chunk") from None
        except http.client.HTTPException as err:
            raise NetworkError(self._url, f"broken HTTP transfer ({type(err).__name__})") from None
        except OSError as err:
            raise NetworkError(self._url, _describe(err)) from None
        count = len(data)
        buffer[:count] = data
        self.received += count
        if not count and len(buffer) and self._expected is not None and self.received < self._expected:
            raise NetworkError(self._url, f"connection closed after {self.received} of {self._expected} bytes")
        return count

    def close(self) -> None:
        if not self.closed:
            self._response.close()
        super().close()


# ---------------------------------------------------------------- tcp


def _tcp_options(url: str, connect: float | None, rw: float | None) -> tuple[str, int, bool, float | None,
                                                                                float | None, float | None]:
    """(host, port, listen, connect timeout, rw timeout, listen timeout) of a `tcp://` URL.

    The URL's `timeout` (FFmpeg's, in microseconds) overrides `connect` and `rw`.
    """
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError as err:
        raise NetworkURLError(f"{redact(url)}: {err}") from None
    if not host or port is None or parts.path not in ("", "/"):
        raise NetworkURLError(f"{redact(url)}: a tcp:// URL is tcp://HOST:PORT[?listen]")
    listen, listen_timeout = False, None
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name == "listen":
            if value not in ("", "0", "1"):
                raise NetworkURLError(f"{redact(url)}: listen={value}: only one connection is accepted (listen=1)")
            listen = value != "0"
        elif name in ("timeout", "listen_timeout"):
            try:
                number = int(value)
            except ValueError:
                raise NetworkURLError(f"{redact(url)}: {name}={value}: not a whole number") from None
            seconds = number / (1e6 if name == "timeout" else 1e3) if number > 0 else None   # FFmpeg's units
            if name == "timeout":
                connect = rw = seconds
            else:
                listen_timeout = seconds
        else:
            raise NetworkURLError(f"{redact(url)}: unknown tcp option {name!r} (listen, timeout, listen_timeout)")
    return host, port, listen, connect, rw, listen_timeout


def _keepalive(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", KEEPALIVE_IDLE_S), ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL_S),
                        ("TCP_KEEPCNT", KEEPALIVE_PROBES)):
        if hasattr(socket, name):      # Linux; elsewhere the system's keepalive defaults apply
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)


def _open_tcp(url: str, connect: float | None, rw: float | None) -> socket.socket:
    host, port, listen, connect, rw, listen_timeout = _tcp_options(url, connect, rw)
    if listen:
        sock = _accept(url, host, port, listen_timeout)
    else:
        try:
            sock = socket.create_connection((host, port), timeout=connect)
        except TimeoutError:
            raise _timed_out(url, "connecting", connect) from None
        except OSError as err:
            raise NetworkError(url, _describe(err), err.errno or errno.EIO) from None
    try:
        sock.settimeout(rw)
        _keepalive(sock)
    except OSError as err:
        sock.close()
        raise NetworkError(url, _describe(err)) from None
    return sock


def _accept(url: str, host: str, port: int, listen_timeout: float | None) -> socket.socket:
    try:
        server = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    except OSError as err:
        raise NetworkError(url, f"cannot listen: {_describe(err)}", err.errno or errno.EIO) from None
    with server:
        server.settimeout(listen_timeout)
        log.info("listening on %s", redact(url))
        try:
            sock, peer = server.accept()
        except TimeoutError:
            raise _timed_out(url, "waiting for a connection", listen_timeout) from None
        except OSError as err:
            raise NetworkError(url, _describe(err)) from None
    log.info("connection from %s port %d", peer[0], peer[1])
    return sock


def _socket_failure(url: str, sock: socket.socket, err: OSError, what: str) -> NetworkError:
    if isinstance(err, TimeoutError):
        return _timed_out(url, what, sock.gettimeout())
    if err.errno == errno.ETIMEDOUT:     # keepalive found the peer gone
        return NetworkTimeoutError(url, "the peer stopped answering (TCP keepalive)")
    return NetworkError(url, _describe(err), err.errno or errno.EIO)


class _SocketReader(io.RawIOBase):
    """A connected socket as a raw input stream: EOF when the peer closes its side."""

    def __init__(self, url: str, sock: socket.socket) -> None:
        self._url, self._sock = url, sock

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        try:
            return self._sock.recv_into(buffer)
        except OSError as err:
            raise _socket_failure(self._url, self._sock, err, "waiting for data") from None

    def close(self) -> None:
        if not self.closed:
            self._sock.close()
        super().close()


class NetworkOutput(io.BufferedIOBase):
    """A connected socket as a buffered binary output (`open_output`)."""

    def __init__(self, url: str, sock: socket.socket) -> None:
        self._url, self._sock = url, sock
        self._pending = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        if self.closed:
            raise ValueError("write to a closed network output")
        self._pending += data
        if len(self._pending) >= _BUFFER:
            self.flush()
        return len(data)

    def flush(self) -> None:
        view = memoryview(self._pending)
        sent = 0
        try:
            while sent < len(view):      # each send moves at least one byte or raises (timeout, reset, ...)
                sent += self._sock.send(view[sent:])
        except OSError as err:
            raise _socket_failure(self._url, self._sock, err, "sending") from None
        finally:
            view.release()
            del self._pending[:sent]

    def close(self) -> None:
        """Send what is buffered and end the stream (FIN): the reader sees a clean end."""
        if self.closed:
            return
        try:
            self.flush()
            try:
                self._sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass               # the peer is already gone: nothing left to tell it
        finally:
            self._sock.close()
            super().close()

    def abort(self) -> None:
        """Drop what is buffered and reset the connection (RST), so the reader fails."""
        if self.closed:
            return
        self._pending.clear()
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self._sock.close()
        super().close()
