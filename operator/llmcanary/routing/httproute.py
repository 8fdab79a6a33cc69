"""The HTTPRoute both Gateway routers write (gatewayAPI and inferencePool), and what a
Gateway says of it and of its backends: ``status.parents`` read per parent Gateway.

A Gateway's controller writes, per parent, whether it accepted the object (``Accepted``)
and could resolve its references (``ResolvedRefs``), for the object's generation. Until
every named parent has, weights are asked, not applied, and status says which Gateway
refuses and why."""

from __future__ import annotations

import contextlib
from typing import Any

from llmcanary.builders import Owner
from llmcanary.builders.meta import common_labels
from llmcanary.kube.children import remove
from llmcanary.kube.client import KubeApi
from llmcanary.kube.errors import MissingApi, capped
from llmcanary.routing.base import Resource

HTTPROUTE = Resource("gateway.networking.k8s.io", "v1", "HTTPRoute", "httproutes")

#: On the HTTPRoute NAME: which router wrote it (the gatewayAPI and inferencePool routers
#: both own a route by that name; switching routers must not delete the new one's).
ROUTER_LABEL = "llmcanary.io/router"


def route_weights(route: dict[str, Any], kind: str = "Service") -> dict[str, int]:
    """The ``{backend name: weight}`` of an HTTPRoute's first rule, as the cluster holds
    it, for the backends of ``kind`` (a backendRef without a kind is a Service)."""
    rules = route.get("spec", {}).get("rules") or [{}]
    return {
        ref["name"]: int(ref.get("weight", 1))
        for ref in rules[0].get("backendRefs", [])
        if ref.get("kind", "Service") == kind
    }


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


def parents_refusal(
    obj: dict[str, Any], parent_refs: list[dict[str, Any]], kind: str
) -> str | None:
    """Why the Gateways ``parent_refs`` name do not (yet) serve ``obj``'s current
    generation, from its ``status.parents`` (``kind``: an HTTPRoute's, or an
    InferencePool's), or None when every one has accepted it and resolved its references.
    Pure."""
    meta = obj.get("metadata") or {}
    namespace = meta.get("namespace", "")
    # One route per LLMDeployment: "the HTTPRoute" says which; a pool is one of several.
    what = "the HTTPRoute" if kind == HTTPROUTE.kind else f"{kind} {namespace}/{meta.get('name')}"
    generation = int(meta.get("generation") or 0)
    parents = (obj.get("status") or {}).get("parents") or []
    for ref in parent_refs:
        key = _parent_key(ref, namespace)
        name = _parent_name(ref, namespace)
        reports = [
            p for p in parents if _parent_key(p.get("parentRef") or {"name": ""}, namespace) == key
        ]
        if not reports:
            return (
                f"{name} has not reported on {kind} {namespace}/{meta.get('name')}"
                " (is that Gateway there, and its controller running?)"
            )
        for report in reports:
            conditions = {c.get("type"): c for c in report.get("conditions") or []}
            accepted = conditions.get("Accepted")
            stale = [
                c for c in conditions.values() if int(c.get("observedGeneration") or 0) < generation
            ]
            if accepted is None or stale:
                return f"{name} has not taken generation {generation} of {what} yet"
            for condition_type in ("Accepted", "ResolvedRefs"):
                condition = conditions.get(condition_type)
                if condition is not None and condition.get("status") != "True":
                    message = str(condition.get("message") or "")
                    said = f": {capped(message, MESSAGE_CHARS)}" if message else ""
                    return (
                        f"{name} refuses {what}: {condition_type}={condition.get('status')}"
                        f" ({condition.get('reason', 'no reason')}){said}"
                    )
    return None


def route_refusal(route: dict[str, Any]) -> str | None:
    """Why the Gateways the route names do not (yet) serve its current generation, or
    None when every one has accepted it and resolved its backends. Pure.

    A route without parentRefs attaches to nothing the operator can ask about: it is
    taken as held (the weights alone are checked), as before Gateways reported."""
    return parents_refusal(route, (route.get("spec") or {}).get("parentRefs") or [], HTTPROUTE.kind)


def remove_route(kube: KubeApi, owner: Owner, router: str) -> None:
    """Delete the HTTPRoute NAME if it is the owner's and ``router`` wrote it (a route
    without the label predates it: the gatewayAPI router's)."""
    with contextlib.suppress(MissingApi):
        route = kube.get(HTTPROUTE.api_version, HTTPROUTE.kind, owner.namespace, owner.name)
        if route is None:
            return
        labels = (route.get("metadata") or {}).get("labels") or {}
        if labels.get(ROUTER_LABEL, "gatewayAPI") != router:
            return
        remove(kube, HTTPROUTE.api_version, HTTPROUTE.kind, owner.namespace, owner.name, owner.uid)


def build_route(
    owner: Owner,
    router: str,
    parent_refs: list[dict[str, Any]],
    hostnames: list[str],
    backend_refs: list[dict[str, Any]],
) -> dict[str, Any]:
    """The HTTPRoute ``NAME`` a Gateway router owns: one rule for every path, weighting
    ``backend_refs``, labelled with the router that wrote it (:data:`ROUTER_LABEL`).
    parentRefs and hostnames are always written, empty too: what is taken out of the spec
    is taken off the route."""
    return {
        "apiVersion": HTTPROUTE.api_version,
        "kind": HTTPROUTE.kind,
        "metadata": owner.metadata(owner.name, common_labels(owner.name) | {ROUTER_LABEL: router}),
        "spec": {
            "parentRefs": parent_refs,
            "hostnames": hostnames,
            "rules": [
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                    "backendRefs": backend_refs,
                }
            ],
        },
    }
