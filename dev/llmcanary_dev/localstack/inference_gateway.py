"""The local stack's gateway for InferencePool backends, and its endpoint pickers.

A stand-in, and the docs say so (docs/local-stack.md): no Gateway implementation that
routes InferencePool backends runs on these machines, and the endpoint picker's image
cannot run without a container runtime. What it does, on the routing table and the
statuses of :mod:`.inference_routes`:

- serves HTTP on the stack's inference port: a request's Host picks the route, the
  route's weights pick a pool (independently per request, as Envoy's weighted clusters
  do), and the pool's picker picks the pod with the fewest requests in flight (the
  EPP's default scorers weigh queue depth and KV-cache use; Triton here has no KV cache).
  A pool whose picker has no Ready pod refuses with 503 under ``FailClose`` and sends to
  any of its pods under ``FailOpen``; a backend that does not resolve gets 500, as the
  Gateway API asks of an implementation;
- records, as the picker pod that scheduled each request would (the EPP v1.5's counting:
  ``inference_objective_request_total`` once a pod is chosen, ``..._request_error_total``
  with ``ModelServerError`` for a pod's answer other than 200 and ``ServiceUnavailable``
  for a request no pod could take), ``..._request_duration_seconds`` with the EPP's own
  buckets and ``..._running_requests``,
  and serves them on a port of the stack's address per picker pod, where Prometheus
  scrapes each with the labels the chart's PodMonitor would give it. TTFT and TPOT are
  not recorded: the EPP records them only with its latency-predictor plugin, which this
  does not play;
- writes each request to a JSON access log (``access.log``): which pool served it, so
  that :func:`count_requests` reads the share each arm really got.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import math
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import ClientError, ClientSession, ClientTimeout, TCPConnector, web

from llmcanary_dev.localstack.inference_routes import Key, Picker, Pool, Table

__all__ = ["EPP_LATENCY_BUCKETS", "InferenceGateway", "PickerMetrics", "count_requests"]

log = logging.getLogger(__name__)

#: The EPP's generalLatencyBuckets (seconds), v1.5.0 pkg/epp/metrics: what a real picker
#: gives the judge, coarse as they are (docs/canary.md, "endpointPicker").
EPP_LATENCY_BUCKETS = (
    0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2, 3, 4, 5, 6, 8, 10, 15, 20,
    30, 45, 60, 120, 180, 240, 300, 360, 480, 600, 900, 1200, 1800, 2700, 3600,
)  # fmt: skip
# Hop-by-hop headers (RFC 9110 7.6.1) and what the proxy sets itself.
_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "transfer-encoding", "upgrade", "host", "content-length",
}  # fmt: skip


def _label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@dataclass
class PickerMetrics:
    """One picker pod's per-request series, in the Prometheus text format."""

    requests: Counter[str] = field(default_factory=Counter)
    errors: Counter[tuple[str, str]] = field(default_factory=Counter)
    running: Counter[str] = field(default_factory=Counter)
    buckets: dict[str, list[int]] = field(default_factory=dict)
    sums: dict[str, float] = field(default_factory=dict)
    observed: Counter[str] = field(default_factory=Counter)
    ready_pods: int = 0
    pool: str = ""

    def observe(self, model: str, seconds: float) -> None:
        counts = self.buckets.setdefault(model, [0] * len(EPP_LATENCY_BUCKETS))
        for i, bound in enumerate(EPP_LATENCY_BUCKETS):
            if seconds <= bound:
                counts[i] += 1
        self.sums[model] = self.sums.get(model, 0.0) + seconds
        self.observed[model] += 1

    def text(self) -> str:
        out: list[str] = []

        def model_labels(model: str) -> str:
            m = _label_value(model)
            return f'model_name="{m}",target_model_name="{m}"'

        out.append("# TYPE inference_objective_request_total counter")
        for model, n in sorted(self.requests.items()):
            out.append(
                f'inference_objective_request_total{{{model_labels(model)},priority=""}} {n}'
            )
        out.append("# TYPE inference_objective_request_error_total counter")
        for (model, code), n in sorted(self.errors.items()):
            out.append(
                f"inference_objective_request_error_total{{{model_labels(model)},"
                f'error_code="{code}"}} {n}'
            )
        out.append("# TYPE inference_objective_request_duration_seconds histogram")
        name = "inference_objective_request_duration_seconds"
        for model, counts in sorted(self.buckets.items()):
            labels = model_labels(model)
            for bound, n in zip(EPP_LATENCY_BUCKETS, counts, strict=True):
                out.append(f'{name}_bucket{{{labels},le="{bound:g}"}} {n}')
            observed = self.observed[model]
            out.append(f'{name}_bucket{{{labels},le="+Inf"}} {observed}')
            out.append(f"{name}_sum{{{labels}}} {self.sums.get(model, 0.0):.6f}")
            out.append(f"{name}_count{{{labels}}} {observed}")
        out.append("# TYPE inference_objective_running_requests gauge")
        for model, n in sorted(self.running.items()):
            out.append(
                f'inference_objective_running_requests{{model_name="{_label_value(model)}"}} {n}'
            )
        out.append("# TYPE inference_pool_ready_pods gauge")
        out.append(
            f'inference_pool_ready_pods{{name="{_label_value(self.pool)}"}} {self.ready_pods}'
        )
        return "\n".join(out) + "\n"


