"""Gateway API router: weights on the HTTPRoute's ``backendRefs`` (the default router)."""

from __future__ import annotations

from llmcanary.api.spec import LLMDeploymentSpec
from llmcanary.builders import Owner
from llmcanary.builders.meta import service_name
from llmcanary.builders.route import HTTPROUTE_API_VERSION, build_httproute, route_weights
from llmcanary.kube.children import ensure
from llmcanary.kube.client import Kube
from llmcanary.routing.base import Weights


class GatewayAPIRouter:
    kind = "gatewayAPI"
    approximate = False

    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    def reconcile(
        self, owner: Owner, spec: LLMDeploymentSpec, canary_weight: int, baseline_weight: int = 0
    ) -> None:
        route = build_httproute(owner, spec.traffic.gateway_api, canary_weight, baseline_weight)
        ensure(self.kube, route)

    def set_weights(
        self, owner: Owner, spec: LLMDeploymentSpec, canary_weight: int, baseline_weight: int = 0
    ) -> None:
        # The whole route is ours, so applying it with the new weights is the update.
        self.reconcile(owner, spec, canary_weight, baseline_weight)

    def get_weights(self, owner: Owner) -> Weights | None:
        route = self.kube.get(HTTPROUTE_API_VERSION, "HTTPRoute", owner.namespace, owner.name)
        if route is None:
            return None
        weights = route_weights(route)
        return Weights(
            stable=weights.get(service_name(owner.name, "stable"), 0),
            canary=weights.get(service_name(owner.name, "canary"), 0),
            baseline=weights.get(service_name(owner.name, "baseline"), 0),
        )

    def verify_weights(self, owner: Owner, canary_weight: int, baseline_weight: int = 0) -> bool:
        stable = 100 - canary_weight - baseline_weight
        return self.get_weights(owner) == Weights(stable, canary_weight, baseline_weight)

    def finalize(self, owner: Owner) -> None:
        self.kube.delete(HTTPROUTE_API_VERSION, "HTTPRoute", owner.namespace, owner.name)
