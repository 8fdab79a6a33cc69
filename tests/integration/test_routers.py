"""The traffic routers against the real API server: objects, weights read back, drift.

No operator runs here: each test owns an LLMDeployment object and builds the stable
and canary Deployments and Services itself with the builders, as the operator would.
KWOK makes the pods Ready, which is what the ``replicas`` router counts.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
import yaml
from kubectl import ROOT, Kubectl, wait_for

from llmcanary.api.spec import LLMDeploymentSpec
from llmcanary.builders import Owner
from llmcanary.builders.meta import LABEL_REVISION, Track, deployment_name, service_name
from llmcanary.builders.services import build_service
from llmcanary.builders.workload import build_deployment
from llmcanary.kube.children import ensure
from llmcanary.kube.client import Kube
from llmcanary.kube.errors import MissingApi
from llmcanary.routing import Router, Weights, router_for
from llmcanary.routing.istio import IstioRouter
from llmcanary.routing.replicas import ReadyPods, ReplicasRouter

pytestmark = pytest.mark.k8s

NAME = "tiny-llm"
STABLE, CANARY = "r1", "r2"
WALK = [0, 5, 15, 25, 35, 45, 55, 65, 75, 85, 95, 100]
# The revision each track's Service selects, as the reconciler hands it to the router.
BACKENDS: dict[Track, str] = {"stable": STABLE, "canary": CANARY}
TRAFFIC: dict[str, dict[str, Any]] = {
    "gatewayAPI": {"router": "gatewayAPI", "gatewayAPI": {"hostnames": ["llm.example.com"]}},
    "istio": {"router": "istio", "istio": {"hosts": ["llm.example.com"]}},
    "replicas": {"router": "replicas"},
    # No Gateway controller runs here: the weights and pickers alone are checked
    # (test_pool_router.py plays the Gateway and its word on route and pools).
    "inferencePool": {
        "router": "inferencePool",
        "inferencePool": {
            "parentRefs": [{"name": "inference", "namespace": "gateways"}],
            "waitForGateways": False,
        },
    },
}
# Where each router keeps its split.
OBJECT = {
    "gatewayAPI": ("gateway.networking.k8s.io/v1", "HTTPRoute"),
    "istio": ("networking.istio.io/v1", "VirtualService"),
    "replicas": ("v1", "Service"),
    "inferencePool": ("gateway.networking.k8s.io/v1", "HTTPRoute"),
}


class Setup:
    """One LLMDeployment and its stable/canary workloads, built as the operator builds them."""

    def __init__(
        self,
        kube: Kube,
        kubectl: Kubectl,
        namespace: str,
        router: str,
        traffic: dict[str, Any] | None = None,
    ) -> None:
        doc = yaml.safe_load((ROOT / "examples" / "tiny-llm.yaml").read_text())
        doc = copy.deepcopy(doc)
        doc["spec"]["replicas"] = 2
        doc["spec"]["traffic"] = traffic or TRAFFIC[router]
        kubectl.apply(doc, namespace)
        created = kubectl.get("llmdeployment", NAME, namespace)
        assert created is not None
        self.kube = kube
        self.spec = LLMDeploymentSpec.model_validate(doc["spec"])
        self.owner = Owner(NAME, namespace, created["metadata"]["uid"])
        self.router: Router = router_for(kube, self.spec.traffic.router)

    def workloads(self, stable: int, canary: int) -> None:
        """Deployments of both revisions with these replica counts; Services point at them."""
        for revision, track, replicas in ((STABLE, "stable", stable), (CANARY, "canary", canary)):
            ensure(self.kube, build_deployment(self.owner, self.spec, revision, track, replicas))
        ensure(self.kube, build_service(self.owner, "stable", STABLE))
        ensure(self.kube, build_service(self.owner, "canary", CANARY))

    def reconcile(self, weights: Weights, backends: Mapping[Track, str] | None = None) -> None:
        """One pass of the router, as the reconciler runs it. The inferencePool router
        moves no weight onto a pool whose picker has no Ready pod yet (KWOK makes them
        Ready within seconds): passes are repeated until the route holds the weights."""
        backends = backends or BACKENDS

        def routed() -> bool:
            self.router.reconcile(self.owner, self.spec, weights, backends)
            pools = self.router.kind == "inferencePool"
            return not pools or self.router.get_weights(self.owner) == weights

        wait_for("the router to take the weights", routed, timeout=60)

    def scale(self, revision: str, replicas: int) -> None:
        name = deployment_name(self.owner.name, revision)
        self.kube.patch(
            "apps/v1", "Deployment", self.owner.namespace, name, {"spec": {"replicas": replicas}}
        )

    def get(self) -> dict[str, Any] | None:
        api_version, kind = OBJECT[self.router.kind]
        return self.kube.get(api_version, kind, self.owner.namespace, self.owner.name)


@pytest.fixture(params=list(TRAFFIC))
def setup(
    request: pytest.FixtureRequest, kube: Kube, kubectl: Kubectl, crd: None, namespace: str
) -> Iterator[Setup]:
    yield Setup(kube, kubectl, namespace, request.param)


def ready_pods(setup: Setup, canary: int, total: int) -> None:
    """Wait until ``canary`` of ``total`` Ready pods serve, all of both revisions."""
    assert isinstance(setup.router, ReplicasRouter)
    router = setup.router
    wait_for(
        f"{canary} canary of {total} pods Ready",
        lambda: router.pods(setup.owner) == ReadyPods(total, canary, total - canary, canary),
        timeout=60,
    )


def test_reconcile_creates_the_owned_object(setup: Setup) -> None:
    assert setup.get() is None
    assert setup.router.get_weights(setup.owner) is None
    setup.workloads(stable=2, canary=1)
    setup.reconcile(Weights.of(5))
    obj = setup.get()
    assert obj is not None
    [ref] = obj["metadata"]["ownerReferences"]
    assert (ref["kind"], ref["uid"], ref["controller"]) == ("LLMDeployment", setup.owner.uid, True)
    # A second pass writes nothing.
    setup.reconcile(Weights.of(5))
    again = setup.get()
    assert again is not None
    assert again["metadata"]["resourceVersion"] == obj["metadata"]["resourceVersion"]


@pytest.mark.parametrize("setup", ["gatewayAPI", "istio"], indirect=True)
def test_weights_set_are_read_back(setup: Setup) -> None:
    setup.router.reconcile(setup.owner, setup.spec, Weights.of(0), BACKENDS)
    for weight in WALK:
        setup.router.reconcile(setup.owner, setup.spec, Weights.of(weight), BACKENDS)
        assert setup.router.get_weights(setup.owner) == Weights(100 - weight, weight)
        assert setup.router.verify_weights(setup.owner, Weights.of(weight))
        other = weight + 1 if weight < 100 else 99
        assert not setup.router.verify_weights(setup.owner, Weights.of(other))
    # A fresh baseline's share is read back too.
    setup.router.reconcile(setup.owner, setup.spec, Weights.of(15, 15), BACKENDS)
    assert setup.router.verify_weights(setup.owner, Weights.of(15, 15))
    assert not setup.router.verify_weights(setup.owner, Weights.of(15))


@pytest.mark.parametrize("setup", ["replicas"], indirect=True)
def test_replicas_share_follows_the_ready_pods(setup: Setup) -> None:
    router = setup.router
    setup.workloads(stable=2, canary=1)
    router.reconcile(setup.owner, setup.spec, Weights.of(5), BACKENDS)
    service = setup.get()
    assert service is not None
    assert service["spec"]["selector"] == {"llmcanary.io/deployment": NAME}

    ready_pods(setup, canary=1, total=3)
    assert router.get_weights(setup.owner) == Weights(67, 33)
    # Verified: NAME serves every Ready pod, the canary's among them for any positive
    # weight (the share is the pods': status says it, the router cannot change it).
    for weight in (5, 15, 33, 45, 60):
        assert router.verify_weights(setup.owner, Weights.of(weight)), weight
    assert not router.verify_weights(setup.owner, Weights.of(0))

    # A new weight changes no object: the operator sizes the canary Deployment itself.
    router.reconcile(setup.owner, setup.spec, Weights.of(60), BACKENDS)
    after = setup.get()
    assert after is not None
    assert after["metadata"]["resourceVersion"] == service["metadata"]["resourceVersion"]

    setup.scale(CANARY, 2)
    ready_pods(setup, canary=2, total=4)
    assert router.get_weights(setup.owner) == Weights(50, 50)
    assert router.verify_weights(setup.owner, Weights.of(50))

    setup.scale(STABLE, 0)
    ready_pods(setup, canary=2, total=2)
    assert router.get_weights(setup.owner) == Weights(0, 100)
    assert router.verify_weights(setup.owner, Weights.of(100))

    # Rollback: the canary scaled to 0, the stable back; weight 0 is verified only
    # once no canary pod is Ready.
    setup.scale(STABLE, 2)
    ready_pods(setup, canary=2, total=4)
    assert not router.verify_weights(setup.owner, Weights.of(0))
    setup.scale(CANARY, 0)
    ready_pods(setup, canary=0, total=2)
    assert router.get_weights(setup.owner) == Weights(100, 0)
    assert router.verify_weights(setup.owner, Weights.of(0))
    assert not router.verify_weights(setup.owner, Weights.of(5))


@pytest.mark.parametrize("setup", ["replicas"], indirect=True)
def test_replicas_without_a_canary_revision_is_all_stable(setup: Setup) -> None:
    # With no canary, the operator points NAME-canary at the stable revision.
    ensure(setup.kube, build_deployment(setup.owner, setup.spec, STABLE, "stable", 2))
    ensure(setup.kube, build_service(setup.owner, "stable", STABLE))
    ensure(setup.kube, build_service(setup.owner, "canary", STABLE))
    setup.router.reconcile(setup.owner, setup.spec, Weights.of(0), BACKENDS)
    ready_pods(setup, canary=0, total=2)
    assert setup.router.get_weights(setup.owner) == Weights(100, 0)
    assert setup.router.verify_weights(setup.owner, Weights.of(0))


def _edit_backend_weights(setup: Setup, list_key: str, refs_key: str) -> None:
    """Set every backend of the first rule to weight 50, the way ``kubectl edit`` would."""
    obj = setup.get()
    assert obj is not None
    rules = copy.deepcopy(obj["spec"][list_key])
    for ref in rules[0][refs_key]:
        ref["weight"] = 50
    api_version, kind = OBJECT[setup.router.kind]
    setup.kube.patch(
        api_version, kind, setup.owner.namespace, setup.owner.name, {"spec": {list_key: rules}}
    )


def _narrow_selector(setup: Setup) -> None:
    """Add a key to Service NAME's selector so that only the canary's pods serve."""
    setup.kube.patch(
        "v1",
        "Service",
        setup.owner.namespace,
        setup.owner.name,
        {"spec": {"selector": {LABEL_REVISION: CANARY}}},
    )


HAND_EDITS: dict[str, Callable[[Setup], None]] = {
    "gatewayAPI": lambda s: _edit_backend_weights(s, "rules", "backendRefs"),
    "istio": lambda s: _edit_backend_weights(s, "http", "route"),
    "replicas": _narrow_selector,
    "inferencePool": lambda s: _edit_backend_weights(s, "rules", "backendRefs"),
}


def test_a_hand_edited_split_is_detected_and_corrected(setup: Setup) -> None:
    router = setup.router
    setup.workloads(stable=2, canary=1)
    setup.reconcile(Weights.of(25))
    if router.approximate:
        ready_pods(setup, canary=1, total=3)
    assert router.verify_weights(setup.owner, Weights.of(25))

    HAND_EDITS[router.kind](setup)
    assert not router.verify_weights(setup.owner, Weights.of(25))
    assert router.get_weights(setup.owner) == (
        Weights(0, 100) if router.approximate else Weights(50, 50)
    )

    setup.reconcile(Weights.of(25))
    if router.approximate:
        ready_pods(setup, canary=1, total=3)
    assert router.verify_weights(setup.owner, Weights.of(25))


def test_finalize_removes_the_routers_object(setup: Setup) -> None:
    setup.workloads(stable=1, canary=0)
    setup.reconcile(Weights.of(0))
    assert setup.get() is not None
    setup.router.finalize(setup.owner)
    assert setup.get() is None
    assert setup.router.get_weights(setup.owner) is None
    setup.router.finalize(setup.owner)  # nothing left: no error
    # The track Services are not the router's.
    for track in ("stable", "canary"):
        svc = setup.kube.get(
            "v1", "Service", setup.owner.namespace, service_name(setup.owner.name, track)
        )
        assert svc is not None


@pytest.mark.parametrize("setup", ["istio"], indirect=True)
def test_istio_without_its_api_says_what_to_do(setup: Setup) -> None:
    # An API version no cluster serves stands in for a cluster without Istio.
    router = IstioRouter(setup.kube, api_version="networking.istio.io/v0missing")
    with pytest.raises(MissingApi) as raised:
        router.reconcile(setup.owner, setup.spec, Weights.of(5), BACKENDS)
    assert raised.value.reason == "MissingAPI"
    assert "VirtualService (networking.istio.io/v0missing)" in raised.value.message
    assert "install Istio" in raised.value.message
    assert "choose another spec.traffic.router" in raised.value.message
    with pytest.raises(MissingApi):
        router.get_weights(setup.owner)
    router.finalize(setup.owner)  # nothing of ours can exist: no error
