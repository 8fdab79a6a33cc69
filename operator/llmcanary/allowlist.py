"""Host allowlists: which hosts a tenant-chosen URL may make the operator contact. Pure.

Whoever may create an LLMDeployment chooses some URLs the operator then requests from
inside the cluster (``spec.preflight.dependencies``, ``spec.canary.analysis.prometheus
.address``), so each is held to an operator-side list of fnmatch host patterns. Shared
by the preflight probes and the Prometheus source, which sit in different layers.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Sequence
from fnmatch import fnmatchcase

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_HOSTNAME = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")
_NUMERIC_LABEL = re.compile(r"^(?:0x[0-9a-f]*|[0-9]+)$")


def as_ip(host: str) -> IPAddress | None:
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


def normalize(host: str) -> str:
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
    host = normalize(host)
    if not host:
        return False
    ip = as_ip(host)
    if ip is not None:
        return any(as_ip(normalize(p)) == ip for p in patterns)
    if len(host) > 253 or not _HOSTNAME.match(host):
        return False
    return any(fnmatchcase(host, normalize(p)) for p in patterns if as_ip(normalize(p)) is None)


def printable(text: str, limit: int = 255) -> str:
    """Server- or user-supplied text as it may appear in a message."""
    clean = "".join(c if c.isprintable() and not c.isspace() else "?" for c in text)
    return clean if len(clean) <= limit else clean[:limit] + "..."
