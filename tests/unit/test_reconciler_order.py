"""The reconciler's order of writes on an in-memory API: grow, point, weigh, label, shrink;
and what status records when a write fails. The same passes against a real API server
are in tests/integration/test_canary.py; here each runs in milliseconds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from fake_kube import FakeKube, Write
from specs import make_spec

from llmcanary.api import API_VERSION, KIND
from llmcanary.api.spec import LLMDeploymentSpec
from llmcanary.api.status import AnalysisRecord, LLMDeploymentStatus
from llmcanary.api.times import timestamp
from llmcanary.builders import Owner
from llmcanary.builders.workload import build_deployment
from llmcanary.kube.client import Kube
from llmcanary.kube.status_writer import status_to_wire
from llmcanary.preflight.run import Preflight
from llmcanary.reconciler import Reconciler
from llmcanary.reconciler.apply import PlanApplier
from llmcanary.reconciler.observe import observe_workload
from llmcanary.rollout.decision import Applied, Plan
from llmcanary.rollout.revision import revision_of
from llmcanary.sources.base import MetricSource

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
OWNER = Owner(name="tiny", namespace="ml", uid="0000-uid")
STABLE = "r-stable"
OLD = "r-old"


def ready(deployment: dict[str, Any]) -> dict[str, Any]:
    replicas = deployment["spec"]["replicas"]
    deployment["status"] = {"readyReplicas": replicas, "updatedReplicas": replicas}
    return deployment


def pod(revision: str, track: str, index: int = 0) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"tiny-{revision}-{index}",
            "namespace": "ml",
            "labels": {
                "llmcanary.io/deployment": "tiny",
                "llmcanary.io/revision": revision,
                "llmcanary.io/track": track,
            },
        },
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }


def cluster(spec: LLMDeploymentSpec, canary: str, canary_replicas: int) -> FakeKube:
    """The stable revision serving, a canary at its last size, and an older revision
    still scaled up (it must shrink last)."""
    kube = FakeKube()
    kube.add(ready(build_deployment(OWNER, spec, STABLE, "stable", spec.replicas)))
    kube.add(ready(build_deployment(OWNER, spec, canary, "canary", canary_replicas)))
    kube.add(ready(build_deployment(OWNER, spec, OLD, "canary", 1)))
    kube.add(pod(STABLE, "stable"))
    kube.add(pod(canary, "none"))  # a new canary pod without its track label yet
    return kube


def apply(
    kube: FakeKube,
    spec: LLMDeploymentSpec,
    plan: Plan,
    status: LLMDeploymentStatus | None = None,
) -> Applied:
    """One pass's apply, with the canary observed first as the reconciler observes it."""
    canary = observe_workload(kube, OWNER, plan.canary_revision) if plan.canary_revision else None
    status = status if status is not None else LLMDeploymentStatus(router="gatewayAPI")
    return PlanApplier(kube).apply(OWNER, spec, plan, status, canary)


def step(writes: list[Write]) -> list[str]:
    """Each write as the step of the order it belongs to."""

    def which(w: Write) -> str:
        if w.kind in ("Deployment", "ConfigMap") and w.verb == "apply":
            return "grow"
        if w.kind == "Service":
            return "point"
        if w.kind == "HTTPRoute":
            return "weigh"
        if w.kind == "Pod":
            return "label"
        if w.kind == "Deployment" and w.verb == "patch":
            return "shrink"
        return f"{w.verb} {w.kind}"

    order: list[str] = []
    for name in map(which, writes):
        if not order or order[-1] != name:
            order.append(name)
    return order


def test_a_step_grows_points_weighs_labels_then_shrinks() -> None:
    spec = make_spec(replicas=4)
    canary = revision_of(spec)
    kube = cluster(spec, canary, canary_replicas=1)
    plan = Plan(STABLE, canary, canary_replicas=2, canary_weight=15)
    applied = apply(kube, spec, plan)

    assert applied.routed and applied.problem is None
    assert applied.verified is True  # the route reads back 85/15
    assert step(kube.writes) == ["grow", "point", "weigh", "label", "shrink"]
    [shrunk] = [w for w in kube.writes if w.verb == "patch" and w.kind == "Deployment"]
    assert shrunk.name == f"tiny-{OLD}" and shrunk.body == {"spec": {"replicas": 0}}


