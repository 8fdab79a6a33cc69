"""Router objects: the Istio VirtualService that splits traffic between the tracks."""

from __future__ import annotations

from typing import Any

from llmcanary.api.spec import IstioTraffic
from llmcanary.builders.meta import Owner, Track, common_labels, service_name
from llmcanary.builders.route import split
from llmcanary.builders.workload import HTTP_PORT

VIRTUALSERVICE_API_VERSION = "networking.istio.io/v1"
CLUSTER_DOMAIN = "cluster.local"


def service_host(owner: Owner, track: Track) -> str:
    """The fully qualified name of a track's Service, as Istio destinations name it."""
    return f"{service_name(owner.name, track)}.{owner.namespace}.svc.{CLUSTER_DOMAIN}"


def build_virtual_service(
    owner: Owner, traffic: IstioTraffic, canary_weight: int, baseline_weight: int = 0
) -> dict[str, Any]:
    """A VirtualService named like the LLMDeployment with weighted routes per track."""
    spec: dict[str, Any] = {
        "hosts": list(traffic.hosts),
        "http": [
            {
                "name": "llmcanary",
                "route": [
                    {
                        "destination": {
                            "host": service_host(owner, track),
                            "port": {"number": HTTP_PORT},
                        },
                        "weight": weight,
                    }
                    for track, weight in split(canary_weight, baseline_weight)
                ],
            }
        ],
    }
    if traffic.gateways:
        spec["gateways"] = list(traffic.gateways)
    return {
        "apiVersion": VIRTUALSERVICE_API_VERSION,
        "kind": "VirtualService",
        "metadata": owner.metadata(owner.name, common_labels(owner.name)),
        "spec": spec,
    }


def virtual_service_weights(vs: dict[str, Any]) -> dict[str, int]:
    """The ``{destination host: weight}`` of a VirtualService's first http route.

    As Istio reads it: a lone destination without a weight takes 100, others 0.
    """
    routes = (vs.get("spec", {}).get("http") or [{}])[0].get("route") or []
    default = 100 if len(routes) == 1 else 0
    return {r["destination"]["host"]: int(r.get("weight") or default) for r in routes}
