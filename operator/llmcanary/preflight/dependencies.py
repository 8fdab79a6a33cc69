"""Dependency health: probe the endpoints a deployment declares, inside a host allowlist.

Whoever may create an LLMDeployment chooses these URLs, and the operator makes the
requests from inside the cluster, so the probes are held on a short leash:

- only hosts matching the operator's allowlist (``LLMCANARY_PREFLIGHT_ALLOWED_HOSTS``,
  fnmatch patterns, default in-cluster service names) are contacted; an IP literal only
  when a pattern names that very address; the host is the one :mod:`urllib.parse` finds
  (``http://ok.svc@evil.com/`` is ``evil.com``), and it is the host we connect to;
- redirects are never followed blindly: a 3xx is followed (at most
  :data:`MAX_REDIRECTS` hops) only when its ``Location`` host passes the same check;
- the time is bounded: every try gets the dependency's timeout for everything (name
  resolution, connect, TLS, request, status line and headers), and all tries together
  stay within ``tries x timeout`` (a short backoff after a fast failure comes out of the
  failed try's own slot);
- response bodies are never read, stored or logged: a probe reads the status line and
  the headers, then hangs up. Messages carry no server text but the status code and, for
  a refused redirect, the host it pointed at.

The transport is the standard library's :mod:`http.client` over sockets we open
ourselves, not ``requests``: ``requests`` follows redirects unless told not to, routes
through ``HTTP(S)_PROXY`` from the environment (the allowlist would check one host and
the operator would talk to another), pools connections, and its timeouts bound each
socket operation, not a try; with our own socket the host checked is the host
connected to, a watchdog can end a try at its deadline, and nothing reads a body.

The canary's own Triton endpoints (:func:`model_ready`) skip the allowlist: the
operator found those pod addresses itself.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from urllib.parse import quote, urljoin, urlsplit

from llmcanary.api.spec import Dependency
from llmcanary.api.status import DependencyResult

Clock = Callable[[], float]

ALLOWLIST_SETTING = "LLMCANARY_PREFLIGHT_ALLOWED_HOSTS"
MAX_REDIRECTS = 3
BACKOFF_S = 0.1  # after a fast failure (refused, reset, wrong status), before the next try
MAX_WORKERS = 8  # probe_all's thread pool
USER_AGENT = "llmcanary-preflight"

_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_HOSTNAME = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")
_NUMERIC_LABEL = re.compile(r"^(?:0x[0-9a-f]*|[0-9]+)$")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


# --- the allowlist (pure) -------------------------------------------------------------


def _as_ip(host: str) -> IPAddress | None:
    """``host`` as an IP address if a resolver would take it for one, else None.

    Besides the usual spellings this catches the forms ``inet_aton`` (and so
    ``getaddrinfo``) accepts: ``127.1``, ``0x7f.0.0.1``, ``2130706433``, ``017700000001``.
    """
    text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    labels = text.split(".")
    if 1 <= len(labels) <= 4 and all(_NUMERIC_LABEL.match(label) for label in labels):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(text))
        except OSError:
            return None
    return None


def _normalize(host: str) -> str:
    """Lower case, one trailing dot dropped (``a.svc.`` names what ``a.svc`` names)."""
    host = host.strip().lower()
    return host[:-1] if host.endswith(".") and not host.endswith("..") else host


def host_allowed(host: str, patterns: Sequence[str]) -> bool:
    """Whether the operator may contact ``host`` under the allowlist ``patterns``.

    Names match fnmatch patterns, case-insensitively, after dropping one trailing dot
    (from host and pattern alike); anything that is not a well-formed host name is
    refused (empty labels, ``%``, backslashes, non-ASCII). An IP literal, in any
    spelling a resolver accepts, is allowed only if a pattern is that same address:
    wildcards never match an address.
    """
    host = _normalize(host)
    if not host:
        return False
    ip = _as_ip(host)
    if ip is not None:
        return any(_as_ip(_normalize(p)) == ip for p in patterns)
    if len(host) > 253 or not _HOSTNAME.match(host):
        return False
    return any(fnmatchcase(host, _normalize(p)) for p in patterns if _as_ip(_normalize(p)) is None)


def _printable(text: str, limit: int = 255) -> str:
    """Server- or user-supplied text as it may appear in a message."""
    clean = "".join(c if c.isprintable() and not c.isspace() else "?" for c in text)
    return clean if len(clean) <= limit else clean[:limit] + "..."


def _refusal(host: str, patterns: Sequence[str]) -> str:
    return (
        f"host {_printable(host)} is not in the operator's allowlist"
        f" ({ALLOWLIST_SETTING}: {', '.join(patterns) or 'empty'});"
        " ask the platform team to allow it"
    )


@dataclass(frozen=True)
class _Target:
    scheme: str  # http, https or tcp
    host: str  # as connected to: no brackets, no trailing-dot tricks
    port: int
    path: str  # path and query, for HTTP


def _parse(url: str) -> _Target | str:
    """The target of ``url``, or a message saying why it is not one."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        return f"not a valid URL: {exc}"
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https", "tcp"):
        return f"scheme {_printable(scheme)!r} is not supported (http, https or tcp)"
    host = parts.hostname  # after userinfo, lower case, no brackets
    if not host:
        return "the URL names no host"
    if port is None:
        if scheme == "tcp":
            return "a tcp:// URL needs a port"
        port = 443 if scheme == "https" else 80
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return _Target(scheme, _normalize(host), port, path)


