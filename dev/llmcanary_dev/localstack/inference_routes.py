"""What the local stack's inference gateway makes of the cluster: pure.

No Gateway implementation that runs on these machines routes InferencePool backends
(Envoy Gateway with Envoy AI Gateway would, at a cost of days), so the local stack plays
that Gateway for them, and only for them: the GatewayClass :data:`GATEWAY_CLASS` with its
own controller, whose Gateway :data:`GATEWAY_NAMESPACE`/:data:`GATEWAY_NAME` Traefik
ignores. From the HTTPRoutes attached to it, the InferencePools they weight, the pools'
picker Services and the pods, :func:`plan` computes

- the routing table (:class:`Table`): per route its hostnames and weighted pools, per
  pool the Ready pods on its target port and the Ready pods of its endpoint picker;
- what the Gateway says of each route and pool, as an implementation of the extension
  writes it (its conformance tests): the route ``Accepted``, and ``ResolvedRefs`` False
  with ``InvalidKind`` for a backend that is not an InferencePool or ``BackendNotFound``
  for a pool that does not exist; each weighted pool ``Accepted``, and ``ResolvedRefs``
  False with ``InvalidExtensionRef`` while its ``endpointPickerRef`` Service does not
  exist; a pool no route weights any more loses the Gateway's entry.

:mod:`.inference_gateway` serves the table and writes the statuses.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from llmcanary.builders.meta import LABEL_PICKER, LABEL_TRACK
from llmcanary.kube.pods import pod_serving
from llmcanary_dev.localstack.gateway import GATEWAY_NAMESPACE, listener_gateway

__all__ = [
    "CONTROLLER_NAME",
    "GATEWAY_CLASS",
    "GATEWAY_NAME",
    "GATEWAY_NAMESPACE",
    "Backend",
    "Picker",
    "Plan",
    "Pool",
    "Route",
    "Table",
    "gateway_objects",
    "merged_parents",
    "parent_ref",
    "plan",
]

CONTROLLER_NAME = "localstack.llmcanary.dev/inference-gateway"
GATEWAY_CLASS = "llmcanary-local-inference"
GATEWAY_NAME = "inference"
GATEWAY_GROUP = "gateway.networking.k8s.io"
POOL_GROUP = "inference.networking.k8s.io"
POOL_KIND = "InferencePool"

Key = tuple[str, str]  # (namespace, name)


def parent_ref() -> dict[str, str]:
    """The parentRef that attaches a route to the stack's inference Gateway."""
    return {"name": GATEWAY_NAME, "namespace": GATEWAY_NAMESPACE}


def gateway_objects(port: int) -> list[dict[str, Any]]:
    """The GatewayClass and Gateway of the stack's inference gateway."""
    return listener_gateway(
        gateway_class=GATEWAY_CLASS,
        controller=CONTROLLER_NAME,
        description="The llmcanary local stack's gateway for InferencePool backends",
        name=GATEWAY_NAME,
        port=port,
    )


@dataclass(frozen=True)
class Picker:
    """A Ready pod of a pool's endpoint picker, and the labels the chart's PodMonitor
    would give its series."""

    namespace: str
    name: str
    llmdeployment: str
    track: str

    @property
    def labels(self) -> dict[str, str]:
        return {
            "namespace": self.namespace,
            "pod": self.name,
            "llmdeployment": self.llmdeployment,
            "track": self.track,
        }


@dataclass(frozen=True)
class Pool:
    key: Key
    endpoints: tuple[str, ...]  # ip:port of its Ready pods on its first target port
    pickers: tuple[Picker, ...]  # its picker's Ready pods
    picker_service: bool  # the endpointPickerRef Service exists
    fail_open: bool

    @property
    def scheduling(self) -> Picker | None:
        """The picker pod that schedules its requests (and records their metrics)."""
        return self.pickers[0] if self.pickers and self.picker_service else None


@dataclass(frozen=True)
class Backend:
    pool: Key | None  # None: not an InferencePool, or no such pool
    weight: int
    name: str


@dataclass(frozen=True)
class Route:
    key: Key
    hostnames: tuple[str, ...]  # () matches any host
    backends: tuple[Backend, ...]

    def matches(self, host: str) -> bool:
        return not self.hostnames or host in self.hostnames


