"""Istio router: weights on the routes of a VirtualService named like the LLMDeployment."""

from __future__ import annotations

import contextlib
from typing import Any

from llmcanary.api.spec import LLMDeploymentSpec
from llmcanary.builders import Owner
from llmcanary.builders.virtual_service import (
    VIRTUALSERVICE_API_VERSION,
    build_virtual_service,
    service_host,
    virtual_service_weights,
)
from llmcanary.kube.children import ensure
from llmcanary.kube.client import Kube
from llmcanary.kube.errors import MissingApi, ReconcileError
from llmcanary.routing.base import Weights

KIND = "VirtualService"


class IstioRouter:
    kind = "istio"
    approximate = False

    def __init__(self, kube: Kube, api_version: str = VIRTUALSERVICE_API_VERSION) -> None:
        """``api_version``: ``networking.istio.io/v1beta1`` for Istio before 1.22."""
        self.kube = kube
        self.api_version = api_version

    def _missing(self) -> MissingApi:
        return MissingApi(
            self.api_version,
            KIND,
            "install Istio (1.22 or later serves networking.istio.io/v1) or choose another"
            " spec.traffic.router",
        )

    def reconcile(
        self, owner: Owner, spec: LLMDeploymentSpec, canary_weight: int, baseline_weight: int = 0
    ) -> None:
        if spec.traffic.istio is None:
            raise ReconcileError("InvalidSpec", "router istio needs spec.traffic.istio.hosts")
        desired = build_virtual_service(owner, spec.traffic.istio, canary_weight, baseline_weight)
        desired["apiVersion"] = self.api_version
        try:
            ensure(self.kube, desired)
        except MissingApi:
            raise self._missing() from None

    def set_weights(
        self, owner: Owner, spec: LLMDeploymentSpec, canary_weight: int, baseline_weight: int = 0
    ) -> None:
        # The whole VirtualService is ours, so applying it with the new weights is the update.
        self.reconcile(owner, spec, canary_weight, baseline_weight)

    def _get(self, owner: Owner) -> dict[str, Any] | None:
        try:
            return self.kube.get(self.api_version, KIND, owner.namespace, owner.name)
        except MissingApi:
            raise self._missing() from None

    def get_weights(self, owner: Owner) -> Weights | None:
        vs = self._get(owner)
        if vs is None:
            return None
        weights = virtual_service_weights(vs)
        return Weights(
            stable=weights.get(service_host(owner, "stable"), 0),
            canary=weights.get(service_host(owner, "canary"), 0),
            baseline=weights.get(service_host(owner, "baseline"), 0),
        )

    def verify_weights(self, owner: Owner, canary_weight: int, baseline_weight: int = 0) -> bool:
        stable = 100 - canary_weight - baseline_weight
        return self.get_weights(owner) == Weights(stable, canary_weight, baseline_weight)

    def finalize(self, owner: Owner) -> None:
        # No VirtualService API means no VirtualService of ours to remove.
        with contextlib.suppress(MissingApi):
            self.kube.delete(self.api_version, KIND, owner.namespace, owner.name)
