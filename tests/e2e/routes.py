"""How the end-to-end tests reach an LLMDeployment: through the local stack's Gateway
(Traefik), on a hostname of its own, so that no two tests' routes overlap."""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any

from kubectl import Kubectl, wait_for

from llmcanary_dev.localstack.gateway import (
    GATEWAY_NAME,
    GATEWAY_NAMESPACE,
    backend_name,
    parent_ref,
)


def route_host(namespace: str, name: str) -> str:
    return f"{name}.{namespace}.test"


def attach(doc: dict[str, Any], namespace: str) -> str:
    """Route the LLMDeployment through the stack's Gateway under its own hostname;
    returns that hostname (the Host header its clients send)."""
    traffic = doc["spec"].setdefault("traffic", {}).setdefault("gatewayAPI", {})
    traffic["parentRefs"] = [parent_ref()]
    host = route_host(namespace, doc["metadata"]["name"])
    traffic["hostnames"] = [host]
    return host


def arm_backend(namespace: str, name: str, arm: str) -> str:
    """How the gateway names the arm's Service in its access log and metrics."""
    return backend_name(namespace, f"{name}-{arm}")


def route_conditions(
    kubectl: Kubectl,
    namespace: str,
    name: str,
    gateway: tuple[str, str] = (GATEWAY_NAMESPACE, GATEWAY_NAME),
) -> dict[str, str]:
    """``{type: status}`` of the conditions the Gateway wrote on the route, when they are
    of the route's current generation; {} when it has written none for it."""
    route = kubectl.get("httproute", name, namespace) or {}
    generation = route.get("metadata", {}).get("generation")
    for parent in (route.get("status") or {}).get("parents") or []:
        ref = parent["parentRef"]
        if (ref.get("namespace", namespace), ref["name"]) != gateway:
            continue
        return {
            c["type"]: c["status"]
            for c in parent.get("conditions") or []
            if c.get("observedGeneration") == generation
        }
    return {}


def wait_until_served(gateway_url: str, host: str, timeout: float = 30) -> None:
    """Until the gateway answers for ``host`` with a Ready backend (Triton's readiness
    through the route). A revision is Stable once its pods are Ready; the gateway serves
    them after the stack's EndpointSlice mirror (0.5 s) and Traefik's throttle (2 s):
    load sent in between gets 503 "no available server"."""

    def served() -> bool:
        request = urllib.request.Request(f"{gateway_url}/v2/health/ready", headers={"Host": host})
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:
                return bool(answer.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    wait_for(f"the gateway to serve {host}", served, timeout=timeout)
