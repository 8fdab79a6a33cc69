"""Replicas router: no mesh, the split follows from how many pods each revision has Ready.

One Service ``NAME`` selects every pod of the LLMDeployment, so kube-proxy spreads
connections over all Ready pods of both revisions: the canary's share is
``canary Ready / all Ready``. The operator sizes the canary for its weight
(``ceil(replicas * weight / 100)``, at least 1) while the stable keeps ``replicas``,
so the share is coarse and mostly above the weight asked for: with ``replicas: 2``,
5% means 1 canary pod of 3, i.e. 33%. Spreading is per connection, not per request:
long-lived HTTP/2 or gRPC connections stay on one pod. Choose ``gatewayAPI`` or
``istio`` for exact weights.

``set_weights`` changes nothing; ``get_weights`` reports the share as the pods have it;
``verify_weights`` says whether ``NAME`` serves exactly the Ready pods of both revisions
and the canary has the number of them whose share is nearest the weight asked for
(none for 0%). With the sizing above that holds at low weights but not always higher
up (``replicas: 2`` at 65%: 2 canary pods of 4 give 50%, where 3 of 4 would be nearer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llmcanary.api.spec import LLMDeploymentSpec
from llmcanary.builders import Owner
from llmcanary.builders.meta import LABEL_DEPLOYMENT, service_name
from llmcanary.builders.replicas_service import (
    build_shared_service,
    nearest_share,
    shared_service_name,
)
from llmcanary.kube.children import ensure
from llmcanary.kube.client import Kube
from llmcanary.routing.base import Weights


def _selector_text(selector: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items()))


def _serving(pod: dict[str, Any]) -> bool:
    """Whether a Service sends traffic to the pod: Ready and not terminating."""
    if pod["metadata"].get("deletionTimestamp"):
        return False
    conditions = pod.get("status", {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


@dataclass(frozen=True)
class ReadyPods:
    """Ready pods behind Service ``NAME`` (``serving``), and of each track's revision."""

    serving: int
    serving_canary: int
    stable: int
    canary: int


class ReplicasRouter:
    kind = "replicas"
    approximate = True

    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    def reconcile(
        self, owner: Owner, spec: LLMDeploymentSpec, canary_weight: int, baseline_weight: int = 0
    ) -> None:
        """``baseline_weight`` is always 0 here: the spec refuses a fresh baseline with
        this router, which could not weight it."""
        desired = build_shared_service(owner)
        _, current = ensure(self.kube, desired)
        # The selector is the split, so it must be exact: a key added by hand (which
        # ensure() and server-side apply leave alone) would narrow the pods.
        wanted: dict[str, str] = desired["spec"]["selector"]
        selector = current.get("spec", {}).get("selector") or {}
        if selector != wanted:
            patch = {k: None for k in selector if k not in wanted} | wanted
            self.kube.patch(
                "v1",
                "Service",
                owner.namespace,
                shared_service_name(owner.name),
                {"spec": {"selector": patch}},
            )

    def set_weights(
        self, owner: Owner, spec: LLMDeploymentSpec, canary_weight: int, baseline_weight: int = 0
    ) -> None:
        """Nothing to change: the operator sizes the canary Deployment for the weight."""

    def _selector(self, owner: Owner, name: str) -> dict[str, str] | None:
        service = self.kube.get("v1", "Service", owner.namespace, name)
        if service is None:
            return None
        return dict(service.get("spec", {}).get("selector") or {})

    def _ready(self, owner: Owner, selector: dict[str, str]) -> list[dict[str, str]]:
        """The labels of the Ready, not terminating pods that ``selector`` selects."""
        pods = self.kube.list("v1", "Pod", owner.namespace, _selector_text(selector))
        return [pod["metadata"].get("labels") or {} for pod in pods if _serving(pod)]

    def pods(self, owner: Owner) -> ReadyPods | None:
        """The Ready pods as the split sees them; None if the Services are not set up."""
        shared = self._selector(owner, shared_service_name(owner.name))
        stable = self._selector(owner, service_name(owner.name, "stable"))
        canary = self._selector(owner, service_name(owner.name, "canary"))
        if not shared or not stable or canary is None:
            return None
        if canary == stable:
            canary = {}  # no canary revision: NAME-canary points at the stable pods
        own = {LABEL_DEPLOYMENT: owner.name}
        serving = self._ready(owner, shared)
        mine = serving if shared == own else self._ready(owner, own)

        def count(labels: list[dict[str, str]], selector: dict[str, str]) -> int:
            return sum(1 for pod in labels if selector and selector.items() <= pod.items())

        return ReadyPods(
            serving=len(serving),
            serving_canary=count(serving, canary),
            stable=count(mine, stable),
            canary=count(mine, canary),
        )

    def get_weights(self, owner: Owner) -> Weights | None:
        pods = self.pods(owner)
        if pods is None:
            return None
        canary, total = pods.serving_canary, pods.serving
        if canary == 0:
            return Weights(100, 0)
        # Rounded half up, but never 0 or 100 while both sides serve.
        share = min(max((200 * canary + total) // (2 * total), 1), 100 if canary == total else 99)
        return Weights(100 - share, share)

    def verify_weights(self, owner: Owner, canary_weight: int, baseline_weight: int = 0) -> bool:
        """Service NAME serves exactly the Ready pods of both revisions, and the canary
        has the count of them whose share is nearest ``canary_weight``."""
        pods = self.pods(owner)
        if pods is None:
            return False
        ready = pods.stable + pods.canary
        return (pods.serving, pods.serving_canary) == (ready, pods.canary) and (
            pods.canary in nearest_share(ready, canary_weight)
        )

    def finalize(self, owner: Owner) -> None:
        self.kube.delete("v1", "Service", owner.namespace, shared_service_name(owner.name))