def check_url(url: str, patterns: Sequence[str]) -> str | None:
    """None if the operator may probe ``url``, else the message that refuses it."""
    target = _parse(url)
    if isinstance(target, str):
        return target
    if not host_allowed(target.host, patterns):
        return _refusal(target.host, patterns)
    return None


# --- one try, under a watchdog --------------------------------------------------------


class _Cancelled(Exception):
    pass


@dataclass
class _Try:
    """What one try found. ``final`` failures are not retried (policy, not luck)."""

    ok: bool
    message: str
    status: int | None = None
    final: bool = False
    redirects: int = 0


@dataclass
class _Sockets:
    """The sockets of a running try, so that its watchdog can cut them."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    open: list[socket.socket] = field(default_factory=list)
    cancelled: bool = False

    def add(self, sock: socket.socket) -> None:
        with self.lock:
            if not self.cancelled:
                self.open.append(sock)
                return
        sock.close()
        raise _Cancelled

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


def _connect(target: _Target, timeout_s: float, sockets: _Sockets) -> socket.socket:
    sock = socket.create_connection((target.host, target.port), timeout=timeout_s)
    sockets.add(sock)
    if target.scheme == "https":
        context = ssl.create_default_context()
        server_hostname = None if _as_ip(target.host) else target.host
        tls = context.wrap_socket(sock, server_hostname=server_hostname)
        sockets.add(tls)
        return tls
    return sock


def _http_once(target: _Target, timeout_s: float, sockets: _Sockets) -> tuple[int, str | None]:
    """GET ``target``: its status and Location header; the body is never read."""
    sock = _connect(target, timeout_s, sockets)
    conn = http.client.HTTPConnection(target.host, target.port, timeout=timeout_s)
    conn.sock = sock  # ours: http.client does not connect (or resolve) again
    try:
        conn.putrequest("GET", target.path, skip_accept_encoding=True)
        conn.putheader("User-Agent", USER_AGENT)
        conn.putheader("Accept", "*/*")
        conn.putheader("Connection", "close")
        conn.endheaders()
        response = conn.getresponse()  # status line and headers only
        return response.status, response.getheader("Location")
    finally:
        conn.close()  # hang up: whatever body there is stays unread


def _http_chain(
    url: str,
    expect: int,
    timeout_s: float,
    patterns: Sequence[str] | None,
    max_redirects: int,
    sockets: _Sockets,
) -> _Try:
    current = url
    for hop in range(max_redirects + 1):
        target = _parse(current)
        if isinstance(target, str):
            return _Try(False, target, final=True, redirects=hop)
        status, location = _http_once(target, timeout_s, sockets)
        if status == expect:
            return _Try(True, f"HTTP {status}", status=status, redirects=hop)
        if not (300 <= status < 400 and location and max_redirects):
            return _Try(False, f"HTTP {status}, expected {expect}", status=status, redirects=hop)
        if hop == max_redirects:
            return _Try(False, f"more than {max_redirects} redirects", status=status, final=True)
        nxt = urljoin(current, location.strip())
        next_target = _parse(nxt)
        if isinstance(next_target, str) or next_target.scheme not in ("http", "https"):
            why = next_target if isinstance(next_target, str) else "not an http(s) URL"
            return _Try(False, f"HTTP {status} redirect refused: {why}", status=status, final=True)
        if patterns is not None and not host_allowed(next_target.host, patterns):
            return _Try(
                False,
                f"HTTP {status} redirect to {_printable(next_target.host)} refused: "
                + _refusal(next_target.host, patterns),
                status=status,
                final=True,
            )
        current = nxt
    raise AssertionError("unreachable")  # pragma: no cover


def _tcp_once(url: str, timeout_s: float, sockets: _Sockets) -> _Try:
    target = _parse(url)
    if isinstance(target, str):
        return _Try(False, target, final=True)
    _connect(target, timeout_s, sockets)
    return _Try(True, "connected")


def _failure(exc: BaseException) -> str:
    """What went wrong, in words; never server text (BadStatusLine quotes the body)."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError | BrokenPipeError):
        return "connection reset"
    if isinstance(exc, socket.gaierror):
        return "the host name does not resolve"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not accepted: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return "TLS handshake failed"
    if isinstance(exc, http.client.InvalidURL):
        return "not a valid URL path"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "the server closed the connection without an answer"
    if isinstance(exc, http.client.HTTPException):
        return "the answer is not HTTP"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return type(exc).__name__


