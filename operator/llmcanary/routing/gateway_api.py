"""Gateway API router: weights on the backendRefs of an HTTPRoute named like the
LLMDeployment (the default router).

The route holds a split only once the Gateways it names say so: a Gateway's controller
writes, per parent, whether it accepted the route (``Accepted``) and could resolve its
backends (``ResolvedRefs``), for the route's generation. Until every named parent has,
the weights are asked, not applied, and status says which Gateway refuses and why."""

from __future__ import annotations

import contextlib
from typing import Any

from llmcanary.api.spec import GatewayAPITraffic, LLMDeploymentSpec
from llmcanary.builders import Owner
from llmcanary.builders.meta import common_labels, service_name
from llmcanary.builders.workload import HTTP_PORT
from llmcanary.kube.children import ensure, remove
from llmcanary.kube.client import KubeApi
from llmcanary.kube.errors import MissingApi, capped
from llmcanary.routing.base import HELD, Resource, Router, WeightCheck, Weights

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


GATEWAY_GROUP = "gateway.networking.k8s.io"


def _parent_key(ref: dict[str, Any], namespace: str) -> tuple[object, ...]:
    """A parentRef with the Gateway API's defaults filled in, to compare spec and status."""
    return (
        ref.get("group", GATEWAY_GROUP),
        ref.get("kind", "Gateway"),
        ref.get("namespace") or namespace,
        ref["name"],
        ref.get("sectionName"),
        ref.get("port"),
    )


def _parent_name(ref: dict[str, Any], namespace: str) -> str:
    """``Gateway NS/NAME listener L``: how a reason names a parent."""
    _, kind, ns, name, section, port = _parent_key(ref, namespace)
    where = f"{kind} {ns}/{name}"
    where += f" listener {section}" if section else ""
    return where + (f" port {port}" if port else "")


# A Gateway's message is its own; status keeps a sentence of it, not a page.
MESSAGE_CHARS = 300


def route_refusal(route: dict[str, Any]) -> str | None:
    """Why the Gateways the route names do not (yet) serve its current generation, or
    None when every one has accepted it and resolved its backends. Pure.

    A route without parentRefs attaches to nothing the operator can ask about: it is
    taken as held (the weights alone are checked), as before Gateways reported."""
    meta = route.get("metadata") or {}
    namespace = meta.get("namespace", "")
    generation = int(meta.get("generation") or 0)
    parents = (route.get("status") or {}).get("parents") or []
    for ref in (route.get("spec") or {}).get("parentRefs") or []:
        key = _parent_key(ref, namespace)
        name = _parent_name(ref, namespace)
        reports = [
            p for p in parents if _parent_key(p.get("parentRef") or {"name": ""}, namespace) == key
        ]
        if not reports:
            return (
                f"{name} has not reported on HTTPRoute {namespace}/{meta.get('name')}"
                " (is that Gateway there, and its controller running?)"
            )
        for report in reports:
            conditions = {c.get("type"): c for c in report.get("conditions") or []}
            accepted = conditions.get("Accepted")
            stale = [
                c for c in conditions.values() if int(c.get("observedGeneration") or 0) < generation
            ]
            if accepted is None or stale:
                return f"{name} has not taken generation {generation} of the HTTPRoute yet"
            for kind in ("Accepted", "ResolvedRefs"):
                condition = conditions.get(kind)
                if condition is not None and condition.get("status") != "True":
                    message = str(condition.get("message") or "")
                    said = f": {capped(message, MESSAGE_CHARS)}" if message else ""
                    return (
                        f"{name} refuses the HTTPRoute: {kind}={condition.get('status')}"
                        f" ({condition.get('reason', 'no reason')}){said}"
                    )
    return None


class GatewayAPIRouter(Router):
    kind = "gatewayAPI"
    resource = HTTPROUTE
    missing_api_hint = (
        "install the Gateway API CRDs (standard channel) or choose another spec.traffic.router"
    )
    data_plane_reports = True

    def __init__(self, kube: KubeApi) -> None:
        super().__init__(kube)
        # The route as reconcile() just read or wrote it, for the verify_weights() that
        # follows in the same pass (it needs no second read); used once, so that a later
        # read never sees a stale copy.
        self._written: dict[str, Any] | None = None
        self._wait_for_gateways = True

    def reconcile(self, owner: Owner, spec: LLMDeploymentSpec, weights: Weights) -> None:
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
        with contextlib.suppress(MissingApi):
            remove(
                self.kube,
                HTTPROUTE.api_version,
                HTTPROUTE.kind,
                owner.namespace,
                owner.name,
                owner.uid,
            )
