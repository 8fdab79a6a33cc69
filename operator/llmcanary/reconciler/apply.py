"""Carry out a plan so that no request ever meets a pod that cannot serve it.

The steps, in order: grow the workloads, point the Services, weigh (the router, then a
read-back of the weights), label the pods, shrink. Every step is idempotent, so a crash
anywhere is repaired by the next pass; what was done is reported as :class:`Applied`, and
status records that, not the plan.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llmcanary.api.spec import LLMDeploymentSpec
from llmcanary.api.status import LLMDeploymentStatus
from llmcanary.builders import Owner
from llmcanary.builders.baseline import build_baseline
from llmcanary.builders.meta import (
    LABEL_DEPLOYMENT,
    LABEL_REVISION,
    LABEL_TRACK,
    Track,
    baseline_revision,
    deployment_name,
    service_name,
)
from llmcanary.builders.services import build_service
from llmcanary.builders.workload import build_deployment, image_refusal
from llmcanary.kube.children import ensure, owned_by, remove
from llmcanary.kube.client import KubeApi
from llmcanary.kube.errors import capped
from llmcanary.problems import Problem, ReconcileError
from llmcanary.rollout.decision import Applied, Plan
from llmcanary.rollout.observation import RevisionConfig, WorkloadObservation
from llmcanary.rollout.revision import revision_of
from llmcanary.rollout.steps import asked_weights
from llmcanary.routing import Backends, Router, WeightCheck, Weights, router_for

log = logging.getLogger(__name__)


def internal_problem(exc: BaseException) -> Problem:
    """An error the operator did not expect, as status shows it (the traceback is logged)."""
    return Problem(
        "InternalError",
        f"the operator failed: {capped(f'{type(exc).__name__}: {exc}', 300)}; it tries again"
        " (its log has the details); please report it if it persists",
    )


@dataclass(frozen=True)
class Routed:
    """What the weigh step found: the router, and whether it holds the weights."""

    router: Router
    check: WeightCheck | None  # None: not read back this pass
    traffic_note: str | None


class PlanApplier:
    """Applies one LLMDeployment's plan: :meth:`apply` runs the steps in order."""

    def __init__(self, kube: KubeApi, allowed_images: Sequence[str] = ()) -> None:
        self.kube = kube
        self.allowed_images = list(allowed_images)

    def apply(
        self,
        owner: Owner,
        spec: LLMDeploymentSpec,
        plan: Plan,
        status: LLMDeploymentStatus,
        canary: WorkloadObservation | None,
        config: RevisionConfig | None = None,
    ) -> Applied:
        """Grow, point, weigh, label, shrink. A step that fails stops the pass; the
        :class:`Applied` says whether the router took the weights before it did, and
        what failed (any error: status records what was applied, whatever stopped it).

        One failure does not stop the pass: the canary's own objects while the plan asks
        no traffic of it (an abort or rollback of a canary the API server refuses still
        takes its weight to 0); it is reported all the same.

        ``status`` is the one the pass started from and ``canary`` the canary revision's
        Deployment as the pass observed it (the plan's canary is always that revision);
        ``config`` the current revision's configuration (None: ready): no Deployment of
        it is made before its ConfigMap is."""
        routed: Routed | None = None
        deferred: list[Problem] = []
        llmd = f"{owner.namespace}/{owner.name}"
        try:
            baseline = self.baseline(owner, plan)
            shrink = self.grow(owner, spec, plan, baseline, canary, deferred, config)
            backends = self.point_services(owner, plan, baseline is not None)
            routed = self.weigh(owner, spec, plan, status, backends)
            self.label_pods(owner, self.tracks(plan, baseline is not None))
            self.shrink(owner, plan, shrink, baseline is not None)
        except ReconcileError as exc:
            log.warning(exc.message, extra={"reason": exc.reason, "llmd": llmd})
            problem: Problem | None = exc.problem
        except Exception as exc:  # what status records must still be written
            log.exception("applying the plan of %s failed", llmd, extra={"llmd": llmd})
            problem = internal_problem(exc)
        else:
            problem = deferred[0] if deferred else None
        if routed is None:
            return Applied(routed=False, verified=None, problem=problem)
        check = routed.check
        return Applied(
            verified=None if check is None else check.held,
            unheld=None if check is None else check.why,
            traffic_note=routed.traffic_note,
            problem=problem,
        )

    # --- the steps ----------------------------------------------------------------

    def grow(
        self,
        owner: Owner,
        spec: LLMDeploymentSpec,
        plan: Plan,
        baseline: dict[str, Any] | None,
        canary: WorkloadObservation | None,
        deferred: list[Problem] | None = None,
        config: RevisionConfig | None = None,
    ) -> list[dict[str, Any]]:
        """Create or grow the stable, baseline and canary Deployments; return the
        canary's when it must shrink instead (only after traffic has left it).

        ``deferred``: where a failure of the canary's objects goes, instead of stopping
        the pass, while the plan gives the canary no weight."""
        current = revision_of(spec)
        ready = config is None or config.ready
        # While the spec describes the stable revision, it is (re)built from the spec;
        # during a rollout the spec describes the canary, so only the stable's size follows.
        if plan.stable_revision == current:
            self.check_new_revision(owner, spec, current, config)
            if config is None or config.ready:
                ensure(self.kube, build_deployment(owner, spec, current, "stable", spec.replicas))
            else:
                self.resize(owner, current, spec.replicas, None)  # only one that exists
        else:
            self.resize(owner, plan.stable_revision, spec.replicas, "stable")
        if baseline is not None:
            ensure(self.kube, baseline)
        shrink: list[dict[str, Any]] = []
        # A canary without its configuration gets no Deployment (preflight waits for the
        # read, or fails with what it found); one that exists only follows the plan's size.
        if plan.canary_revision is not None and not ready:
            self.resize(owner, plan.canary_revision, plan.canary_replicas, None)
        elif plan.canary_revision is not None:
            try:
                desired = build_deployment(
                    owner, spec, plan.canary_revision, "canary", plan.canary_replicas
                )
                if canary is not None and canary.desired > plan.canary_replicas:
                    shrink.append(desired)
                else:
                    ensure(self.kube, desired)
            except ReconcileError as exc:
                if plan.canary_weight or deferred is None:
                    raise
                log.warning(
                    exc.message,
                    extra={"reason": exc.reason, "llmd": f"{owner.namespace}/{owner.name}"},
                )
                deferred.append(exc.problem)
        return shrink

    def point_services(self, owner: Owner, plan: Plan, baseline: bool) -> Backends:
        """The track Services select their revisions' pods. At promotion both already
        point at the promoted pods before the route sends everything to NAME-stable.
        Returns which revision each track's Service selects, for the router."""
        serving_canary = plan.canary_revision if plan.canary_replicas > 0 else None
        backends: dict[Track, str] = {
            "stable": plan.stable_revision,
            "canary": serving_canary or plan.stable_revision,
        }
        if baseline:
            backends["baseline"] = baseline_revision(plan.stable_revision)
        for track, revision in backends.items():
            ensure(self.kube, build_service(owner, track, revision))
        return backends

    def weigh(
        self,
        owner: Owner,
        spec: LLMDeploymentSpec,
        plan: Plan,
        status: LLMDeploymentStatus,
        backends: Backends,
    ) -> Routed:
        """Ask the router for the plan's weights, then read them back when they changed
        or were not held before (a step's clock waits for that)."""
        router = router_for(self.kube, spec.traffic.router, self.allowed_images)
        weights = Weights.of(plan.canary_weight, plan.baseline_weight)
        router.reconcile(owner, spec, weights, backends)
        previous = status.router
        if previous and previous != router.kind:
            # The user switched routers: the old one's objects would still split traffic.
            router_for(self.kube, previous).finalize(owner)
        asked = (plan.canary_weight, plan.baseline_weight)
        held = status.weight_verified and asked_weights(spec, status) == asked
        check = None
        if plan.canary_weight and (router.data_plane_reports or not held):
            check = router.verify_weights(owner, weights)
        note = None
        if router.approximate and plan.canary_revision is not None:
            note = self.share_note(owner, router, plan)
        return Routed(router, check, note)

    def label_pods(self, owner: Owner, tracks: Mapping[str, Track]) -> None:
        """Pods carry the track of their revision (analysis reads metrics by track)."""
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

    def shrink(
        self, owner: Owner, plan: Plan, shrink: list[dict[str, Any]], baseline: bool
    ) -> None:
        """The canary after its weight fell, every other revision to zero; a baseline no
        longer wanted is removed (its route share is already gone)."""
        for desired in shrink:
            ensure(self.kube, desired)
        tracks = self.tracks(plan, baseline)
        for deployment in self.kube.list(
            "apps/v1", "Deployment", owner.namespace, f"{LABEL_DEPLOYMENT}={owner.name}"
        ):
            labels = deployment["metadata"].get("labels") or {}
            revision = labels.get(LABEL_REVISION)
            if revision in tracks or not owned_by(deployment, owner.uid):
                continue
            if labels.get(LABEL_TRACK) == "baseline":
                self.remove_baseline(owner, deployment)
                continue
            if deployment.get("spec", {}).get("replicas"):
                self.resize(owner, revision or "", 0, None)

    # --- helpers ------------------------------------------------------------------

    def check_new_revision(
        self, owner: Owner, spec: LLMDeploymentSpec, revision: str, config: RevisionConfig | None
    ) -> None:
        """The first revision has no preflight: before its Deployment exists, its image is
        held to the allowlist (whatever its ConfigMap: one can be written by anyone who may
        write ConfigMaps) and what the repository read found stops the pass. One whose
        Deployment exists was made before these checks, and refusing it would block an
        abort."""
        refused = image_refusal(spec.triton.image, self.allowed_images)
        problem = config.problem if config is not None else None
        if refused is None and problem is None:
            return
        name = deployment_name(owner.name, revision)
        if self.kube.get("apps/v1", "Deployment", owner.namespace, name) is not None:
            return
        if refused is not None:
            raise ReconcileError("ImageNotAllowed", refused)
        if config is not None and config.problem is not None:
            raise ReconcileError(config.reason, config.problem)

    @staticmethod
    def tracks(plan: Plan, baseline: bool) -> dict[str, Track]:
        tracks: dict[str, Track] = {plan.stable_revision: "stable"}
        if plan.canary_revision is not None:
            tracks[plan.canary_revision] = "canary"
        if baseline:
            tracks[baseline_revision(plan.stable_revision)] = "baseline"
        return tracks

    def baseline(self, owner: Owner, plan: Plan) -> dict[str, Any] | None:
        """The baseline Deployment the plan wants, built from the stable one; None for
        none (or while the stable Deployment cannot be read, e.g. just deleted)."""
        if plan.baseline_replicas <= 0 or plan.canary_revision is None:
            return None
        name = deployment_name(owner.name, plan.stable_revision)
        stable = self.kube.get("apps/v1", "Deployment", owner.namespace, name)
        if stable is None or not owned_by(stable, owner.uid):
            return None
        return build_baseline(owner, stable, plan.baseline_replicas)

    def remove_baseline(self, owner: Owner, deployment: dict[str, Any]) -> None:
        """Delete a baseline Deployment that is no longer wanted (one the pass read and
        found owned), and its Service if that is ours. Each delete names the object's
        UID: a same-named object created since is never deleted."""
        meta = deployment["metadata"]
        name = meta["name"]
        if owned_by(deployment, owner.uid):
            self.kube.delete("apps/v1", "Deployment", owner.namespace, name, uid=meta.get("uid"))
        remove(
            self.kube,
            "v1",
            "Service",
            owner.namespace,
            service_name(owner.name, "baseline"),
            owner.uid,
        )
        log.info("removed baseline %s", name, extra={"child": name})

    def resize(self, owner: Owner, revision: str, replicas: int, track: Track | None) -> None:
        name = deployment_name(owner.name, revision)
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

    @staticmethod
    def share_note(owner: Owner, router: Router, plan: Plan) -> str | None:
        actual = router.get_weights(owner)
        if actual is None or actual.canary == plan.canary_weight:
            return None
        return (
            f"the {router.kind} router splits by Ready pods: the canary gets about"
            f" {actual.canary}% for a weight of {plan.canary_weight}%"
        )
