"""Router objects: the Gateway API HTTPRoute that splits traffic between the tracks."""

from __future__ import annotations

from typing import Any

from llmcanary.api.spec import GatewayAPITraffic
from llmcanary.builders.meta import Owner, Track, common_labels, service_name
from llmcanary.builders.workload import HTTP_PORT

HTTPROUTE_API_VERSION = "gateway.networking.k8s.io/v1"


def split(canary_weight: int, baseline_weight: int = 0) -> list[tuple[Track, int]]:
    """The tracks and their weights: stable and canary always, the baseline while it has
    a weight."""
    if not 0 <= canary_weight <= 100 or not 0 <= baseline_weight <= 100 - canary_weight:
        raise ValueError(
            f"canary weight {canary_weight} and baseline weight {baseline_weight} do not"
            " fit in 0..100"
        )
    tracks: list[tuple[Track, int]] = [
        ("stable", 100 - canary_weight - baseline_weight),
        ("canary", canary_weight),
    ]
    if baseline_weight:
        tracks.append(("baseline", baseline_weight))
    return tracks


def build_httproute(
    owner: Owner, traffic: GatewayAPITraffic, canary_weight: int, baseline_weight: int = 0
) -> dict[str, Any]:
    """An HTTPRoute named like the LLMDeployment with weighted backends per track."""
    spec: dict[str, Any] = {
        "rules": [
            {
                "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                "backendRefs": [
                    {"name": service_name(owner.name, track), "port": HTTP_PORT, "weight": w}
                    for track, w in split(canary_weight, baseline_weight)
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
