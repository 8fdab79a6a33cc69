"""What the API server or the network can do to a pass, and what the user then sees: an
error on any call (a refused child, a conflict, 410, 429, 5xx, a timeout, a bug) ends in
status.message, a Warning event and one log line, never a traceback out of reconcile();
an abort still rolls back; a status decided from stale state never overwrites a newer one.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from fake_kube import FakeKube
from kubernetes.client.exceptions import ApiException
from specs import arm, make_spec
from urllib3.exceptions import MaxRetryError, ProtocolError, ReadTimeoutError

from llmcanary.api import ANNOTATION_ABORT, API_VERSION, KIND
from llmcanary.api.spec import LLMDeploymentSpec
from llmcanary.api.status import LLMDeploymentStatus
from llmcanary.api.times import timestamp
from llmcanary.builders import Owner
from llmcanary.builders.meta import deployment_name
from llmcanary.builders.workload import build_deployment
from llmcanary.kube.client import Kube
from llmcanary.kube.status_writer import status_to_wire
from llmcanary.preflight.run import Preflight
from llmcanary.reconciler import Reconciler, Result
from llmcanary.reconciler.loop import CONFLICT_RETRY_SECONDS, MAX_RETRY_SECONDS, RETRY_SECONDS
from llmcanary.rollout.revision import revision_of
from llmcanary.sources.base import MetricSource

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
OWNER = Owner(name="tiny", namespace="ml", uid="0000-uid")
LLMD = (API_VERSION, KIND, "ml", "tiny")
ROUTE = ("gateway.networking.k8s.io/v1", "HTTPRoute", "ml", "tiny")
STABLE = "r-stable"

TOLERATION = (
    'Deployment.apps "tiny-abc" is invalid: spec.template.spec.tolerations[0].operator:'
    " Invalid value: \"Exists\": value must be empty when `operator` is 'Exists'"
)


def api_error(status: int, message: str = "", causes: list[dict[str, str]] | None = None) -> Any:
    exc = ApiException(status=status, reason={409: "Conflict", 410: "Gone"}.get(status, "Error"))
    body: dict[str, Any] = {"kind": "Status", "status": "Failure", "code": status}
    if message:
        body["message"] = message
    if causes:
        body["details"] = {"causes": causes}
    exc.body = json.dumps(body).encode()
    return exc


REJECTED = api_error(
    422, TOLERATION, [{"field": "spec.template.spec.tolerations[0].operator", "reason": "x"}]
)


class Metrics:
    """Both arms healthy (a rollout stays at its weight)."""

    def read(self, *args: Any) -> Any:
        return arm()


class Events(list[tuple[str, str, str]]):
    def post(self, _body: Any, type_: str, reason: str, message: str) -> None:
        self.append((type_, reason, message))

    def warnings(self) -> list[str]:
        return [reason for type_, reason, _ in self if type_ == "Warning"]


def reconciler(kube: Any, events: Events, now: datetime = T0) -> Reconciler:
    return Reconciler(
        cast(Kube, kube),
        lambda: now,
        events.post,
        sources=lambda _address: cast(MetricSource, Metrics()),
        preflight=cast(Preflight, object()),
    )


def llmdeployment(
    spec: LLMDeploymentSpec,
    status: LLMDeploymentStatus | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "tiny", "namespace": "ml", "uid": OWNER.uid, "generation": 1}
    if annotations:
        meta["annotations"] = annotations
    body: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": meta,
        "spec": spec.model_dump(mode="json", by_alias=True, exclude_none=True),
    }
    if status is not None:
        body["status"] = status_to_wire(status)
    return body


def stored(kube: FakeKube) -> dict[str, Any]:
    return dict(kube.objects[LLMD].get("status") or {})


def route_weights(kube: FakeKube) -> list[int]:
    route = kube.objects[ROUTE]
    return [ref["weight"] for ref in route["spec"]["rules"][0]["backendRefs"]]


# --- a new LLMDeployment, every call failing in turn ------------------------------------

FAULTS = [
    pytest.param("apply", "Deployment", REJECTED, "ChildRejected", "(422)", id="422-apply"),
    pytest.param(
        "apply", "Service", api_error(400, "Service is invalid"), "ChildRejected", "(400)", id="400"
    ),
    pytest.param(
        "apply",
        "Deployment",
        api_error(409, "Operation cannot be fulfilled"),
        "ApiConflict",
        "409 Conflict",
        id="409-apply",
    ),
    pytest.param(
        "list",
        "Pod",
        api_error(410, "too old resource version"),
        "ApiUnavailable",
        "410",
        id="410-list",
    ),
    pytest.param(
        "apply",
        "HTTPRoute",
        api_error(429, "too many requests"),
        "ApiUnavailable",
        "429",
        id="429-apply",
    ),
    pytest.param(
        "apply",
        "ConfigMap",
        api_error(500, "etcdserver: leader changed"),
        "ApiUnavailable",
        "answered 500",
        id="500-apply",
    ),
    pytest.param(
        "get", "Deployment", api_error(503), "ApiUnavailable", "answered 503", id="503-get"
    ),
    pytest.param(
        "get",
        "Deployment",
        ReadTimeoutError(None, "/apis/apps/v1", "Read timed out. (read timeout=60.0)"),  # type: ignore[arg-type]
        "ApiUnavailable",
        "gave no usable answer",
        id="timeout-get",
    ),
    pytest.param(
        "list",
        "Deployment",
        MaxRetryError(None, "/apis/apps/v1", ConnectionRefusedError("refused")),  # type: ignore[arg-type]
        "ApiUnavailable",
        "MaxRetryError",
        id="unreachable-list",
    ),
    pytest.param(
        "apply",
        "Deployment",
        ProtocolError("Connection aborted.", ConnectionResetError(104, "reset")),
        "ApiUnavailable",
        "ProtocolError",
        id="reset-apply",
    ),
]


@pytest.mark.parametrize(("verb", "kind", "fault", "reason", "words"), FAULTS)
def test_a_failed_call_lands_in_status_and_a_warning_event(
    verb: str, kind: str, fault: BaseException, reason: str, words: str
) -> None:
    kube = FakeKube()
    kube.add(llmdeployment(make_spec()))
    kube.faults[(verb, kind)] = fault
    events = Events()
    result = reconciler(kube, events).reconcile("ml", "tiny")  # nothing raises

    assert result is not None and result.problem is not None
    assert result.problem.reason == reason
    message = stored(kube)["message"]
    assert message == result.problem.message
    assert words in message and kind in message
    assert any(w in message for w in ("tries again", "applies it again", "retries"))
    assert reason in events.warnings()
    assert result.wakeup == RETRY_SECONDS


def test_a_refused_child_names_the_spec_field_to_fix() -> None:
    kube = FakeKube()
    kube.add(llmdeployment(make_spec()))
    kube.faults[("apply", "Deployment")] = REJECTED
    events = Events()
    reconciler(kube, events).reconcile("ml", "tiny")
    message = stored(kube)["message"]
    assert message.startswith("the API server refused Deployment 'tiny-")
    assert "value must be empty when `operator` is 'Exists'" in message
    assert "fix spec.tolerations" in message
    assert len(message) < 800


def test_the_same_problem_is_announced_once() -> None:
    kube = FakeKube()
    kube.add(llmdeployment(make_spec()))
    kube.faults[("apply", "Deployment")] = REJECTED
    events = Events()
    passes = reconciler(kube, events)
    passes.reconcile("ml", "tiny")
    passes.reconcile("ml", "tiny")
    assert events.warnings().count("ChildRejected") == 1


def test_failed_passes_back_off_and_a_good_one_starts_over() -> None:
    kube = FakeKube()
    kube.add(llmdeployment(make_spec()))
    kube.faults[("apply", "ConfigMap")] = api_error(500)
    passes = reconciler(kube, Events())
    waits = [cast(Result, passes.reconcile("ml", "tiny")).wakeup for _ in range(7)]
    assert waits == [30.0, 60.0, 120.0, 240.0, MAX_RETRY_SECONDS, MAX_RETRY_SECONDS, 300.0]
    del kube.faults[("apply", "ConfigMap")]
    good = passes.reconcile("ml", "tiny")
    assert good is not None and good.problem is None
    kube.faults[("apply", "Service")] = api_error(500)
    kube.objects.pop(("v1", "Service", "ml", "tiny-stable"))
    again = passes.reconcile("ml", "tiny")
    assert again is not None and again.wakeup == RETRY_SECONDS


def test_a_read_of_the_llmdeployment_itself_that_fails_is_retried() -> None:
    kube = FakeKube()
    kube.add(llmdeployment(make_spec()))
    kube.faults[("get", KIND)] = ReadTimeoutError(None, "/apis", "Read timed out.")  # type: ignore[arg-type]
    events = Events()
    result = reconciler(kube, events).reconcile("ml", "tiny")
    assert result is not None and result.problem is not None
    assert result.problem.reason == "ApiUnavailable"
    assert result.wakeup == RETRY_SECONDS
    assert kube.writes == [] and events == []


def test_an_unexpected_error_is_an_internal_error_in_status_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    kube = FakeKube()
    kube.add(llmdeployment(make_spec()))
    kube.faults[("get", "Deployment")] = KeyError("data")  # a 200 without the expected shape
    events = Events()
    with caplog.at_level(logging.WARNING):
        result = reconciler(kube, events).reconcile("ml", "tiny")
    assert result is not None and result.problem is not None
    assert result.problem.reason == "InternalError"
    assert "KeyError: 'data'" in stored(kube)["message"]
    assert "InternalError" in events.warnings()
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1


@pytest.mark.parametrize(
    "fault",
    [
        api_error(422, "status.history: Too many: 11: must have at most 10 items"),
        api_error(413, "etcdserver: request is too large"),
        api_error(500),
        ReadTimeoutError(None, "/apis", "Read timed out."),  # type: ignore[arg-type]
    ],
    ids=["422", "413", "500", "timeout"],
)
def test_a_status_that_cannot_be_written_is_logged_and_announced(
    fault: BaseException, caplog: pytest.LogCaptureFixture
) -> None:
    kube = FakeKube()
    kube.add(llmdeployment(make_spec()))
    kube.faults[("patch_status", KIND)] = fault
    events = Events()
    with caplog.at_level(logging.WARNING):
        result = reconciler(kube, events).reconcile("ml", "tiny")
    assert result is not None and result.problem is not None
    assert result.problem.reason in ("StatusRejected", "ApiUnavailable")
    assert "LLMDeployment" in result.problem.message
    assert not result.wrote_status and "status" not in kube.objects[LLMD]
    assert result.problem.reason in events.warnings()
    assert any("not written" in r.getMessage() for r in caplog.records)
    assert result.wakeup == RETRY_SECONDS


def test_when_the_whole_status_is_refused_its_message_alone_is_written() -> None:
    kube = FakeKube()
    kube.add(llmdeployment(make_spec()))
    kube.faults[("patch_status", KIND)] = [api_error(413, "etcdserver: request is too large")]
    events = Events()
    result = reconciler(kube, events).reconcile("ml", "tiny")
    assert result is not None and result.problem is not None
    assert result.problem.reason == "StatusRejected"
    assert stored(kube) == {"message": result.problem.message}
    assert "StatusRejected" in events.warnings()


# --- a rollout at 5%: abort, and two writers ---------------------------------------------


def rollout(annotations: dict[str, str] | None = None) -> tuple[FakeKube, LLMDeploymentSpec]:
    """A canary at 5% whose step has just begun (no check is due)."""
    spec = make_spec(
        replicas=2,
        canary={
            "stepInterval": "10m",
            "initialStepInterval": "10m",
            "analysis": {"baseline": "stable", "interval": "60s"},
        },
    )
    canary = revision_of(spec)
    status = LLMDeploymentStatus(
        phase="Progressing",
        stable_revision=STABLE,
        canary_revision=canary,
        canary_weight=5,
        weight_verified=True,
        current_step=0,
        step_started_at=timestamp(T0 - timedelta(seconds=5)),
        failed_checks=0,
        inconclusive_checks=0,
        router="gatewayAPI",
    )
    kube = FakeKube()
    kube.add(llmdeployment(spec, status, annotations))
    for deployment in (
        build_deployment(OWNER, spec, STABLE, "stable", 2),
        build_deployment(OWNER, spec, canary, "canary", 1),
    ):
        replicas = deployment["spec"]["replicas"]
        deployment["status"] = {"readyReplicas": replicas, "updatedReplicas": replicas}
        kube.add(deployment)
    return kube, spec


def test_an_abort_rolls_back_though_the_api_server_refuses_the_canary() -> None:
    kube, spec = rollout({ANNOTATION_ABORT: "req-1"})
    # The API server never took the canary's Deployment (it refuses the spec).
    del kube.objects[("apps/v1", "Deployment", "ml", deployment_name("tiny", revision_of(spec)))]
    kube.faults[("apply", "Deployment")] = REJECTED
    events = Events()
    result = reconciler(kube, events).reconcile("ml", "tiny")

    assert result is not None and result.problem is not None
    assert result.problem.reason == "ChildRejected"
    status = stored(kube)
    assert status["phase"] == "RolledBack"
    assert status["canaryWeight"] == 0  # the route took weight 0 all the same
    assert route_weights(kube) == [100, 0]
    assert "RolloutAborted" in events.warnings() and "ChildRejected" in events.warnings()


def test_an_abort_whose_route_is_refused_is_recorded_and_routed_when_it_can_be() -> None:
    kube, _ = rollout({ANNOTATION_ABORT: "req-1"})
    kube.faults[("apply", "HTTPRoute")] = api_error(
        422, 'HTTPRoute.gateway.networking.k8s.io "tiny" is invalid: spec.hostnames[0]: Invalid'
    )
    events = Events()
    passes = reconciler(kube, events)
    first = passes.reconcile("ml", "tiny")
    status = stored(kube)
    assert first is not None and first.problem is not None
    assert status["phase"] == "RolledBack"
    assert status["canaryWeight"] == 5  # what the router still holds: not claimed as 0
    assert "fix spec.traffic.gatewayAPI.hostnames" in status["message"]
    assert "RolloutAborted" in events.warnings()

    del kube.faults[("apply", "HTTPRoute")]
    second = passes.reconcile("ml", "tiny")
    assert second is not None and second.problem is None
    assert stored(kube)["phase"] == "RolledBack" and stored(kube)["canaryWeight"] == 0
    assert route_weights(kube) == [100, 0]


class StaleRead:
    """A FakeKube whose next read of the LLMDeployment returns ``body``: a pass that read
    the object before another writer changed it."""

    def __init__(self, kube: FakeKube, body: dict[str, Any]) -> None:
        self._kube = kube
        self._stale: dict[str, Any] | None = body

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> Any:
        if kind == KIND and self._stale is not None:
            body, self._stale = self._stale, None
            return body
        return self._kube.get(api_version, kind, namespace, name)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._kube, name)


def test_a_status_decided_from_stale_state_never_overwrites_a_newer_one() -> None:
    kube, _ = rollout()
    first = reconciler(kube, Events()).reconcile("ml", "tiny")  # the route at 95/5
    assert first is not None and first.problem is None
    assert route_weights(kube) == [95, 5]
    seen_by_a = kube.get(*LLMD)  # reconciler A reads...
    assert seen_by_a is not None

    # ...a user aborts, and reconciler B (another replica) rolls back first.
    kube.objects[LLMD]["metadata"]["annotations"] = {ANNOTATION_ABORT: "req-1"}
    kube._stamp(kube.objects[LLMD])
    b_events = Events()
    b = reconciler(kube, b_events).reconcile("ml", "tiny")
    assert b is not None and stored(kube)["phase"] == "RolledBack"
    rolled_back = stored(kube)

    # A's pass, decided from what it read before the abort (its step is over and the
    # check passed: on to 15%), is refused.
    a_events = Events()
    a = reconciler(StaleRead(kube, seen_by_a), a_events, now=T0 + timedelta(minutes=11))
    refused = a.reconcile("ml", "tiny")
    assert refused is not None
    assert refused.problem is None and not refused.wrote_status
    assert refused.wakeup == CONFLICT_RETRY_SECONDS
    assert a.status_conflicts == 1
    assert stored(kube) == rolled_back  # B's state stands
    assert a_events == []  # nothing announced for a status that was not written
    # A's side effects came before its status write: until its next pass the route is
    # A's (two active writers; the status precondition cannot undo what was applied).
    assert route_weights(kube) == [85, 15]

    # A's next pass reads B's state and decides from it (and puts its route back to 0).
    again = a.reconcile("ml", "tiny")
    assert again is not None and again.problem is None
    assert stored(kube)["phase"] == "RolledBack"
    assert route_weights(kube) == [100, 0]
    assert a.status_conflicts == 1
