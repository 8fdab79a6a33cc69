"""The ``LLMDeployment`` status: written only by :mod:`llmcanary.kube.status_writer`.

All rollout state lives here, so a restarted operator continues where it stopped.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from llmcanary.api.spec import ApiModel

Phase = Literal[
    "Initializing",
    "Preflight",
    "Progressing",
    "Paused",
    "Promoting",
    "Stable",
    "RolledBack",
    "Failed",
]

ConditionType = Literal["Ready", "Progressing", "Degraded", "PreflightPassed"]

# How a rollout ended (status.history).
Outcome = Literal["Promoted", "RolledBack", "Aborted", "Superseded", "Failed"]


class Condition(ApiModel):
    """The standard ``metav1.Condition`` shape."""

    type: str = Field(min_length=1, max_length=316)
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(
        min_length=1, max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
    )
    message: str = Field(default="", max_length=32768)
    last_transition_time: str
    observed_generation: int | None = Field(default=None, ge=0)


class ArmEstimate(ApiModel):
    value: float | None = None
    """The arm's number for the criterion, in its unit (a quantile in ms, or a percent)."""
    samples: int | None = None
    """Observations behind it: histogram counts, or requests over the window."""


class CriterionRecord(ApiModel):
    criterion: str
    """Which one, with its quantile: "ttft p95", "errorRate"."""
    unit: Literal["ms", "%"]
    verdict: Literal["pass", "fail", "inconclusive"]
    reason: str = ""
    reference: ArmEstimate = Field(default_factory=ArmEstimate)
    """The arm the canary is compared with (the check's ``reference``)."""
    canary: ArmEstimate = Field(default_factory=ArmEstimate)
    effect: float | None = None
    """How much worse the canary is: percent for a latency (relative to the reference, or
    to maxMilliseconds), percentage points of error rate."""
    lower: float | None = None
    """The effect's always-valid confidence bounds (they hold at every check)."""
    upper: float | None = None


class AnalysisRecord(ApiModel):
    time: str
    """When the check was taken."""
    verdict: Literal["pass", "fail", "inconclusive"]
    """fail: a criterion's test shows the canary beyond its limit; pass: every test shows
    it within; inconclusive: not decided yet (waiting), or a missing series, no answer or
    unmatched arms; never a pass."""
    reason: str = ""
    reference: Literal["baseline", "stable"] | None = None
    """The arm the canary was compared with: the fresh baseline, or the stable arm."""
    since: str | None = None
    """The evidence covers requests from this time (the step's start plus warm-up) on."""
    load_ratio: float | None = None
    """The canary's requests per pod over the reference's: near 1 for matched arms."""
    waiting: bool | None = None
    """Inconclusive for want of requests only: the step keeps collecting, no pause."""
    needed: int | None = None
    """Requests each arm still needs to decide, at the effects seen so far."""
    criteria: list[CriterionRecord] = Field(default_factory=list, max_length=16)
    """Each criterion's estimate per arm, the effect with its bounds, and its verdict."""


class EnvDifference(ApiModel):
    key: str
    stable: str | None = None
    canary: str | None = None
    allowed: bool = False
    masked: bool = Field(default=False, description="A Secret's value: shown only as changed.")


class GpuFit(ApiModel):
    required_gi_b: float | None = Field(default=None, alias="requiredGiB")
    available_gi_b: float | None = Field(default=None, alias="availableGiB")
    fits: bool | None = None
    node_type: str | None = None
    gpus_needed: int | None = Field(default=None, ge=0, description="For the first replicas.")
    gpus_free: int | None = Field(default=None, ge=0, description="On nodes that fit.")
    probed_free_gi_b: float | None = Field(
        default=None, alias="probedFreeGiB", description="From the opt-in probe Job."
    )
    message: str = ""


class DependencyResult(ApiModel):
    name: str
    ok: bool
    latency_ms: float | None = None
    status_code: int | None = None
    message: str = ""


class PreflightStatus(ApiModel):
    revision: str | None = None
    passed: bool | None = None
    checked_at: str | None = None
    reason: str | None = Field(default=None, description="What failed, and what to fix.")
    env_diff: list[EnvDifference] = Field(default_factory=list)
    gpu_memory: GpuFit | None = None
    dependencies: list[DependencyResult] = Field(default_factory=list)


class HistoryEntry(ApiModel):
    revision: str
    outcome: Outcome
    """Aborted: an abort request, or the spec returned to the stable revision; Superseded:
    another revision replaced it; Failed: its preflight failed."""
    started_at: str | None = None
    finished_at: str | None = None
    reason: str = ""


class LLMDeploymentStatus(ApiModel):
    """Everything a restarted operator needs to continue a rollout exactly where it was."""

    observed_generation: int | None = None
    """The spec generation this status describes."""
    phase: Phase | None = None
    """Where the resource is in its lifecycle (docs/concepts.md has the phases)."""
    message: str | None = None
    """What the operator waits for, or what is wrong and what to do."""
    stable_revision: str | None = None
    """The revision that serves the traffic not sent to the canary."""
    canary_revision: str | None = None
    """The revision being rolled out (or the one rolled back)."""
    canary_weight: int | None = Field(default=None, ge=0, le=100)
    """Percent of the traffic the canary gets now."""
    current_step: int | None = Field(default=None, ge=0)
    """The rollout step, from 0."""
    step_started_at: str | None = None
    """When the current step began: when the router was seen holding its weight."""
    weight_verified: bool | None = None
    """Whether the router holds the weights asked of it (read back after each change);
    false while it does not, and the step's clock waits for it."""
    failed_checks: int | None = Field(default=None, ge=0)
    """Failed checks in this rollout."""
    inconclusive_checks: int | None = Field(default=None, ge=0)
    """Inconclusive checks in a row."""
    canary_replicas: int | None = Field(default=None, ge=0)
    """Replicas the canary Deployment should have now."""
    canary_ready_replicas: int | None = Field(default=None, ge=0)
    """Ready pods of the canary revision."""
    rollout_started_at: str | None = None
    """When this rollout began."""
    canary_unready_since: str | None = None
    """Since when the canary (and its baseline) has lacked the Ready replicas the rollout
    waits for: its next weight, the weight it had, or promotion. The rollout fails
    spec.canary.readyDeadline after it; cleared once they are Ready."""
    pause_reason: str | None = Field(
        default=None, description="Why the operator paused the rollout; cleared by a resume."
    )
    rolled_back_revision: str | None = Field(
        default=None,
        description="Not tried again while the spec describes it, unless a retry is requested.",
    )
    handled_requests: dict[str, str] = Field(
        default_factory=dict,
        description="Request annotation -> the value already acted on (each value acts once).",
    )
    replicas: int | None = None
    """spec.replicas, as last reconciled."""
    ready_replicas: int | None = None
    """Ready pods of the stable revision."""
    router: str | None = None
    """The router that splits traffic (spec.traffic.router)."""
    headline: str | None = Field(
        default=None,
        description="The last check's first failing criterion (else its first), canary /"
        " stable, for kubectl get.",
    )
    last_analysis: AnalysisRecord | None = None
    """The latest check: verdict, why, and both arms' numbers."""
    preflight: PreflightStatus | None = None
    """The latest preflight, of the canary revision."""
    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        },
    )
    """Ready, Progressing, Degraded and PreflightPassed (metav1.Condition)."""
    history: list[HistoryEntry] = Field(default_factory=list, max_length=20)
    """Finished rollouts, newest first (at most 10 kept)."""