@dataclass(frozen=True)
class Table:
    routes: tuple[Route, ...] = ()
    pools: Mapping[Key, Pool] = field(default_factory=dict)

    def route_for(self, host: str) -> Route | None:
        """The route for ``host``: one that names it before one that names no host."""
        named = [r for r in self.routes if host in r.hostnames]
        if named:
            return named[0]
        return next((r for r in self.routes if not r.hostnames), None)

    def pickers(self) -> list[Picker]:
        return [p for pool in self.pools.values() for p in pool.pickers]


@dataclass(frozen=True)
class Plan:
    table: Table
    #: Per attached route, the Gateway's entries for its status.parents.
    route_status: dict[Key, list[dict[str, Any]]]
    #: Per pool the Gateway has a word on: its entry (None: remove the Gateway's entry).
    pool_status: dict[Key, dict[str, Any] | None]


def _ours(ref: Mapping[str, Any], namespace: str) -> bool:
    return (
        ref.get("group", GATEWAY_GROUP) == GATEWAY_GROUP
        and ref.get("kind", "Gateway") == "Gateway"
        and (ref.get("namespace") or namespace) == GATEWAY_NAMESPACE
        and ref.get("name") == GATEWAY_NAME
    )


def _key(obj: Mapping[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return (meta.get("namespace", ""), meta.get("name", ""))


def _condition(kind: str, ok: bool, reason: str, message: str, generation: int) -> dict[str, Any]:
    return {
        "type": kind,
        "status": "True" if ok else "False",
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
    }


def _selected(
    pods: Iterable[Mapping[str, Any]], namespace: str, selector: Mapping[str, str]
) -> Iterator[Mapping[str, Any]]:
    """The serving pods of ``namespace`` that ``selector`` selects."""
    for pod in pods:
        meta = pod.get("metadata") or {}
        labels = meta.get("labels") or {}
        if meta.get("namespace") != namespace or not selector:
            continue
        if all(labels.get(k) == v for k, v in selector.items()) and pod_serving(pod):
            yield pod


def _pool_state(
    pool: Mapping[str, Any],
    services: Mapping[Key, Mapping[str, Any]],
    pods: Sequence[Mapping[str, Any]],
) -> Pool:
    key = _key(pool)
    spec = pool.get("spec") or {}
    selector = (spec.get("selector") or {}).get("matchLabels") or {}
    ports = spec.get("targetPorts") or [{}]
    port = int(ports[0].get("number") or 0)
    ips = ((p.get("status") or {}).get("podIP") for p in _selected(pods, key[0], selector))
    endpoints = tuple(sorted(f"{ip}:{port}" for ip in ips if ip))
    ref = spec.get("endpointPickerRef") or {}
    service = (
        services.get((key[0], ref.get("name", "")))
        if ref.get("kind", "Service") == "Service"
        else None
    )
    pickers: list[Picker] = []
    if service is not None:
        picker_selector = (service.get("spec") or {}).get("selector") or {}
        for pod in _selected(pods, key[0], picker_selector):
            labels = (pod.get("metadata") or {}).get("labels") or {}
            pickers.append(
                Picker(
                    namespace=key[0],
                    name=pod["metadata"]["name"],
                    llmdeployment=labels.get(LABEL_PICKER, ""),
                    track=labels.get(LABEL_TRACK, ""),
                )
            )
    return Pool(
        key=key,
        endpoints=endpoints,
        pickers=tuple(sorted(pickers, key=lambda p: p.name)),
        picker_service=service is not None,
        fail_open=ref.get("failureMode") == "FailOpen",
    )


def plan(
    routes: Sequence[Mapping[str, Any]],
    pools: Sequence[Mapping[str, Any]],
    services: Sequence[Mapping[str, Any]],
    pods: Sequence[Mapping[str, Any]],
) -> Plan:
    """The routing table and the Gateway's status entries, from the cluster's objects."""
    pools_by_key = {_key(p): p for p in pools}
    services_by_key = {_key(s): s for s in services}
    table_routes: list[Route] = []
    route_status: dict[Key, list[dict[str, Any]]] = {}
    weighted: set[Key] = set()
    for route in routes:
        key = _key(route)
        spec = route.get("spec") or {}
        ours = [ref for ref in spec.get("parentRefs") or [] if _ours(ref, key[0])]
        if not ours:
            continue
        generation = int((route.get("metadata") or {}).get("generation") or 0)
        backends: list[Backend] = []
        refused: tuple[str, str] | None = None
        for rule in (spec.get("rules") or [{}])[:1]:
            for ref in rule.get("backendRefs") or []:
                name = ref.get("name", "")
                weight = int(ref.get("weight", 1))
                group, kind = ref.get("group", ""), ref.get("kind", "Service")
                pool_key = (ref.get("namespace") or key[0], name)
                if (group, kind) != (POOL_GROUP, POOL_KIND):
                    refused = refused or (
                        "InvalidKind",
                        f"{kind} {name}: this Gateway routes InferencePool backends only",
                    )
                    backends.append(Backend(None, weight, name))
                elif pool_key not in pools_by_key:
                    refused = refused or (
                        "BackendNotFound",
                        f"InferencePool {pool_key[0]}/{name} not found",
                    )
                    backends.append(Backend(None, weight, name))
                else:
                    backends.append(Backend(pool_key, weight, name))
                    weighted.add(pool_key)
        table_routes.append(Route(key, tuple(spec.get("hostnames") or ()), tuple(backends)))
        reason, message = refused or ("ResolvedRefs", "")
        route_status[key] = [
            {
                "parentRef": dict(ref),
                "controllerName": CONTROLLER_NAME,
                "conditions": [
                    _condition("Accepted", True, "Accepted", "", generation),
                    _condition("ResolvedRefs", refused is None, reason, message, generation),
                ],
            }
            for ref in ours
        ]
    states = {key: _pool_state(pools_by_key[key], services_by_key, pods) for key in weighted}
    pool_status: dict[Key, dict[str, Any] | None] = {}
    for key, pool in pools_by_key.items():
        if key not in weighted:
            # The Gateway's entry leaves a pool no route of it weights (conformance).
            if any(_ours(p.get("parentRef") or {}, "") for p in _parents(pool)):
                pool_status[key] = None
            continue
        generation = int((pool.get("metadata") or {}).get("generation") or 0)
        state = states[key]
        picker = ((pool.get("spec") or {}).get("endpointPickerRef") or {}).get("name", "")
        pool_status[key] = {
            "parentRef": {
                "group": GATEWAY_GROUP,
                "kind": "Gateway",
                "name": GATEWAY_NAME,
                "namespace": GATEWAY_NAMESPACE,
            },
            "conditions": [
                _condition("Accepted", True, "Accepted", "", generation),
                _condition(
                    "ResolvedRefs",
                    state.picker_service,
                    "ResolvedRefs" if state.picker_service else "InvalidExtensionRef",
                    ""
                    if state.picker_service
                    else f"endpoint picker Service {key[0]}/{picker} not found",
                    generation,
                ),
            ],
        }
    return Plan(Table(tuple(table_routes), states), route_status, pool_status)


def _parents(obj: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return list((obj.get("status") or {}).get("parents") or [])


def merged_parents(
    obj: Mapping[str, Any], ours: list[dict[str, Any]] | dict[str, Any] | None, now: str
) -> list[dict[str, Any]] | None:
    """``obj``'s status.parents with the Gateway's entries replaced by ``ours`` (other
    Gateways' entries kept), or None when nothing would change. A condition keeps its
    lastTransitionTime while its status does not change."""
    namespace = _key(obj)[0]
    current = _parents(obj)
    mine = [p for p in current if _ours(p.get("parentRef") or {}, namespace)]
    others = [dict(p) for p in current if not _ours(p.get("parentRef") or {}, namespace)]
    wanted = [] if ours is None else ours if isinstance(ours, list) else [ours]
    previous = {
        (c.get("type"), c.get("status")): c.get("lastTransitionTime")
        for p in mine
        for c in p.get("conditions") or []
    }
    stamped = [
        {
            **entry,
            "conditions": [
                {**c, "lastTransitionTime": previous.get((c["type"], c["status"])) or now}
                for c in entry["conditions"]
            ],
        }
        for entry in wanted
    ]
    if stamped == [dict(p) for p in mine]:
        return None
    return others + stamped
