"""What a decision produces (the status draft, the plan, the events) and what the
reconciler reports back about carrying it out. Pure data."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from datetime import datetime

from llmcanary.api.spec import LLMDeploymentSpec
from llmcanary.api.status import (
    AnalysisRecord,
    HistoryEntry,
    LLMDeploymentStatus,
    Phase,
    PreflightStatus,
)
from llmcanary.problems import Problem
from llmcanary.rollout.observation import Observation, WorkloadObservation


@dataclass
class Draft:
    """The rollout fields of the status while a decision is made: typed, mutable, and
    frozen into :class:`LLMDeploymentStatus` by :func:`llmcanary.rollout.render.settle`.

    Each field has the name of a status field (a unit test keeps them in step); the fields
    the machine does not decide (conditions, replica counts, the headline) are rendered."""

    phase: Phase | None
    message: str | None
    stable_revision: str | None
    canary_revision: str | None
    canary_weight: int | None
    current_step: int | None
    step_started_at: str | None
    weight_verified: bool | None
    failed_checks: int | None
    inconclusive_checks: int | None
    canary_replicas: int | None
    rollout_started_at: str | None
    canary_unready_since: str | None
    pause_reason: str | None
    rolled_back_revision: str | None
    handled_requests: dict[str, str]
    last_analysis: AnalysisRecord | None
    preflight: PreflightStatus | None
    history: list[HistoryEntry]

    @classmethod
    def of(cls, status: LLMDeploymentStatus) -> Draft:
        values = {f.name: getattr(status, f.name) for f in fields(cls)}
        values["handled_requests"] = dict(status.handled_requests)
        values["history"] = list(status.history)
        return cls(**values)

    def copy(self) -> Draft:
        return replace(
            self, handled_requests=dict(self.handled_requests), history=list(self.history)
        )

    def onto(self, status: LLMDeploymentStatus, **rendered: object) -> LLMDeploymentStatus:
        """``status`` with this draft's fields, plus the rendered ones."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return status.model_copy(update=values | rendered)


@dataclass(frozen=True)
class Plan:
    """The children as they should be; the reconciler applies it in a safe order."""

    stable_revision: str
    canary_revision: str | None  # its Deployment exists (possibly scaled to 0)
    canary_replicas: int
    canary_weight: int
    # A fresh baseline of the stable revision beside the canary: as many replicas, the
    # same weight (0 and 0: none, its Deployment removed).
    baseline_replicas: int = 0
    baseline_weight: int = 0


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


# The events that announce a new weight, and a weight taken from a canary without Ready
# replicas for it: posted only when the router took it.
WEIGHT_CHANGED = "WeightChanged"
WEIGHT_LOST = "CanaryUnavailable"
# The router (a Gateway) stopped holding a split it had held: the step starts over.
SPLIT_LOST = "TrafficNotHeld"


@dataclass(frozen=True)
class Basis:
    """What a decision was made from; rendering the status needs it again."""

    spec: LLMDeploymentSpec
    generation: int | None
    status: LLMDeploymentStatus
    observation: Observation
    now: datetime
    # The stable revision's workload after the decision: the canary's, once promoted.
    stable: WorkloadObservation | None


@dataclass(frozen=True)
class Decision:
    draft: Draft
    plan: Plan
    events: tuple[Event, ...]
    basis: Basis
    # The next pass is needed at once, and no watch event may bring it: a rollout that
    # just started needs its preflight, which the next pass observes.
    again: bool = False


@dataclass(frozen=True)
class Applied:
    """What the reconciler carried out of a plan. Status records this, not the plan:
    a weight the router did not take is not recorded, and a step's clock starts only
    once the router holds the weights it was asked for."""

    # The router took the plan's weights (False: the pass failed before or at routing).
    routed: bool = True
    # The router reads back the weights asked of it; None: not read this pass.
    verified: bool | None = True
    # Why the router does not hold them (a Gateway's refusal), when it says.
    unheld: str | None = None
    # How an approximate router's actual split differs from the weight, if it does.
    traffic_note: str | None = None
    # Why carrying out the plan stopped, if it did.
    problem: Problem | None = None


@dataclass(frozen=True)
class Settled:
    """The pass's outcome: the status to write and the events to post."""

    status: LLMDeploymentStatus
    events: tuple[Event, ...]
    problem: Problem | None = None
