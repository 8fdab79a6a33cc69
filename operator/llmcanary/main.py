"""The kopf routing table. Each handler delegates in one line; the work is elsewhere.

kopf watches; a fixed pool of worker threads reconciles. Watch events of an
LLMDeployment and of its children only put the object's key in the work queue
(:mod:`llmcanary.workqueue`), from asyncio, without a thread; ``workers`` threads take
keys from it and run the synchronous reconciler, one object per worker at a time. After
each pass the object is scheduled again at its rollout's next wake-up (a check or a
step end), and at the latest after the resync period.

One async daemon per LLMDeployment marks the objects this operator is responsible for:
kopf starts it when the object appears and stops it when the object goes, when this
replica pauses for a peer (peering), and when the operator exits; while it is stopped,
nothing is scheduled for the object. It costs an idle coroutine, not a thread. kopf keeps
no progress annotations on the objects; the daemon adds one finalizer so that it is
stopped before the object goes.
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, cast

import kopf
from kopf._cogs.structs.references import Selector  # what settings.watching keys by
from kopf._core.intents.filters import MetaFilterToken  # the type of kopf.PRESENT

from llmcanary.analysis.providers.prometheus import PrometheusProvider
from llmcanary.api import GROUP, PLURAL, VERSION
from llmcanary.builders.meta import LABEL_DEPLOYMENT, LABEL_MANAGED_BY, MANAGER
from llmcanary.config import OperatorConfig
from llmcanary.kube.client import Kube
from llmcanary.observability.metrics import OperatorMetrics
from llmcanary.preflight.envdiff_source import environment_diff
from llmcanary.preflight.run import Preflight
from llmcanary.reconciler import Reconciler
from llmcanary.workqueue import Key, WorkerPool, WorkQueue
from llmcanary.workqueue.triggers import ChangeFilter

# (group/version..., plural) as kopf's resource selectors take them; core kinds have no group.
CHILD_KINDS: tuple[tuple[str, ...], ...] = (
    ("apps", "v1", "deployments"),
    ("v1", "pods"),  # readiness moves the rollout; new pods need their track label
    ("v1", "services"),
    ("v1", "configmaps"),
    ("gateway.networking.k8s.io", "v1", "httproutes"),
)
CHILD_LABELS: dict[str, str | MetaFilterToken] = {
    LABEL_MANAGED_BY: MANAGER,
    LABEL_DEPLOYMENT: kopf.PRESENT,
}
#: The same filter as a label selector, applied by the API server to the child watches:
#: the operator receives its own children, not every pod and Service of the cluster.
CHILD_SELECTOR = f"{LABEL_MANAGED_BY}={MANAGER},{LABEL_DEPLOYMENT}"
#: How long SIGTERM waits for passes in progress before the process exits anyway.
STOP_SECONDS = 5.0


def utcnow() -> datetime:
    return datetime.now(UTC)


def post_event(obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
    # kopf reads only apiVersion, kind and metadata from the object to reference it.
    kopf.event(cast(kopf.Body, obj), type=type_, reason=reason, message=message)


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    config = OperatorConfig()
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.watching.server_timeout = 300
    for kind in CHILD_KINDS:
        # The same positional forms as the handlers' decorators take (mypy knows no overload).
        settings.watching.label_selectors[cast(Any, Selector)(*kind)] = CHILD_SELECTOR
    # `llmcanary run` puts the metrics it serves in the memo; else they are only kept.
    served = memo.get("telemetry")
    telemetry = served if isinstance(served, OperatorMetrics) else OperatorMetrics(process=False)
    kube = Kube.connect(
        config.kubeconfig,
        # Every worker may hold a connection, plus the preflight's and the cleanup's.
        pool_size=config.workers + 2,
        on_request=telemetry.kube_request,
    )
    reconciler = Reconciler(
        kube,
        utcnow,
        post_event,
        metrics=lambda address: PrometheusProvider(
            address, timeout_seconds=config.prometheus_timeout_seconds
        ),
        preflight=Preflight(
            kube,
            allowed_hosts=config.preflight_allowed_hosts,
            env_differ=environment_diff,
            gpu_probe_image=config.gpu_probe_image,
            check_canary=config.canary_ready_check,
        ),
        telemetry=telemetry,
    )
    queue = WorkQueue()
    pool = WorkerPool(
        queue,
        reconciler.reconcile_key,
        workers=config.workers,
        resync_seconds=config.resync_seconds,
        stuck_seconds=config.worker_stuck_seconds,
    )
    telemetry.watch_workers(pool)
    pool.start()
    memo.reconciler, memo.queue, memo.pool, memo.changes = reconciler, queue, pool, ChangeFilter()


@kopf.on.cleanup()
def cleanup(memo: kopf.Memo, **_: Any) -> None:
    pool = memo.get("pool")
    if isinstance(pool, WorkerPool):
        pool.stop(timeout=STOP_SECONDS)


@kopf.on.probe(id="workers")
async def workers_alive(memo: kopf.Memo, **_: Any) -> dict[str, float]:
    """Part of ``--liveness``: fails when every worker is stuck while work waits."""
    health = memo.pool.health()
    if not health.ok:
        raise kopf.PermanentError(health.reason)
    stats = health.stats
    return {"depth": stats.depth, "busy": stats.busy, "tracked": stats.tracked}


@kopf.daemon(GROUP, VERSION, PLURAL)
async def responsible_for(
    stopped: kopf.DaemonStopped, namespace: str | None, name: str, memo: kopf.Memo, **_: Any
) -> None:
    if not namespace:
        return
    key: Key = (namespace, name)
    # kopf.event() finds kopf's event poster through the context variables of a resource
    # handler like this one: the workers' passes run in a copy of it. (Before the first
    # daemon nothing is tracked, so no pass runs without it.)
    memo.pool.run_passes_in(contextvars.copy_context())
    memo.queue.track(key)
    try:
        await stopped.wait()
    finally:
        memo.queue.untrack(key)
        memo.changes.forget(key)
        memo.reconciler.forget(namespace, name)


@kopf.on.event(GROUP, VERSION, PLURAL)
async def llmdeployment_event(
    type: str, body: kopf.Body, namespace: str | None, name: str, memo: kopf.Memo, **_: Any
) -> None:
    if namespace and type != "DELETED" and memo.changes.changed((namespace, name), body):
        memo.queue.add((namespace, name))


async def child_event(
    namespace: str | None, labels: kopf.Labels, memo: kopf.Memo, **_: Any
) -> None:
    if namespace:
        memo.queue.add((namespace, labels[LABEL_DEPLOYMENT]))


for _selector in CHILD_KINDS:
    kopf.on.event(*_selector, labels=CHILD_LABELS, id=f"child-{_selector[-1]}")(child_event)
