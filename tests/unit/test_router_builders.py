from typing import Any, cast

import pytest
from specs import make_spec

from llmcanary.builders import Owner
from llmcanary.builders.replicas_service import build_shared_service, nearest_share
from llmcanary.builders.virtual_service import build_virtual_service, virtual_service_weights
from llmcanary.kube.client import Kube
from llmcanary.routing import router_for, router_of_kind

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
    vs = build_virtual_service(owner, spec.traffic.istio, 15)
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
    vs = build_virtual_service(owner, spec.traffic.istio, weight)
    assert "gateways" not in vs["spec"]  # the mesh only
    weights = [r["weight"] for r in vs["spec"]["http"][0]["route"]]
    assert weights == [100 - weight, weight]


def test_virtual_service_rejects_a_weight_outside_0_100(owner: Owner) -> None:
    spec = make_spec(traffic={"router": "istio", "istio": {"hosts": ["llm"]}})
    assert spec.traffic.istio is not None
    with pytest.raises(ValueError, match=r"do not fit in 0\.\.100"):
        build_virtual_service(owner, spec.traffic.istio, 101)


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
    ("ready", "weight", "counts"),
    [
        (3, 0, {0}),  # no traffic: no Ready canary pod
        (0, 0, {0}),
        (3, 5, {1}),  # a positive weight needs at least one pod, however coarse
        (3, 33, {1}),
        (3, 50, {1, 2}),  # 33% and 67% are as near as each other
        (4, 60, {2}),
        (3, 100, {3}),
        (0, 5, set()),  # nothing Ready can carry 5%
        (10, 15, {1, 2}),
        (10, 16, {2}),
    ],
)
def test_nearest_share(ready: int, weight: int, counts: set[int]) -> None:
    assert nearest_share(ready, weight) == counts


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
    router = router_for(kube, make_spec(traffic=traffic))
    assert (router.kind, router.approximate) == (kind, approximate)
    assert router_of_kind(kube, kind).kind == kind
    with pytest.raises(ValueError, match="unknown router 'linkerd'"):
        router_of_kind(kube, "linkerd")