def model_of(body: bytes, path: str) -> str:
    """The model a request asks for: the OpenAI body's ``model`` (what the EPP parses),
    else Triton's ``/v2/models/<model>/...`` path."""
    try:
        parsed = json.loads(body) if body else None
        if isinstance(parsed, dict) and isinstance(parsed.get("model"), str):
            return str(parsed["model"])
    except ValueError:
        pass
    parts = path.split("/")
    if len(parts) > 3 and parts[1] == "v2" and parts[2] == "models":
        return parts[3]
    return ""


@dataclass(frozen=True)
class Logged:
    time: float
    route: str
    pool: str  # "" when no pool took it
    status: int


def read_access_log(access_log: Path) -> Iterator[Logged]:
    try:
        text = access_log.read_text(errors="replace")
    except FileNotFoundError:
        return
    for line in text.splitlines():
        try:
            entry = json.loads(line)
            yield Logged(float(entry["start"]), entry["route"], entry["pool"], int(entry["status"]))
        except (ValueError, KeyError):
            continue


def count_requests(access_log: Path, since: float = 0.0, until: float = math.inf) -> Counter[str]:
    """Requests per pool (``namespace/name``) that started in ``[since, until]`` (epoch
    s); ``""`` counts those no pool took."""
    return Counter(r.pool for r in read_access_log(access_log) if since <= r.time <= until)


