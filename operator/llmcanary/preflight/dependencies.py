"""Dependency health: probe the endpoints a deployment declares, inside a host allowlist.

Whoever may create an LLMDeployment chooses these URLs, and the operator makes the
requests from inside the cluster, so the probes are held on a short leash:

- only hosts matching the operator's allowlist (``LLMCANARY_PREFLIGHT_ALLOWED_HOSTS``,
  fnmatch patterns, default in-cluster service names) are contacted; an IP literal only
  when a pattern names that very address; the host is the one :mod:`urllib.parse` finds
  (``http://ok.svc@evil.com/`` is ``evil.com``), and it is the host we connect to;
- a ``*.svc`` name is a name, not a place: it is read as SERVICE.NAMESPACE.svc and that
  Service is looked up; an ExternalName Service (an alias for any host) and a Service
  without a selector (its endpoints are written by hand and may point anywhere) are
  refused, unless a pattern names that very host;
- the name is resolved once per try, and every address it resolves to is checked before
  any connection: a loopback, link-local (169.254.0.0/16, fe80::/10), unspecified or
  cloud metadata address is refused unless a pattern is that very address; the
  connection then goes to the checked address, not to the name resolved again;
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

import http.client
import ipaddress
import re
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import quote, urljoin, urlsplit

from llmcanary.allowlist import IPAddress
from llmcanary.allowlist import as_ip as _as_ip
from llmcanary.allowlist import host_allowed as host_allowed  # re-exported
from llmcanary.allowlist import normalize as _normalize
from llmcanary.allowlist import printable as _printable
from llmcanary.api.spec import Dependency
from llmcanary.api.status import DependencyResult
from llmcanary.kube.client import ObjectReader
from llmcanary.kube.errors import Forbidden
from llmcanary.transport import Cancelled, Sockets, under_watchdog

Clock = Callable[[], float]

ALLOWLIST_SETTING = "LLMCANARY_PREFLIGHT_ALLOWED_HOSTS"
MAX_REDIRECTS = 3
BACKOFF_S = 0.1  # after a fast failure (refused, reset, wrong status), before the next try
MAX_WORKERS = 8  # probe_all's thread pool
USER_AGENT = "llmcanary-preflight"

#: ``(host, port)`` to the addresses a connection may go to (in order); raises
#: ``socket.gaierror`` when the name does not resolve.
Resolver = Callable[[str, int], Sequence[IPAddress]]

# Instance metadata services: credentials of the node or the cloud account.
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    {
        ipaddress.IPv4Address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack, ...
        ipaddress.IPv4Address("169.254.170.2"),  # AWS ECS task credentials
        ipaddress.IPv4Address("100.100.100.200"),  # Alibaba Cloud
        ipaddress.IPv6Address("fd00:ec2::254"),  # AWS over IPv6
    }
)
_THIS_NETWORK = ipaddress.IPv4Network("0.0.0.0/8")  # connect() to 0.x reaches this host
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # the well-known prefix: an IPv4 inside
_WILDCARD = re.compile(r"[*?\[]")

# --- the allowlist (pure, shared with the Prometheus source) --------------------------


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


# --- where a name leads: the Service behind it, the addresses it resolves to -----------


def _listed(host: str, patterns: Sequence[str]) -> bool:
    """Whether a pattern without wildcards is ``host`` itself (a deliberate choice)."""
    host = _normalize(host)
    return any(_normalize(p) == host for p in patterns if not _WILDCARD.search(p))


def service_of(host: str) -> tuple[str, str] | str | None:
    """The ``(namespace, name)`` of the Service a cluster DNS name leads to; None when
    ``host`` has no ``svc`` label (not such a name); else why it names no Service. Pure.

    Read the way cluster DNS reads it, up to its last ``svc`` label (the cluster domain,
    if any, follows): ``SERVICE.NAMESPACE.svc``, or ``POD.SERVICE.NAMESPACE.svc`` for
    one pod of a headless Service. A shorter name would be completed by the operator's
    own DNS search path, not by the tenant's namespace.
    """
    host = _normalize(host)
    labels = host.split(".")
    if "svc" not in labels or _as_ip(host) is not None:
        return None
    before = labels[: len(labels) - 1 - labels[::-1].index("svc")]
    if len(before) == 2:
        return before[1], before[0]
    if len(before) == 3:
        return before[2], before[1]
    return (
        f"host {_printable(host)} does not name a Service as SERVICE.NAMESPACE.svc"
        " (or POD.SERVICE.NAMESPACE.svc); name it so, or ask the platform team to list"
        f" {_printable(host)} itself in {ALLOWLIST_SETTING}"
    )


def service_refusal(host: str, services: ObjectReader, patterns: Sequence[str]) -> str | None:
    """None if the Service behind ``host`` may be probed, else why not.

    A ``*.svc`` name must lead to a Service with a selector: an ExternalName Service is
    an alias for any host (``metadata.google.internal``, a corporate name), and the
    endpoints of a Service without a selector are written by hand (node IPs, another
    tenant's pods, any address). A host that a pattern names exactly, without
    wildcards, is the platform team's choice and is not looked up. API errors other
    than a refusal (403) are raised: the preflight is tried again, not failed.
    """
    if _listed(host, patterns):
        return None
    found = service_of(host)
    if not isinstance(found, tuple):
        return found
    namespace, name = found
    try:
        service = services.get("v1", "Service", namespace, name)
    except Forbidden:
        return (
            f"the operator may not read Service {namespace}/{name} to check where it leads"
            f" (RBAC: get on services in namespace {namespace}); use a Service in a namespace"
            " the operator serves"
        )
    if service is None:
        return f"Service {namespace}/{name} does not exist"
    spec = service.get("spec") or {}
    if spec.get("type") == "ExternalName":
        return (
            f"Service {namespace}/{name} is an ExternalName Service, an alias that may lead"
            " anywhere, and is not probed: put the host it names in the URL (the allowlist"
            f" {ALLOWLIST_SETTING} applies to it), or give the Service a selector"
        )
    if not spec.get("selector"):
        return (
            f"Service {namespace}/{name} has no selector: its endpoints are written by hand"
            " and may point anywhere, so it is not probed; give it a selector of the pods it"
            f" serves, or ask the platform team to list {_printable(_normalize(host))} itself"
            f" in {ALLOWLIST_SETTING}"
        )
    return None


def resolve_host(host: str, port: int) -> list[IPAddress]:
    """The addresses the system resolver gives ``host`` for a TCP connection, in order."""
    found: list[IPAddress] = []
    for *_, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        ip = ipaddress.ip_address(sockaddr[0])
        if ip not in found:
            found.append(ip)
    return found


def _unscoped(ip: IPAddress) -> IPAddress:
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
        return ipaddress.IPv6Address(str(ip).split("%", 1)[0])
    return ip


def address_refusal(ip: IPAddress, patterns: Sequence[str]) -> str | None:
    """None if the operator may connect to ``ip``, else what kind of address it is. Pure.

    Refused: loopback, link-local (169.254.0.0/16, fe80::/10, where the node's and the
    cloud's metadata services answer), unspecified (0.0.0.0/8, ``::``: this host),
    multicast, and the cloud metadata addresses, also when carried inside IPv6
    (``::ffff:127.0.0.1``, NAT64 ``64:ff9b::a9fe:a9fe``); unless a pattern is that very
    address: the platform team listed it.
    """
    ip = _unscoped(ip)
    if any(_as_ip(_normalize(p)) == ip for p in patterns):
        return None
    inner: IPAddress = ip
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            inner = ip.ipv4_mapped
        elif ip in _NAT64:
            inner = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in METADATA_ADDRESSES or inner in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if inner.is_loopback:
        return "a loopback address"
    if inner.is_link_local:
        return "a link-local address"
    if inner.is_unspecified or (
        isinstance(inner, ipaddress.IPv4Address) and inner in _THIS_NETWORK
    ):
        return "an unspecified address"
    if inner.is_multicast:
        return "a multicast address"
    return None


class _Refused(Exception):
    """A try that must not connect where its name leads (final: not retried)."""


@dataclass(frozen=True)
class _Guard:
    """What a dependency probe may reach: the allowlist, the Services behind ``*.svc``
    names (when ``services`` is given), and the addresses names resolve to."""

    patterns: Sequence[str]
    services: ObjectReader | None = None
    resolve: Resolver = resolve_host

    def host_refusal(self, host: str) -> str | None:
        if not host_allowed(host, self.patterns):
            return _refusal(host, self.patterns)
        if self.services is not None:
            return service_refusal(host, self.services, self.patterns)
        return None

    def addresses(self, host: str, port: int) -> Sequence[IPAddress]:
        """Where ``host`` leads, every address checked; raises :class:`_Refused`."""
        found = self.resolve(host, port)
        if not found:
            raise socket.gaierror(socket.EAI_NONAME, "no address")
        for ip in found:
            kind = address_refusal(ip, self.patterns)
            if kind is not None:
                raise _Refused(
                    f"host {_printable(host)} resolves to {_unscoped(ip)}, {kind}, which is"
                    f" not probed unless {ALLOWLIST_SETTING} lists that address"
                )
        return found


# --- one try, under a watchdog --------------------------------------------------------


@dataclass
class _Try:
    """What one try found. ``final`` failures are not retried (policy, not luck)."""

    ok: bool
    message: str
    status: int | None = None
    final: bool = False
    redirects: int = 0


def _open(
    target: _Target, timeout_s: float, sockets: Sockets, guard: _Guard | None
) -> socket.socket:
    """A TCP connection to ``target``: without a guard, wherever the name resolves to;
    with one, to the addresses it checked (in order), never to the name resolved again."""
    if guard is None:
        sock = socket.create_connection((target.host, target.port), timeout=timeout_s)
        sockets.add(sock)
        return sock
    error: OSError | None = None
    for ip in guard.addresses(target.host, target.port):
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sockets.add(sock)  # before connect: the watchdog can cut a hanging connect
        sock.settimeout(timeout_s)
        try:
            sock.connect((str(ip), target.port))
            return sock
        except OSError as exc:
            sock.close()
            error = exc
    assert error is not None  # addresses() never returns an empty list
    raise error


def _connect(
    target: _Target, timeout_s: float, sockets: Sockets, guard: _Guard | None
) -> socket.socket:
    sock = _open(target, timeout_s, sockets, guard)
    if target.scheme == "https":
        context = ssl.create_default_context()
        server_hostname = None if _as_ip(target.host) else target.host
        tls = context.wrap_socket(sock, server_hostname=server_hostname)
        sockets.add(tls)
        return tls
    return sock


def _http_once(
    target: _Target, timeout_s: float, sockets: Sockets, guard: _Guard | None
) -> tuple[int, str | None]:
    """GET ``target``: its status and Location header; the body is never read."""
    sock = _connect(target, timeout_s, sockets, guard)
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
    guard: _Guard | None,
    max_redirects: int,
    sockets: Sockets,
) -> _Try:
    current = url
    for hop in range(max_redirects + 1):
        target = _parse(current)
        if isinstance(target, str):
            return _Try(False, target, final=True, redirects=hop)
        status, location = _http_once(target, timeout_s, sockets, guard)
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
        if guard is not None and (refused := guard.host_refusal(next_target.host)):
            return _Try(
                False,
                f"HTTP {status} redirect to {_printable(next_target.host)} refused: {refused}",
                status=status,
                final=True,
            )
        current = nxt
    raise AssertionError("unreachable")  # pragma: no cover


def _tcp_once(url: str, timeout_s: float, sockets: Sockets, guard: _Guard | None) -> _Try:
    target = _parse(url)
    if isinstance(target, str):
        return _Try(False, target, final=True)
    _connect(target, timeout_s, sockets, guard)
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


def _bounded(work: Callable[[Sockets], _Try], timeout_s: float) -> _Try | None:
    """Run one try for at most ``timeout_s`` (:func:`~llmcanary.transport.under_watchdog`);
    None if it ran out of time. Every failure is an answer."""

    def answered(sockets: Sockets) -> _Try:
        try:
            return work(sockets)
        except (Cancelled, TimeoutError):
            raise Cancelled from None  # out of time: the caller says so, with the timeout
        except _Refused as exc:
            return _Try(False, str(exc), final=True)
        except Exception as exc:
            return _Try(False, _failure(exc))

    try:
        return under_watchdog(answered, timeout_s, "preflight-probe")
    except Cancelled:
        return None


# --- probes ---------------------------------------------------------------------------


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def _probe_url(
    name: str,
    url: str,
    *,
    timeout_ms: int,
    expect: int,
    guard: _Guard | None,
    tries: int,
    clock: Clock,
    max_redirects: int = MAX_REDIRECTS,
) -> DependencyResult:
    target = _parse(url)
    if isinstance(target, str):
        return DependencyResult(name=name, ok=False, message=target)
    if guard is not None and (refused := guard.host_refusal(target.host)) is not None:
        return DependencyResult(name=name, ok=False, message=refused)
    timeout_s = timeout_ms / 1000

    def work(sockets: Sockets) -> _Try:
        if target.scheme == "tcp":
            return _tcp_once(url, timeout_s, sockets, guard)
        return _http_chain(url, expect, timeout_s, guard, max_redirects, sockets)

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
    services: ObjectReader | None = None,
    resolve: Resolver = resolve_host,
) -> DependencyResult:
    """Probe one declared dependency; ``retries`` is the number of tries in all.

    HTTP(S): a GET answered with ``expectStatus`` (redirects followed only onto allowed
    hosts, at most :data:`MAX_REDIRECTS`); TCP: a connection accepted. Every try gets the
    dependency's timeout; all of them together at most ``retries x timeout``. Allowlist
    refusals, refused Services and addresses, and refused redirects are not retried.
    ``latencyMs`` is that of the last try. ``services``: where ``*.svc`` names are looked
    up (:func:`service_refusal`; None: they are not); ``resolve``: the name resolver.
    """
    return _probe_url(
        dependency.name,
        dependency.url,
        timeout_ms=dependency.timeout_milliseconds,
        expect=dependency.expect_status,
        guard=_Guard(list(patterns), services, resolve),
        tries=retries,
        clock=clock,
    )


def probe_all(
    dependencies: Sequence[Dependency],
    patterns: Sequence[str],
    *,
    clock: Clock = time.monotonic,
    retries: int = 2,
    services: ObjectReader | None = None,
    resolve: Resolver = resolve_host,
) -> list[DependencyResult]:
    """:func:`probe` every dependency at once (a small thread pool); results in order."""
    if not dependencies:
        return []

    def one(dependency: Dependency) -> DependencyResult:
        return probe(
            dependency, patterns, clock=clock, retries=retries, services=services, resolve=resolve
        )

    with ThreadPoolExecutor(
        max_workers=min(MAX_WORKERS, len(dependencies)), thread_name_prefix="preflight"
    ) as pool:
        return list(pool.map(one, dependencies))


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
            guard=None,
            tries=retries,
            clock=clock,
            max_redirects=0,
        )

    with ThreadPoolExecutor(
        max_workers=min(MAX_WORKERS, len(checks)), thread_name_prefix="preflight-canary"
    ) as pool:
        return list(pool.map(one, checks))
