"""The Gateway API router reads a Gateway's verdict on its route: a step's clock starts
only once every Gateway the route names accepted its current generation and resolved
its backends. The statuses below are as Traefik 3.6 writes them."""

from __future__ import annotations

from typing import Any

import pytest
from fake_kube import FakeKube
from specs import make_spec

from llmcanary.builders import Owner
from llmcanary.routing.base import Weights
from llmcanary.routing.gateway_api import GatewayAPIRouter
from llmcanary.routing.httproute import route_refusal

GATEWAY = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "local"}


def condition(kind: str, status: str = "True", generation: int = 2, **extra: str) -> dict[str, Any]:
    return {
        "type": kind,
        "status": status,
        "observedGeneration": generation,
        "reason": extra.get("reason", kind),
        "message": extra.get("message", ""),
        "lastTransitionTime": "2026-12-01T09:00:00Z",
    }


def route(
    parents: list[dict[str, Any]], refs: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "ml", "name": "tiny", "generation": 2},
        "spec": {
            "parentRefs": refs if refs is not None else [{"name": "local", "namespace": "gw"}]
        },
        "status": {"parents": parents},
    }


def parent(*conditions: dict[str, Any], namespace: str = "gw") -> dict[str, Any]:
    return {
        "parentRef": {**GATEWAY, "namespace": namespace},
        "controllerName": "traefik.io/gateway-controller",
        "conditions": list(conditions),
    }


def test_a_route_every_gateway_accepted_and_resolved_is_held() -> None:
    assert route_refusal(route([parent(condition("Accepted"), condition("ResolvedRefs"))])) is None


def test_a_gateway_that_cannot_resolve_a_backend_says_which_and_why() -> None:
    why = route_refusal(
        route(
            [
                parent(
                    condition("Accepted"),
                    condition(
                        "ResolvedRefs",
                        "False",
                        reason="BackendNotFound",
                        message="Cannot load HTTPBackendRef ml/tiny-canary: getting service:"
                        ' service "tiny-canary" not found',
                    ),
                )
            ]
        )
    )
    assert why == (
        "Gateway gw/local refuses the HTTPRoute: ResolvedRefs=False (BackendNotFound): Cannot"
        ' load HTTPBackendRef ml/tiny-canary: getting service: service "tiny-canary" not found'
    )


def test_a_gateway_that_does_not_allow_the_namespace_refuses_it() -> None:
    why = route_refusal(
        route([parent(condition("Accepted", "False", reason="NotAllowedByListeners"))])
    )
    assert why == "Gateway gw/local refuses the HTTPRoute: Accepted=False (NotAllowedByListeners)"


def test_a_status_of_an_older_generation_is_not_taken_for_the_new_weights() -> None:
    # The operator has just written new weights (generation 2): the Gateway's word on
    # generation 1 says nothing about them.
    stale = parent(condition("Accepted", generation=1), condition("ResolvedRefs", generation=1))
    assert route_refusal(route([stale])) == (
        "Gateway gw/local has not taken generation 2 of the HTTPRoute yet"
    )


def test_a_gateway_that_never_reported_is_named() -> None:
    why = route_refusal(route([]))
    assert why is not None and why.startswith("Gateway gw/local has not reported on HTTPRoute")
    assert "is that Gateway there, and its controller running?" in why


@pytest.mark.parametrize(
    ("refs", "reported_namespace"),
    [
        # parentRef without a namespace: the route's own.
        ([{"name": "local"}], None),
        ([{"name": "local", "namespace": "ml"}], "ml"),
    ],
)
def test_parent_refs_match_with_the_gateway_api_defaults(
    refs: list[dict[str, Any]], reported_namespace: str | None
) -> None:
    reported = parent(condition("Accepted"), condition("ResolvedRefs"))
    if reported_namespace is None:
        del reported["parentRef"]["namespace"]
    else:
        reported["parentRef"]["namespace"] = reported_namespace
    assert route_refusal(route([reported], refs)) is None


def test_each_named_gateway_must_hold_it_and_other_controllers_parents_do_not_count() -> None:
    refs = [{"name": "local", "namespace": "gw"}, {"name": "edge", "namespace": "gw"}]
    accepted = parent(condition("Accepted"), condition("ResolvedRefs"))
    assert route_refusal(route([accepted], refs)) is not None  # edge has said nothing
    edge = parent(condition("Accepted"), condition("ResolvedRefs"))
    edge["parentRef"]["name"] = "edge"
    assert route_refusal(route([accepted, edge], refs)) is None


def test_a_listener_named_in_the_parent_ref_is_named_in_the_reason() -> None:
    refs = [{"name": "local", "namespace": "gw", "sectionName": "team"}]
    refused = parent(condition("Accepted", "False", reason="NotAllowedByListeners"))
    refused["parentRef"]["sectionName"] = "team"
    assert route_refusal(route([refused], refs)) == (
        "Gateway gw/local listener team refuses the HTTPRoute: Accepted=False"
        " (NotAllowedByListeners)"
    )


def test_a_route_without_parents_is_judged_on_its_weights_alone() -> None:
    assert route_refusal(route([], refs=[])) is None


@pytest.mark.parametrize("wait", [True, False])
def test_the_router_holds_a_refused_route_only_when_told_not_to_wait_for_gateways(
    wait: bool,
) -> None:
    spec = make_spec(
        traffic={
            "gatewayAPI": {
                "parentRefs": [{"name": "local", "namespace": "gw"}],
                "waitForGateways": wait,
            }
        }
    )
    kube = FakeKube()
    router = GatewayAPIRouter(kube)
    owner = Owner(name="tiny", namespace="ml", uid="0000-uid")
    router.reconcile(owner, spec, Weights.of(25), {"stable": "r1", "canary": "r2"})
    # The Gateway refuses the route, for the generation the router wrote.
    stored = kube.get("gateway.networking.k8s.io/v1", "HTTPRoute", "ml", "tiny")
    assert stored is not None
    generation = int(stored["metadata"].get("generation") or 0)
    refused = parent(condition("Accepted", "False", generation, reason="NotAllowedByListeners"))
    kube.patch_status(
        "gateway.networking.k8s.io/v1", "HTTPRoute", "ml", "tiny", {"parents": [refused]}
    )
    # The next pass: the same weights, read back with the Gateway's status.
    router = GatewayAPIRouter(kube)
    router.reconcile(owner, spec, Weights.of(25), {"stable": "r1", "canary": "r2"})
    check = router.verify_weights(owner, Weights.of(25))
    if wait:
        assert not check and check.why is not None and "NotAllowedByListeners" in check.why
    else:
        assert check and check.why is None


def test_a_gateways_long_message_is_cut_to_a_sentence_in_status() -> None:
    long = "Cannot load HTTPBackendRef ml/tiny-canary: " + "x" * 5000
    refused = parent(
        condition("Accepted"),
        condition("ResolvedRefs", "False", reason="BackendNotFound", message=long),
    )
    why = route_refusal(route([refused]))
    assert why is not None and len(why) < 500
    assert why.startswith("Gateway gw/local refuses the HTTPRoute: ResolvedRefs=False")


def test_a_parent_of_another_kind_is_named_by_its_kind() -> None:
    refs = [{"name": "edge", "namespace": "gw", "kind": "ListenerSet"}]
    why = route_refusal(route([], refs))
    assert why is not None and why.startswith("ListenerSet gw/edge has not reported")