class InferenceGateway:
    """The HTTP server and the pickers' metrics, on an event loop of their own thread;
    :meth:`update` hands it a new table from the stack's sync loop."""

    def __init__(self, work_dir: Path, *, address: str = "127.0.0.1", port: int) -> None:
        self.work_dir = work_dir
        self.address = address
        self.port = port
        self.access_log = work_dir / "access.log"
        self._table = Table()
        self._metrics: dict[Key, PickerMetrics] = {}  # per picker pod (namespace, name)
        self._in_flight: Counter[str] = Counter()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._session: ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self._metrics_runner: web.AppRunner | None = None
        # Per picker pod, its metrics site and port: the loop thread's only.
        self._sites: dict[Key, tuple[web.BaseSite, int]] = {}
        # What Prometheus scrapes, rebuilt by the loop thread and swapped whole.
        self._targets: tuple[tuple[str, dict[str, str]], ...] = ()
        self._log_file: Any = None
        self._ready = threading.Event()
        self._failed: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}"

    # --- lifecycle -------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._log_file = self.access_log.open("a", buffering=1)
        self._thread = threading.Thread(target=self._run, name="inference-gateway", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout) or self._failed is not None:
            raise RuntimeError(f"the inference gateway did not start: {self._failed}")

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported to start()
            self._failed = exc
            self._ready.set()
            return
        self._ready.set()
        loop.run_forever()

    async def _serve(self) -> None:
        self._session = ClientSession(
            connector=TCPConnector(limit=0), timeout=ClientTimeout(total=None, connect=5)
        )
        app = web.Application(client_max_size=64 * 1024**2)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # A stopping stack does not wait a whole generation for a stream to finish.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.address, self.port).start()
        metrics = web.Application()
        metrics.router.add_get("/metrics", self._serve_metrics)
        self._metrics_runner = web.AppRunner(metrics, access_log=None, shutdown_timeout=1.0)
        await self._metrics_runner.setup()

    def stop(self) -> None:
        """Stop serving; never raises (the stack stops its other parts after this)."""
        loop = self._loop
        if loop is None or not loop.is_running():
            if self._log_file is not None:
                self._log_file.close()
            return

        async def shutdown() -> None:
            for site, _ in self._sites.values():
                await site.stop()
            for runner in (self._runner, self._metrics_runner):
                if runner is not None:
                    await runner.cleanup()
            if self._session is not None:
                await self._session.close()

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(timeout=10)
        except Exception as exc:  # a stop that hangs must not keep the others running
            log.warning("the inference gateway did not stop cleanly", extra={"error": str(exc)})
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._log_file is not None:
            self._log_file.close()

    # --- the table -------------------------------------------------------------------

    def update(self, table: Table) -> None:
        """Serve ``table`` from now on, and each of its pickers' metrics at its address."""
        self._table = table  # one reference swap: a request reads one table or the other
        if self._loop is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._sync_sites(table), self._loop).result(10)
        except concurrent.futures.TimeoutError:
            log.warning("the pickers' metrics sites are slow to follow; next pass")

    def targets(self) -> list[tuple[str, dict[str, str]]]:
        """Prometheus targets of the pickers whose metrics are served, PodMonitor-labelled."""
        return list(self._targets)

    async def _sync_sites(self, table: Table) -> None:
        """Serve each Ready picker pod's metrics on a port of its own on the stack's
        address. Not on the pod's IP: KWOK hands those out from memory, and restarted
        while pods live (the stack restarts it once) it can give two pods one address."""
        assert self._metrics_runner is not None
        wanted: dict[Key, tuple[Picker, Pool]] = {
            (p.namespace, p.name): (p, pool) for pool in table.pools.values() for p in pool.pickers
        }
        for key in [k for k in self._sites if k not in wanted]:
            site, _ = self._sites.pop(key)
            await site.stop()
        # A picker pod that is gone takes its series with it, as a real one does.
        self._metrics = {k: v for k, v in self._metrics.items() if k in wanted}
        for key, (_, pool) in wanted.items():
            metrics = self._metrics.setdefault(key, PickerMetrics())
            metrics.pool, metrics.ready_pods = pool.key[1], len(pool.endpoints)
            if key in self._sites:
                continue
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((self.address, 0))
            site = web.SockSite(self._metrics_runner, sock)
            await site.start()
            self._sites[key] = (site, sock.getsockname()[1])
        self._targets = tuple(
            (f"{self.address}:{self._sites[key][1]}", picker.labels)
            for key, (picker, _) in wanted.items()
        )

    async def _serve_metrics(self, request: web.Request) -> web.Response:
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        port = sockname[1] if sockname else None
        key = next((k for k, (_, p) in self._sites.items() if p == port), None)
        if key is None:
            return web.Response(status=404, text="no picker here\n")
        metrics = self._metrics.get(key, PickerMetrics())
        return web.Response(text=metrics.text(), content_type="text/plain")

    # --- requests --------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        table = self._table
        started, start_wall = time.monotonic(), time.time()
        host = request.host.rsplit(":", 1)[0] if request.host else ""
        route = table.route_for(host)
        if route is None:
            return web.Response(
                status=404, text=f"no HTTPRoute of the inference Gateway for {host}\n"
            )
        backends = [b for b in route.backends if b.weight > 0]
        if not backends:
            return self._logged(route.key, "", 500, start_wall, "no backend with a weight\n")
        backend = random.choices(backends, weights=[b.weight for b in backends])[0]
        pool = table.pools.get(backend.pool) if backend.pool else None
        if pool is None:
            return self._logged(
                route.key, "", 500, start_wall, f"backend {backend.name} unresolved\n"
            )
        pool_name = f"{pool.key[0]}/{pool.key[1]}"
        picker = pool.scheduling
        if picker is None and not pool.fail_open:
            return self._logged(
                route.key, pool_name, 503, start_wall, "the pool's endpoint picker is not serving\n"
            )
        body = await request.read()
        model = model_of(body, request.path)
        metrics = (
            self._metrics.setdefault((picker.namespace, picker.name), PickerMetrics())
            if picker
            else None
        )
        if not pool.endpoints:
            # As the EPP counts a request it could not schedule: an error, never a request.
            if metrics is not None:
                metrics.errors[(model, "ServiceUnavailable")] += 1
            return self._logged(route.key, pool_name, 503, start_wall, "no Ready pod in the pool\n")
        if metrics is not None:
            metrics.requests[model] += 1  # scheduled
        if picker is None:
            endpoint = random.choice(pool.endpoints)  # FailOpen: any pod
        else:
            endpoint = min(pool.endpoints, key=lambda e: (self._in_flight[e], random.random()))
        self._in_flight[endpoint] += 1
        if metrics is not None:
            metrics.running[model] += 1
        status = 502
        try:
            response, status = await self._forward(request, body, endpoint)
            return response
        except (TimeoutError, ClientError) as exc:
            return web.Response(status=502, text=f"upstream {endpoint}: {exc}\n")
        finally:
            self._in_flight[endpoint] -= 1
            if metrics is not None:
                metrics.running[model] -= 1
                metrics.observe(model, time.monotonic() - started)
                if status != 200:  # the EPP: any status but 200 from the pod
                    metrics.errors[(model, "ModelServerError")] += 1
            self._log(route.key, pool_name, status, start_wall, endpoint)

    async def _forward(
        self, request: web.Request, body: bytes, endpoint: str
    ) -> tuple[web.StreamResponse, int]:
        """Send the request to ``endpoint`` and stream its answer back. Returns the
        response and the status the request ends with: the upstream's, or 502 when the
        upstream broke off a stream already begun (the client sees it cut)."""
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        async with self._session.request(
            request.method, f"http://{endpoint}{request.path_qs}", headers=headers, data=body
        ) as upstream:
            response = web.StreamResponse(
                status=upstream.status,
                headers={k: v for k, v in upstream.headers.items() if k.lower() not in _HOP},
            )
            await response.prepare(request)
            try:
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
            except (TimeoutError, ClientError):
                return response, 502
            return response, upstream.status

    def _logged(self, route: Key, pool: str, status: int, start: float, text: str) -> web.Response:
        self._log(route, pool, status, start, "")
        return web.Response(status=status, text=text)

    def _log(self, route: Key, pool: str, status: int, start: float, endpoint: str) -> None:
        if self._log_file is None:
            return
        entry = {
            "start": round(start, 6),
            "route": f"{route[0]}/{route[1]}",
            "pool": pool,
            "endpoint": endpoint,
            "status": status,
            "duration_ms": round((time.time() - start) * 1000, 3),
        }
        self._log_file.write(json.dumps(entry) + "\n")
