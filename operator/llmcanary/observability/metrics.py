"""The operator's own Prometheus metrics, served on ``/metrics`` (``llmcanary run --metrics-port``).

An edge: the reconciler calls it; the pure core (rollout, analysis, builders, preflight
estimates) never imports it (an import-linter contract says so).

Levels (the phase, the weight) are set from the status on every reconcile. Counters move
only on what a written status adds: a new ``lastAnalysis`` (one verdict), a new
``history`` entry (one promotion, rollback or failed preflight). The reconciler reads
the object fresh before it decides, so a status that was already there, after a restart
or on the next reconcile, is never counted again; a new process starts its counters at
zero, as Prometheus expects.

Everything lives in its own :class:`~prometheus_client.CollectorRegistry`, so tests and
several instances in one process do not collide.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, get_args
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.registry import Collector

from llmcanary import __version__
from llmcanary.analysis.verdict import VerdictKind
from llmcanary.api.status import (
    DependencyResult,
    HistoryEntry,
    LLMDeploymentStatus,
    Phase,
    PreflightStatus,
)
from llmcanary.sources.base import QUERY_ERROR_REASONS
from llmcanary.workqueue import QueueStats

PHASES: tuple[str, ...] = get_args(Phase)
VERDICTS: tuple[str, ...] = get_args(VerdictKind)
PreflightCheck = Literal["envdiff", "gpu", "dependencies", "canary", "error"]
PREFLIGHT_CHECKS: tuple[str, ...] = get_args(PreflightCheck)
ReconcileResult = Literal["ok", "error"]
# History outcomes that took the canary's traffic back to the stable revision.
ROLLBACK_OUTCOMES = frozenset({"RolledBack", "Aborted"})
# The prefix of the canary's own readiness checks in status.preflight.dependencies.
CANARY_CHECK_PREFIX = "canary/"
RECONCILE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# The verbs of the operator's own Kubernetes API requests (kube/client.py).
KUBE_VERBS = ("get", "list", "apply", "patch", "delete")


@dataclass(frozen=True)
class Transitions:
    """What a written status adds to the one it replaces: each is counted once."""

    verdict: str | None = None
    rollbacks: int = 0
    promotions: int = 0
    preflight_failures: tuple[str, ...] = ()


def failed_preflight_checks(preflight: PreflightStatus | None) -> tuple[str, ...]:
    """The checks that failed in a preflight (``error``: it could not run at all)."""
    if preflight is None or preflight.passed is not False:
        return ()
    failed: list[str] = []
    if any(not d.allowed for d in preflight.env_diff):
        failed.append("envdiff")
    if preflight.gpu_memory is not None and preflight.gpu_memory.fits is False:
        failed.append("gpu")
    if any(not d.ok and not d.name.startswith(CANARY_CHECK_PREFIX) for d in preflight.dependencies):
        failed.append("dependencies")
    return tuple(failed) or ("error",)


def transitions(old: LLMDeploymentStatus, new: LLMDeploymentStatus) -> Transitions:
    """What ``new`` records that ``old`` did not. Pure."""
    verdict = None
    if new.last_analysis is not None and new.last_analysis != old.last_analysis:
        verdict = new.last_analysis.verdict
    added: list[HistoryEntry] = [e for e in new.history if e not in old.history]
    failures: tuple[str, ...] = ()
    if any(e.outcome == "Failed" for e in added):
        failures = failed_preflight_checks(new.preflight)
    return Transitions(
        verdict=verdict,
        rollbacks=sum(e.outcome in ROLLBACK_OUTCOMES for e in added),
        promotions=sum(e.outcome == "Promoted" for e in added),
        preflight_failures=failures,
    )


class OperatorMetrics:
    """The operator's metrics and the calls that move them. Thread-safe."""

    def __init__(self, registry: CollectorRegistry | None = None, *, process: bool = True) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        reg = self.registry
        if process:  # the standard process_*, python_* and python_gc_* series
            ProcessCollector(registry=reg)
            PlatformCollector(registry=reg)
            GCCollector(registry=reg)
        resource = ("namespace", "name")
        self.build_info = Gauge(
            "llmcanary_build_info",
            "The running llmcanary version (always 1).",
            ["version"],
            registry=reg,
        )
        self.build_info.labels(__version__).set(1)
        self.phase = Gauge(
            "llmcanary_rollout_phase",
            "1 for the LLMDeployment's current status.phase, 0 for the other phases.",
            [*resource, "phase"],
            registry=reg,
        )
        self.weight = Gauge(
            "llmcanary_canary_weight",
            "The canary's traffic weight in percent (status.canaryWeight; 0 without a canary).",
            resource,
            registry=reg,
        )
        self.verdicts = Counter(
            "llmcanary_analysis_verdicts",
            "Analysis checks recorded in status.lastAnalysis, by verdict.",
            [*resource, "verdict"],
            registry=reg,
        )
        self.rollbacks = Counter(
            "llmcanary_rollbacks",
            "Rollouts rolled back: failed analysis (RolledBack) or an abort (Aborted).",
            resource,
            registry=reg,
        )
        self.promotions = Counter(
            "llmcanary_promotions",
            "Canary revisions promoted to stable.",
            resource,
            registry=reg,
        )
        self.preflight_failures = Counter(
            "llmcanary_preflight_failures",
            "Failed preflight checks, by check (canary: each failed readiness check of the"
            " canary pods before its first weight).",
            [*resource, "check"],
            registry=reg,
        )
        self.reconcile_duration = Histogram(
            "llmcanary_reconcile_duration_seconds",
            "Time of one reconcile of one LLMDeployment (error: it raised, or could not"
            " carry out its plan).",
            ["result"],
            buckets=RECONCILE_BUCKETS,
            registry=reg,
        )
        self.query_errors = Counter(
            "llmcanary_prometheus_query_errors",
            "Analysis queries to Prometheus that got no usable answer, by reason.",
            ["reason"],
            registry=reg,
        )
        self.kube_requests = Counter(
            "llmcanary_kube_requests",
            "Kubernetes API requests the reconciler made, by verb (kopf's watches and event"
            " posts are not counted).",
            ["verb"],
            registry=reg,
        )
        for verb in KUBE_VERBS:
            self.kube_requests.labels(verb)
        for result in get_args(ReconcileResult):
            self.reconcile_duration.labels(result)
        for reason in QUERY_ERROR_REASONS:
            self.query_errors.labels(reason)
        self._known: set[tuple[str, str]] = set()

    # --- per LLMDeployment ----------------------------------------------------------

    def observe(
        self,
        namespace: str,
        name: str,
        old: LLMDeploymentStatus,
        new: LLMDeploymentStatus,
        *,
        written: bool,
    ) -> None:
        """The status after a reconcile: levels always, counters only if it was written."""
        self._first_sight(namespace, name)
        for phase in PHASES:
            self.phase.labels(namespace, name, phase).set(1 if new.phase == phase else 0)
        self.weight.labels(namespace, name).set(new.canary_weight or 0)
        if not written:
            return
        moved = transitions(old, new)
        if moved.verdict is not None:
            self.verdicts.labels(namespace, name, moved.verdict).inc()
        if moved.rollbacks:
            self.rollbacks.labels(namespace, name).inc(moved.rollbacks)
        if moved.promotions:
            self.promotions.labels(namespace, name).inc(moved.promotions)
        for check in moved.preflight_failures:
            self.preflight_failures.labels(namespace, name, check).inc()

    def canary_checks(self, namespace: str, name: str, results: Sequence[DependencyResult]) -> None:
        """One run of the canary pods' readiness checks; counted if any of them failed."""
        if any(not r.ok for r in results):
            self._first_sight(namespace, name)
            self.preflight_failures.labels(namespace, name, "canary").inc()

    def forget(self, namespace: str, name: str) -> None:
        """The LLMDeployment is gone: drop its series (they go stale, as a pod's do)."""
        self._known.discard((namespace, name))
        _remove(self.phase, [(namespace, name, p) for p in PHASES])
        _remove(self.weight, [(namespace, name)])
        _remove(self.verdicts, [(namespace, name, v) for v in VERDICTS])
        _remove(self.rollbacks, [(namespace, name)])
        _remove(self.promotions, [(namespace, name)])
        _remove(self.preflight_failures, [(namespace, name, c) for c in PREFLIGHT_CHECKS])

    def _first_sight(self, namespace: str, name: str) -> None:
        """Counters start at 0, so that ``increase()`` sees their first event."""
        if (namespace, name) in self._known:
            return
        self._known.add((namespace, name))
        for verdict in VERDICTS:
            self.verdicts.labels(namespace, name, verdict)
        self.rollbacks.labels(namespace, name)
        self.promotions.labels(namespace, name)
        for check in PREFLIGHT_CHECKS:
            self.preflight_failures.labels(namespace, name, check)

    # --- the operator -----------------------------------------------------------------

    def reconciled(self, seconds: float, result: ReconcileResult) -> None:
        self.reconcile_duration.labels(result).observe(seconds)

    def query_error(self, reason: str) -> None:
        self.query_errors.labels(reason).inc()

    def kube_request(self, verb: str) -> None:
        self.kube_requests.labels(verb).inc()

    def watch_workers(self, pool: WorkerStats) -> None:
        """Serve the work queue's state, read at each scrape."""
        self.registry.register(_WorkQueueCollector(pool))

    def serve(self, port: int, addr: str = "0.0.0.0") -> WSGIServer:
        """Serve ``/metrics`` on ``addr:port`` in a daemon thread. Raises OSError if the
        port is taken."""
        server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        return server


