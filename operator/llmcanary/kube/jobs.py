"""How a run-once Job of the operator stands, as its object and its pods say. Pure.

The operator runs two kinds of Job in a tenant's namespace: the repository read of each new
revision (:mod:`llmcanary.builders.revision_read`) and the opt-in GPU memory probe
(:mod:`llmcanary.preflight.gpu_probe`). Both run one pod once (``backoffLimit: 0``), and
both report the same way: running (and why its pod is not done: Pending, an image that
cannot be pulled, a volume that cannot attach), failed (why), or succeeded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["job_failure", "job_succeeded", "pod_state"]


def job_failure(job: Mapping[str, Any]) -> str | None:
    """Why the Job failed (its ``Failed`` condition, or a failed pod); None if it has not."""
    status = job.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Failed" and condition.get("status") == "True":
            return f"{condition.get('reason', 'Failed')}: {condition.get('message', '')}".strip()
    if status.get("failed"):
        return "its pod failed"
    return None


def job_succeeded(job: Mapping[str, Any]) -> bool:
    return bool((job.get("status") or {}).get("succeeded"))


def pod_state(pods: Sequence[Mapping[str, Any]]) -> str:
    """The Job's pod as one phrase: ``pod Pending (ErrImagePull, 0/2 nodes are
    available: ...)``; the scheduler's and the kubelet's own words, where they say."""
    if not pods:
        return "no pod yet"
    status = pods[0].get("status") or {}
    waiting = [
        (c.get("state") or {}).get("waiting") or {}
        for c in [
            *(status.get("initContainerStatuses") or []),
            *(status.get("containerStatuses") or []),
        ]
    ]
    reasons = [
        f"{w['reason']}: {w['message']}" if w.get("message") else str(w["reason"])
        for w in waiting
        if w.get("reason") and w.get("reason") not in ("ContainerCreating", "PodInitializing")
    ]
    unschedulable = [
        str(c.get("message", ""))
        for c in status.get("conditions") or []
        if c.get("type") == "PodScheduled" and c.get("status") == "False"
    ]
    detail = ", ".join([*reasons, *unschedulable])
    return f"pod {status.get('phase', 'Pending')}" + (f" ({detail})" if detail else "")
