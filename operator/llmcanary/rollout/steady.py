"""The steady state: one revision serving all traffic, and what status says about it.

Pure: everything it knows comes in as arguments, the clock included.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from llmcanary.api.spec import LLMDeploymentSpec
from llmcanary.api.status import LLMDeploymentStatus
from llmcanary.status import set_condition


@dataclass(frozen=True)
class WorkloadObservation:
    """What the cluster says about one revision's Deployment."""

    revision: str
    desired: int
    ready: int
    updated: int

    @property
    def all_ready(self) -> bool:
        return self.desired > 0 and self.ready >= self.desired and self.updated >= self.desired


@dataclass(frozen=True)
class Problem:
    """Something that stops reconciliation until a person acts."""

    reason: str
    message: str


def stable_revision(status: LLMDeploymentStatus, current: str) -> str:
    """The revision serving traffic: the recorded one, or ``current`` for a new object."""
    return status.stable_revision or current


def steady_status(
    spec: LLMDeploymentSpec,
    generation: int | None,
    status: LLMDeploymentStatus,
    current_revision: str,
    stable: WorkloadObservation | None,
    problem: Problem | None,
    now: datetime,
) -> LLMDeploymentStatus:
    """Status of an LLMDeployment whose stable revision serves 100% of traffic."""
    stable_rev = stable_revision(status, current_revision)
    ready = stable.ready if stable else 0
    desired = spec.replicas
    all_ready = stable is not None and stable.all_ready

    if all_ready:
        phase = "Stable"
    elif status.phase in (None, "Initializing"):
        phase = "Initializing"
    else:
        phase = status.phase

    conditions = set_condition(
        status.conditions,
        "Ready",
        all_ready,
        "ReplicasReady" if all_ready else "ReplicasNotReady",
        f"{ready}/{desired} Triton replicas of revision {stable_rev} are ready",
        now,
        generation,
    )
    pending = current_revision != stable_rev
    conditions = set_condition(
        conditions,
        "Progressing",
        pending,
        "NewRevision" if pending else "NoRollout",
        (
            f"revision {current_revision} differs from the stable revision {stable_rev}"
            if pending
            else f"revision {stable_rev} serves all traffic"
        ),
        now,
        generation,
    )
    conditions = set_condition(
        conditions,
        "Degraded",
        problem is not None,
        problem.reason if problem else "AsExpected",
        problem.message if problem else "",
        now,
        generation,
    )
    return status.model_copy(
        update={
            "observed_generation": generation,
            "phase": phase,
            "message": problem.message if problem else None,
            "stable_revision": stable_rev,
            "canary_revision": current_revision if pending else None,
            "canary_weight": 0,
            "current_step": 0 if pending else None,
            "replicas": desired,
            "ready_replicas": ready,
            "router": spec.traffic.router,
            "conditions": conditions,
        }
    )
