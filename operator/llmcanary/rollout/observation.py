"""What one pass observed, as the machine takes it: the workloads, the user's commands,
and the checks taken this pass. Pure."""

from __future__ import annotations

import re
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
    def unready_reason(self) -> str | None:
        """Why not every pod is Ready, when the cluster says: the Deployment's failure
        first (no pod exists to say anything), else a pod's problem."""
        return None if self.all_ready else self.failure or self.problem

    @property
    def all_ready(self) -> bool:
        return self.desired > 0 and self.ready >= self.desired and self.updated >= self.desired


# Waiting reasons that mean "not yet", not "wrong": they explain nothing to a user.
_TRANSIENT = {"ContainerCreating", "PodInitializing"}
#: A Triton log line at error level: ``E1124 20:36:35.111545 26488 file.cc:642] "text"``.
_ERROR_LINE = re.compile(r"^E\d{4} [\d:.]+\s+\d+\s+\S+\]\s*(.*)$")
# Errors every Triton on a machine without a GPU logs, whatever went wrong.
_NOISE = ("NVML", "CudaDriver")
#: The longest reason taken from a log, from its end (where the fatal error is).
MAX_REASON = 600


#: Where the Python backend's traceback starts in a logged error (newlines escaped).
_TRACEBACK = "\\n\\nAt:\\n"
#: The exception of a Python backend error: ``TritonModelException: ...``.
_EXCEPTION = re.compile(r"\b\w+(?:Exception|Error): .*$")


def _restated(earlier: str, later: str) -> bool:
    """Whether ``later`` says what ``earlier`` says: Triton logs a model's failure as the
    backend's error, then as ``failed to load 'NAME' ...`` with the same exception, then
    ``failed to load all models`` in its last words."""
    if later.endswith(earlier):
        return True
    if earlier.startswith("failed to load '"):
        return False  # one per model: keep each model's name
    exception = _EXCEPTION.search(earlier)
    return exception is not None and later.endswith(exception.group(0))


def triton_errors(log_tail: str) -> str:
    """The telling lines of the end of a Triton log: its error-level lines and its last
    words (``error: creating server: ...``), not its banner, each said once, without the
    Python backend's traceback (the log the status names has it); "" when it has none."""
    reasons: list[str] = []
    for line in log_tail.splitlines():
        match = _ERROR_LINE.match(line)
        text = match.group(1) if match else line if line.startswith("error:") else ""
        text = text.strip().strip('"').split(_TRACEBACK, 1)[0]
        text = text.replace("\\n", " ").strip()
        if text and not any(n in text for n in _NOISE) and text not in reasons:
            reasons.append(text)
    kept = [r for i, r in enumerate(reasons) if not any(_restated(r, b) for b in reasons[i + 1 :])]
    return "; ".join(kept)[-MAX_REASON:]


@dataclass(frozen=True)
class _Ended:
    """A run that ended in failure: how (``(exit 1)``, ``(exit 137, OOMKilled)``), its
    errors as its termination message gives them, and which run it was."""

    how: str
    errors: str
    #: The end of the run (``finishedAt``, else ``startedAt``): with the pod's uid and the
    #: container's name, which run this was (a crash's whole log is read once).
    when: str

    def text(self, errors: str | None = None) -> str:
        errors = self.errors if errors is None else errors
        return f"{self.how}: {errors}" if errors else self.how


def _failure(terminated: Mapping[str, Any]) -> _Ended | None:
    """How a run that ended in failure ended; None if it did not. Its message is the tail
    of its log when the container asks for it (terminationMessagePolicy
    FallbackToLogsOnError, as the operator's do): Triton's errors are taken from it, else
    its last line."""
    code = terminated.get("exitCode")
    if not code:
        return None
    why = str(terminated.get("reason") or "")
    how = f"(exit {code}, {why})" if why and why != "Error" else f"(exit {code})"
    message = str(terminated.get("message") or "")
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    errors = triton_errors(message) or (lines[-1][-MAX_REASON:] if lines else "")
    when = str(terminated.get("finishedAt") or terminated.get("startedAt") or "")
    return _Ended(how, errors, when)


@dataclass(frozen=True)
class _Problem:
    #: What the container is doing: ``exited``, ``CrashLoopBackOff``, or a waiting
    #: reason with its message (then nothing ended).
    state: str
    ended: _Ended | None = None
    #: The run that ended is a previous one: its log is ``kubectl logs --previous``.
    previous: bool = False

    def text(self, errors: str | None = None) -> str:
        if self.ended is None:
            return self.state
        return f"{self.state} {self.ended.text(errors)}"


