"""The kopf routing table. Each handler delegates in one line; the work is elsewhere.

kopf watches; a fixed pool of worker threads reconciles (:mod:`llmcanary.runtime`). Watch
events of an LLMDeployment and of its children only schedule a pass for the object, from
asyncio, without a thread; the workers run the synchronous reconciler, one object per
worker at a time, and schedule the next pass at the rollout's own wake-up (a check or a
step end) or the resync.

One async daemon per LLMDeployment marks the objects this operator is responsible for:
kopf starts it when the object appears and stops it when the object goes, when this
replica pauses for a peer (peering), and when the operator exits; while it is stopped,
nothing is scheduled for the object. It costs an idle coroutine, not a thread. kopf keeps
no progress annotations on the objects; the daemon adds one finalizer so that it is
stopped before the object goes.
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable
from typing import Any, cast

import kopf
from kopf._cogs.structs.references import Selector  # what settings.watching keys by
from kopf._core.intents.filters import MetaFilterToken  # the type of kopf.PRESENT

from llmcanary.api import GROUP, PLURAL, VERSION
from llmcanary.builders.meta import LABEL_DEPLOYMENT, LABEL_MANAGED_BY, LABEL_PICKER, MANAGER
from llmcanary.builders.revision_read import LABEL_READ
from llmcanary.config import OperatorConfig
from llmcanary.observability.metrics import OperatorMetrics
from llmcanary.routing import watched_selectors
from llmcanary.runtime import Runtime

# The children's resources, (group, version, plural) as kopf's selectors take them (core
# kinds have no group): the workloads, and the routers' objects (llmcanary.routing).
_PODS = ("v1", "pods")  # readiness moves the rollout; new pods need their track label
_CORE_CHILDREN: tuple[tuple[str, ...], ...] = (
    ("apps", "v1", "deployments"),
    _PODS,
    ("v1", "services"),
    ("v1", "configmaps"),
)
CHILD_KINDS: tuple[tuple[str, ...], ...] = tuple(
    dict.fromkeys(_CORE_CHILDREN + watched_selectors())
)
CHILD_LABELS: dict[str, str | MetaFilterToken] = {
    LABEL_MANAGED_BY: MANAGER,
    LABEL_DEPLOYMENT: kopf.PRESENT,
}
#: The same filter as a label selector, applied by the API server to the child watches:
#: the operator receives its own children, not every pod and Service of the cluster.
CHILD_SELECTOR = f"{LABEL_MANAGED_BY}={MANAGER},{LABEL_DEPLOYMENT}"
#: Pods are watched wider: a repository read's pod (``builders/revision_read``) carries no
#: ``llmcanary.io/deployment`` (a Service selects on it), and its end moves its revision on.
POD_SELECTOR = f"{LABEL_MANAGED_BY}={MANAGER}"
READ_LABELS: dict[str, str | MetaFilterToken] = {
    LABEL_MANAGED_BY: MANAGER,
    LABEL_READ: kopf.PRESENT,
}
#: A pool's endpoint picker (routing/inference_pool): its readiness gates the pool's weight.
PICKER_LABELS: dict[str, str | MetaFilterToken] = {
    LABEL_MANAGED_BY: MANAGER,
    LABEL_PICKER: kopf.PRESENT,
}
#: How long SIGTERM waits for passes in progress before the process exits anyway.
STOP_SECONDS = 5.0


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.watching.server_timeout = 300
    for kind in CHILD_KINDS:
        # The same positional forms as the handlers' decorators take (mypy knows no overload).
        selector = POD_SELECTOR if kind == _PODS else CHILD_SELECTOR
        settings.watching.label_selectors[cast(Any, Selector)(*kind)] = selector
    # `llmcanary run` puts the metrics it serves in the memo; else they are only kept.
    served = memo.get("own_metrics")
    own_metrics = served if isinstance(served, OperatorMetrics) else OperatorMetrics(process=False)
    memo.runtime = Runtime.start(OperatorConfig(), own_metrics)


@kopf.on.cleanup()
def cleanup(memo: kopf.Memo, **_: Any) -> None:
    runtime = memo.get("runtime")
    if isinstance(runtime, Runtime):
        runtime.stop(timeout=STOP_SECONDS)


@kopf.on.probe(id="workers")
async def workers_alive(memo: kopf.Memo, **_: Any) -> dict[str, float]:
    """Part of ``--liveness``: fails when every worker is stuck while work waits."""
    health = memo.runtime.health()
    if not health.ok:
        raise kopf.PermanentError(health.reason)
    return {"depth": health.stats.depth, "busy": health.stats.busy, "tracked": health.stats.tracked}


@kopf.daemon(GROUP, VERSION, PLURAL)
async def responsible_for(
    stopped: kopf.DaemonStopped, namespace: str | None, name: str, memo: kopf.Memo, **_: Any
) -> None:
    if not namespace:
        return
    memo.runtime.take_on((namespace, name), contextvars.copy_context())
    try:
        await stopped.wait()
    finally:
        memo.runtime.let_go((namespace, name))


@kopf.on.event(GROUP, VERSION, PLURAL)
async def llmdeployment_event(
    type: str, body: kopf.Body, namespace: str | None, name: str, memo: kopf.Memo, **_: Any
) -> None:
    if namespace and type != "DELETED":
        memo.runtime.object_changed((namespace, name), body)


def _wakes_by(label: str) -> Callable[..., Awaitable[None]]:
    """A kopf event handler that queues the LLMDeployment the object's ``label`` names."""

    async def woken(namespace: str | None, labels: kopf.Labels, memo: kopf.Memo, **_: Any) -> None:
        if namespace:
            memo.runtime.child_changed((namespace, labels[label]))

    return woken


# A revision's children name their LLMDeployment in llmcanary.io/deployment, a repository
# read's pod in its read label, a pool's picker pod in llmcanary.io/endpoint-picker.
child_event = _wakes_by(LABEL_DEPLOYMENT)
read_event = _wakes_by(LABEL_READ)
picker_event = _wakes_by(LABEL_PICKER)


for _selector in CHILD_KINDS:
    kopf.on.event(*_selector, labels=CHILD_LABELS, id=f"child-{_selector[-1]}")(child_event)
kopf.on.event(*_PODS, labels=READ_LABELS, id="repository-read")(read_event)
kopf.on.event(*_PODS, labels=PICKER_LABELS, id="endpoint-picker")(picker_event)
