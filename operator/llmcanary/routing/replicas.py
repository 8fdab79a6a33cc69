"""Replicas router: no mesh, the split follows from how many pods each revision has Ready.

One Service ``NAME`` selects every pod of the LLMDeployment, so kube-proxy spreads
connections over all Ready pods of both revisions: the canary's share is
``canary Ready / all Ready``. The operator sizes the canary for its weight
(``ceil(replicas * weight / 100)``, at least 1) while the stable keeps ``replicas``,
so the share is coarse and mostly above the weight asked for: with ``replicas: 2``,
5% means 1 canary pod of 3, i.e. 33% (status' Progressing condition says so).
Spreading is per connection, not per request: long-lived HTTP/2 or gRPC connections
stay on one pod. Choose ``gatewayAPI`` or ``istio`` for exact weights.

``reconcile`` keeps the Service's selector exact and changes no weight: the canary
Deployment's size is the weight. ``get_weights`` reports the share as the pods have it.
``verify_weights`` checks what this router controls: Service ``NAME`` serves exactly
the Ready pods of both revisions, and Ready canary pods are among them exactly when the
canary's weight is above 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llmcanary.api.spec import LLMDeploymentSpec
from llmcanary.builders import Owner
from llmcanary.builders.meta import LABEL_DEPLOYMENT, common_labels, service_name
from llmcanary.builders.workload import GRPC_PORT, HTTP_PORT
from llmcanary.kube.children import ensure, remove
from llmcanary.kube.pods import pod_serving
from llmcanary.routing.base import HELD, Backends, Resource, Router, WeightCheck, Weights

SERVICE = Resource("", "v1", "Service", "services")


def shared_service_name(owner: str) -> str:
    """``NAME``: no other child Service (``NAME-stable``, ``NAME-canary``) takes it."""
    return owner


def build_shared_service(owner: Owner) -> dict[str, Any]:
    """A Service named like the LLMDeployment, selecting the pods of all its revisions."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": owner.metadata(shared_service_name(owner.name), common_labels(owner.name)),
        "spec": {
            "type": "ClusterIP",
            "selector": {LABEL_DEPLOYMENT: owner.name},
            "ports": [
                {"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP"},
                {"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "protocol": "TCP"},
            ],
        },
    }


def _selector_text(selector: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items()))


@dataclass(frozen=True)
class ReadyPods:
    """Ready pods behind Service ``NAME`` (``serving``), and of each track's revision."""

    serving: int
    serving_canary: int
    stable: int
    canary: int


class ReplicasRouter(Router):
    kind = "replicas"
    approximate = True
    resource = SERVICE

    def reconcile(
        self, owner: Owner, spec: LLMDeploymentSpec, weights: Weights, backends: Backends
    ) -> None:
        """The weights are the Deployments' sizes, which the reconciler sets; the spec
        refuses a fresh baseline with this router, which could not weight it."""
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

    def _selector(self, owner: Owner, name: str) -> dict[str, str] | None:
        service = self.kube.get("v1", "Service", owner.namespace, name)
        if service is None:
            return None
        return dict(service.get("spec", {}).get("selector") or {})

    def _ready(self, owner: Owner, selector: dict[str, str]) -> list[dict[str, str]]:
        """The labels of the Ready, not terminating pods that ``selector`` selects."""
        pods = self.kube.list("v1", "Pod", owner.namespace, _selector_text(selector))
        return [pod["metadata"].get("labels") or {} for pod in pods if pod_serving(pod)]

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

    def verify_weights(self, owner: Owner, weights: Weights) -> WeightCheck:
        """Service NAME serves exactly the Ready pods of both revisions, and the canary's
        among them exactly when its weight is above 0 (the share itself is the pods')."""
        pods = self.pods(owner)
        if pods is None:
            return WeightCheck(False, f"Service {shared_service_name(owner.name)} is not set up")
        ready = pods.stable + pods.canary
        if (pods.serving, pods.serving_canary) != (ready, pods.canary):
            return WeightCheck(
                False,
                f"Service {shared_service_name(owner.name)} selects {pods.serving} Ready pods,"
                f" not the {ready} of both revisions",
            )
        if (pods.canary > 0) != (weights.canary > 0):
            return WeightCheck(False, f"{pods.canary} canary pods are Ready")
        return HELD

    def finalize(self, owner: Owner) -> None:
        # Only the Service this LLMDeployment owns: another's Service by that name stays.
        remove(
            self.kube, "v1", "Service", owner.namespace, shared_service_name(owner.name), owner.uid
        )
