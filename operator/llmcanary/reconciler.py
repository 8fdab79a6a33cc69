"""Steady-state reconciliation: observe, build the desired children, apply, write status.

Level-based and idempotent: it can run at any time, any number of times, from any
trigger (the LLMDeployment changed, a child changed or vanished, the resync timer),
and it writes nothing when the cluster already matches.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from llmcanary.api import API_VERSION, KIND
from llmcanary.api.spec import LLMDeploymentSpec, describe_errors
from llmcanary.api.status import LLMDeploymentStatus
from llmcanary.builders import Owner
from llmcanary.builders.meta import deployment_name
from llmcanary.builders.services import build_service
from llmcanary.builders.workload import build_config_map, build_deployment
from llmcanary.kube.children import ensure
from llmcanary.kube.client import Kube
from llmcanary.kube.errors import ReconcileError
from llmcanary.rollout.revision import revision_of
from llmcanary.rollout.steady import Problem, WorkloadObservation, stable_revision, steady_status
from llmcanary.routing import router_for
from llmcanary.status import parse_status, write_status

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
# Posts a Kubernetes Event about an object: (object, type, reason, message).
EventPoster = Callable[[Mapping[str, Any], str, str, str], None]


@dataclass(frozen=True)
class Result:
    phase: str | None
    wrote_status: bool
    problem: Problem | None


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


class Reconciler:
    def __init__(self, kube: Kube, clock: Clock, post_event: EventPoster) -> None:
        self.kube = kube
        self.clock = clock
        self.post_event = post_event
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def _lock(self, namespace: str, name: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault((namespace, name), threading.Lock())

    def reconcile(self, namespace: str, name: str) -> Result | None:
        """Reconcile one LLMDeployment, whatever triggered it.

        The object is read fresh under a per-object lock: a watch event's body can be
        older than a status this operator has just written, and acting on it would
        announce the same transition twice.
        """
        with self._lock(namespace, name):
            body = self.kube.get(API_VERSION, KIND, namespace, name)
            if body is None or body["metadata"].get("deletionTimestamp"):
                return None
            return self._reconcile(body)

    def _reconcile(self, body: Mapping[str, Any]) -> Result:
        def emit(type_: str, reason: str, message: str) -> None:
            self.post_event(body, type_, reason, message)

        meta = body["metadata"]
        owner = Owner(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"])
        generation = meta.get("generation")
        raw_status = dict(body.get("status") or {})
        status = parse_status(raw_status)

        try:
            spec = LLMDeploymentSpec.model_validate(dict(body.get("spec") or {}))
        except ValidationError as exc:
            # Admission normally stops this; an object stored under an older CRD can still
            # carry it. Report it and leave the running workload alone.
            invalid = Problem("InvalidSpec", describe_errors(exc))
            new = status.model_copy(
                update={"observed_generation": generation, "message": invalid.message}
            )
            wrote = write_status(self.kube, owner.namespace, owner.name, raw_status, new)
            if wrote:
                emit("Warning", invalid.reason, invalid.message)
            return Result(status.phase, wrote, invalid)

        current = revision_of(spec)
        stable_rev = stable_revision(status, current)
        problem: Problem | None = None
        stable: WorkloadObservation | None = None
        try:
            stable = self._ensure_children(owner, spec, current, stable_rev)
        except ReconcileError as exc:
            problem = Problem(exc.reason, exc.message)
            log.warning(
                exc.message, extra={"reason": exc.reason, "llmd": f"{owner.namespace}/{owner.name}"}
            )

        new = steady_status(spec, generation, status, current, stable, problem, self.clock())
        wrote = write_status(self.kube, owner.namespace, owner.name, raw_status, new)
        if wrote:
            self._announce(status, new.phase, problem, emit)
        return Result(new.phase, wrote, problem)

    def _ensure_children(
        self, owner: Owner, spec: LLMDeploymentSpec, current: str, stable_rev: str
    ) -> WorkloadObservation | None:
        deployment: dict[str, Any] | None
        if current == stable_rev:
            # The spec describes the stable revision: its children can be (re)built from it.
            ensure(self.kube, build_config_map(owner, spec, stable_rev))
            _, deployment = ensure(
                self.kube, build_deployment(owner, spec, stable_rev, "stable", spec.replicas)
            )
        else:
            # The spec has moved on to a new revision; the stable one keeps running as it is.
            deployment = self.kube.get(
                "apps/v1", "Deployment", owner.namespace, deployment_name(owner.name, stable_rev)
            )
        for track in ("stable", "canary"):
            ensure(self.kube, build_service(owner, track, stable_rev))
        router_for(self.kube, spec).reconcile(owner, spec, canary_weight=0)
        return observe_workload(deployment, stable_rev)

    @staticmethod
    def _announce(
        old: LLMDeploymentStatus,
        phase: str | None,
        problem: Problem | None,
        emit: Callable[[str, str, str], None],
    ) -> None:
        if problem is not None and old.message != problem.message:
            emit("Warning", problem.reason, problem.message)
        if phase != old.phase and phase is not None:
            emit("Normal", phase, f"phase {old.phase or 'none'} -> {phase}")
