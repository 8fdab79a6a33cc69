"""InferencePool router: the Gateway API Inference Extension.

Each track (``stable``, ``canary``, and ``baseline`` while a fresh baseline runs) is an
``InferencePool`` named like its Service, ``NAME-<track>``, whose selector is pinned to the
track's revision exactly as the Service's is; one HTTPRoute ``NAME`` carries the weights
on ``backendRefs`` of ``kind: InferencePool``. Promotion re-points the stable pool's
selector at the promoted pods (no new pod); a rollback puts every weight on the stable
pool at once.

A pool is served through its endpoint picker (EPP), which the gateway asks which pod of
the pool takes each request (scored by the load it reads from each pod's metrics). A
picker serves the one pool its flags name, and pools are per track, so the operator runs
one per pool: a Deployment and a Service ``NAME-<track>-epp`` from
``traffic.inferencePool.endpointPicker``, as the extension's own chart does for a pool,
under a ServiceAccount ``NAME-endpoint-picker`` with a Role that reads what a picker
reads (pods, the pools, InferenceObjectives).

Two rules keep traffic off what cannot serve it. No weight moves onto a pool whose picker
has no Ready pod (under ``FailClose`` the gateway would refuse its every request): the
route keeps its weights until it has one; weight taken away is written at once. A pool
that leaves the route goes only once the Gateways have taken the route without it.

A weight written counts as held only when the gateway says so: the route's
``status.parents`` and each weighted pool's for every Gateway the route names are
``Accepted`` and ``ResolvedRefs`` for their current generation, and the pool's picker has
a Ready pod.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
from collections.abc import Sequence
from typing import Any

from llmcanary.api.spec import (
    ENDPOINT_PICKER_IMAGE,
    InferencePoolTraffic,
    LLMDeploymentSpec,
)
from llmcanary.builders import Owner
from llmcanary.builders.meta import (
    LABEL_MANAGED_BY,
    LABEL_PICKER,
    LABEL_TRACK,
    MANAGER,
    TRACKS,
    Track,
    common_labels,
    revision_selector,
    service_name,
)
from llmcanary.builders.workload import (
    CONTAINER_SECURITY_CONTEXT,
    HTTP_PORT,
    METRICS_PORT,
    image_refusal,
)
from llmcanary.kube.children import ensure, remove
from llmcanary.kube.client import KubeApi
from llmcanary.kube.errors import MissingApi
from llmcanary.kube.pods import pod_serving
from llmcanary.problems import ReconcileError
from llmcanary.routing.base import HELD, Backends, Resource, Router, WeightCheck, Weights
from llmcanary.routing.httproute import (
    HTTPROUTE,
    build_route,
    parents_refusal,
    remove_route,
    route_refusal,
    route_weights,
)

INFERENCEPOOL = Resource("inference.networking.k8s.io", "v1", "InferencePool", "inferencepools")
# What a picker reads besides pools: the extension's alpha objects (its chart grants them).
_OBJECTIVES_GROUP = "inference.networking.x-k8s.io"

# The picker's ports, as the extension's chart sets them: ext-proc (gRPC, the gateway
# calls it per request), gRPC health (its probes), Prometheus metrics.
PICKER_GRPC_PORT = 9002
PICKER_HEALTH_PORT = 9003
PICKER_METRICS_PORT = 9090
PICKER_APP = "endpoint-picker"
DNS_LABEL_MAX = 63


def pool_name(owner: str, track: Track) -> str:
    """``NAME-<track>``: the track's Service's name, so that both say the same."""
    return service_name(owner, track)


def picker_name(owner: str, track: Track) -> str:
    """``NAME-<track>-epp``, a Service name (63 characters at most): a long pool name is cut
    and told apart by a hash of it."""
    name = f"{pool_name(owner, track)}-epp"
    if len(name) <= DNS_LABEL_MAX:
        return name
    digest = hashlib.sha256(pool_name(owner, track).encode()).hexdigest()[:6]
    return f"{pool_name(owner, track)[: DNS_LABEL_MAX - 11]}-{digest}-epp"


def picker_account(owner: str) -> str:
    return f"{owner}-endpoint-picker"


def _picker_labels(owner: str, track: Track | None = None) -> dict[str, str]:
    labels = {
        LABEL_MANAGED_BY: MANAGER,
        "app.kubernetes.io/name": PICKER_APP,
        "app.kubernetes.io/instance": owner,
        LABEL_PICKER: owner,
    }
    return labels | ({LABEL_TRACK: track} if track else {})


def build_pool(
    owner: Owner, track: Track, revision: str, traffic: InferencePoolTraffic
) -> dict[str, Any]:
    """The track's InferencePool: its revision's pods on Triton's HTTP port, picked by
    its own picker."""
    return {
        "apiVersion": INFERENCEPOOL.api_version,
        "kind": INFERENCEPOOL.kind,
        "metadata": owner.metadata(
            pool_name(owner.name, track), common_labels(owner.name) | {LABEL_TRACK: track}
        ),
        "spec": {
            "selector": {"matchLabels": revision_selector(owner.name, revision)},
            "targetPorts": [{"number": HTTP_PORT}],
            "endpointPickerRef": {
                "name": picker_name(owner.name, track),
                "port": {"number": PICKER_GRPC_PORT},
                "failureMode": traffic.endpoint_picker.failure_mode,
            },
        },
    }


def picker_args(owner: Owner, track: Track, traffic: InferencePoolTraffic) -> list[str]:
    """The picker's flags, then the user's:

    - its pool and its ports (the Service's and the probes');
    - each pod's load read from Triton's metrics port (8002; the picker's default is the
      pool's target port, 8000, where Triton serves no /metrics);
    - its own metrics without a bearer token, scraped by the PodMonitor like Triton's
      (they carry no secret), and without pprof on that port (open to anyone who reaches
      it once unauthenticated) or tracing (exported to a collector nobody runs: the
      extension's chart turns it off too)."""
    return [
        f"--pool-name={pool_name(owner.name, track)}",
        f"--pool-namespace={owner.namespace}",
        f"--pool-group={INFERENCEPOOL.group}",
        f"--grpc-port={PICKER_GRPC_PORT}",
        f"--grpc-health-port={PICKER_HEALTH_PORT}",
        f"--metrics-port={PICKER_METRICS_PORT}",
        f"--model-server-metrics-port={METRICS_PORT}",
        "--metrics-endpoint-auth=false",
        "--enable-pprof=false",
        "--tracing=false",
        *traffic.endpoint_picker.args,
    ]


def _grpc_probe(period: int, failures: int) -> dict[str, Any]:
    return {
        "grpc": {"port": PICKER_HEALTH_PORT, "service": "inference-extension"},
        "periodSeconds": period,
        "failureThreshold": failures,
    }


def build_picker(owner: Owner, track: Track, traffic: InferencePoolTraffic) -> dict[str, Any]:
    """The Deployment of one pool's picker: one replica (a second needs leader election).
    A change rolls a new pod in before the old one goes (the extension's chart recreates
    it: under FailClose every request of the pool fails meanwhile); for that moment two
    pickers serve the pool, each scheduling the requests it is asked about."""
    labels = _picker_labels(owner.name, track)
    selector = {LABEL_PICKER: owner.name, LABEL_TRACK: track}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": owner.metadata(picker_name(owner.name, track), labels),
        "spec": {
            "replicas": 1,
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": picker_account(owner.name),
                    "enableServiceLinks": False,
                    # The picker's image picks its own non-root user (distroless nonroot).
                    "securityContext": {
                        "runAsNonRoot": True,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "terminationGracePeriodSeconds": 130,
                    "containers": [
                        {
                            "name": "epp",
                            "image": traffic.endpoint_picker.image,
                            "args": picker_args(owner, track, traffic),
                            "env": [
                                {
                                    "name": "NAMESPACE",
                                    "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
                                }
                            ],
                            "ports": [
                                {"name": "grpc", "containerPort": PICKER_GRPC_PORT},
                                {"name": "grpc-health", "containerPort": PICKER_HEALTH_PORT},
                                {"name": "metrics", "containerPort": PICKER_METRICS_PORT},
                            ],
                            "securityContext": copy.deepcopy(CONTAINER_SECURITY_CONTEXT),
                            "readinessProbe": _grpc_probe(2, 3),
                            "livenessProbe": _grpc_probe(10, 3),
                        }
                    ],
                },
            },
        },
    }