def _bounded(work: Callable[[_Sockets], _Try], timeout_s: float) -> _Try | None:
    """Run one try in a thread for at most ``timeout_s``; None if it ran out of time.

    The socket timeout alone would bound each operation, not the try, and not name
    resolution; past the deadline the watchdog shuts the try's sockets (the thread then
    ends at once, or when a slow resolver returns) and the caller moves on.
    """
    sockets = _Sockets()
    outcome: list[_Try] = []

    def run() -> None:
        try:
            outcome.append(work(sockets))
        except (_Cancelled, TimeoutError):
            pass  # out of time: the caller says so, with the timeout
        except Exception as exc:  # every failure is an answer
            outcome.append(_Try(False, _failure(exc)))
        finally:
            sockets.close()

    thread = threading.Thread(target=run, name="preflight-probe", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        sockets.cancel()
        return None
    return outcome[0] if outcome else None


# --- probes ---------------------------------------------------------------------------


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def _probe_url(
    name: str,
    url: str,
    *,
    timeout_ms: int,
    expect: int,
    patterns: Sequence[str] | None,
    tries: int,
    clock: Clock,
    max_redirects: int = MAX_REDIRECTS,
) -> DependencyResult:
    if patterns is not None and (refused := check_url(url, patterns)) is not None:
        return DependencyResult(name=name, ok=False, message=refused)
    target = _parse(url)
    if isinstance(target, str):
        return DependencyResult(name=name, ok=False, message=target)
    timeout_s = timeout_ms / 1000

    def work(sockets: _Sockets) -> _Try:
        if target.scheme == "tcp":
            return _tcp_once(url, timeout_s, sockets)
        return _http_chain(url, expect, timeout_s, patterns, max_redirects, sockets)

    tries = max(1, tries)
    latency: float | None = None
    last = _Try(False, "not probed")
    for attempt in range(1, tries + 1):
        started = clock()
        found = _bounded(work, timeout_s)
        latency = clock() - started
        last = found if found is not None else _Try(False, f"timed out after {timeout_ms} ms")
        if last.ok or last.final or attempt == tries:
            break
        # A fast failure waits a little, within its own slot, so that all tries together
        # never take longer than tries x timeout.
        pause = min(BACKOFF_S, timeout_s - latency)
        if pause > 0:
            time.sleep(pause)
    message = last.message
    if last.ok and last.redirects:
        message += f" after {last.redirects} redirect{'s' if last.redirects > 1 else ''}"
    if attempt > 1:
        message += f" ({attempt} tries)"
    return DependencyResult(
        name=name,
        ok=last.ok,
        latency_ms=None if latency is None else _ms(latency),
        status_code=last.status,
        message=message,
    )


def probe(
    dependency: Dependency,
    patterns: Sequence[str],
    *,
    clock: Clock = time.monotonic,
    retries: int = 2,
) -> DependencyResult:
    """Probe one declared dependency; ``retries`` is the number of tries in all.

    HTTP(S): a GET answered with ``expectStatus`` (redirects followed only onto allowed
    hosts, at most :data:`MAX_REDIRECTS`); TCP: a connection accepted. Every try gets the
    dependency's timeout; all of them together at most ``retries x timeout``. Allowlist
    refusals and refused redirects are not retried. ``latencyMs`` is that of the last try.
    """
    return _probe_url(
        dependency.name,
        dependency.url,
        timeout_ms=dependency.timeout_milliseconds,
        expect=dependency.expect_status,
        patterns=list(patterns),
        tries=retries,
        clock=clock,
    )


def probe_all(
    dependencies: Sequence[Dependency],
    patterns: Sequence[str],
    *,
    clock: Clock = time.monotonic,
    retries: int = 2,
) -> list[DependencyResult]:
    """:func:`probe` every dependency at once (a small thread pool); results in order."""
    if not dependencies:
        return []
    with ThreadPoolExecutor(
        max_workers=min(MAX_WORKERS, len(dependencies)), thread_name_prefix="preflight"
    ) as pool:
        return list(
            pool.map(lambda d: probe(d, patterns, clock=clock, retries=retries), dependencies)
        )


def model_ready(
    pods: Sequence[tuple[str, str]],
    model: str,
    timeout_s: float,
    *,
    clock: Clock = time.monotonic,
    retries: int = 1,
) -> list[DependencyResult]:
    """The canary's own Triton checks, for ``(pod name, base URL)`` pairs.

    For each pod, ``GET {base}/v2/health/ready`` (named ``canary/<pod>/health``) and
    ``GET {base}/v2/models/<model>/ready`` (``canary/<pod>/model``), 200 expected, all at
    once, in that order. The base URL is ``http://POD_IP:8000``: the operator found the
    address itself, so no allowlist applies, and no redirect is followed. One try by
    default: the caller asks again on its next pass.
    """
    checks: list[tuple[str, str]] = []
    for pod, base in pods:
        root = base.rstrip("/")
        checks.append((f"canary/{pod}/health", f"{root}/v2/health/ready"))
        checks.append((f"canary/{pod}/model", f"{root}/v2/models/{quote(model, safe='')}/ready"))
    if not checks:
        return []
    timeout_ms = max(1, round(timeout_s * 1000))

    def one(check: tuple[str, str]) -> DependencyResult:
        return _probe_url(
            check[0],
            check[1],
            timeout_ms=timeout_ms,
            expect=200,
            patterns=None,
            tries=retries,
            clock=clock,
            max_redirects=0,
        )

    with ThreadPoolExecutor(
        max_workers=min(MAX_WORKERS, len(checks)), thread_name_prefix="preflight-canary"
    ) as pool:
        return list(pool.map(one, checks))
