"""What the loop observes about a revision's workload, and problems it reports. Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class WorkloadObservation:
    """What the cluster says about one revision's Deployment."""

    revision: str
    desired: int
    ready: int
    updated: int
    #: Why a pod of this revision is not Ready, when its containers say (CrashLoopBackOff
    #: with Triton's error, an image that cannot be pulled, ...): see :func:`pod_problem`.
    problem: str | None = None

    @property
    def all_ready(self) -> bool:
        return self.desired > 0 and self.ready >= self.desired and self.updated >= self.desired


@dataclass(frozen=True)
class Problem:
    """Something that stops reconciliation until a person acts."""

    reason: str
    message: str


# Waiting reasons that mean "not yet", not "wrong": they explain nothing to a user.
_TRANSIENT = {"ContainerCreating", "PodInitializing"}


def pod_problem(pods: Sequence[Mapping[str, Any]]) -> str | None:
    """The first reason a container of these pods gives for not running, e.g.
    ``pod tiny-llm-6c9-x: triton CrashLoopBackOff: back-off 20s restarting failed
    container: failed to load 'tiny-llm' ...``; None when none gives one."""
    for pod in pods:
        status = pod.get("status") or {}
        for container in [
            *(status.get("initContainerStatuses") or []),
            *(status.get("containerStatuses") or []),
        ]:
            waiting = (container.get("state") or {}).get("waiting") or {}
            reason = waiting.get("reason")
            if reason and reason not in _TRANSIENT:
                name = pod.get("metadata", {}).get("name", "?")
                detail = waiting.get("message") or ""
                text = f"pod {name}: {container.get('name')} {reason}"
                return f"{text}: {detail}" if detail else text
    return None