def build_picker_service(owner: Owner, track: Track) -> dict[str, Any]:
    """What the pool's ``endpointPickerRef`` names: the gateway calls the picker here.
    Its metrics are scraped from the pods (the PodMonitor), not through the Service."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": owner.metadata(
            picker_name(owner.name, track), _picker_labels(owner.name, track)
        ),
        "spec": {
            "type": "ClusterIP",
            "selector": {LABEL_PICKER: owner.name, LABEL_TRACK: track},
            "ports": [
                {
                    "name": "grpc-ext-proc",
                    "port": PICKER_GRPC_PORT,
                    "targetPort": "grpc",
                    "protocol": "TCP",
                    "appProtocol": "http2",
                },
            ],
        },
    }


#: What a picker reads (the extension chart's Roles): its pool, the pool's pods, and the
#: InferenceObjectives and model rewrites that name the pool. The operator holds these
#: itself (it may only grant what it has).
PICKER_RULES: list[dict[str, Any]] = [
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
    {
        "apiGroups": [INFERENCEPOOL.group],
        "resources": [INFERENCEPOOL.plural],
        "verbs": ["get", "list", "watch"],
    },
    {
        "apiGroups": [_OBJECTIVES_GROUP],
        "resources": ["inferenceobjectives", "inferencemodelrewrites"],
        "verbs": ["get", "list", "watch"],
    },
]


def build_picker_access(owner: Owner) -> list[dict[str, Any]]:
    """The pickers' ServiceAccount, and a Role of this namespace bound to it."""
    name = picker_account(owner.name)
    labels = _picker_labels(owner.name)
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": owner.metadata(name, labels)},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": owner.metadata(name, labels),
            "rules": copy.deepcopy(PICKER_RULES),
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": owner.metadata(name, labels),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": owner.namespace}],
        },
    ]


