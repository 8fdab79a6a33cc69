"""What a pod's own object says about it: pure inspection of the dicts the API returns."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["pod_ready", "pod_serving"]


def pod_ready(pod: Mapping[str, Any]) -> bool:
    """The pod's ``Ready`` condition is ``True`` (whether or not it is being deleted)."""
    status = pod.get("status") or {}
    conditions = status.get("conditions") if isinstance(status, Mapping) else None
    return any(
        isinstance(c, Mapping) and c.get("type") == "Ready" and c.get("status") == "True"
        for c in conditions or ()
    )


def pod_serving(pod: Mapping[str, Any]) -> bool:
    """Whether a Service sends traffic to the pod: Ready and not terminating."""
    metadata = pod.get("metadata") or {}
    if isinstance(metadata, Mapping) and metadata.get("deletionTimestamp"):
        return False
    return pod_ready(pod)
