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
from collections.abc import Callable, Mapping
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
from llmcanary.kube.status_writer import parse_status, write_status
from llmcanary.observability.metrics import OperatorMetrics
from llmcanary.preflight.run import Preflight
from llmcanary.problems import Problem, ReconcileError
from llmcanary.reconciler.apply import PlanApplier
from llmcanary.reconciler.observe import commands_of, observe_workload
from llmcanary.rollout.checks import judgement
from llmcanary.rollout.decision import Settled
from llmcanary.rollout.machine import decide
from llmcanary.rollout.observation import Commands, Observation
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


# How soon a pass that could not observe the cluster (e.g. a 403) is tried again.
RETRY_SECONDS = 30.0


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
    ) -> None:
        self.kube = kube
        self.clock = clock
        self.post_event = post_event
        self.sources = sources
        self.preflight = preflight
        # The operator's own /metrics; ``sources`` are where the analysis reads the model's.
        self.own_metrics = (
            own_metrics if own_metrics is not None else OperatorMetrics(process=False)
        )
        self.applier = PlanApplier(kube)
        self._sources: dict[str, MetricSource] = {}
        self._sources_guard = threading.Lock()

    def reconcile(self, namespace: str, name: str) -> Result | None:
        """Reconcile one LLMDeployment, whatever triggered it; None if it is gone.

        The caller runs at most one pass per object at a time (the work queue sees to
        it). The object is read fresh: a watch event's body can be older than a status
        this operator has just written, and acting on it would announce (or take) the
        same step twice.
        """
        started = time.monotonic()
        try:
            body = self.kube.get(API_VERSION, KIND, namespace, name)
            if body is None or body["metadata"].get("deletionTimestamp"):
                self.own_metrics.forget(namespace, name)
                result = None
            else:
                result = self._reconcile(body)
        except Exception:
            self.own_metrics.reconciled(time.monotonic() - started, "error")
            raise
        failed = result is not None and result.problem is not None
        self.own_metrics.reconciled(time.monotonic() - started, "error" if failed else "ok")
        return result

    def reconcile_key(self, key: tuple[str, str]) -> float | None:
        """One pass for the work queue: seconds until the next one is needed, None if gone."""
        result = self.reconcile(*key)
        return None if result is None else result.wakeup

    def forget(self, namespace: str, name: str) -> None:
        """The LLMDeployment is no longer this operator's: its series leave /metrics."""
        self.own_metrics.forget(namespace, name)

    def _reconcile(self, body: Mapping[str, Any]) -> Result:
        meta = body["metadata"]
        owner = Owner(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"])
        generation = meta.get("generation")
        raw_status = dict(body.get("status") or {})
        status = parse_status(raw_status)
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

        try:
            observation = self._observe(owner, spec, status, commands_of(meta), now)
        except ReconcileError as exc:  # e.g. not allowed to read its children
            # Nothing to decide on: the next pass tries again.
            log.warning(exc.message, extra={"reason": exc.reason, "llmd": _key(owner)})
            return self._stand_still(
                body, owner, raw_status, status, exc.problem, wakeup=RETRY_SECONDS
            )
        if observation.canary_checks is not None:
            self.own_metrics.canary_checks(owner.namespace, owner.name, observation.canary_checks)

        decision = decide(spec, generation, status, observation, now)
        applied = self.applier.apply(owner, spec, decision.plan, status, observation.canary)
        settled = settle(decision, applied)

        new = settled.status
        wrote = write_status(self.kube, owner.namespace, owner.name, raw_status, new)
        if wrote:
            self._announce(body, status, settled)
        # After the write: a status that failed to be written counts nothing.
        self.own_metrics.observe(owner.namespace, owner.name, status, new, written=wrote)
        wakeup = 0.0 if decision.again else next_wakeup(spec, new, self.clock())
        if settled.problem is not None and not math.isfinite(wakeup):
            wakeup = RETRY_SECONDS  # what failed to apply is tried again
        return Result(new.phase, wrote, settled.problem, wakeup=wakeup)

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
        wrote = write_status(self.kube, owner.namespace, owner.name, raw_status, new)
        if wrote:
            self.post_event(body, "Warning", problem.reason, problem.message)
        self.own_metrics.observe(owner.namespace, owner.name, status, new, written=wrote)
        return Result(status.phase, wrote, problem, wakeup=wakeup)

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
        canary = observe_workload(self.kube, owner, current) if current != stable_rev else None
        baseline = (
            observe_workload(self.kube, owner, baseline_revision(stable_rev))
            if canary is not None and spec.baseline == "fresh"
            else None
        )
        wanted = needs(spec, status, current, commands, canary.ready if canary else 0, now)
        return Observation(
            revision=current,
            stable=observe_workload(self.kube, owner, stable_rev),
            canary=canary,
            baseline=baseline,
            commands=commands,
            check=(
                self._analyse(owner, spec, status, stable_rev, current, now)
                if wanted.analysis
                else None
            ),
            preflight=(
                self._preflight(owner, spec, stable_rev, current, now) if wanted.preflight else None
            ),
            canary_checks=(
                self.preflight.canary_checks(owner, spec, current) if wanted.canary_checks else None
            ),
        )

    def _preflight(
        self, owner: Owner, spec: LLMDeploymentSpec, stable: str, canary: str, now: datetime
    ) -> PreflightStatus | None:
        try:
            return self.preflight.run(owner, spec, stable, canary, now)
        except ReconcileError as exc:  # e.g. not allowed to read a referenced Secret
            return PreflightStatus(revision=canary, passed=False, reason=exc.message)

    def _source(self, address: str) -> MetricSource:
        with self._sources_guard:
            source = self._sources.get(address)
            if source is None:
                source = self._sources[address] = self.sources(address)
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
            self.post_event(body, event.type, event.reason, event.message)
        problem = settled.problem
        if problem is not None and old.message != problem.message:
            self.post_event(body, "Warning", problem.reason, problem.message)
        phase = settled.status.phase
        if phase != old.phase and phase is not None:
            self.post_event(body, "Normal", phase, f"phase {old.phase or 'none'} -> {phase}")


def _key(owner: Owner) -> str:
    return f"{owner.namespace}/{owner.name}"
