"""One bounded HTTP GET to an address a tenant chose (the metric sources' transport), and
the watchdog that bounds it (which the preflight's dependency probes share).

Whoever may create an LLMDeployment names the address and the operator connects from
inside the cluster, so the exchange is held to what the operator can afford and shows
nothing of the address it should not: a base URL only (no userinfo, query or fragment, a
plain path prefix); a socket opened to that host by us (no proxy from the environment, no
pool); no redirect followed; the whole exchange (name resolution, connect, TLS, request,
headers, body) under one deadline that a watchdog enforces whatever the server trickles;
and at most :data:`MAX_ANSWER_BYTES` read.
"""

from __future__ import annotations

import contextlib
import http.client
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

from llmcanary.allowlist import as_ip, normalize, printable

MAX_ANSWER_BYTES = 8 * 1024 * 1024  # the most of one answer the operator reads
MAX_ERROR_BYTES = 64 * 1024  # of a non-200 answer, read only for its errorType
USER_AGENT = "llmcanary"

_CHUNK = 64 * 1024

T = TypeVar("T")
_PATH = re.compile(r"^(?:/[A-Za-z0-9._~-]+)*/?$")


# --- the address ----------------------------------------------------------------------


def display_address(address: str) -> str:
    """``address`` as messages and logs show it: never any userinfo (everything between
    the scheme and the last ``@`` goes), printable, at most 300 characters."""
    text = address.strip()
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "", text
    if "@" in rest:
        rest = rest.rsplit("@", 1)[1]
    return printable(f"{scheme}{sep}{rest}".rstrip("/"), 300)


@dataclass(frozen=True)
class Endpoint:
    scheme: str  # http or https
    host: str  # as connected to: lower case, no brackets
    port: int
    prefix: str  # the path before /api/v1/..., no trailing slash

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def parse_address(address: str) -> Endpoint | str:
    """The endpoint ``address`` names, or why the operator refuses it (nothing quoted
    but the scheme, and no userinfo)."""
    text = address.strip()
    if "@" in text:
        return (
            "the address carries credentials (user:password@), which the operator does not"
            " send: give Prometheus' base URL without them"
        )
    if "?" in text or "#" in text:
        return (
            "the address has a query (?) or a fragment (#): give Prometheus' base URL only"
            " (scheme, host, port, and a path prefix if it has one)"
        )
    if "\\" in text or any(not c.isprintable() or c.isspace() for c in text):
        return "not a valid URL"
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return "not a valid URL (host or port)"
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        return f"scheme {printable(scheme, 16)!r} is not supported (http or https)"
    if not parts.hostname:
        return "the address names no host"
    if not _PATH.match(parts.path) or any(s in (".", "..") for s in parts.path.split("/")):
        return (
            "the path prefix may hold only letters, digits and . _ ~ - between slashes"
            " (no . or .. segments)"
        )
    if port is None:
        port = 443 if scheme == "https" else 80
    return Endpoint(scheme, normalize(parts.hostname), port, parts.path.rstrip("/"))


# --- one exchange, under a watchdog ---------------------------------------------------


class Cancelled(Exception):
    """The deadline passed (the watchdog cut the sockets, or the reader saw the time)."""


class TooLarge(Exception):
    """A 200 answer longer than :data:`MAX_ANSWER_BYTES`."""


@dataclass
class Sockets:
    """The sockets of a running exchange, so that its watchdog can cut them."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    open: list[socket.socket] = field(default_factory=list)
    cancelled: bool = False

    def add(self, sock: socket.socket) -> None:
        with self.lock:
            if not self.cancelled:
                self.open.append(sock)
                return
        sock.close()
        raise Cancelled

    def cancel(self) -> None:
        with self.lock:
            self.cancelled = True
            for sock in self.open:
                with contextlib.suppress(OSError):  # wakes a blocked recv; the owner closes
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        with self.lock:
            for sock in self.open:
                sock.close()
            self.open.clear()


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes  # nothing for a redirect; for an error, its start (or nothing)


def _exchange(
    endpoint: Endpoint, target: str, deadline: float, verify: bool, sockets: Sockets
) -> Answer:
    """GET ``target`` from ``endpoint``: its status and (bounded) body."""

    def remaining() -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise Cancelled
        return left

    sock = socket.create_connection((endpoint.host, endpoint.port), timeout=remaining())
    sockets.add(sock)
    if endpoint.scheme == "https":
        context = ssl.create_default_context()
        if not verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        server_hostname = None if as_ip(endpoint.host) else endpoint.host
        sock.settimeout(remaining())
        sock = context.wrap_socket(sock, server_hostname=server_hostname)
        sockets.add(sock)
    conn = http.client.HTTPConnection(endpoint.host, endpoint.port, timeout=remaining())
    conn.sock = sock  # ours: http.client does not connect (or resolve) again
    try:
        conn.putrequest("GET", target, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", endpoint.host_header)
        conn.putheader("User-Agent", USER_AGENT)
        conn.putheader("Accept", "application/json")
        conn.putheader("Accept-Encoding", "identity")
        conn.putheader("Connection", "close")
        conn.endheaders()
        sock.settimeout(remaining())
        response = conn.getresponse()
        status = response.status
        if 300 <= status < 400:
            return Answer(status, b"")  # never followed, never read
        limit = MAX_ANSWER_BYTES if status == 200 else MAX_ERROR_BYTES
        if response.length is not None and response.length > limit:
            if status == 200:
                raise TooLarge
            return Answer(status, b"")
        body = bytearray()
        while True:
            sock.settimeout(remaining())
            chunk = response.read1(_CHUNK)
            if not chunk:
                if response.length:  # fewer bytes than its Content-Length said
                    raise http.client.IncompleteRead(b"", response.length)
                return Answer(status, bytes(body))
            body += chunk
            if len(body) > limit:
                if status == 200:
                    raise TooLarge
                return Answer(status, b"")
    finally:
        conn.close()


def under_watchdog(work: Callable[[Sockets], T], timeout_s: float, name: str) -> T:
    """``work`` in a thread for at most ``timeout_s``: what it returned, or what it raised.

    A socket timeout bounds each operation, not the whole of ``work``, and not name
    resolution; past the deadline the watchdog shuts the sockets ``work`` registered (its
    thread then ends at once, or when a slow resolver returns) and :class:`Cancelled` is
    raised here.
    """
    sockets = Sockets()
    outcome: list[tuple[bool, Any]] = []  # (returned, value or exception)

    def run() -> None:
        try:
            outcome.append((True, work(sockets)))
        except Exception as exc:  # re-raised by the caller's thread
            outcome.append((False, exc))
        finally:
            sockets.close()

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        sockets.cancel()
        raise Cancelled
    if not outcome:
        raise Cancelled
    returned, value = outcome[0]
    if not returned:
        raise value
    result: T = value
    return result


def bounded_get(endpoint: Endpoint, target: str, timeout_s: float, verify: bool) -> Answer:
    """GET ``target`` from ``endpoint`` in at most ``timeout_s`` in all (see
    :func:`under_watchdog`): :class:`Cancelled` past it, else whatever the exchange raised."""
    deadline = time.monotonic() + timeout_s
    return under_watchdog(
        lambda sockets: _exchange(endpoint, target, deadline, verify, sockets),
        timeout_s,
        "prometheus-query",
    )