def test_a_canary_shrinks_only_after_its_weight_fell() -> None:
    spec = make_spec(replicas=4)
    canary = revision_of(spec)
    kube = cluster(spec, canary, canary_replicas=2)
    rollback = Plan(STABLE, canary, canary_replicas=0, canary_weight=0)
    apply(kube, spec, rollback)
    route = next(i for i, w in enumerate(kube.writes) if w.kind == "HTTPRoute")
    canary_down = next(
        i
        for i, w in enumerate(kube.writes)
        if w.kind == "Deployment" and w.name == f"tiny-{canary}" and w.verb == "apply"
    )
    assert route < canary_down  # no request meets a pod that is going away


def test_a_route_that_cannot_be_written_stops_the_pass_before_labels_and_shrink() -> None:
    spec = make_spec(replicas=4)
    canary = revision_of(spec)
    kube = cluster(spec, canary, canary_replicas=1)
    kube.missing.add("HTTPRoute")
    plan = Plan(STABLE, canary, canary_replicas=2, canary_weight=15)
    applied = apply(kube, spec, plan)

    assert not applied.routed
    assert applied.problem is not None and applied.problem.reason == "MissingAPI"
    assert "install the Gateway API CRDs" in applied.problem.message
    assert step(kube.writes) == ["grow", "point"]


def test_promotion_reads_back_the_split_without_the_baseline() -> None:
    # At 50% with a fresh baseline the route held 0/50/50; promoting asks for 50/50/0 at the
    # same canary weight, and that split is read back too, not taken as held.
    spec = make_spec(replicas=4)
    assert spec.baseline == "fresh"
    canary = revision_of(spec)
    kube = cluster(spec, canary, canary_replicas=4)
    held = LLMDeploymentStatus(
        phase="Progressing", canary_weight=50, weight_verified=True, router="gatewayAPI"
    )
    again = Plan(
        STABLE, canary, canary_replicas=4, canary_weight=50, baseline_replicas=4, baseline_weight=50
    )
    promoting = Plan(STABLE, canary, canary_replicas=4, canary_weight=50)
    # Unchanged, and still read back: a Gateway can stop serving a route at any time.
    assert apply(kube, spec, again, held).verified is True
    assert apply(kube, spec, promoting, held).verified is True
    route = kube.get("gateway.networking.k8s.io/v1", "HTTPRoute", "ml", "tiny")
    assert route is not None
    assert [r["weight"] for r in route["spec"]["rules"][0]["backendRefs"]] == [50, 50]


class NoMetrics:
    def read(self, *args: Any) -> Any:
        raise AssertionError("no analysis is due in these passes")


@pytest.mark.parametrize("missing", [False, True])
def test_status_records_the_weight_the_router_took_not_the_one_planned(missing: bool) -> None:
    spec = make_spec(
        replicas=4,
        canary={
            "stepInterval": "60s",
            "initialStepInterval": "60s",
            "analysis": {"baseline": "stable"},
        },
    )
    canary = revision_of(spec)
    kube = cluster(spec, canary, canary_replicas=1)
    # Step 0 at 5% is over and its last check passed: this pass moves to 15%.
    status = LLMDeploymentStatus(
        phase="Progressing",
        stable_revision=STABLE,
        canary_revision=canary,
        canary_weight=5,
        weight_verified=True,
        current_step=0,
        step_started_at=timestamp(T0 - timedelta(seconds=90)),
        last_analysis=AnalysisRecord(
            time=timestamp(T0 - timedelta(seconds=5)), verdict="pass", reason="healthy"
        ),
        failed_checks=0,
        inconclusive_checks=0,
        router="gatewayAPI",
    )
    kube.add(
        {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {"name": "tiny", "namespace": "ml", "uid": "0000-uid", "generation": 1},
            "spec": spec.model_dump(mode="json", by_alias=True, exclude_none=True),
            "status": status_to_wire(status),
        }
    )
    if missing:
        kube.missing.add("HTTPRoute")
    events: list[tuple[str, str, str]] = []
    reconciler = Reconciler(
        cast(Kube, kube),
        lambda: T0,
        lambda _body, type_, reason, message: events.append((type_, reason, message)),
        sources=lambda _address: cast(MetricSource, NoMetrics()),
        preflight=cast(Preflight, object()),
    )
    result = reconciler.reconcile("ml", "tiny")
    assert result is not None
    stored = kube.objects[(API_VERSION, KIND, "ml", "tiny")]["status"]
    if missing:
        assert stored["canaryWeight"] == 5  # what the router still holds
        assert stored["stepStartedAt"] == timestamp(T0 - timedelta(seconds=90))
        assert "WeightChanged" not in [reason for _, reason, _ in events]
        assert ("Warning", "MissingAPI") in [(t, r) for t, r, _ in events]
        degraded = next(c for c in stored["conditions"] if c["type"] == "Degraded")
        assert degraded["status"] == "True" and degraded["reason"] == "MissingAPI"
        assert result.wakeup <= 60.0  # tried again, though no event may come
    else:
        assert stored["canaryWeight"] == 15
        assert stored["currentStep"] == 1
        assert stored["stepStartedAt"] == timestamp(T0)  # the route read back 85/15
        assert stored["weightVerified"] is True
        assert ("Normal", "WeightChanged", "canary weight 15% (step 1)") in events


