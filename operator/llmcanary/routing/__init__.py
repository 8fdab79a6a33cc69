"""Traffic routers: how a weight split between the tracks is applied in the cluster.

One registry, keyed by the spec's router kinds (:data:`llmcanary.api.spec.RouterKind`).
Each router module owns its object builder, its API resource (which the operator
watches), and the hint for a cluster that does not serve it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import get_args

from llmcanary.api.spec import RouterKind
from llmcanary.kube.client import KubeApi
from llmcanary.routing.base import Backends, Resource, Router, WeightCheck, Weights
from llmcanary.routing.gateway_api import GatewayAPIRouter
from llmcanary.routing.inference_pool import InferencePoolRouter
from llmcanary.routing.istio import IstioRouter
from llmcanary.routing.replicas import ReplicasRouter

ROUTERS: Mapping[RouterKind, type[Router]] = {
    router.kind: router
    for router in (GatewayAPIRouter, IstioRouter, ReplicasRouter, InferencePoolRouter)
}
ROUTER_KINDS: tuple[RouterKind, ...] = get_args(RouterKind)


def router_for(kube: KubeApi, kind: str, allowed_images: Sequence[str] = ()) -> Router:
    """The router named ``kind``: ``spec.traffic.router``, or a previous ``status.router``
    to finalize. ``allowed_images``: the operator's image allowlist (a router that runs
    pods holds them to it)."""
    for known, router in ROUTERS.items():
        if known == kind:
            return router(kube, allowed_images)
    raise ValueError(f"unknown router {kind!r}: one of {', '.join(ROUTER_KINDS)}")


def watched_selectors() -> tuple[tuple[str, ...], ...]:
    """The kopf selectors of the watched routers' resources, each once."""
    selectors = (router.resource.selector for router in ROUTERS.values() if router.watched)
    return tuple(dict.fromkeys(selectors))


__all__ = [
    "ROUTERS",
    "ROUTER_KINDS",
    "Backends",
    "Resource",
    "Router",
    "WeightCheck",
    "Weights",
    "router_for",
]
