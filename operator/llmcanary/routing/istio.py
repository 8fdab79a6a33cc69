"""Istio router: weights on the routes of a VirtualService named like the LLMDeployment."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from llmcanary.api.spec import IstioTraffic, LLMDeploymentSpec
from llmcanary.builders import Owner
from llmcanary.builders.meta import Track, common_labels, service_name
from llmcanary.builders.workload import HTTP_PORT
from llmcanary.kube.children import ensure, remove
from llmcanary.kube.client import KubeApi
from llmcanary.kube.errors import MissingApi
from llmcanary.problems import ReconcileError
from llmcanary.routing.base import Backends, Resource, Router, Weights

VIRTUALSERVICE = Resource("networking.istio.io", "v1", "VirtualService", "virtualservices")
CLUSTER_DOMAIN = "cluster.local"


def service_host(owner: Owner, track: Track) -> str:
    """The fully qualified name of a track's Service, as Istio destinations name it."""
    return f"{service_name(owner.name, track)}.{owner.namespace}.svc.{CLUSTER_DOMAIN}"


def build_virtual_service(owner: Owner, traffic: IstioTraffic, weights: Weights) -> dict[str, Any]:
    """A VirtualService named like the LLMDeployment with a weighted route per track."""
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
                    for track, weight in weights.tracks()
                ],
            }
        ],
    }
    if traffic.gateways:
        spec["gateways"] = list(traffic.gateways)
    return {
        "apiVersion": VIRTUALSERVICE.api_version,
        "kind": VIRTUALSERVICE.kind,
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


class IstioRouter(Router):
    kind = "istio"
    resource = VIRTUALSERVICE
    # Istio is opt-in in the chart (rbac.istio) without list/watch: not a watched child.
    watched = False
    missing_api_hint = (
        "install Istio (1.22 or later serves networking.istio.io/v1) or choose another"
        " spec.traffic.router"
    )

    def __init__(
        self,
        kube: KubeApi,
        allowed_images: Sequence[str] = (),
        api_version: str = VIRTUALSERVICE.api_version,
    ) -> None:
        """``api_version``: ``networking.istio.io/v1beta1`` for Istio before 1.22."""
        super().__init__(kube, allowed_images)
        self.api_version = api_version

    def missing_api(self) -> MissingApi:
        return MissingApi(self.api_version, VIRTUALSERVICE.kind, self.missing_api_hint)

    def reconcile(
        self, owner: Owner, spec: LLMDeploymentSpec, weights: Weights, backends: Backends
    ) -> None:
        if spec.traffic.istio is None:
            raise ReconcileError("InvalidSpec", "router istio needs spec.traffic.istio.hosts")
        desired = build_virtual_service(owner, spec.traffic.istio, weights)
        desired["apiVersion"] = self.api_version
        # The whole VirtualService is ours, so applying it with the new weights is the update.
        try:
            ensure(self.kube, desired)
        except MissingApi:
            raise self.missing_api() from None

    def get_weights(self, owner: Owner) -> Weights | None:
        try:
            vs = self.kube.get(self.api_version, VIRTUALSERVICE.kind, owner.namespace, owner.name)
        except MissingApi:
            raise self.missing_api() from None
        if vs is None:
            return None
        weights = virtual_service_weights(vs)
        return Weights(
            stable=weights.get(service_host(owner, "stable"), 0),
            canary=weights.get(service_host(owner, "canary"), 0),
            baseline=weights.get(service_host(owner, "baseline"), 0),
        )

    def finalize(self, owner: Owner) -> None:
        # No VirtualService API means no VirtualService of ours to remove; another's is
        # left alone.
        with contextlib.suppress(MissingApi):
            remove(
                self.kube,
                self.api_version,
                VIRTUALSERVICE.kind,
                owner.namespace,
                owner.name,
                owner.uid,
            )