# --- a router switch deletes only what the LLMDeployment owns (S4) -------------------------

FOREIGN = {
    "Service": ("v1", {"router": "replicas"}),
    "HTTPRoute": ("gateway.networking.k8s.io/v1", {}),
    "VirtualService": ("networking.istio.io/v1", {"router": "istio", "istio": {"hosts": ["llm"]}}),
}
SWITCH_TO = {"Service": {}, "HTTPRoute": {"router": "replicas"}, "VirtualService": {}}


@pytest.mark.parametrize("kind", list(FOREIGN))
def test_a_router_switch_leaves_a_same_named_object_of_someone_else(kind: str) -> None:
    """Someone else's object is named like the LLMDeployment: its router reports the
    conflict, and switching to another router does not delete that object."""
    api_version, traffic = FOREIGN[kind]
    kube = FakeKube()
    foreign = {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {"name": "tiny", "namespace": "ml"},
    }
    kube.add(foreign | {"spec": {"owner": "someone else"}})
    spec = make_spec(traffic=traffic)
    body = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": "tiny", "namespace": "ml", "uid": "0000-uid", "generation": 1},
        "spec": spec.model_dump(mode="json", by_alias=True, exclude_none=True),
    }
    kube.add(body)
    events: list[tuple[str, str, str]] = []
    reconciler = Reconciler(
        cast(Kube, kube),
        lambda: T0,
        lambda _body, type_, reason, message: events.append((type_, reason, message)),
        sources=lambda _address: cast(MetricSource, NoMetrics()),
        preflight=cast(Preflight, object()),
    )
    first = reconciler.reconcile("ml", "tiny")
    assert first is not None and first.problem is not None
    assert first.problem.reason == "ChildConflict"
    stored = kube.objects[(API_VERSION, KIND, "ml", "tiny")]
    assert stored["status"]["router"] == spec.traffic.router

    switched = make_spec(traffic=SWITCH_TO[kind])
    stored["spec"] = switched.model_dump(mode="json", by_alias=True, exclude_none=True)
    kube._stamp(stored)
    second = reconciler.reconcile("ml", "tiny")
    assert second is not None and second.problem is None
    assert kube.objects[(api_version, kind, "ml", "tiny")]["spec"] == {"owner": "someone else"}
    assert not [w for w in kube.writes if w.verb == "delete"]


def test_a_baseline_no_longer_wanted_is_deleted_by_uid_and_a_foreign_service_stays() -> None:
    spec = make_spec(replicas=2)
    kube = FakeKube()
    baseline = build_deployment(OWNER, spec, "r-base", "baseline", 1)
    kube.add(baseline)
    kube.add(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "tiny-baseline", "namespace": "ml"},  # someone else's
        }
    )
    stored = kube.get("apps/v1", "Deployment", "ml", baseline["metadata"]["name"])
    assert stored is not None
    PlanApplier(kube).remove_baseline(OWNER, stored)
    assert kube.writes == [
        Write(
            "delete", "Deployment", stored["metadata"]["name"], {"uid": stored["metadata"]["uid"]}
        )
    ]
    assert ("v1", "Service", "ml", "tiny-baseline") in kube.objects
