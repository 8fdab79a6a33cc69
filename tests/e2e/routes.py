"""How the end-to-end tests reach an LLMDeployment: through the local stack's Gateway
(Traefik), on a hostname of its own, so that no two tests' routes overlap."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from typing import Any

from kubectl import Kubectl, canary_route_weight, wait_for

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


class WeightWatch:
    """Watches the canary's weight on the LLMDeployment's route, five times a second: when
    it first reached ``weight`` (``seen["at_<weight>"]``) and when it then went back to 0
    (``seen["at_0"]``), in epoch seconds, for counting the requests sent in between."""

    def __init__(self, kubectl: Kubectl, namespace: str, name: str, weight: int = 25) -> None:
        self.kubectl, self.namespace, self.name, self.weight = kubectl, namespace, name, weight
        self.seen: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        key = f"at_{self.weight}"
        while not self._stop.is_set():
            weight = canary_route_weight(self.kubectl, self.namespace, self.name)
            if weight == self.weight and key not in self.seen:
                self.seen[key] = time.time()
            if weight == 0 and key in self.seen and "at_0" not in self.seen:
                self.seen["at_0"] = time.time()
            self._stop.wait(0.2)

    def __enter__(self) -> WeightWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
