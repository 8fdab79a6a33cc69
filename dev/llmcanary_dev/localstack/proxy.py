"""The local stack's gateway: Debian's nginx, splitting traffic by the HTTPRoutes' weights.

In a cluster a Gateway implementation reads the operator's HTTPRoute; here nginx does.
Every HTTPRoute is served under ``/<namespace>/<name>/`` (the prefix is stripped before
it reaches Triton), and when there is exactly one route, under ``/`` too. Each request
is assigned to a backend Service by ``split_clients`` over ``$request_id`` with the
route's weights, then balanced over that Service's Ready pods. A backend with no Ready
pod answers 503, as a Gateway does for a backend without endpoints.

The access log (``access.log``, one JSON object per request) names the route and the
backend of every request: :func:`count_requests` reads the share each arm really got.

:func:`render_config` is pure; :class:`Nginx` writes, checks (``nginx -t``) and reloads it.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from llmcanary_dev.localstack.process import ManagedProcess

__all__ = [
    "Backend",
    "Nginx",
    "ProxyError",
    "Route",
    "count_requests",
    "render_config",
    "upstream",
]


class ProxyError(RuntimeError):
    pass


@dataclass(frozen=True)
class Backend:
    service: str
    weight: int
    endpoints: tuple[str, ...]  # "IP:PORT" of Ready pods


@dataclass(frozen=True)
class Route:
    namespace: str
    name: str
    backends: tuple[Backend, ...]

    @property
    def prefix(self) -> str:
        return f"/{self.namespace}/{self.name}"


def upstream(namespace: str, service: str) -> str:
    """The nginx upstream of one backend Service: its in-cluster DNS name, short form."""
    return f"{service}.{namespace}"


def _percentages(backends: Sequence[Backend]) -> list[tuple[Backend, str]]:
    """split_clients shares (two decimals, never above 100 in total); the last backend
    with weight takes ``*``, the remainder, so rounding loses no request."""
    weighted = [b for b in backends if b.weight > 0]
    total = sum(b.weight for b in weighted)
    shares: list[tuple[Backend, str]] = []
    for i, backend in enumerate(weighted):
        if i == len(weighted) - 1:
            shares.append((backend, "*"))
        else:
            shares.append((backend, f"{int(backend.weight * 10000 / total) / 100:.2f}%"))
    return shares


def render_config(
    routes: Sequence[Route], *, listen: str, work_dir: Path, user: str | None = None
) -> str:
    """nginx.conf for ``routes``; ``listen`` is "ADDRESS:PORT"."""
    unavailable = work_dir / "unavailable.sock"
    lines = [
        *([f"user {user};"] if user else []),
        "worker_processes 1;",
        "daemon off;",
        f"pid {work_dir / 'nginx.pid'};",
        f"error_log {work_dir / 'error.log'} warn;",
        "events { worker_connections 4096; }",
        "http {",
        f"  client_body_temp_path {work_dir / 'tmp' / 'body'};",
        f"  proxy_temp_path {work_dir / 'tmp' / 'proxy'};",
        f"  fastcgi_temp_path {work_dir / 'tmp' / 'fastcgi'};",
        f"  uwsgi_temp_path {work_dir / 'tmp' / 'uwsgi'};",
        f"  scgi_temp_path {work_dir / 'tmp' / 'scgi'};",
        '  log_format arms escape=json \'{"time":$msec,"route":"$llmcanary_route",'
        '"backend":"$llmcanary_backend","status":$status,'
        '"upstream":"$upstream_addr","seconds":$request_time}\';',
        f"  access_log {work_dir / 'access.log'} arms;",
        "  server_tokens off;",
    ]
    for index, route in enumerate(routes):
        variable = f"$llmcanary_split_{index}"
        shares = _percentages(route.backends)
        if shares:
            lines.append(f'  split_clients "${{request_id}}" {variable} {{')
            lines += [
                f"    {share} {upstream(route.namespace, backend.service)};"
                for backend, share in shares
            ]
            lines.append("  }")
        for backend in route.backends:
            lines.append(f"  upstream {upstream(route.namespace, backend.service)} {{")
            if backend.endpoints:
                lines += [f"    server {endpoint};" for endpoint in backend.endpoints]
                lines.append("    keepalive 32;")
            else:
                lines.append(f"    server unix:{unavailable};")
            lines.append("  }")
    lines += [
        "  server {",
        f"    listen unix:{unavailable};",
        # Defines the log's variables for requests that no route location sets.
        '    set $llmcanary_route "";',
        '    set $llmcanary_backend "";',
        "    default_type application/json;",
        '    return 503 \'{"error":"no ready endpoints for this backend"}\';',
        "  }",
        "  server {",
        f"    listen {listen};",
        "    proxy_http_version 1.1;",
        '    proxy_set_header Connection "";',
        "    proxy_buffering off;",  # server-sent events: each token as it comes
        "    proxy_read_timeout 300s;",
        "    default_type application/json;",
    ]
    for index, route in enumerate(routes):
        prefixes = [route.prefix + "/"] + (["/"] if len(routes) == 1 else [])
        for prefix in prefixes:
            lines.append(f"    location {prefix} {{")
            lines.append(f'      set $llmcanary_route "{route.namespace}/{route.name}";')
            if _percentages(route.backends):
                lines.append(f"      set $llmcanary_backend $llmcanary_split_{index};")
                if prefix != "/":
                    lines.append(f"      rewrite ^{route.prefix}(/.*)$ $1 break;")
                lines.append("      proxy_pass http://$llmcanary_backend;")
            else:
                lines.append('      return 503 \'{"error":"every backend has weight 0"}\';')
            lines.append("    }")
    if not routes:
        lines.append('    location / { return 404 \'{"error":"no HTTPRoute yet"}\'; }')
    lines += ["  }", "}"]
    return "\n".join(lines) + "\n"


def count_requests(
    access_log: Path, since: float = 0.0, until: float = math.inf
) -> Counter[tuple[str, str]]:
    """Requests per ``(route, backend Service)`` logged in ``[since, until]`` (epoch s)."""
    counts: Counter[tuple[str, str]] = Counter()
    try:
        text = access_log.read_text(errors="replace")
    except FileNotFoundError:
        return counts
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if since <= float(entry.get("time", 0)) <= until and entry.get("backend"):
            counts[(entry["route"], entry["backend"].split(".", 1)[0])] += 1
    return counts


class Nginx:
    def __init__(self, binary: Path, work_dir: Path, listen: str) -> None:
        self.binary = binary
        self.work_dir = work_dir
        self.listen = listen
        self.config_file = work_dir / "nginx.conf"
        self.access_log = work_dir / "access.log"
        self.process = ManagedProcess("nginx", work_dir / "nginx.out")
        self._rendered: str | None = None

    def _render(self, routes: Sequence[Route]) -> str:
        user = "root" if os.geteuid() == 0 else None
        return render_config(routes, listen=self.listen, work_dir=self.work_dir, user=user)

    def _check(self, text: str) -> None:
        candidate = self.work_dir / "nginx.conf.new"
        candidate.write_text(text)
        done = subprocess.run(
            [str(self.binary), "-t", "-q", "-p", str(self.work_dir), "-c", str(candidate)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise ProxyError(f"nginx rejected its configuration: {done.stderr.strip()}")
        candidate.replace(self.config_file)

    def start(self, routes: Sequence[Route] = ()) -> None:
        if not self.binary.is_file():
            raise ProxyError(f"{self.binary} is missing: run `make nginx-bin`")
        for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.work_dir / "tmp" / sub).mkdir(parents=True, exist_ok=True)
        text = self._render(routes)
        self._check(text)
        self._rendered = text
        self.process.start(
            [str(self.binary), "-p", str(self.work_dir), "-c", str(self.config_file)],
            cwd=self.work_dir,
        )

    def update(self, routes: Sequence[Route]) -> bool:
        """Rewrite and reload (SIGHUP: in-flight requests finish on the old workers)
        when the routes changed; returns whether it reloaded."""
        text = self._render(routes)
        if text == self._rendered:
            return False
        self._check(text)
        self._rendered = text
        self.process.signal(signal.SIGHUP)
        return True

    def stop(self) -> None:
        self.process.stop()
