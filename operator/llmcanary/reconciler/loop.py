"""The loop for one LLMDeployment: observe, decide (pure), apply, settle, write status once.

Level-based and idempotent: it can run at any time, any number of times, from any
trigger (the LLMDeployment changed, a child changed, the rollout's own wake-up), and it
writes nothing when the cluster already matches. The decision is
:func:`llmcanary.rollout.machine.decide`; this module gathers its inputs, has
:mod:`llmcanary.reconciler.apply` carry out its plan, and writes what was applied.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from llmcanary.analysis.types import Arm
from llmcanary.analysis.verdict import Check, judge, unavailable
from llmcanary.api import API_VERSION, KIND
from llmcanary.api.spec import LLMDeploymentSpec, describe_errors
from llmcanary.api.status import LLMDeploymentStatus, PreflightStatus
from llmcanary.api.times import timestamp
from llmcanary.api.types import parse_duration
from llmcanary.builders import Owner
from llmcanary.builders.meta import baseline_revision
from llmcanary.kube.client import Kube
from llmcanary.kube.errors import ApiConflict, ApiError, capped
from llmcanary.kube.status_writer import parse_status, write_status
from llmcanary.observability.metrics import OperatorMetrics
from llmcanary.preflight.run import Preflight
from llmcanary.problems import Problem, ReconcileError
from llmcanary.reconciler.apply import PlanApplier, internal_problem
from llmcanary.reconciler.observe import CrashLogs, commands_of, observe_workload
from llmcanary.reconciler.revision_config import read_revision_config
from llmcanary.rollout.checks import judgement
from llmcanary.rollout.decision import Settled
from llmcanary.rollout.machine import decide
from llmcanary.rollout.observation import Commands, Observation, RevisionConfig
from llmcanary.rollout.render import settle
from llmcanary.rollout.revision import revision_of
from llmcanary.rollout.steps import evidence_start, needs, next_wakeup
from llmcanary.sources.base import MetricSource, MetricsUnavailable, Scope

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
# Posts a Kubernetes Event about an object: (object, type, reason, message).
EventPoster = Callable[[Mapping[str, Any], str, str, str], None]
# The analysis' metric source for a Prometheus address.
SourceFactory = Callable[[str], MetricSource]


# Prometheus readers kept (one per address; few clusters have more than a handful).
MAX_SOURCES = 64
# How soon a pass that failed (it could not observe the cluster, apply its plan or write
# its status) is tried again; it doubles with each failed pass in a row, up to the most.
RETRY_SECONDS = 30.0
MAX_RETRY_SECONDS = 300.0
#: How often a pass looks at a repository read that is still running.
READ_POLL_SECONDS = 10.0
# How soon a pass whose status write found the object changed since it was read (409)
# decides again, from the fresh state.
CONFLICT_RETRY_SECONDS = 1.0


@dataclass(frozen=True)
class Result:
    phase: str | None
    wrote_status: bool
    problem: Problem | None
    wakeup: float = math.inf  # seconds until the rollout needs the loop again


class Reconciler:
    def __init__(
        self,
        kube: Kube,
        clock: Clock,
        post_event: EventPoster,
        sources: SourceFactory,
        preflight: Preflight,
        own_metrics: OperatorMetrics | None = None,
        allowed_images: Sequence[str] = (),
    ) -> None:
        """``allowed_images``: the operator's image allowlist (empty: any image); preflight
        holds it for new revisions, the applier for the first one."""
        self.kube = kube
        self.clock = clock
        self.post_event = post_event
        self.sources = sources
        self.preflight = preflight
        # The operator's own /metrics; ``sources`` are where the analysis reads the model's.
        self.own_metrics = (
            own_metrics if own_metrics is not None else OperatorMetrics(process=False)
        )
        self.allowed_images = list(allowed_images)
        self.applier = PlanApplier(kube, allowed_images)
        self.crash_logs = CrashLogs(kube)
        self._sources: dict[str, MetricSource] = {}
        self._sources_guard = threading.Lock()
        # Failed passes in a row per object (the retry backoff), and status writes refused
        # because the object had changed since the pass read it.
        self._failures: dict[tuple[str, str], int] = {}
        self._failures_guard = threading.Lock()
        self.status_conflicts = 0

    def reconcile(self, namespace: str, name: str) -> Result | None:
        """Reconcile one LLMDeployment, whatever triggered it; None if it is gone.

        The caller runs at most one pass per object at a time (the work queue sees to
        it). The object is read fresh: a watch event's body can be older than a status
        this operator has just written, and acting on it would announce (or take) the
        same step twice.

        Nothing raises out of a pass: a failure is put in status.message and a Warning
        event where the object can still be written, logged in any case, and the pass is
        tried again with a growing delay (:data:`RETRY_SECONDS` doubling up to
        :data:`MAX_RETRY_SECONDS`).
        """
        started = time.monotonic()
        key = (namespace, name)
        result: Result | None
        try:
            body = self.kube.get(API_VERSION, KIND, namespace, name)
            if body is None or body["metadata"].get("deletionTimestamp"):
                self.forget(namespace, name)
                result = None
            else:
                result = self._reconcile(body)
        except ReconcileError as exc:  # e.g. the API server did not answer the read
            log.warning(exc.message, extra={"reason": exc.reason, "llmd": "/".join(key)})
            result = Result(None, False, exc.problem, wakeup=self._retry_in(key))
        except Exception as exc:  # a bug: never a wedged object, never a silent one
            log.exception("reconciling %s/%s failed", *key, extra={"llmd": "/".join(key)})
            result = Result(None, False, internal_problem(exc), wakeup=self._retry_in(key))
        failed = result is not None and result.problem is not None
        if not failed:
            with self._failures_guard:
                self._failures.pop(key, None)
        self.own_metrics.reconciled(time.monotonic() - started, "error" if failed else "ok")
        return result

    def reconcile_key(self, key: tuple[str, str]) -> float | None:
        """One pass for the work queue: seconds until the next one is needed, None if gone."""
        result = self.reconcile(*key)
        return None if result is None else result.wakeup

    def forget(self, namespace: str, name: str) -> None:
        """The LLMDeployment is no longer this operator's: its series leave /metrics."""
        self.own_metrics.forget(namespace, name)
        with self._failures_guard:
            self._failures.pop((namespace, name), None)

    def _retry_in(self, key: tuple[str, str]) -> float:
        """Seconds until a failed pass of ``key`` is tried again: doubling with each
        failed pass in a row (a pass without a problem starts it over)."""
        with self._failures_guard:
            failures = self._failures[key] = self._failures.get(key, 0) + 1
        return float(min(MAX_RETRY_SECONDS, RETRY_SECONDS * 2.0 ** min(failures - 1, 16)))

    def _reconcile(self, body: Mapping[str, Any]) -> Result:
        meta = body["metadata"]
        owner = Owner(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"])
        raw_status = dict(body.get("status") or {})
        try:
            status = parse_status(raw_status)
        except ValidationError as exc:
            # A status this version cannot read (written by a newer operator?): deciding
            # from it would lose state, so only status.message says so.
            problem = Problem(
                "InvalidStatus",
                "the operator cannot read this LLMDeployment's status (written by another"
                f" version of the operator?): {capped(describe_errors(exc), 300)}; run the"
                " operator version that wrote it, or remove the status to start over",
            )
            log.warning(problem.message, extra={"reason": problem.reason, "llmd": _key(owner)})
            return self._report(body, owner, raw_status, problem)
        try:
            return self._pass(body, owner, raw_status, status)
        except ReconcileError as exc:  # e.g. not allowed to read its children
            # Nothing decided: the next pass tries again.
            log.warning(exc.message, extra={"reason": exc.reason, "llmd": _key(owner)})
            problem = exc.problem
        except Exception as exc:  # a bug, or an answer the operator did not expect
            log.exception("reconciling %s failed", _key(owner), extra={"llmd": _key(owner)})
            problem = internal_problem(exc)
        return self._stand_still(
            body, owner, raw_status, status, problem, wakeup=self._retry_in(_pair(owner))
        )

    def _pass(
        self,
        body: Mapping[str, Any],
        owner: Owner,
        raw_status: dict[str, Any],
        status: LLMDeploymentStatus,
    ) -> Result:
        """Observe, decide, apply, settle, write: one pass whose status records what was
        applied. The side effects come before the status write; a write refused because
        the object changed since it was read (409) leaves the next pass to decide again,
        from the fresh state, and to apply its own plan."""
        meta = body["metadata"]
        generation = meta.get("generation")
        now = self.clock()

        try:
            spec = LLMDeploymentSpec.model_validate(dict(body.get("spec") or {}))
        except ValidationError as exc:
            # Admission normally stops this; an object stored under an older CRD can still
            # carry it. Report it and leave the running workload alone.
            invalid = Problem("InvalidSpec", describe_errors(exc))
            return self._stand_still(
                body, owner, raw_status, status, invalid, observed_generation=generation
            )

        observation = self._observe(owner, spec, status, commands_of(meta), now)
        if observation.canary_checks is not None:
            self.own_metrics.canary_checks(owner.namespace, owner.name, observation.canary_checks)

        decision = decide(spec, generation, status, observation, now)
        applied = self.applier.apply(
            owner, spec, decision.plan, status, observation.canary, observation.config
        )
        settled = settle(decision, applied)

        new = settled.status
        try:
            wrote = self._write(body, raw_status, new)
        except ApiConflict:
            return self._lost_race(owner, status)
        except Exception as exc:
            # What was applied cannot be recorded: say why where it can still be seen.
            return self._unwritten(body, owner, raw_status, status, exc)
        if wrote:
            self._announce(body, status, settled)
        # After the write: a status that failed to be written counts nothing.
        self.own_metrics.observe(owner.namespace, owner.name, status, new, written=wrote)
        wakeup = 0.0 if decision.again else next_wakeup(spec, new, self.clock())
        if observation.config is not None and observation.config.waiting:
            # The read pod's end comes as a watch event; the Job's own status, which may lag
            # it, is not watched: look again soon.
            wakeup = min(wakeup, READ_POLL_SECONDS)
        if settled.problem is not None:
            # What failed to apply is tried again, sooner only if the rollout needs it.
            wakeup = min(wakeup or math.inf, self._retry_in(_pair(owner)))
        return Result(new.phase, wrote, settled.problem, wakeup=wakeup)

    def _write(
        self, body: Mapping[str, Any], raw_status: dict[str, Any], new: LLMDeploymentStatus
    ) -> bool:
        """Write ``new`` onto the version of the object the pass read (a 409 if it has
        changed since); whether anything was written."""
        meta = body["metadata"]
        return write_status(
            self.kube,
            meta["namespace"],
            meta["name"],
            raw_status,
            new,
            resource_version=meta.get("resourceVersion"),
        )

    def _stand_still(
        self,
        body: Mapping[str, Any],
        owner: Owner,
        raw_status: dict[str, Any],
        status: LLMDeploymentStatus,
        problem: Problem,
        *,
        wakeup: float = math.inf,
        **update: Any,
    ) -> Result:
        """No decision this pass: the rollout stays where it is, and status.message (plus
        ``update``) and one Warning event say why."""
        new = status.model_copy(update={"message": problem.message, **update})
        try:
            wrote = self._write(body, raw_status, new)
        except ApiConflict:
            return self._lost_race(owner, status)
        except Exception as exc:
            self._status_failed(body, owner, problem, exc)
            if not math.isfinite(wakeup):
                wakeup = self._retry_in(_pair(owner))
            return Result(status.phase, False, problem, wakeup=wakeup)
        if wrote:
            self._post(body, "Warning", problem.reason, problem.message)
        self.own_metrics.observe(owner.namespace, owner.name, status, new, written=wrote)
        return Result(status.phase, wrote, problem, wakeup=wakeup)

    def _unwritten(
        self,
        body: Mapping[str, Any],
        owner: Owner,
        raw_status: dict[str, Any],
        status: LLMDeploymentStatus,
        exc: Exception,
    ) -> Result:
        """The pass' status could not be written (refused, too large, no answer): its
        message alone is tried, else the log and a Warning event say why. The next pass
        decides again from the status as it was."""
        problem = exc.problem if isinstance(exc, ReconcileError) else internal_problem(exc)
        if isinstance(exc, ReconcileError):
            log.warning(exc.message, extra={"reason": exc.reason, "llmd": _key(owner)})
        else:
            log.error(
                "writing the status of %s failed",
                _key(owner),
                exc_info=exc,
                extra={"llmd": _key(owner)},
            )
        result = self._report(body, owner, raw_status, problem)
        return Result(status.phase, result.wrote_status, problem, wakeup=result.wakeup)

    def _report(
        self,
        body: Mapping[str, Any],
        owner: Owner,
        raw_status: dict[str, Any],
        problem: Problem,
    ) -> Result:
        """Only status.message (and one Warning event) say what stops the object, where
        the whole status cannot be written."""
        wakeup = self._retry_in(_pair(owner))
        phase = raw_status.get("phase")
        if raw_status.get("message") == problem.message:
            return Result(phase, False, problem, wakeup=wakeup)
        try:
            self.kube.patch_status(
                API_VERSION,
                KIND,
                owner.namespace,
                owner.name,
                {"message": problem.message},
                resource_version=body["metadata"].get("resourceVersion"),
            )
        except ApiConflict:
            return self._lost_race(owner, None, phase)
        except Exception as exc:
            self._status_failed(body, owner, problem, exc)
            return Result(phase, False, problem, wakeup=wakeup)
        self._post(body, "Warning", problem.reason, problem.message)
        return Result(phase, True, problem, wakeup=wakeup)

    def _status_failed(
        self, body: Mapping[str, Any], owner: Owner, problem: Problem, exc: Exception
    ) -> None:
        """Not even status.message could be written: the log and an event carry it."""
        why = exc.message if isinstance(exc, ReconcileError) else f"{type(exc).__name__}: {exc}"
        log.error(
            "status of %s not written (%s): %s",
            _key(owner),
            capped(why),
            problem.message,
            exc_info=None if isinstance(exc, ReconcileError) else exc,
            extra={"llmd": _key(owner), "reason": problem.reason},
        )
        self._post(body, "Warning", problem.reason, problem.message)

    def _lost_race(
        self, owner: Owner, status: LLMDeploymentStatus | None, phase: str | None = None
    ) -> Result:
        """The object changed after this pass read it (another writer, a user's command):
        its status is not overwritten; the next pass, soon, decides from what it is now."""
        with self._failures_guard:
            self.status_conflicts += 1
        log.info(
            "status of %s not written: the object changed since it was read; deciding again",
            _key(owner),
            extra={"llmd": _key(owner), "outcome": "conflict"},
        )
        return Result(
            status.phase if status is not None else phase,
            False,
            None,
            wakeup=CONFLICT_RETRY_SECONDS,
        )

    def _post(self, body: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        """Post an event; one that cannot be posted is logged, never a failed pass."""
        try:
            self.post_event(body, type_, reason, message)
        except Exception:
            log.exception("posting event %s failed", reason, extra={"reason": reason})

    # --- observe ------------------------------------------------------------------

    def _observe(
        self,
        owner: Owner,
        spec: LLMDeploymentSpec,
        status: LLMDeploymentStatus,
        commands: Commands,
        now: datetime,
    ) -> Observation:
        """The workloads, then what :func:`~llmcanary.rollout.steps.needs` asks for."""
        current = revision_of(spec)
        stable_rev = status.stable_revision or current
        canary = (
            observe_workload(self.kube, owner, current, self.crash_logs)
            if current != stable_rev
            else None
        )
        baseline = (
            observe_workload(self.kube, owner, baseline_revision(stable_rev), self.crash_logs)
            if canary is not None and spec.baseline == "fresh"
            else None
        )
        wanted = needs(spec, status, current, commands, canary.ready if canary else 0, now)
        # A revision rolled back or failed is not read again until a retry asks for it.
        config = read_revision_config(
            self.kube,
            owner,
            spec,
            current,
            self.allowed_images,
            read=status.rolled_back_revision != current,
        )
        preflight: PreflightStatus | None = None
        if wanted.preflight:
            preflight = (
                self._preflight(owner, spec, stable_rev, current, now)
                if config.ready
                else _unread(current, config, now)
            )
        return Observation(
            revision=current,
            stable=observe_workload(self.kube, owner, stable_rev, self.crash_logs),
            canary=canary,
            baseline=baseline,
            commands=commands,
            check=(
                self._analyse(owner, spec, status, stable_rev, current, now)
                if wanted.analysis
                else None
            ),
            preflight=preflight,
            canary_checks=(
                self.preflight.canary_checks(owner, spec, current) if wanted.canary_checks else None
            ),
            config=config,
        )

    def _preflight(
        self, owner: Owner, spec: LLMDeploymentSpec, stable: str, canary: str, now: datetime
    ) -> PreflightStatus | None:
        try:
            return self.preflight.run(owner, spec, stable, canary, now)
        except ApiError as exc:
            if exc.transient:  # the API server was busy or slow: not the revision's fault
                raise
            return PreflightStatus(revision=canary, passed=False, reason=exc.message)
        except ReconcileError as exc:  # e.g. not allowed to read a referenced Secret
            return PreflightStatus(revision=canary, passed=False, reason=exc.message)

    def _source(self, address: str) -> MetricSource:
        """The reader of ``address``: kept for reuse, the least recently used dropped past
        :data:`MAX_SOURCES` (a tenant changing its address must not grow the operator)."""
        with self._sources_guard:
            source = self._sources.pop(address, None)
            if source is None:
                source = self.sources(address)
            self._sources[address] = source  # now the most recently used
            while len(self._sources) > MAX_SOURCES:
                del self._sources[next(iter(self._sources))]
            return source

    def _analyse(
        self,
        owner: Owner,
        spec: LLMDeploymentSpec,
        status: LLMDeploymentStatus,
        stable: str,
        canary: str,
        now: datetime,
    ) -> Check:
        """Compare the canary with its reference arm over the step so far."""
        analysis = spec.canary.analysis
        since = evidence_start(spec, status)
        window = now - since if since is not None else parse_duration(analysis.interval)
        if window.total_seconds() < 1:
            return Check(
                "inconclusive",
                f"warming up: requests count from {timestamp(since)} on (analysis.warmup)"
                if since is not None
                else "warming up",
                waiting=True,
            )
        context = judgement(spec, status, window.total_seconds())
        reference = context.reference
        reference_revision = baseline_revision(stable) if reference == "baseline" else stable

        def scope(arm: Arm, revision: str) -> Scope:
            return Scope(
                owner.namespace, owner.name, spec.model.name, arm, revision, window, end=now
            )

        source = self._source(analysis.prometheus.address)
        try:
            reference_reading = source.read(scope(reference, reference_revision), analysis)
            canary_reading = source.read(scope("canary", canary), analysis)
        except MetricsUnavailable as exc:
            self.own_metrics.query_error(exc.reason)
            return unavailable(f"metrics unavailable: {exc}")
        except ValueError as exc:  # a template the CRD could not check
            return unavailable(f"spec.canary.analysis.queries: {exc}")
        check = judge(analysis, reference_reading, canary_reading, context)
        log.info(
            "analysis %s: %s",
            check.verdict,
            check.reason,
            extra={"llmd": _key(owner), "verdict": check.verdict},
        )
        return check

    # --- announce -----------------------------------------------------------------

    def _announce(
        self, body: Mapping[str, Any], old: LLMDeploymentStatus, settled: Settled
    ) -> None:
        for event in settled.events:
            self._post(body, event.type, event.reason, event.message)
        problem = settled.problem
        if problem is not None and old.message != problem.message:
            self._post(body, "Warning", problem.reason, problem.message)
        phase = settled.status.phase
        if phase != old.phase and phase is not None:
            self._post(body, "Normal", phase, f"phase {old.phase or 'none'} -> {phase}")


def _unread(revision: str, config: RevisionConfig, now: datetime) -> PreflightStatus | None:
    """A canary whose configuration is not made: preflight waits for the read, or fails
    with what the read found."""
    if config.problem is None:
        return None
    return PreflightStatus(
        revision=revision, passed=False, checked_at=timestamp(now), reason=config.problem
    )


def _key(owner: Owner) -> str:
    return f"{owner.namespace}/{owner.name}"


def _pair(owner: Owner) -> tuple[str, str]:
    return owner.namespace, owner.name
