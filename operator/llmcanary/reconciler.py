"""The loop for one LLMDeployment: observe, decide (pure), act, write status once.

Level-based and idempotent: it can run at any time, any number of times, from any
trigger (the LLMDeployment changed, a child changed, the rollout daemon woke up), and
it writes nothing when the cluster already matches. The decision is
:func:`llmcanary.rollout.machine.decide`; this module only gathers its inputs and
carries out its plan.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from llmcanary.analysis.types import Arm
from llmcanary.analysis.verdict import Check, judge, unavailable
from llmcanary.api import ANNOTATION_PAUSED, API_VERSION, KIND, REQUEST_ANNOTATIONS
from llmcanary.api.spec import LLMDeploymentSpec, describe_errors
from llmcanary.api.status import LLMDeploymentStatus, PreflightStatus
from llmcanary.api.types import parse_duration
from llmcanary.builders import Owner
from llmcanary.builders.baseline import build_baseline
from llmcanary.builders.meta import (
    LABEL_DEPLOYMENT,
    LABEL_REVISION,
    LABEL_TRACK,
    Track,
    baseline_revision,
    service_name,
)
from llmcanary.builders.meta import deployment_name as revision_deployment
from llmcanary.builders.services import build_service
from llmcanary.builders.workload import build_config_map, build_deployment
from llmcanary.kube.children import ensure, owned_by
from llmcanary.kube.client import Kube
from llmcanary.kube.errors import ReconcileError
from llmcanary.observability.metrics import OperatorMetrics
from llmcanary.preflight.run import Preflight
from llmcanary.rollout.machine import (
    Decision,
    Observation,
    Plan,
    Requests,
    analysis_due,
    canary_checks_due,
    decide,
    evidence_start,
    judgement,
    next_wakeup,
    preflight_due,
)
from llmcanary.rollout.revision import revision_of
from llmcanary.rollout.workload import Problem, WorkloadObservation, pod_problem
from llmcanary.routing import Router, router_for, router_of_kind
from llmcanary.sources.base import MetricSource, MetricsUnavailable, Scope
from llmcanary.status import parse_status, timestamp, write_status

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
# Posts a Kubernetes Event about an object: (object, type, reason, message).
EventPoster = Callable[[Mapping[str, Any], str, str, str], None]
# The metrics source for a Prometheus address.
MetricsFactory = Callable[[str], MetricSource]


# How soon a pass that could not observe the cluster (e.g. a 403) is tried again.
RETRY_SECONDS = 30.0


@dataclass(frozen=True)
class Result:
    phase: str | None
    wrote_status: bool
    problem: Problem | None
    wakeup: float = math.inf  # seconds until the rollout needs the loop again


def observe_workload(
    deployment: Mapping[str, Any] | None, revision: str
) -> WorkloadObservation | None:
    if deployment is None:
        return None
    status = deployment.get("status") or {}
    return WorkloadObservation(
        revision=revision,
        desired=int(deployment.get("spec", {}).get("replicas") or 0),
        ready=int(status.get("readyReplicas") or 0),
        updated=int(status.get("updatedReplicas") or 0),
    )


def requests_of(meta: Mapping[str, Any]) -> Requests:
    annotations = meta.get("annotations") or {}
    return Requests(
        values={k: str(annotations[k]) for k in REQUEST_ANNOTATIONS if k in annotations},
        paused=str(annotations.get(ANNOTATION_PAUSED, "")).lower() == "true",
    )


class Reconciler:
    def __init__(
        self,
        kube: Kube,
        clock: Clock,
        post_event: EventPoster,
        metrics: MetricsFactory,
        preflight: Preflight,
        telemetry: OperatorMetrics | None = None,
    ) -> None:
        self.kube = kube
        # The operator's own /metrics (``metrics`` is the analysis' metrics source).
        self.telemetry = telemetry if telemetry is not None else OperatorMetrics(process=False)
        self.preflight = preflight
        self.clock = clock
        self.post_event = post_event
        self.metrics = metrics
        self._providers: dict[str, MetricSource] = {}
        self._providers_guard = threading.Lock()

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
                self.telemetry.forget(namespace, name)
                result = None
            else:
                result = self._reconcile(body)
        except Exception:
            self.telemetry.reconciled(time.monotonic() - started, "error")
            raise
        failed = result is not None and result.problem is not None
        self.telemetry.reconciled(time.monotonic() - started, "error" if failed else "ok")
        return result

    def reconcile_key(self, key: tuple[str, str]) -> float | None:
        """One pass for the work queue: seconds until the next one is needed, None if gone."""
        result = self.reconcile(*key)
        return None if result is None else result.wakeup

    def forget(self, namespace: str, name: str) -> None:
        """The LLMDeployment is no longer this operator's: its series leave /metrics."""
        self.telemetry.forget(namespace, name)

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

        current = revision_of(spec)
        stable_rev = status.stable_revision or current
        requests = requests_of(meta)
        try:
            check = None
            if analysis_due(spec, status, requests, now):
                check = self._analyse(owner, spec, status, stable_rev, current, now)
            canary = self._observe(owner, current) if current != stable_rev else None
            baseline = (
                self._observe(owner, baseline_revision(stable_rev))
                if canary is not None and spec.baseline == "fresh"
                else None
            )
            observation = Observation(
                revision=current,
                stable=self._observe(owner, stable_rev),
                canary=canary,
                baseline=baseline,
                check=check,
                requests=requests,
                preflight=(
                    self._preflight(owner, spec, stable_rev, current, now)
                    if preflight_due(status, current)
                    else None
                ),
                canary_checks=(
                    self.preflight.canary_checks(owner, spec, current)
                    if canary is not None and canary_checks_due(spec, status, canary.ready)
                    else None
                ),
            )
        except ReconcileError as exc:  # e.g. not allowed to read its children
            # Nothing to decide on: the next pass tries again.
            blind = self._problem(owner, exc)
            return self._stand_still(body, owner, raw_status, status, blind, wakeup=RETRY_SECONDS)
        if observation.canary_checks is not None:
            self.telemetry.canary_checks(owner.namespace, owner.name, observation.canary_checks)
        decision = decide(spec, generation, status, observation, now)
        try:
            router = self._act(owner, spec, decision.plan, previous_router=status.router)
            if router.approximate and decision.plan.canary_revision is not None:
                # The split follows from Ready pods, not from the weight: say what it is.
                observation = replace(
                    observation, traffic_note=self._share_note(owner, router, decision.plan)
                )
                decision = decide(spec, generation, status, observation, now)
        except ReconcileError as exc:
            observation = replace(observation, problem=self._problem(owner, exc))
            decision = decide(spec, generation, status, observation, now)

        new = decision.status
        wrote = write_status(self.kube, owner.namespace, owner.name, raw_status, new)
        if wrote:
            self._announce(body, status.phase, status.message, decision, observation.problem)
        # After the write: a status that failed to be written counts nothing.
        self.telemetry.observe(owner.namespace, owner.name, status, new, written=wrote)
        wakeup = 0.0 if decision.again else next_wakeup(spec, new, self.clock())
        return Result(new.phase, wrote, observation.problem, wakeup=wakeup)

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
        self.telemetry.observe(owner.namespace, owner.name, status, new, written=wrote)
        return Result(status.phase, wrote, problem, wakeup=wakeup)

    @staticmethod
    def _problem(owner: Owner, exc: ReconcileError) -> Problem:
        log.warning(
            exc.message, extra={"reason": exc.reason, "llmd": f"{owner.namespace}/{owner.name}"}
        )
        return Problem(exc.reason, exc.message)

    # --- observe ------------------------------------------------------------------

    def _preflight(
        self, owner: Owner, spec: LLMDeploymentSpec, stable: str, canary: str, now: datetime
    ) -> PreflightStatus | None:
        try:
            return self.preflight.run(owner, spec, stable, canary, now)
        except ReconcileError as exc:  # e.g. not allowed to read a referenced Secret
            return PreflightStatus(revision=canary, passed=False, reason=exc.message)

    def _observe(self, owner: Owner, revision: str) -> WorkloadObservation | None:
        name = revision_deployment(owner.name, revision)
        deployment = self.kube.get("apps/v1", "Deployment", owner.namespace, name)
        if deployment is not None and not owned_by(deployment, owner.uid):
            return None  # ensure() reports the conflict
        observed = observe_workload(deployment, revision)
        if observed is not None and observed.ready < observed.desired:
            pods = self.kube.list(
                "v1",
                "Pod",
                owner.namespace,
                f"{LABEL_DEPLOYMENT}={owner.name},{LABEL_REVISION}={revision}",
            )
            observed = replace(observed, problem=pod_problem(pods))
        return observed

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
            return Scope(owner.namespace, owner.name, spec.model.name, arm, revision, window)

        address = analysis.prometheus.address
        with self._providers_guard:
            source = self._providers.get(address) or self._providers.setdefault(
                address, self.metrics(address)
            )
        try:
            reference_reading = source.read(scope(reference, reference_revision), analysis)
            canary_reading = source.read(scope("canary", canary), analysis)
        except MetricsUnavailable as exc:
            self.telemetry.query_error(exc.reason)
            return unavailable(f"metrics unavailable: {exc}")
        except ValueError as exc:  # a template the CRD could not check
            return unavailable(f"spec.canary.analysis.queries: {exc}")
        check = judge(analysis, reference_reading, canary_reading, context)
        log.info(
            "analysis %s: %s",
            check.verdict,
            check.reason,
            extra={"llmd": f"{owner.namespace}/{owner.name}", "verdict": check.verdict},
        )
        return check

    # --- act ----------------------------------------------------------------------

    @staticmethod
    def _share_note(owner: Owner, router: Router, plan: Plan) -> str | None:
        actual = router.get_weights(owner)
        if actual is None or actual.canary == plan.canary_weight:
            return None
        return (
            f"the {router.kind} router splits by Ready pods: the canary gets about"
            f" {actual.canary}% for a weight of {plan.canary_weight}%"
        )

    def _act(
        self, owner: Owner, spec: LLMDeploymentSpec, plan: Plan, previous_router: str | None
    ) -> Router:
        """Carry out the plan so that no request ever meets a pod that cannot serve it.

        Order: grow workloads, point Services, move weights, label pods, then shrink.
        Every step is idempotent, so a crash anywhere is repaired by the next pass.
        """
        current = revision_of(spec)
        namespace = owner.namespace
        shrink: list[dict[str, Any]] = []

        # 1. The stable revision. While the spec describes it, it is (re)built from the
        # spec; during a rollout the spec describes the canary, so only its size follows.
        if plan.stable_revision == current:
            ensure(self.kube, build_config_map(owner, spec, current))
            ensure(self.kube, build_deployment(owner, spec, current, "stable", spec.replicas))
        else:
            self._resize(owner, plan.stable_revision, spec.replicas, "stable")

        # 2. The canary (and its baseline): created or grown now, shrunk only after
        # traffic left them.
        baseline = self._baseline(owner, plan)
        if baseline is not None:
            ensure(self.kube, baseline)
        if plan.canary_revision is not None:
            ensure(self.kube, build_config_map(owner, spec, plan.canary_revision))
            desired = build_deployment(
                owner, spec, plan.canary_revision, "canary", plan.canary_replicas
            )
            observed = self._observe(owner, plan.canary_revision)
            if observed is not None and observed.desired > plan.canary_replicas:
                shrink.append(desired)
            else:
                ensure(self.kube, desired)

        # 3. Services, then 4. weights: at promotion both Services already point at the
        # promoted pods before the route sends everything to NAME-stable.
        serving_canary = plan.canary_revision if plan.canary_replicas > 0 else None
        ensure(self.kube, build_service(owner, "stable", plan.stable_revision))
        ensure(self.kube, build_service(owner, "canary", serving_canary or plan.stable_revision))
        base_rev = baseline_revision(plan.stable_revision)
        if baseline is not None:
            ensure(self.kube, build_service(owner, "baseline", base_rev))
        router = router_for(self.kube, spec)
        router.reconcile(owner, spec, plan.canary_weight, plan.baseline_weight)
        if previous_router and previous_router != router.kind:
            # The user switched routers: the old one's objects would still split traffic.
            router_of_kind(self.kube, previous_router).finalize(owner)

        # 5. Pods carry the track of their revision (analysis reads metrics by track).
        tracks: dict[str, Track] = {plan.stable_revision: "stable"}
        if plan.canary_revision is not None:
            tracks[plan.canary_revision] = "canary"
        if baseline is not None:
            tracks[base_rev] = "baseline"
        self._label_pods(owner, tracks)

        # 6. Shrink: the canary after its weight fell, and every other revision to zero;
        # a baseline no longer wanted is removed (its route share is already gone).
        for desired in shrink:
            ensure(self.kube, desired)
        for deployment in self.kube.list(
            "apps/v1", "Deployment", namespace, f"{LABEL_DEPLOYMENT}={owner.name}"
        ):
            labels = deployment["metadata"].get("labels") or {}
            revision = labels.get(LABEL_REVISION)
            if revision in tracks or not owned_by(deployment, owner.uid):
                continue
            if labels.get(LABEL_TRACK) == "baseline":
                self._remove_baseline(owner, deployment["metadata"]["name"])
                continue
            if deployment.get("spec", {}).get("replicas"):
                self._resize(owner, revision or "", 0, None)
        return router

    def _baseline(self, owner: Owner, plan: Plan) -> dict[str, Any] | None:
        """The baseline Deployment the plan wants, built from the stable one; None for
        none (or while the stable Deployment cannot be read, e.g. just deleted)."""
        if plan.baseline_replicas <= 0 or plan.canary_revision is None:
            return None
        name = revision_deployment(owner.name, plan.stable_revision)
        stable = self.kube.get("apps/v1", "Deployment", owner.namespace, name)
        if stable is None or not owned_by(stable, owner.uid):
            return None
        return build_baseline(owner, stable, plan.baseline_replicas)

    def _remove_baseline(self, owner: Owner, name: str) -> None:
        """Delete a baseline Deployment that is no longer wanted, and its Service."""
        self.kube.delete("apps/v1", "Deployment", owner.namespace, name)
        service = self.kube.get(
            "v1", "Service", owner.namespace, service_name(owner.name, "baseline")
        )
        if service is not None and owned_by(service, owner.uid):
            self.kube.delete("v1", "Service", owner.namespace, service["metadata"]["name"])
        log.info("removed baseline %s", name, extra={"child": name})

    def _resize(self, owner: Owner, revision: str, replicas: int, track: Track | None) -> None:
        name = revision_deployment(owner.name, revision)
        deployment = self.kube.get("apps/v1", "Deployment", owner.namespace, name)
        if deployment is None or not owned_by(deployment, owner.uid):
            if track == "stable":
                raise ReconcileError(
                    "StableMissing",
                    f"the stable Deployment {name} is gone during a rollout and cannot be"
                    " rebuilt from a spec that now describes the canary; abort the rollout"
                    f" or restore the spec of revision {revision}",
                )
            return
        patch: dict[str, Any] = {}
        if deployment.get("spec", {}).get("replicas") != replicas:
            patch["spec"] = {"replicas": replicas}
        labels = deployment["metadata"].get("labels") or {}
        if track is not None and labels.get(LABEL_TRACK) != track:
            patch["metadata"] = {"labels": {LABEL_TRACK: track}}
        if patch:
            self.kube.patch("apps/v1", "Deployment", owner.namespace, name, patch)
            log.info(
                "resized %s to %d", name, replicas, extra={"child": name, "replicas": replicas}
            )

    def _label_pods(self, owner: Owner, tracks: Mapping[str, Track]) -> None:
        pods = self.kube.list("v1", "Pod", owner.namespace, f"{LABEL_DEPLOYMENT}={owner.name}")
        for pod in pods:
            labels = pod["metadata"].get("labels") or {}
            track = tracks.get(labels.get(LABEL_REVISION, ""))
            if track is not None and labels.get(LABEL_TRACK) != track:
                name = pod["metadata"]["name"]
                self.kube.patch(
                    "v1",
                    "Pod",
                    owner.namespace,
                    name,
                    {"metadata": {"labels": {LABEL_TRACK: track}}},
                )
                log.info("labelled pod %s track=%s", name, track, extra={"pod": name})

    # --- announce -----------------------------------------------------------------

    def _announce(
        self,
        body: Mapping[str, Any],
        old_phase: str | None,
        old_message: str | None,
        decision: Decision,
        problem: Problem | None,
    ) -> None:
        for event in decision.events:
            self.post_event(body, event.type, event.reason, event.message)
        if problem is not None and old_message != problem.message:
            self.post_event(body, "Warning", problem.reason, problem.message)
        phase = decision.status.phase
        if phase != old_phase and phase is not None:
            self.post_event(body, "Normal", phase, f"phase {old_phase or 'none'} -> {phase}")
