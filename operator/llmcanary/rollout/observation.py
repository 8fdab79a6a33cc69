"""What one pass observed, as the machine takes it: the workloads, the user's commands,
and the checks taken this pass. Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from llmcanary.analysis.verdict import Check
from llmcanary.api.status import DependencyResult, PreflightStatus


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
    #: Why the Deployment cannot bring its pods up, when its conditions say: a
    #: ``ReplicaFailure`` (no pod is created at all: a ResourceQuota, Pod Security) or
    #: ``ProgressDeadlineExceeded``, as ``"<reason>: <message>"``: see
    #: :func:`deployment_failure`.
    failure: str | None = None

    @property
    def all_ready(self) -> bool:
        return self.desired > 0 and self.ready >= self.desired and self.updated >= self.desired


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


def deployment_failure(deployment: Mapping[str, Any]) -> str | None:
    """Why a Deployment cannot bring its pods up, from its ``status.conditions``:
    ``ReplicaFailure`` True (the ReplicaSet could not create a pod, e.g. ``FailedCreate:
    pods "x" is forbidden: exceeded quota: gpus, ...``), else ``Progressing`` False with
    ``ProgressDeadlineExceeded``; None when neither says so. Pods that do not exist show
    nothing in :func:`pod_problem`: this is the only place such a failure is seen."""
    conditions = (deployment.get("status") or {}).get("conditions") or []
    by_type = {c.get("type"): c for c in conditions if isinstance(c, Mapping)}
    failed = by_type.get("ReplicaFailure")
    stalled = by_type.get("Progressing")
    for condition, status, reason in (
        (failed, "True", None),
        (stalled, "False", "ProgressDeadlineExceeded"),
    ):
        if condition is None or str(condition.get("status")) != status:
            continue
        if reason is not None and condition.get("reason") != reason:
            continue
        text = str(condition.get("reason") or condition.get("type"))
        message = str(condition.get("message") or "")
        return f"{text}: {message}" if message else text
    return None


@dataclass(frozen=True)
class Commands:
    """What the user asked for through the command annotations (``llmcanary.io/abort``,
    ``promote``, ``retry``, ``resume``; each value acts once) and the paused annotation."""

    values: Mapping[str, str] = field(default_factory=dict)
    paused: bool = False

    def pending(self, annotation: str, handled: Mapping[str, str]) -> str | None:
        """The annotation's value if it asks for something not yet acted on."""
        value = self.values.get(annotation)
        return value if value and handled.get(annotation) != value else None


@dataclass(frozen=True)
class Observation:
    """What the loop saw this pass: what :func:`llmcanary.rollout.steps.needs` asked for,
    and the workloads."""

    revision: str  # of the current spec
    stable: WorkloadObservation | None
    canary: WorkloadObservation | None = None
    # The fresh baseline's Deployment, where the spec wants one.
    baseline: WorkloadObservation | None = None
    commands: Commands = field(default_factory=Commands)
    check: Check | None = None  # an analysis taken this pass (Needs.analysis)
    preflight: PreflightStatus | None = None  # of the canary revision (Needs.preflight)
    # The canary pods' own Triton readiness, checked just before the first weight
    # (Needs.canary_checks).
    canary_checks: tuple[DependencyResult, ...] | None = None
