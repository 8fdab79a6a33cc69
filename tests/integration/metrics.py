"""Test harness: a real Prometheus, and Triton metrics exporters it scrapes.

- :class:`PrometheusServer` runs Debian's ``prometheus`` (fetched into
  ``$LLMCANARY_CACHE/prometheus/bin`` by ``scripts/ensure-deb-binary.sh``) on a free
  loopback port with its own data directory, scraping every second the targets listed
  in ``<workdir>/targets/*.json`` (file_sd, re-read every second).
- :class:`ExporterFleet` runs one ``triton_metrics_exporter.py`` process per target
  (a pod) and writes the file_sd targets with the labels a PodMonitor would add
  (``namespace``, ``llmdeployment``, ``revision``, ``track``, ``pod``); the behaviour of
  every revision's exporters is set by the test with :meth:`ExporterFleet.set_behaviour`.
- :class:`TargetSync` drives a fleet from the cluster: every ~0.5 s it lists the pods of
  one LLMDeployment and keeps one exporter per Ready pod, with the pod's current labels.
- Optional, off by default (:meth:`ExporterFleet.serve_triton_health`): each pod with an
  IP also gets a :class:`TritonHealthServer` on ``POD_IP:8000`` answering Triton's
  ``/v2/health/ready`` and ``/v2/models/<model>/ready`` (200, or 503 where the test says
  the model is not ready: :meth:`ExporterFleet.set_model_ready`), so that the operator's
  own readiness checks reach something. The dev cluster's pod IPs are loopback
  addresses (127.244.0.0/16), local without configuration, so no traffic leaves the
  machine. Two test runs on one host with clusters that hand out the same pod IPs
  would collide on ``IP:8000`` (the second gets a HarnessError naming the address).

Timings (2 cores): Prometheus is ready ~0.05 s after start; an exporter starts in
~0.06 s; but a new or relabelled target shows in queries only ~5-6 s later, because
Prometheus' discovery manager passes target updates on at most every 5 s (not
configurable in 2.42). Tests wait on what they need (``PrometheusServer.wait_for``).

Fixtures (``conftest_metrics.py``): ``prometheus`` and ``exporter_fleet``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import requests

log = logging.getLogger(__name__)

EXPORTER = Path(__file__).resolve().with_name("triton_metrics_exporter.py")
DEPLOYMENT_LABEL = "llmcanary.io/deployment"
REVISION_LABEL = "llmcanary.io/revision"
TRACK_LABEL = "llmcanary.io/track"


class HarnessError(AssertionError):
    """The harness could not do what a test asked (a failure, not an error in the code)."""


def cache_dir() -> Path:
    return Path(os.environ.get("LLMCANARY_CACHE") or Path.home() / ".cache" / "llmcanary")


def prometheus_binary() -> Path:
    return cache_dir() / "prometheus" / "bin" / "prometheus"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


# --- Prometheus -------------------------------------------------------------------------


class PrometheusServer:
    """A real Prometheus on ``127.0.0.1:<free port>`` for one test (or module).

    ``start()`` after ``stop()`` or ``kill()`` brings it back on the same port and data
    directory, as a restarted Prometheus behind a stable Service address would be.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        binary: Path | None = None,
        scrape_interval: str = "1s",
        evaluation_interval: str = "1s",
    ) -> None:
        self.workdir = workdir
        self.binary = binary or prometheus_binary()
        self.scrape_interval = scrape_interval
        self.evaluation_interval = evaluation_interval
        self.data_dir = workdir / "data"
        self.targets_dir = workdir / "targets"
        self.config_file = workdir / "prometheus.yml"
        self.log_file = workdir / "prometheus.log"
        self.port: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_in: float | None = None  # seconds from start() to ready, last start

    @property
    def url(self) -> str:
        if self.port is None:
            raise HarnessError("Prometheus was never started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _write_config(self) -> None:
        config = {
            "global": {
                "scrape_interval": self.scrape_interval,
                "scrape_timeout": self.scrape_interval,
                "evaluation_interval": self.evaluation_interval,
            },
            "scrape_configs": [
                {
                    "job_name": "triton",
                    "file_sd_configs": [
                        {"files": [str(self.targets_dir / "*.json")], "refresh_interval": "1s"}
                    ],
                }
            ],
        }
        # JSON is YAML: no YAML writer needed.
        self.config_file.write_text(json.dumps(config, indent=2))

    def start(self) -> PrometheusServer:
        if self.running:
            return self
        if not self.binary.exists():
            raise HarnessError(
                f"{self.binary} is missing: run `make prometheus-bin`"
                " (scripts/ensure-deb-binary.sh)"
            )
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(exist_ok=True)
        self.targets_dir.mkdir(exist_ok=True)
        self._write_config()
        if self.port is None:
            self.port = free_port()
        self._started_at = time.monotonic()
        with self.log_file.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    str(self.binary),
                    f"--config.file={self.config_file}",
                    f"--storage.tsdb.path={self.data_dir}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--storage.tsdb.retention.time=1d",
                    "--log.level=info",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
            )
        log.info("prometheus starting", extra={"url": self.url, "pid": self.proc.pid})
        return self

    def wait_ready(self, timeout: float = 30) -> PrometheusServer:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                code = None if self.proc is None else self.proc.returncode
                raise HarnessError(
                    f"Prometheus exited (code {code}) before it was ready;"
                    f" log tail:\n{_tail(self.log_file)}"
                )
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    self.started_in = time.monotonic() - self._started_at
                    return self
            time.sleep(0.05)
        raise HarnessError(
            f"Prometheus at {self.url} not ready after {timeout:.0f}s;"
            f" log tail:\n{_tail(self.log_file)}"
        )

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: Prometheus dies at once (mid-rollout outages)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def log_tail(self, lines: int = 25) -> str:
        return _tail(self.log_file, lines)

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The instant vector ``promql`` answers now; HarnessError with the reason if not."""
        try:
            answer = requests.get(
                f"{self.url}/api/v1/query", params={"query": promql}, timeout=5
            ).json()
        except (requests.RequestException, ValueError) as exc:
            raise HarnessError(f"query {promql!r} to {self.url} failed: {exc}") from None
        if answer.get("status") != "success":
            raise HarnessError(f"query {promql!r} failed: {answer.get('error')}")
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def value(self, promql: str) -> float | None:
        """The single number ``promql`` answers (None for no series)."""
        result = self.query(promql)
        if len(result) > 1:
            raise HarnessError(f"query {promql!r} answered {len(result)} series")
        return float(result[0]["value"][1]) if result else None

    def wait_for(
        self,
        what: str,
        promql: str,
        accept: Callable[[list[dict[str, Any]]], bool],
        timeout: float = 30,
    ) -> list[dict[str, Any]]:
        """Poll ``promql`` until ``accept(result)``; fail naming ``what`` and the last result."""
        deadline = time.monotonic() + timeout
        last: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            last = self.query(promql)
            if accept(last):
                return last
            time.sleep(0.25)
        raise HarnessError(f"timed out after {timeout:.0f}s waiting for {what}: {promql} -> {last}")


# --- Exporters --------------------------------------------------------------------------


@dataclass(frozen=True)
class Behaviour:
    """What a revision's pods report: requests per second, P95, failed fraction.

    The optional fields drive the vLLM backend's families; None leaves the exporter's
    default (see triton_metrics_exporter.py): ``ttft_p95_ms`` 0.2 x ``p95_ms``,
    ``tpot_p95_ms`` 0.8 x ``p95_ms`` / (``output_tokens`` - 1), ``output_tokens`` 32,
    ``prompt_tokens`` 64 (tokens per successful request).
    """

    rps: float
    p95_ms: float
    error_rate: float = 0.0
    ttft_p95_ms: float | None = None
    tpot_p95_ms: float | None = None
    output_tokens: int | None = None
    prompt_tokens: int | None = None

    def to_json(self) -> str:
        fields: dict[str, float] = {
            "rps": self.rps,
            "p95_ms": self.p95_ms,
            "error_rate": self.error_rate,
        }
        optional = {
            "ttft_p95_ms": self.ttft_p95_ms,
            "tpot_p95_ms": self.tpot_p95_ms,
            "output_tokens": self.output_tokens,
            "prompt_tokens": self.prompt_tokens,
        }
        fields.update({k: v for k, v in optional.items() if v is not None})
        return json.dumps(fields)


@dataclass(frozen=True)
class Target:
    """One scraped pod and the labels Prometheus puts on its series."""

    namespace: str
    llmdeployment: str
    pod: str
    revision: str
    track: str | None = None
    # Where the pod's Triton would listen; only the Triton health mode uses it.
    pod_ip: str | None = field(default=None, compare=False)

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.pod)

    @property
    def labels(self) -> dict[str, str]:
        labels = {
            "namespace": self.namespace,
            "llmdeployment": self.llmdeployment,
            "revision": self.revision,
            "pod": self.pod,
        }
        if self.track:
            labels["track"] = self.track
        return labels


@dataclass
class Exporter:
    target: Target
    proc: subprocess.Popen[bytes]
    port: int
    log_file: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


# --- Triton health on pod IPs (optional) ------------------------------------------------


class TritonHealthServer:
    """Triton's readiness endpoints for one pod, on ``address:port`` (its pod IP).

    ``GET /v2/health/ready`` and ``GET /v2/models/<model>[/versions/<v>]/ready``: 200
    while ``ready()`` says so, else 503 (Triton's strict readiness: the server is not
    ready while its model is not); ``/v2/health/live`` is always 200; another model is
    400, as in Triton. Every request path is kept in :attr:`hits`.
    """

    def __init__(self, address: str, port: int, model: str, ready: Callable[[], bool]) -> None:
        self.address = address
        self.port = port
        self.model = model
        self.ready = ready
        self.hits: list[str] = []
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}:{self.port}"

    def _status(self, path: str) -> int:
        parts = [unquote(p) for p in path.split("?", 1)[0].strip("/").split("/")]
        ready = 200 if self.ready() else 503
        if parts == ["v2", "health", "live"]:
            return 200
        if parts == ["v2", "health", "ready"]:
            return ready
        if len(parts) in (4, 6) and parts[:2] == ["v2", "models"] and parts[-1] == "ready":
            if len(parts) == 6 and parts[3] != "versions":
                return 404
            return ready if parts[2] == self.model else 400
        return 404

    def start(self) -> TritonHealthServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                server.hits.append(self.path)
                self.send_response(server._status(self.path))
                self.send_header("Content-Length", "0")
                self.end_headers()

        class Server(ThreadingHTTPServer):
            address_family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
            daemon_threads = True

        try:
            self._httpd = Server((self.address, self.port), Handler)
        except OSError as exc:
            raise HarnessError(
                f"cannot serve Triton health on {self.address}:{self.port}: {exc}"
            ) from None
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"triton-health-{self.address}",
            daemon=True,
        )
        self._thread.start()
        return self

    def close(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        self._httpd = None


class ExporterFleet:
    """Exporter processes for targets, and the file_sd file that lists them.

    Usable without a cluster: :meth:`sync` takes the targets of one LLMDeployment
    (``scope``) and starts, keeps, or stops exporters to match; :meth:`follow` starts
    a :class:`TargetSync` that calls it from the pods it lists. Several fleets may
    share one Prometheus (each writes its own file in ``targets_dir``).

    With ``triton_health_port`` (or after :meth:`serve_triton_health`), every target
    with a ``pod_ip`` also gets a :class:`TritonHealthServer` on ``pod_ip:port``.
    """

    def __init__(
        self,
        workdir: Path,
        targets_dir: Path,
        *,
        model: str = "llm",
        default: Behaviour | None = None,
        name: str = "fleet",
        triton_health_port: int | None = None,
    ) -> None:
        self.workdir = workdir
        self.model = model
        self.targets_file = targets_dir / f"{name}.json"
        self.behaviour_dir = workdir / "behaviour"
        self.logs_dir = workdir / "logs"
        self.behaviour_dir.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        targets_dir.mkdir(parents=True, exist_ok=True)
        self._default = default
        self._behaviours: dict[str, Behaviour | None] = {}
        self._exporters: dict[tuple[str, str], Exporter] = {}
        self._syncs: list[TargetSync] = []
        self._lock = threading.RLock()
        self._triton_health_port = triton_health_port
        # (namespace, pod) -> its health server, and the scope that started it
        self._health: dict[tuple[str, str], tuple[TritonHealthServer, tuple[str, str]]] = {}
        self._model_ready_pods: dict[str, bool] = {}
        self._model_ready_revisions: dict[str, bool] = {}
        self._write_targets()

    # behaviour

    def _behaviour_file(self, revision: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in revision) or "_"
        return self.behaviour_dir / f"{safe}.json"

    def _write_behaviour(self, revision: str) -> None:
        behaviour = self._behaviours.get(revision, self._default)
        path = self._behaviour_file(revision)
        if behaviour is None:
            path.unlink(missing_ok=True)
        else:
            _write_atomic(path, behaviour.to_json())

    def set_behaviour(
        self,
        revision: str,
        *,
        rps: float,
        p95_ms: float,
        error_rate: float = 0.0,
        ttft_p95_ms: float | None = None,
        tpot_p95_ms: float | None = None,
    ) -> None:
        """From the next scrape on, every pod of ``revision`` reports this."""
        with self._lock:
            self._behaviours[revision] = Behaviour(
                rps, p95_ms, error_rate, ttft_p95_ms=ttft_p95_ms, tpot_p95_ms=tpot_p95_ms
            )
            self._write_behaviour(revision)

    def set_no_traffic(self, revision: str) -> None:
        """``revision``'s pods report no requests (counters frozen, no latency summary)."""
        with self._lock:
            self._behaviours[revision] = None
            self._write_behaviour(revision)

    def set_default(self, behaviour: Behaviour | None) -> None:
        """The behaviour of revisions without their own (None: no traffic)."""
        with self._lock:
            self._default = behaviour
            for revision in {e.target.revision for e in self._exporters.values()}:
                if revision not in self._behaviours:
                    self._write_behaviour(revision)

    # targets

    @property
    def targets(self) -> list[Target]:
        with self._lock:
            return [e.target for e in self._exporters.values()]

    def exporter(self, namespace: str, pod: str) -> Exporter | None:
        with self._lock:
            return self._exporters.get((namespace, pod))

    def sync(self, scope: tuple[str, str], targets: Iterable[Target]) -> None:
        """Make the exporters of LLMDeployment ``scope`` (namespace, name) be ``targets``."""
        wanted = {t.key: t for t in targets}
        with self._lock:
            changed = False
            for key, exporter in list(self._exporters.items()):
                in_scope = (exporter.target.namespace, exporter.target.llmdeployment) == scope
                if in_scope and key not in wanted:
                    self._stop(self._exporters.pop(key))
                    changed = True
            starting: list[tuple[Target, subprocess.Popen[bytes], Path, Path]] = []
            for key, target in wanted.items():
                current = self._exporters.get(key)
                alive = current is not None and current.proc.poll() is None
                if current is not None and alive and current.target.revision == target.revision:
                    if current.target != target:  # relabelled in place (track on promotion)
                        current.target = target
                        changed = True
                    continue
                if current is not None:  # exited, or the pod now runs another revision
                    self._stop(self._exporters.pop(key))
                starting.append(self._spawn(target))
            for target, proc, port_file, log_file in starting:
                self._exporters[target.key] = Exporter(
                    target, proc, self._wait_port(proc, port_file, log_file), log_file
                )
                changed = True
            if changed:
                self._write_targets()
            self._sync_health(scope, wanted)

    def add(self, target: Target) -> Exporter:
        """Start (or keep) the exporter of one target, keeping the others of its scope."""
        with self._lock:
            scope = (target.namespace, target.llmdeployment)
            others = [
                e.target
                for e in self._exporters.values()
                if (e.target.namespace, e.target.llmdeployment) == scope
                and e.target.key != target.key
            ]
            self.sync(scope, [*others, target])
            return self._exporters[target.key]

    def _spawn(self, target: Target) -> tuple[Target, subprocess.Popen[bytes], Path, Path]:
        if target.revision not in self._behaviours:
            self._write_behaviour(target.revision)
        stem = f"{target.namespace}_{target.pod}"
        port_file = self.logs_dir / f"{stem}.port"
        port_file.unlink(missing_ok=True)
        log_file = self.logs_dir / f"{stem}.log"
        with log_file.open("ab") as out:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    str(EXPORTER),
                    "--port=0",
                    f"--port-file={port_file}",
                    f"--behaviour={self._behaviour_file(target.revision)}",
                    f"--model={self.model}",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        return target, proc, port_file, log_file

    @staticmethod
    def _wait_port(proc: subprocess.Popen[bytes], port_file: Path, log_file: Path) -> int:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with contextlib.suppress(FileNotFoundError, ValueError):
                return int(port_file.read_text())
            if proc.poll() is not None:
                break
            time.sleep(0.02)
        proc.kill()
        proc.wait()
        raise HarnessError(f"the exporter did not start; log tail:\n{_tail(log_file)}")

    @staticmethod
    def _stop(exporter: Exporter) -> None:
        if exporter.proc.poll() is None:
            exporter.proc.terminate()
            try:
                exporter.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                exporter.proc.kill()
                exporter.proc.wait()

    # Triton health (optional)

    def serve_triton_health(self, port: int = 8000) -> None:
        """From now on, give every target with a pod IP a Triton health server on it."""
        with self._lock:
            self._triton_health_port = port
            for scope in {
                (e.target.namespace, e.target.llmdeployment) for e in self._exporters.values()
            }:
                self._sync_health(
                    scope,
                    {
                        k: e.target
                        for k, e in self._exporters.items()
                        if (e.target.namespace, e.target.llmdeployment) == scope
                    },
                )

    def set_model_ready(
        self, ready: bool, *, pod: str | None = None, revision: str | None = None
    ) -> None:
        """Whether the model of ``pod`` (by name), or of every pod of ``revision``, is ready.

        Takes effect on the next request; a pod's own setting wins over its revision's;
        without either, a model is ready.
        """
        if (pod is None) == (revision is None):
            raise ValueError("name exactly one of pod and revision")
        with self._lock:
            if pod is not None:
                self._model_ready_pods[pod] = ready
            else:
                assert revision is not None
                self._model_ready_revisions[revision] = ready

    def model_is_ready(self, namespace: str, pod: str) -> bool:
        with self._lock:
            if pod in self._model_ready_pods:
                return self._model_ready_pods[pod]
            exporter = self._exporters.get((namespace, pod))
            revision = exporter.target.revision if exporter is not None else None
            return self._model_ready_revisions.get(revision or "", True)

    def health_server(self, namespace: str, pod: str) -> TritonHealthServer | None:
        with self._lock:
            entry = self._health.get((namespace, pod))
            return entry[0] if entry is not None else None

    def _sync_health(
        self, scope: tuple[str, str], wanted: Mapping[tuple[str, str], Target]
    ) -> None:
        """Health servers for the targets of ``scope`` that have a pod IP, and no others."""
        port = self._triton_health_port
        for key, (health, health_scope) in list(self._health.items()):
            if health_scope != scope:
                continue
            target = wanted.get(key)
            if (
                port is None
                or target is None
                or target.pod_ip != health.address
                or health.port != port
            ):
                self._health.pop(key)[0].close()
        if port is None:
            return
        for key, target in wanted.items():
            if target.pod_ip and key not in self._health:
                namespace, pod = key
                server = TritonHealthServer(
                    target.pod_ip,
                    port,
                    self.model,
                    functools.partial(self.model_is_ready, namespace, pod),
                ).start()
                self._health[key] = (server, scope)

    def _write_targets(self) -> None:
        groups = [
            {"targets": [e.address], "labels": e.target.labels}
            for e in sorted(self._exporters.values(), key=lambda e: e.target.key)
        ]
        _write_atomic(self.targets_file, json.dumps(groups, indent=1))

    # the cluster

    def follow(
        self, kubeconfig: Path | str, namespace: str, name: str, *, interval: float = 0.5
    ) -> TargetSync:
        """Start keeping one exporter per Ready pod of LLMDeployment ``name``."""
        sync = TargetSync(self, Path(kubeconfig), namespace, name, interval=interval).start()
        with self._lock:
            self._syncs.append(sync)
        return sync

    def close(self) -> None:
        """Stop every sync thread and exporter process, and empty the targets file."""
        for sync in self._syncs:
            sync.stop()
        self._syncs.clear()
        with self._lock:
            for exporter in self._exporters.values():
                with contextlib.suppress(OSError):
                    exporter.proc.terminate()
            for exporter in self._exporters.values():
                self._stop(exporter)
            self._exporters.clear()
            self._write_targets()
            for health, _ in self._health.values():
                health.close()
            self._health.clear()


