"""Gateway API router: weights on the HTTPRoute's ``backendRefs``."""

from __future__ import annotations

from llmcanary.api.spec import LLMDeploymentSpec
from llmcanary.builders import Owner
from llmcanary.builders.meta import service_name
from llmcanary.builders.route import HTTPROUTE_API_VERSION, build_httproute, route_weights
from llmcanary.kube.children import ensure
from llmcanary.kube.client import Kube


class GatewayAPIRouter:
    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    def reconcile(self, owner: Owner, spec: LLMDeploymentSpec, canary_weight: int) -> None:
        ensure(self.kube, build_httproute(owner, spec.traffic.gateway_api, canary_weight))

    def get_weights(self, owner: Owner) -> tuple[int, int] | None:
        route = self.kube.get(HTTPROUTE_API_VERSION, "HTTPRoute", owner.namespace, owner.name)
        if route is None:
            return None
        weights = route_weights(route)
        return (
            weights.get(service_name(owner.name, "stable"), 0),
            weights.get(service_name(owner.name, "canary"), 0),
        )