def build_pool_route(
    owner: Owner, traffic: InferencePoolTraffic, weights: Weights
) -> dict[str, Any]:
    """The HTTPRoute ``NAME``: one rule, a weighted InferencePool backend per track."""
    return build_route(
        owner,
        "inferencePool",
        [p.model_dump(mode="json", by_alias=True, exclude_none=True) for p in traffic.parent_refs],
        list(traffic.hostnames),
        [
            {
                "group": INFERENCEPOOL.group,
                "kind": INFERENCEPOOL.kind,
                "name": pool_name(owner.name, track),
                "weight": w,
            }
            for track, w in weights.tracks()
        ],
    )


def pool_refusal(pool: dict[str, Any], route: dict[str, Any]) -> str | None:
    """Why the Gateways the route names do not (yet) serve the pool: each must have
    accepted it and resolved its picker, for the pool's current generation. Pure.

    A pool's parents are the Gateways themselves (no listener or port), and a parent
    entry names its namespace explicitly (the extension's conformance requires it)."""
    route_namespace = (route.get("metadata") or {}).get("namespace", "")
    parents = [
        {k: v for k, v in ref.items() if k not in ("sectionName", "port")}
        | {"namespace": ref.get("namespace") or route_namespace}
        for ref in (route.get("spec") or {}).get("parentRefs") or []
    ]
    return parents_refusal(pool, parents, INFERENCEPOOL.kind)


def picker_refusal(pods: list[dict[str, Any]], name: str) -> str | None:
    """Why a pool's picker cannot schedule requests (none of its pods serves), or None.
    Pure. Pods, not the Deployment's status: a picker pod's readiness is what the
    operator is woken by (main.picker_event), and what a Service sends calls to."""
    if any(pod_serving(pod) for pod in pods):
        return None
    return (
        f"its endpoint picker {name} has no Ready pod yet"
        f" (kubectl describe deployment {name}: its image, its args)"
    )


