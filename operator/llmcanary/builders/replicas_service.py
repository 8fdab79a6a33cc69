"""Router objects of the ``replicas`` router: one Service over every pod of the LLMDeployment."""

from __future__ import annotations

from typing import Any

from llmcanary.builders.meta import LABEL_DEPLOYMENT, Owner, common_labels
from llmcanary.builders.workload import GRPC_PORT, HTTP_PORT


def shared_service_name(owner: str) -> str:
    """``NAME``: no other child Service (``NAME-stable``, ``NAME-canary``) takes it."""
    return owner


def build_shared_service(owner: Owner) -> dict[str, Any]:
    """A Service named like the LLMDeployment, selecting the pods of all its revisions."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": owner.metadata(shared_service_name(owner.name), common_labels(owner.name)),
        "spec": {
            "type": "ClusterIP",
            "selector": {LABEL_DEPLOYMENT: owner.name},
            "ports": [
                {"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP"},
                {"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "protocol": "TCP"},
            ],
        },
    }


def nearest_share(ready: int, canary_weight: int) -> set[int]:
    """The canary pod counts (of ``ready`` Ready pods) whose share is nearest ``canary_weight``.

    Zero canary pods exactly when the weight is 0; at least one otherwise. Empty when no
    count qualifies (a positive weight and nothing Ready).
    """
    if canary_weight == 0:
        return {0}
    counts = range(1, ready + 1)
    if not counts:
        return set()
    best = min(abs(100 * k - canary_weight * ready) for k in counts)
    return {k for k in counts if abs(100 * k - canary_weight * ready) == best}
