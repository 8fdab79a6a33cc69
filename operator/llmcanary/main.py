"""The kopf routing table. Each handler delegates in one line; the work is elsewhere.

Handlers are synchronous: kopf runs them in its thread pool, and the Kubernetes client
they use is synchronous. Watch-event handlers react to changes at once; one daemon per
LLMDeployment wakes the loop when the rollout needs it (the next check or step end) and
at least every resync period. kopf keeps no progress annotations on the objects; the
daemon adds one finalizer so that it is stopped before the object goes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, cast

import kopf
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
RESYNC_SECONDS = OperatorConfig().resync_seconds
MIN_WAKEUP_SECONDS = 0.2
#: How often a waiting rollout loop looks at OPERATOR_EXITING (see rollout_loop).
EXIT_POLL_SECONDS = 1.0
#: Set by the cleanup activity, when the operator exits.
OPERATOR_EXITING = threading.Event()


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
    kube = Kube.connect(config.kubeconfig)
    # `llmcanary run` puts the metrics it serves in the memo; else they are only kept.
    telemetry = memo.get("telemetry")
    memo.reconciler = Reconciler(
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
        telemetry=telemetry if isinstance(telemetry, OperatorMetrics) else None,
    )


@kopf.on.event(GROUP, VERSION, PLURAL)
def llmdeployment_event(
    type: str, namespace: str | None, name: str, memo: kopf.Memo, **_: Any
) -> None:
    if not namespace:
        return
    if type == "DELETED":
        memo.reconciler.forget(namespace, name)
    else:
        memo.reconciler.reconcile(namespace, name)


@kopf.on.cleanup()
def cleanup(**_: Any) -> None:
    OPERATOR_EXITING.set()


@kopf.daemon(GROUP, VERSION, PLURAL, cancellation_timeout=10)
def rollout_loop(
    stopped: kopf.DaemonStopped, namespace: str | None, name: str, memo: kopf.Memo, **_: Any
) -> None:
    # kopf stops every daemon when the operator exits, except one spawned by an event that
    # was still being handled then: its stop flag is never set, and its thread would keep
    # the process alive after SIGTERM until SIGKILL. So the loop also ends on
    # OPERATOR_EXITING, which kopf's cleanup activity sets before the threads are joined.
    while namespace and not stopped and not OPERATOR_EXITING.is_set():
        result = memo.reconciler.reconcile(namespace, name)
        wakeup = result.wakeup if result is not None else RESYNC_SECONDS
        pause(stopped, min(max(wakeup, MIN_WAKEUP_SECONDS), RESYNC_SECONDS))


def pause(stopped: kopf.DaemonStopped, seconds: float) -> None:
    """Wait ``seconds``, or less if the daemon is stopped or the operator exits."""
    deadline = time.monotonic() + seconds
    while not stopped and not OPERATOR_EXITING.is_set():
        left = deadline - time.monotonic()
        if left <= 0:
            return
        stopped.wait(min(left, EXIT_POLL_SECONDS))


def child_event(namespace: str | None, labels: kopf.Labels, memo: kopf.Memo, **_: Any) -> None:
    if namespace:
        memo.reconciler.reconcile(namespace, labels[LABEL_DEPLOYMENT])


for _selector in CHILD_KINDS:
    kopf.on.event(*_selector, labels=CHILD_LABELS, id=f"child-{_selector[-1]}")(child_event)