class WorkerStats(Protocol):
    """What :meth:`OperatorMetrics.watch_workers` reads (a WorkerPool)."""

    workers: int

    def stats(self) -> QueueStats: ...


class _WorkQueueCollector(Collector):
    def __init__(self, pool: WorkerStats) -> None:
        self.pool = pool

    def collect(self) -> Iterator[Metric]:
        stats = self.pool.stats()
        for name, doc, value in (
            ("workers", "Worker threads that reconcile LLMDeployments.", self.pool.workers),
            ("workers_busy", "Workers in a pass now.", stats.busy),
            (
                "objects",
                "LLMDeployments this operator is responsible for (0 on a standby replica).",
                stats.tracked,
            ),
            ("queue_depth", "LLMDeployments due for a pass and waiting for a worker.", stats.depth),
            (
                "queue_oldest_wait_seconds",
                "How long the longest-waiting due LLMDeployment has waited for a worker.",
                stats.oldest_wait_seconds,
            ),
            (
                "queue_scheduled",
                "LLMDeployments waiting for a later pass (a check, a step end or a resync).",
                stats.scheduled,
            ),
            (
                "longest_pass_seconds",
                "How long the longest pass in progress has run (0: none).",
                stats.longest_busy_seconds,
            ),
        ):
            yield GaugeMetricFamily(f"llmcanary_{name}", doc, value=value)


def _remove(metric: Gauge | Counter, label_sets: Iterable[tuple[str, ...]]) -> None:
    for labels in label_sets:
        with contextlib.suppress(KeyError):  # never created
            metric.remove(*labels)