def _pod_ready(pod: Any) -> bool:
    if pod.metadata.deletion_timestamp is not None:
        return False
    for condition in (pod.status and pod.status.conditions) or []:
        if condition.type == "Ready":
            return bool(condition.status == "True")
    return False


def targets_from_pods(pods: Iterable[Any], namespace: str, name: str) -> list[Target]:
    """The Ready pods as targets, with their labels as they are now."""
    targets = []
    for pod in pods:
        labels: Mapping[str, str] = pod.metadata.labels or {}
        if not _pod_ready(pod) or labels.get(DEPLOYMENT_LABEL) != name:
            continue
        targets.append(
            Target(
                namespace=namespace,
                llmdeployment=name,
                pod=pod.metadata.name,
                revision=labels.get(REVISION_LABEL, ""),
                track=labels.get(TRACK_LABEL) or None,
                pod_ip=(pod.status.pod_ip if pod.status else None) or None,
            )
        )
    return targets


class TargetSync:
    """A thread that keeps a fleet's exporters in line with an LLMDeployment's pods.

    Every ``interval`` seconds: list the pods labelled ``llmcanary.io/deployment=NAME``,
    keep one exporter per Ready pod (stop it when the pod goes or stops being Ready),
    and re-read the pods' labels, which the operator changes in place on promotion.
    """

    def __init__(
        self,
        fleet: ExporterFleet,
        kubeconfig: Path,
        namespace: str,
        name: str,
        *,
        interval: float = 0.5,
    ) -> None:
        from kubernetes import client, config  # the cluster part only

        self.fleet = fleet
        self.namespace = namespace
        self.name = name
        self.interval = interval
        self.passes = 0
        self.last_error: str | None = None
        self._api = client.CoreV1Api(config.new_client_from_config(config_file=str(kubeconfig)))
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"target-sync-{namespace}-{name}", daemon=True
        )

    def start(self) -> TargetSync:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def sync_once(self) -> list[Target]:
        pods = self._api.list_namespaced_pod(
            self.namespace, label_selector=f"{DEPLOYMENT_LABEL}={self.name}", _request_timeout=5
        ).items
        targets = targets_from_pods(pods, self.namespace, self.name)
        self.fleet.sync((self.namespace, self.name), targets)
        return targets

    def wait_passes(self, n: int = 1, timeout: float = 30) -> None:
        """Wait until ``n`` more passes have completed (a pass sees the pods as they were)."""
        goal = self.passes + n
        deadline = time.monotonic() + timeout
        while self.passes < goal:
            if time.monotonic() > deadline:
                raise HarnessError(
                    f"target sync made no pass in {timeout:.0f}s (last error: {self.last_error})"
                )
            time.sleep(0.05)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sync_once()
                self.last_error = None
            except Exception as exc:  # keep going: the cluster may be briefly away
                if str(exc) != self.last_error:
                    log.warning(
                        "target sync pass failed",
                        extra={
                            "namespace": self.namespace,
                            "llmdeployment": self.name,
                            "error": str(exc),
                        },
                    )
                self.last_error = str(exc)
            self.passes += 1
            self._stop.wait(self.interval)
