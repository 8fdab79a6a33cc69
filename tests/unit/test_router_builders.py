from typing import Any, cast, get_args

import pytest
from fake_kube import FakeKube, Write
from specs import make_spec

from llmcanary.api.spec import RouterKind
from llmcanary.builders import Owner
from llmcanary.kube.client import Kube
from llmcanary.routing import ROUTER_KINDS, ROUTERS, router_for
from llmcanary.routing.base import Weights
from llmcanary.routing.istio import build_virtual_service, virtual_service_weights
from llmcanary.routing.replicas import build_shared_service

STABLE = "tiny-stable.ml.svc.cluster.local"
CANARY = "tiny-canary.ml.svc.cluster.local"


def test_virtual_service_splits_between_the_track_services(owner: Owner) -> None:
    spec = make_spec(
        traffic={
            "router": "istio",
            "istio": {"hosts": ["llm.example.com"], "gateways": ["istio-system/public"]},
        }
    )
    assert spec.traffic.istio is not None
    vs = build_virtual_service(owner, spec.traffic.istio, Weights.of(15))
    assert vs["apiVersion"] == "networking.istio.io/v1"
    assert vs["kind"] == "VirtualService"
    assert vs["metadata"]["name"] == "tiny"
    assert vs["metadata"]["ownerReferences"][0]["uid"] == "0000-uid"
    assert vs["spec"]["hosts"] == ["llm.example.com"]
    assert vs["spec"]["gateways"] == ["istio-system/public"]
    [route] = vs["spec"]["http"]
    assert [d["destination"] for d in route["route"]] == [
        {"host": STABLE, "port": {"number": 8000}},
        {"host": CANARY, "port": {"number": 8000}},
    ]
    assert virtual_service_weights(vs) == {STABLE: 85, CANARY: 15}


@pytest.mark.parametrize("weight", [0, 5, 50, 100])
def test_virtual_service_weights_sum_to_100(owner: Owner, weight: int) -> None:
    spec = make_spec(traffic={"router": "istio", "istio": {"hosts": ["llm"]}})
    assert spec.traffic.istio is not None
    vs = build_virtual_service(owner, spec.traffic.istio, Weights.of(weight))
    assert "gateways" not in vs["spec"]  # the mesh only
    weights = [r["weight"] for r in vs["spec"]["http"][0]["route"]]
    assert weights == [100 - weight, weight]


def test_virtual_service_rejects_a_weight_outside_0_100(owner: Owner) -> None:
    spec = make_spec(traffic={"router": "istio", "istio": {"hosts": ["llm"]}})
    assert spec.traffic.istio is not None
    with pytest.raises(ValueError, match=r"do not fit in 0\.\.100"):
        build_virtual_service(owner, spec.traffic.istio, Weights.of(101))


def test_virtual_service_weights_read_like_istio() -> None:
    def vs(*routes: dict[str, Any]) -> dict[str, Any]:
        return {"spec": {"http": [{"route": list(routes)}]}}

    assert virtual_service_weights(vs({"destination": {"host": STABLE}})) == {STABLE: 100}
    assert virtual_service_weights(
        vs({"destination": {"host": STABLE}, "weight": 70}, {"destination": {"host": CANARY}})
    ) == {STABLE: 70, CANARY: 0}
    assert virtual_service_weights({"spec": {}}) == {}


def test_shared_service_selects_every_revision(owner: Owner) -> None:
    svc = build_shared_service(owner)
    assert svc["metadata"]["name"] == "tiny"
    assert svc["metadata"]["ownerReferences"][0]["uid"] == "0000-uid"
    assert svc["spec"]["selector"] == {"llmcanary.io/deployment": "tiny"}
    assert {p["port"] for p in svc["spec"]["ports"]} == {8000, 8001}


@pytest.mark.parametrize(
    ("traffic", "kind", "approximate"),
    [
        ({}, "gatewayAPI", False),
        ({"router": "istio", "istio": {"hosts": ["llm"]}}, "istio", False),
        ({"router": "replicas"}, "replicas", True),
    ],
)
def test_router_for_follows_spec_traffic_router(
    traffic: dict[str, Any], kind: str, approximate: bool
) -> None:
    kube = cast(Kube, object())
    router = router_for(kube, make_spec(traffic=traffic).traffic.router)
    assert (router.kind, router.approximate) == (kind, approximate)
    with pytest.raises(ValueError, match="unknown router 'linkerd'"):
        router_for(kube, "linkerd")


def test_every_router_kind_of_the_spec_has_one_router() -> None:
    assert set(ROUTERS) == set(ROUTER_KINDS) == set(get_args(RouterKind))
    for kind, router in ROUTERS.items():
        assert router.kind == kind
        assert router.missing_api_hint  # says what to install


def test_the_operator_watches_the_watched_routers_resources() -> None:
    from llmcanary.main import CHILD_KINDS

    assert ("gateway.networking.k8s.io", "v1", "httproutes") in CHILD_KINDS
    assert ("v1", "services") in CHILD_KINDS
    # Istio is opt-in RBAC without watch (charts/llmcanary/templates/_rbac.tpl).
    assert not any("virtualservices" in kind for kind in CHILD_KINDS)


# --- finalize: a router removes only its own object ------------------------------------------

ROUTER_OBJECTS = [
    ("gatewayAPI", "gateway.networking.k8s.io/v1", "HTTPRoute"),
    ("istio", "networking.istio.io/v1", "VirtualService"),
    ("replicas", "v1", "Service"),
]


def _named_like_the_llmdeployment(
    api_version: str, kind: str, owner_uid: str | None
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "tiny", "namespace": "ml"}
    if owner_uid:
        meta["ownerReferences"] = [
            {
                "apiVersion": "llmcanary.io/v1alpha1",
                "kind": "LLMDeployment",
                "name": "tiny",
                "uid": owner_uid,
            }
        ]
    return {"apiVersion": api_version, "kind": kind, "metadata": meta, "spec": {}}


@pytest.mark.parametrize(("router", "api_version", "kind"), ROUTER_OBJECTS)
def test_finalize_deletes_the_routers_own_object_by_uid(
    owner: Owner, router: str, api_version: str, kind: str
) -> None:
    kube = FakeKube()
    kube.add(_named_like_the_llmdeployment(api_version, kind, owner.uid))
    uid = kube.objects[(api_version, kind, "ml", "tiny")]["metadata"]["uid"]
    router_for(cast(Kube, kube), router).finalize(owner)
    assert (api_version, kind, "ml", "tiny") not in kube.objects
    assert kube.writes == [Write("delete", kind, "tiny", {"uid": uid})]


@pytest.mark.parametrize(("router", "api_version", "kind"), ROUTER_OBJECTS)
@pytest.mark.parametrize("foreign_owner", [None, "another-uid"])
def test_finalize_leaves_a_same_named_object_it_does_not_own(
    owner: Owner, router: str, api_version: str, kind: str, foreign_owner: str | None
) -> None:
    kube = FakeKube()
    kube.add(_named_like_the_llmdeployment(api_version, kind, foreign_owner))
    router_for(cast(Kube, kube), router).finalize(owner)
    assert (api_version, kind, "ml", "tiny") in kube.objects
    assert kube.writes == []


@pytest.mark.parametrize(
    ("router", "kind"), [("gatewayAPI", "HTTPRoute"), ("istio", "VirtualService")]
)
def test_finalize_without_the_routers_api_has_nothing_to_remove(
    owner: Owner, router: str, kind: str
) -> None:
    kube = FakeKube(missing={kind})
    router_for(cast(Kube, kube), router).finalize(owner)
    assert kube.writes == []
