"""The local stack's EndpointSlices: what the gateway balances over.

In a cluster the EndpointSlice controller lists each Service's Ready pods for the
gateway. Here it cannot: pod IPs are loopback addresses (:data:`~.pods.POD_NETWORK`),
which the API server refuses in slices of type IPv4, so that controller is off in the
dev cluster. The API server does accept a slice of type FQDN holding the same address,
and Traefik uses an endpoint's address as the host it dials whatever the type, so the
stack mirrors every Service that selects pods into one such slice:

- named ``<service>-local``, labelled ``kubernetes.io/service-name`` (how gateways find
  a Service's slices) and ``endpointslice.kubernetes.io/managed-by`` set to
  :data:`MANAGED_BY`, and owned by the Service (it goes when the Service does);
- an endpoint per pod the selector matches that has an IP, with the conditions the
  controller would set: ``ready`` (the pod is Ready and not terminating), ``serving``,
  ``terminating``;
- the Service's ports, named as the Service names them, with a named ``targetPort``
  resolved against the pods' containers as the controller does.

Why this and not network namespaces (private pod IPs that the real controller would
accept): every Triton, the Prometheus scrape, the read pods and the tests reach pods at
their loopback IPs today; moving pods into namespaces would need a bridge, routes and
privileges for all of them, for the one component that reads slices. FQDN slices are
deprecated upstream, and a gateway could stop reading them: this module is the one
place to change then.

:func:`desired_slices` is pure; :func:`sync_slices` writes the difference.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from llmcanary.kube.client import KubeApi

__all__ = ["MANAGED_BY", "desired_slices", "sync_slices"]

log = logging.getLogger(__name__)

MANAGED_BY = "localstack.llmcanary.dev"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"


def _ready(pod: Mapping[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _container_port(pod: Mapping[str, Any], name: str) -> int | None:
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == name:
                return int(port["containerPort"])
    return None


def _target_port(port: Mapping[str, Any], pods: list[Mapping[str, Any]]) -> int | None:
    """The port a Service port reaches on its pods: a number, or a container port's name
    (the first pod that has it; the controller would cut one slice per distinct port)."""
    target = port.get("targetPort", port["port"])
    if isinstance(target, int):
        return target
    if target.isdigit():
        return int(target)
    for pod in pods:
        found = _container_port(pod, target)
        if found is not None:
            return found
    return None


def desired_slices(
    services: Iterable[Mapping[str, Any]], pods: Iterable[Mapping[str, Any]]
) -> dict[tuple[str, str], dict[str, Any]]:
    """``{(namespace, slice name): EndpointSlice}`` for every Service with a selector."""
    by_namespace: dict[str, list[Mapping[str, Any]]] = {}
    for pod in pods:
        if (pod.get("status") or {}).get("podIP"):
            by_namespace.setdefault(pod["metadata"]["namespace"], []).append(pod)
    slices: dict[tuple[str, str], dict[str, Any]] = {}
    for service in services:
        meta, spec = service["metadata"], service.get("spec") or {}
        selector = spec.get("selector") or {}
        if not selector or spec.get("type") == "ExternalName":
            continue
        namespace = meta["namespace"]
        chosen = sorted(
            (
                p
                for p in by_namespace.get(namespace, [])
                if selector.items() <= (p["metadata"].get("labels") or {}).items()
            ),
            key=lambda p: p["metadata"]["name"],
        )
        ports = []
        for port in spec.get("ports") or []:
            target = _target_port(port, chosen)
            if target is not None:
                entry = {"port": target, "protocol": port.get("protocol", "TCP")}
                ports.append({"name": port.get("name", ""), **entry})
        endpoints = []
        for pod in chosen:
            terminating = bool(pod["metadata"].get("deletionTimestamp"))
            ready = _ready(pod)
            endpoints.append(
                {
                    "addresses": [pod["status"]["podIP"]],
                    "conditions": {
                        "ready": ready and not terminating,
                        "serving": ready,
                        "terminating": terminating,
                    },
                    "targetRef": {
                        "kind": "Pod",
                        "namespace": namespace,
                        "name": pod["metadata"]["name"],
                        "uid": pod["metadata"]["uid"],
                    },
                    **({"nodeName": n} if (n := pod["spec"].get("nodeName")) else {}),
                }
            )
        name = f"{meta['name']}-local"
        slices[(namespace, name)] = {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {SERVICE_NAME_LABEL: meta["name"], MANAGED_BY_LABEL: MANAGED_BY},
                "ownerReferences": [
                    {
                        "apiVersion": "v1",
                        "kind": "Service",
                        "name": meta["name"],
                        "uid": meta["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "addressType": "FQDN",
            "endpoints": endpoints,
            "ports": ports,
        }
    return slices


def _same(current: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    meta = current.get("metadata") or {}
    return bool(
        (current.get("endpoints") or []) == desired["endpoints"]
        and (current.get("ports") or []) == desired["ports"]
        and meta.get("ownerReferences") == desired["metadata"]["ownerReferences"]
    )


def sync_slices(
    kube: KubeApi,
    services: Iterable[Mapping[str, Any]],
    pods: Iterable[Mapping[str, Any]],
    current: Iterable[Mapping[str, Any]],
) -> int:
    """Write the slices that differ from :func:`desired_slices` and delete the mirror's
    slices of Services that are gone; ``current`` is the mirror's slices as listed.
    Returns how many objects it wrote or deleted."""
    desired = desired_slices(services, pods)
    have = {(s["metadata"]["namespace"], s["metadata"]["name"]): s for s in current}
    writes = 0
    for key, wanted in desired.items():
        found = have.get(key)
        if found is not None and _same(found, wanted):
            continue
        try:
            kube.apply(wanted)
            writes += 1
        except Exception as exc:  # a namespace being deleted: the next pass sees
            log.info("could not write an EndpointSlice", extra={"slice": key, "error": str(exc)})
    for key in have.keys() - desired.keys():
        try:
            kube.delete("discovery.k8s.io/v1", "EndpointSlice", *key)
            writes += 1
        except Exception as exc:
            log.info("could not delete an EndpointSlice", extra={"slice": key, "error": str(exc)})
    return writes
