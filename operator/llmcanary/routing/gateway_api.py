"""Gateway API router: weights on the backendRefs of an HTTPRoute named like the
LLMDeployment (the default router).

The route holds a split only once the Gateways it names say so: a Gateway's controller
writes, per parent, whether it accepted the route (``Accepted``) and could resolve its
backends (``ResolvedRefs``), for the route's generation. Until every named parent has,
the weights are asked, not applied, and status says which Gateway refuses and why."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llmcanary.api.spec import GatewayAPITraffic, LLMDeploymentSpec
from llmcanary.builders import Owner
from llmcanary.builders.meta import service_name
from llmcanary.builders.workload import HTTP_PORT
from llmcanary.kube.children import ensure
from llmcanary.kube.client import KubeApi
from llmcanary.kube.errors import MissingApi
from llmcanary.routing.base import HELD, Backends, Router, WeightCheck, Weights
from llmcanary.routing.httproute import (
    HTTPROUTE,
    build_route,
    remove_route,
    route_refusal,
    route_weights,
)


def build_httproute(owner: Owner, traffic: GatewayAPITraffic, weights: Weights) -> dict[str, Any]:
    """An HTTPRoute named like the LLMDeployment with a weighted backend per track."""
    return build_route(
        owner,
        "gatewayAPI",
        [p.model_dump(mode="json", by_alias=True, exclude_none=True) for p in traffic.parent_refs],
        list(traffic.hostnames),
        [
            {"name": service_name(owner.name, track), "port": HTTP_PORT, "weight": w}
            for track, w in weights.tracks()
        ],
    )


class GatewayAPIRouter(Router):
    kind = "gatewayAPI"
    resource = HTTPROUTE
    missing_api_hint = (
        "install the Gateway API CRDs (standard channel) or choose another spec.traffic.router"
    )
    data_plane_reports = True

    def __init__(self, kube: KubeApi, allowed_images: Sequence[str] = ()) -> None:
        super().__init__(kube, allowed_images)
        # The route as reconcile() just read or wrote it, for the verify_weights() that
        # follows in the same pass (it needs no second read); used once, so that a later
        # read never sees a stale copy.
        self._written: dict[str, Any] | None = None
        self._wait_for_gateways = True

    def reconcile(
        self, owner: Owner, spec: LLMDeploymentSpec, weights: Weights, backends: Backends
    ) -> None:
        # The whole route is ours, so applying it with the new weights is the update.
        self._wait_for_gateways = spec.traffic.gateway_api.wait_for_gateways
        try:
            _, self._written = ensure(
                self.kube, build_httproute(owner, spec.traffic.gateway_api, weights)
            )
        except MissingApi:
            raise self.missing_api() from None

    def _read(self, owner: Owner) -> dict[str, Any] | None:
        try:
            return self.kube.get(HTTPROUTE.api_version, HTTPROUTE.kind, owner.namespace, owner.name)
        except MissingApi:
            raise self.missing_api() from None

    def verify_weights(self, owner: Owner, weights: Weights) -> WeightCheck:
        """The route asks for ``weights`` and every Gateway it names serves it (unless the
        spec says not to wait for Gateways: ``traffic.gatewayAPI.waitForGateways``)."""
        route, self._written = self._written, None
        if route is None:
            route = self._read(owner)
        actual = None if route is None else self._weights(owner, route)
        if actual != weights:
            return WeightCheck(False, None if actual is None else f"it holds {actual.describe()}")
        refusal = route_refusal(route) if route is not None and self._wait_for_gateways else None
        return HELD if refusal is None else WeightCheck(False, refusal)

    def get_weights(self, owner: Owner) -> Weights | None:
        route = self._read(owner)
        return None if route is None else self._weights(owner, route)

    @staticmethod
    def _weights(owner: Owner, route: dict[str, Any]) -> Weights:
        weights = route_weights(route)
        return Weights(
            stable=weights.get(service_name(owner.name, "stable"), 0),
            canary=weights.get(service_name(owner.name, "canary"), 0),
            baseline=weights.get(service_name(owner.name, "baseline"), 0),
        )

    def finalize(self, owner: Owner) -> None:
        # No HTTPRoute API means no HTTPRoute of ours to remove; another's is left alone.
        remove_route(self.kube, owner, self.kind)
