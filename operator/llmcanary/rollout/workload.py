"""What the loop observes about a revision's workload, and problems it reports. Pure."""

from __future__ import annotations

from dataclasses import dataclass


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