class InferencePoolRouter(Router):
    kind = "inferencePool"
    resource = INFERENCEPOOL
    missing_api_hint = (
        "install the Gateway API Inference Extension's CRDs (InferencePool,"
        " inference.networking.k8s.io/v1) and the Gateway API's, or choose another"
        " spec.traffic.router"
    )
    data_plane_reports = True

    def __init__(self, kube: KubeApi, allowed_images: Sequence[str] = ()) -> None:
        super().__init__(kube, allowed_images)
        # The route as reconcile() left it, for the verify_weights() that follows (used
        # once), and why it kept its weights when it did.
        self._written: dict[str, Any] | None = None
        self._held_back: str | None = None
        # The pools as reconcile() left them, for the same verify_weights() (used once).
        self._pools: dict[Track, dict[str, Any]] = {}
        self._traffic: InferencePoolTraffic | None = None

    def reconcile(
        self, owner: Owner, spec: LLMDeploymentSpec, weights: Weights, backends: Backends
    ) -> None:
        traffic = spec.traffic.inference_pool
        if traffic is None:
            raise ReconcileError(
                "InvalidSpec", "router inferencePool needs spec.traffic.inferencePool.parentRefs"
            )
        self._traffic = traffic
        refused = image_refusal(
            traffic.endpoint_picker.image,
            self.allowed_images,
            "traffic.inferencePool.endpointPicker.image",
        )
        try:
            for obj in build_picker_access(owner):
                ensure(self.kube, obj)
            self._pools = {}
            for track, revision in backends.items():
                if refused is None:
                    ensure(self.kube, build_picker(owner, track, traffic))
                ensure(self.kube, build_picker_service(owner, track))
                _, self._pools[track] = ensure(
                    self.kube, build_pool(owner, track, revision, traffic)
                )
            route = self._read_route(owner)
            self._held_back = self._unserved(owner, route, weights)
            if self._held_back is None:
                _, route = ensure(self.kube, build_pool_route(owner, traffic, weights), route)
            self._written = route
            for track in TRACKS:
                if track not in backends and self._unrouted(owner, route, track):
                    self._remove_track(owner, track)
        except MissingApi:
            raise self.missing_api() from None
        if refused is not None:
            # A picker of an image the platform does not allow is never run, and no weight
            # moves onto a pool without one.
            raise ReconcileError("ImageNotAllowed", refused)

    def _unserved(self, owner: Owner, route: dict[str, Any] | None, weights: Weights) -> str | None:
        """Why the route cannot take ``weights`` yet: a pool they give more weight than it
        has now whose picker has no Ready pod (under FailClose the gateway would refuse
        its every request; under FailOpen it would skip the picker). Weight taken away is
        never held back: an abort or rollback is written at once."""
        held = _weights(owner, route) if route is not None else Weights(0, 0)
        gaining = [track for track, weight in weights.tracks() if weight > getattr(held, track)]
        why = self._pickers_refusal(owner, gaining)
        return None if why is None else f"{why}; the route keeps its weights"

    def _pickers_refusal(self, owner: Owner, tracks: list[Track]) -> str | None:
        """Why the pool of one of ``tracks`` cannot take requests (its picker has no Ready
        pod), or None; one list of the pickers' pods for all of them."""
        if not tracks:
            return None
        pods = self.kube.list("v1", "Pod", owner.namespace, f"{LABEL_PICKER}={owner.name}")
        for track in tracks:
            mine = [
                p for p in pods if (p["metadata"].get("labels") or {}).get(LABEL_TRACK) == track
            ]
            why = picker_refusal(mine, picker_name(owner.name, track))
            if why is not None:
                return f"InferencePool {owner.namespace}/{pool_name(owner.name, track)}: {why}"
        return None

    def _unrouted(self, owner: Owner, route: dict[str, Any] | None, track: Track) -> bool:
        """Whether a track's pool can go: the route no longer weights it, and the Gateways
        have taken that route (until then they may still send it requests)."""
        if route is not None and pool_name(owner.name, track) in route_weights(
            route, kind=INFERENCEPOOL.kind
        ):
            return False
        wait = self._traffic is None or self._traffic.wait_for_gateways
        return route is None or not wait or route_refusal(route) is None

    def _read_route(self, owner: Owner) -> dict[str, Any] | None:
        try:
            route = self.kube.get(
                HTTPROUTE.api_version, HTTPROUTE.kind, owner.namespace, owner.name
            )
        except MissingApi:
            raise self.missing_api() from None
        return route

    def get_weights(self, owner: Owner) -> Weights | None:
        route = self._read_route(owner)
        return None if route is None else _weights(owner, route)

    def verify_weights(self, owner: Owner, weights: Weights) -> WeightCheck:
        """The route asks for ``weights``; every weighted pool's picker is available; and
        (unless ``waitForGateways: false``) every Gateway the route names has accepted
        the route and each weighted pool and resolved their references."""
        route, self._written = self._written, None
        pools, self._pools = self._pools, {}
        if self._held_back is not None:
            return WeightCheck(False, self._held_back)
        if route is None:
            route = self._read_route(owner)
        actual = None if route is None else _weights(owner, route)
        if route is None or actual != weights:
            return WeightCheck(False, None if actual is None else f"it holds {actual.describe()}")
        wait = self._traffic is None or self._traffic.wait_for_gateways
        refusal = route_refusal(route) if wait else None
        if refusal is not None:
            return WeightCheck(False, refusal)
        weighted = [track for track, weight in weights.tracks() if weight]
        why = self._pickers_refusal(owner, weighted)
        if why is not None:
            return WeightCheck(False, why)
        for track in weighted if wait else ():
            name = pool_name(owner.name, track)
            pool = pools.get(track) or self.kube.get(
                INFERENCEPOOL.api_version, INFERENCEPOOL.kind, owner.namespace, name
            )
            if pool is None:
                return WeightCheck(False, f"InferencePool {owner.namespace}/{name} is gone")
            refusal = pool_refusal(pool, route)
            if refusal is not None:
                return WeightCheck(False, refusal)
        return HELD

    def _remove_track(self, owner: Owner, track: Track) -> None:
        """A track without pods (the baseline between rollouts): its pool and picker go."""
        with contextlib.suppress(MissingApi):
            remove(
                self.kube,
                INFERENCEPOOL.api_version,
                INFERENCEPOOL.kind,
                owner.namespace,
                pool_name(owner.name, track),
                owner.uid,
            )
        name = picker_name(owner.name, track)
        for api_version, kind in (("apps/v1", "Deployment"), ("v1", "Service")):
            remove(self.kube, api_version, kind, owner.namespace, name, owner.uid)

    def finalize(self, owner: Owner) -> None:
        for track in TRACKS:
            self._remove_track(owner, track)
        name = picker_account(owner.name)
        for api_version, kind in (
            ("rbac.authorization.k8s.io/v1", "RoleBinding"),
            ("rbac.authorization.k8s.io/v1", "Role"),
            ("v1", "ServiceAccount"),
        ):
            remove(self.kube, api_version, kind, owner.namespace, name, owner.uid)
        remove_route(self.kube, owner, self.kind)


def _weights(owner: Owner, route: dict[str, Any]) -> Weights:
    """The split of the route's InferencePool backends (any other backend counts as none)."""
    weights = route_weights(route, kind=INFERENCEPOOL.kind)
    return Weights(
        stable=weights.get(pool_name(owner.name, "stable"), 0),
        canary=weights.get(pool_name(owner.name, "canary"), 0),
        baseline=weights.get(pool_name(owner.name, "baseline"), 0),
    )


__all__ = [
    "ENDPOINT_PICKER_IMAGE",
    "INFERENCEPOOL",
    "InferencePoolRouter",
    "build_picker",
    "build_picker_access",
    "build_picker_service",
    "build_pool",
    "build_pool_route",
    "picker_refusal",
    "pool_refusal",
]
