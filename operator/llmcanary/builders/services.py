"""The two Services that the traffic routers point at: ``NAME-stable`` and ``NAME-canary``."""

from __future__ import annotations

from typing import Any

from llmcanary.builders.meta import (
    LABEL_TRACK,
    Owner,
    Track,
    common_labels,
    revision_selector,
    service_name,
)
from llmcanary.builders.workload import GRPC_PORT, HTTP_PORT, METRICS_PORT


def build_service(owner: Owner, track: Track, revision: str) -> dict[str, Any]:
    """A Service for one track, selecting the pods of ``revision`` by revision label."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": owner.metadata(
            service_name(owner.name, track),
            common_labels(owner.name) | {LABEL_TRACK: track},
        ),
        "spec": {
            "type": "ClusterIP",
            "selector": revision_selector(owner.name, revision),
            "ports": [
                {"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP"},
                {"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "protocol": "TCP"},
                {
                    "name": "metrics",
                    "port": METRICS_PORT,
                    "targetPort": "metrics",
                    "protocol": "TCP",
                },
            ],
        },
    }
