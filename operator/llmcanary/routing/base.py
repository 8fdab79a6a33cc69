"""The router interface and the choice of router from the spec."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from llmcanary.api.spec import LLMDeploymentSpec
from llmcanary.builders import Owner
from llmcanary.kube.client import Kube


@dataclass(frozen=True)
class Weights:
    """The traffic split as percentages; ``stable + canary + baseline == 100``."""

    stable: int
    canary: int
    baseline: int = 0  # a fresh baseline of the stable revision beside the canary


class Router(Protocol):
    """Applies and reads the stable/canary split for one LLMDeployment.

    The Services ``NAME-stable`` and ``NAME-canary`` (and ``NAME-baseline`` when the
    baseline has a weight) exist before a router is used; a router only splits traffic
    between them (or, for ``replicas``, over their pods, with no baseline).
    """

    kind: str
    # True where the split is approximated (by replica counts) rather than enforced.
    approximate: bool

    def reconcile(
        self, owner: Owner, spec: LLMDeploymentSpec, canary_weight: int, baseline_weight: int = 0
    ) -> None:
        """Create or correct the router's objects so the canary gets ``canary_weight`` %
        and the baseline ``baseline_weight`` %."""
        ...

    def set_weights(
        self, owner: Owner, spec: LLMDeploymentSpec, canary_weight: int, baseline_weight: int = 0
    ) -> None:
        """Move the split (objects must exist: see reconcile)."""
        ...

    def get_weights(self, owner: Owner) -> Weights | None:
        """The split as the cluster holds it now, or None if the router is not set up."""
        ...

    def verify_weights(self, owner: Owner, canary_weight: int, baseline_weight: int = 0) -> bool:
        """Whether the cluster holds (or, if approximate, best approximates) the split."""
        ...

    def finalize(self, owner: Owner) -> None:
        """Remove the router's objects (the LLMDeployment switched to another router)."""
        ...


ROUTER_KINDS: tuple[str, ...] = ("gatewayAPI", "istio", "replicas")


def router_of_kind(kube: Kube, kind: str) -> Router:
    """The router named ``kind`` (e.g. a previous ``status.router``, to finalize it)."""
    from llmcanary.routing.gateway_api import GatewayAPIRouter
    from llmcanary.routing.istio import IstioRouter
    from llmcanary.routing.replicas import ReplicasRouter

    routers: dict[str, Callable[[Kube], Router]] = {
        GatewayAPIRouter.kind: GatewayAPIRouter,
        IstioRouter.kind: IstioRouter,
        ReplicasRouter.kind: ReplicasRouter,
    }
    if kind not in routers:
        raise ValueError(f"unknown router {kind!r}: one of {', '.join(ROUTER_KINDS)}")
    return routers[kind](kube)


def router_for(kube: Kube, spec: LLMDeploymentSpec) -> Router:
    """The router ``spec.traffic.router`` names."""
    return router_of_kind(kube, spec.traffic.router)
