"""The kopf routing table. Each handler delegates in one line; the work is elsewhere.

Handlers are synchronous: kopf runs them in its thread pool, and the Kubernetes client
they use is synchronous. Only watch-event handlers and a resync timer are used, so kopf
keeps no progress annotations on the objects; the timer adds one finalizer.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, cast

import kopf
from kopf._core.intents.filters import MetaFilterToken  # the type of kopf.PRESENT

from llmcanary.api import GROUP, PLURAL, VERSION
from llmcanary.builders.meta import LABEL_DEPLOYMENT, LABEL_MANAGED_BY, MANAGER
from llmcanary.config import OperatorConfig
from llmcanary.kube.client import Kube
from llmcanary.reconciler import Reconciler

# (group/version..., plural) as kopf's resource selectors take them; core kinds have no group.
CHILD_KINDS: tuple[tuple[str, ...], ...] = (
    ("apps", "v1", "deployments"),
    ("v1", "services"),
    ("v1", "configmaps"),
    ("gateway.networking.k8s.io", "v1", "httproutes"),
)
CHILD_LABELS: dict[str, str | MetaFilterToken] = {
    LABEL_MANAGED_BY: MANAGER,
    LABEL_DEPLOYMENT: kopf.PRESENT,
}
RESYNC_SECONDS = OperatorConfig().resync_seconds


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
    memo.reconciler = Reconciler(Kube.connect(config.kubeconfig), utcnow, post_event)


@kopf.on.event(GROUP, VERSION, PLURAL)
def llmdeployment_event(
    type: str, namespace: str | None, name: str, memo: kopf.Memo, **_: Any
) -> None:
    if type != "DELETED" and namespace:
        memo.reconciler.reconcile(namespace, name)


@kopf.timer(GROUP, VERSION, PLURAL, interval=RESYNC_SECONDS, initial_delay=RESYNC_SECONDS)
def resync(namespace: str | None, name: str, memo: kopf.Memo, **_: Any) -> None:
    if namespace:
        memo.reconciler.reconcile(namespace, name)


def child_event(namespace: str | None, labels: kopf.Labels, memo: kopf.Memo, **_: Any) -> None:
    if namespace:
        memo.reconciler.reconcile(namespace, labels[LABEL_DEPLOYMENT])


for _selector in CHILD_KINDS:
    kopf.on.event(*_selector, labels=CHILD_LABELS, id=f"child-{_selector[-1]}")(child_event)
