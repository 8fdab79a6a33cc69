"""The operator's moving parts, built once at start-up: reconciler, work queue, workers.

kopf's handlers (``main.py``) only tell it what happened: an LLMDeployment became this
operator's or stopped being it, it changed, or one of its children changed. It turns that
into scheduled passes, which the workers run.
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import kopf

from llmcanary.config import OperatorConfig
from llmcanary.kube.client import Kube
from llmcanary.observability.metrics import OperatorMetrics
from llmcanary.preflight.envdiff_source import environment_diff
from llmcanary.preflight.run import Preflight
from llmcanary.reconciler import Reconciler
from llmcanary.sources.prometheus import PrometheusReader
from llmcanary.workqueue import Key, PoolHealth, WorkerPool, WorkQueue
from llmcanary.workqueue.triggers import ChangeFilter


def utcnow() -> datetime:
    return datetime.now(UTC)


def post_event(obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
    # kopf reads only apiVersion, kind and metadata from the object to reference it.
    kopf.event(cast(kopf.Body, obj), type=type_, reason=reason, message=message)


@dataclass
class Runtime:
    reconciler: Reconciler
    pool: WorkerPool
    changes: ChangeFilter = field(default_factory=ChangeFilter)

    @property
    def queue(self) -> WorkQueue:
        return self.pool.queue

    @classmethod
    def start(cls, config: OperatorConfig, own_metrics: OperatorMetrics) -> Runtime:
        """Connect, build the reconciler, and start the workers (idle until objects come)."""
        kube = Kube.connect(
            config.kubeconfig,
            # Every worker may hold a connection, plus the preflight's and the cleanup's.
            pool_size=config.workers + 2,
            on_request=own_metrics.kube_request,
        )
        reconciler = Reconciler(
            kube,
            utcnow,
            post_event,
            sources=lambda address: PrometheusReader(
                address,
                timeout_seconds=config.prometheus_timeout_seconds,
                allowed_hosts=config.prometheus_allowed_hosts,
            ),
            preflight=Preflight(
                kube,
                allowed_hosts=config.preflight_allowed_hosts,
                env_differ=environment_diff,
                gpu_probe_image=config.gpu_probe_image,
                check_canary=config.canary_ready_check,
                allowed_images=config.allowed_images,
            ),
            own_metrics=own_metrics,
            allowed_images=config.allowed_images,
        )
        pool = WorkerPool(
            WorkQueue(),
            reconciler.reconcile_key,
            workers=config.workers,
            resync_seconds=config.resync_seconds,
            stuck_seconds=config.worker_stuck_seconds,
        )
        own_metrics.watch_workers(pool)
        pool.start()
        return cls(reconciler, pool)

    def take_on(self, key: Key, context: contextvars.Context) -> None:
        """``key`` is this operator's now: schedule it, then at its wake-ups and resyncs.

        ``context``: a kopf resource handler's; kopf.event() finds kopf's event poster
        through its variables, so every pass runs in a copy of it. (Nothing is tracked
        before the first object is taken on, so no pass runs without it.)
        """
        self.pool.run_passes_in(context)
        self.queue.track(key)

    def let_go(self, key: Key) -> None:
        """``key`` is gone, or this replica stands by: nothing more is scheduled for it."""
        self.queue.untrack(key)
        self.changes.forget(key)
        self.reconciler.forget(*key)

    def object_changed(self, key: Key, body: Mapping[str, Any]) -> None:
        if self.changes.changed(key, body):
            self.queue.add(key)

    def child_changed(self, key: Key) -> None:
        self.queue.add(key)

    def health(self) -> PoolHealth:
        return self.pool.health()

    def stop(self, timeout: float) -> bool:
        return self.pool.stop(timeout)
