"""Router objects: the Gateway API HTTPRoute that splits traffic between the tracks."""

from __future__ import annotations

from typing import Any

from llmcanary.api.spec import GatewayAPITraffic
from llmcanary.builders.meta import Owner, common_labels, service_name
from llmcanary.builders.workload import HTTP_PORT

HTTPROUTE_API_VERSION = "gateway.networking.k8s.io/v1"


def build_httproute(owner: Owner, traffic: GatewayAPITraffic, canary_weight: int) -> dict[str, Any]:
    """An HTTPRoute named like the LLMDeployment with weighted stable/canary backends."""
    if not 0 <= canary_weight <= 100:
        raise ValueError(f"canary weight {canary_weight} is outside 0..100")
    spec: dict[str, Any] = {
        "rules": [
            {
                "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                "backendRefs": [
                    {
                        "name": service_name(owner.name, "stable"),
                        "port": HTTP_PORT,
                        "weight": 100 - canary_weight,
                    },
                    {
                        "name": service_name(owner.name, "canary"),
                        "port": HTTP_PORT,
                        "weight": canary_weight,
                    },
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
        "apiVersion": HTTPROUTE_API_VERSION,
        "kind": "HTTPRoute",
        "metadata": owner.metadata(owner.name, common_labels(owner.name)),
        "spec": spec,
    }


def route_weights(route: dict[str, Any]) -> dict[str, int]:
    """The ``{service name: weight}`` of an HTTPRoute's first rule, as the cluster holds it."""
    rules = route.get("spec", {}).get("rules") or [{}]
    return {ref["name"]: int(ref.get("weight", 1)) for ref in rules[0].get("backendRefs", [])}
