"""Gateway API router: weights on the backendRefs of an HTTPRoute named like the
LLMDeployment (the default router)."""

from __future__ import annotations

import contextlib
from typing import Any

from llmcanary.api.spec import GatewayAPITraffic, LLMDeploymentSpec
from llmcanary.builders import Owner
from llmcanary.builders.meta import common_labels, service_name
from llmcanary.builders.workload import HTTP_PORT
from llmcanary.kube.children import ensure, remove
from llmcanary.kube.errors import MissingApi
from llmcanary.routing.base import Resource, Router, Weights

HTTPROUTE = Resource("gateway.networking.k8s.io", "v1", "HTTPRoute", "httproutes")


def build_httproute(owner: Owner, traffic: GatewayAPITraffic, weights: Weights) -> dict[str, Any]:
    """An HTTPRoute named like the LLMDeployment with a weighted backend per track."""
    spec: dict[str, Any] = {
        "rules": [
            {
                "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                "backendRefs": [
                    {"name": service_name(owner.name, track), "port": HTTP_PORT, "weight": w}
                    for track, w in weights.tracks()
                ],
            }
        ]
    }
    if traffic.parent_refs:
        spec["parentRefs"] = [
            p.model_dump(mode="json", by_alias=True, exclude_none=True) for p in traffic.parent_refs
        ]
    if traffic.hostnames:
        spec["hostnames"] = list(traffic.hostnames)
    return {
        "apiVersion": HTTPROUTE.api_version,
        "kind": HTTPROUTE.kind,
        "metadata": owner.metadata(owner.name, common_labels(owner.name)),
        "spec": spec,
    }


def route_weights(route: dict[str, Any]) -> dict[str, int]:
    """The ``{service name: weight}`` of an HTTPRoute's first rule, as the cluster holds it."""
    rules = route.get("spec", {}).get("rules") or [{}]
    return {ref["name"]: int(ref.get("weight", 1)) for ref in rules[0].get("backendRefs", [])}


class GatewayAPIRouter(Router):
    kind = "gatewayAPI"
    resource = HTTPROUTE
    missing_api_hint = (
        "install the Gateway API CRDs (standard channel) or choose another spec.traffic.router"
    )

    def reconcile(self, owner: Owner, spec: LLMDeploymentSpec, weights: Weights) -> None:
        # The whole route is ours, so applying it with the new weights is the update.
        try:
            ensure(self.kube, build_httproute(owner, spec.traffic.gateway_api, weights))
        except MissingApi:
            raise self.missing_api() from None

    def get_weights(self, owner: Owner) -> Weights | None:
        try:
            route = self.kube.get(
                HTTPROUTE.api_version, HTTPROUTE.kind, owner.namespace, owner.name
            )
        except MissingApi:
            raise self.missing_api() from None
        if route is None:
            return None
        weights = route_weights(route)
        return Weights(
            stable=weights.get(service_name(owner.name, "stable"), 0),
            canary=weights.get(service_name(owner.name, "canary"), 0),
            baseline=weights.get(service_name(owner.name, "baseline"), 0),
        )

    def finalize(self, owner: Owner) -> None:
        # No HTTPRoute API means no HTTPRoute of ours to remove; another's is left alone.
        with contextlib.suppress(MissingApi):
            remove(
                self.kube,
                HTTPROUTE.api_version,
                HTTPROUTE.kind,
                owner.namespace,
                owner.name,
                owner.uid,
            )