def _container_problem(container: Mapping[str, Any]) -> _Problem | None:
    """Why a container is not running, worded the same through a crash loop's states
    (terminated, waiting in back-off, running again but not Ready), so that status and
    events do not flap with them."""
    state = container.get("state") or {}
    restarts = int(container.get("restartCount") or 0)
    last = (container.get("lastState") or {}).get("terminated") or {}
    if "terminated" in state:
        ended = _failure(state["terminated"] or {})
        if ended is None:
            return None
        return _Problem("CrashLoopBackOff" if restarts else "exited", ended)
    waiting = state.get("waiting") or {}
    reason = waiting.get("reason")
    if reason and reason not in _TRANSIENT and reason != "CrashLoopBackOff":
        detail = waiting.get("message") or ""
        return _Problem(f"{reason}: {detail}" if detail else reason)
    # In back-off, or started again (not Ready yet): the previous run says why. The
    # kubelet's own words ("back-off 20s restarting ...") say less, and change.
    ended = _failure(last) if restarts and not container.get("ready") else None
    if ended is not None:
        return _Problem("CrashLoopBackOff", ended, previous=True)
    if reason == "CrashLoopBackOff":
        return _Problem(reason)
    return None


@dataclass(frozen=True)
class CrashedRun:
    """A container run that ended in failure, as :func:`pod_problem` reports it. Its whole
    log says more than its termination message: the kubelet keeps only 2 KiB of the log's
    end, which Triton's model tables fill, and the model's own error is above them."""

    namespace: str
    pod: str
    container: str
    #: Read it with ``previous`` (the container has started again since).
    previous: bool
    #: Which run: the pod's uid, the container, when the run ended. A log is read once.
    key: tuple[str, str, str]


def _first_problem(
    pods: Sequence[Mapping[str, Any]],
) -> tuple[Mapping[str, Any], str, _Problem] | None:
    for pod in pods:
        status = pod.get("status") or {}
        for container in [
            *(status.get("initContainerStatuses") or []),
            *(status.get("containerStatuses") or []),
        ]:
            problem = _container_problem(container)
            if problem is not None:
                return pod.get("metadata") or {}, str(container.get("name")), problem
    return None


def crashed_run(pods: Sequence[Mapping[str, Any]]) -> CrashedRun | None:
    """The run :func:`pod_problem` would report, when it is one that crashed."""
    first = _first_problem(pods)
    if first is None:
        return None
    meta, container, problem = first
    if problem.ended is None:
        return None
    return CrashedRun(
        namespace=str(meta.get("namespace", "")),
        pod=str(meta.get("name", "?")),
        container=container,
        previous=problem.previous,
        key=(str(meta.get("uid", "")), container, problem.ended.when),
    )


def pod_problem(pods: Sequence[Mapping[str, Any]], crash_errors: str = "") -> str | None:
    """The first reason a container of these pods gives for not running, e.g.
    ``pod tiny-llm-6c9-x: triton CrashLoopBackOff (exit 1): error: creating server: ...;
    full log: kubectl logs -n ml tiny-llm-6c9-x -c triton --previous``; None when none
    gives one.

    ``crash_errors``: Triton's errors in the whole log of that run (:func:`crashed_run`),
    when it was read: they say more than the termination message's."""
    first = _first_problem(pods)
    if first is None:
        return None
    meta, where, problem = first
    name = meta.get("name", "?")
    text = f"pod {name}: {where} {problem.text(crash_errors or None)}"
    if problem.ended is not None:
        namespace = f" -n {meta['namespace']}" if meta.get("namespace") else ""
        previous = " --previous" if problem.previous else ""
        text += f"; full log: kubectl logs{namespace} {name} -c {where}{previous}"
    return text


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
class RevisionConfig:
    """The current revision's configuration (its ConfigMap, made from a read of the model
    repository): ``ready`` once it exists; else ``waiting`` (why not yet: the read runs)
    or ``problem`` (why it will not be: what the read found, or a refused image), with
    ``reason`` the CamelCase word status and events use."""

    ready: bool
    waiting: str | None = None
    problem: str | None = None
    reason: str = "InvalidModelConfig"


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
    # The current revision's configuration; None when not observed (it is, every pass
    # of the reconciler: a pure caller may leave it out, meaning ready).
    config: RevisionConfig | None = None
