"""The router interface and the choice of router from the spec."""

from __future__ import annotations

from typing import Protocol

from llmcanary.api.spec import LLMDeploymentSpec
from llmcanary.builders import Owner
from llmcanary.kube.client import Kube
from llmcanary.kube.errors import ReconcileError


class Router(Protocol):
    """Applies and reads the stable/canary split for one LLMDeployment."""

    def reconcile(self, owner: Owner, spec: LLMDeploymentSpec, canary_weight: int) -> None:
        """Create or correct the router's objects so the canary gets ``canary_weight`` %."""

    def get_weights(self, owner: Owner) -> tuple[int, int] | None:
        """(stable, canary) weights as the cluster holds them, or None if not set up."""


def router_for(kube: Kube, spec: LLMDeploymentSpec) -> Router:
    from llmcanary.routing.gateway_api import GatewayAPIRouter

    if spec.traffic.router == "gatewayAPI":
        return GatewayAPIRouter(kube)
    raise ReconcileError(
        "RouterUnavailable",
        f"spec.traffic.router {spec.traffic.router!r} is not available in this version of"
        " llmcanary; use gatewayAPI",
    )
