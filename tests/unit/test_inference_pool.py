"""The inferencePool router without a cluster: its objects, what a Gateway's word on a
pool means for a step, and the spec's rules for it (the API server is in
tests/integration/test_pool_router.py)."""

from __future__ import annotations

import re
from typing import Any, cast

import pytest
from fake_kube import FakeKube
from specs import make_spec

from llmcanary.api.spec import ENDPOINT_PICKER_IMAGE, InferencePoolTraffic, LLMDeploymentSpec
from llmcanary.builders import Owner
from llmcanary.builders.meta import (
    LABEL_DEPLOYMENT,
    LABEL_PICKER,
    LABEL_REVISION,
    revision_selector,
)
from llmcanary.kube.client import Kube
from llmcanary.problems import ReconcileError
from llmcanary.routing import router_for
from llmcanary.routing.base import Weights
from llmcanary.routing.httproute import ROUTER_LABEL, route_weights
from llmcanary.routing.inference_pool import (
    INFERENCEPOOL,
    PICKER_GRPC_PORT,
    build_picker,
    build_picker_access,
    build_picker_service,
    build_pool,
    build_pool_route,
    picker_name,
    picker_refusal,
    pool_refusal,
)

TRAFFIC = {
    "router": "inferencePool",
    "inferencePool": {
        "parentRefs": [{"name": "inference", "namespace": "gw"}],
        "hostnames": ["llm.example.com"],
    },
}
BACKENDS = {"stable": "r1", "canary": "r2"}


def spec_with(**pool: Any) -> LLMDeploymentSpec:
    traffic = {**TRAFFIC, "inferencePool": {**TRAFFIC["inferencePool"], **pool}}
    return make_spec(traffic=traffic)


def traffic_of(spec: LLMDeploymentSpec) -> InferencePoolTraffic:
    assert spec.traffic.inference_pool is not None
    return spec.traffic.inference_pool


def test_a_pool_selects_its_revisions_pods_on_tritons_http_port(owner: Owner) -> None:
    pool = build_pool(owner, "canary", "r2", traffic_of(spec_with()))
    assert (pool["apiVersion"], pool["kind"]) == ("inference.networking.k8s.io/v1", "InferencePool")
    assert pool["metadata"]["name"] == "tiny-canary"
    assert pool["metadata"]["ownerReferences"][0]["uid"] == owner.uid
    # Pinned to the revision exactly as the track's Service is: the pods of no other
    # revision can enter the pool, whatever their track label says.
    assert pool["spec"]["selector"] == {"matchLabels": revision_selector("tiny", "r2")}
    assert pool["spec"]["targetPorts"] == [{"number": 8000}]
    assert pool["spec"]["endpointPickerRef"] == {
        "name": "tiny-canary-epp",
        "port": {"number": PICKER_GRPC_PORT},
        "failureMode": "FailClose",
    }


def test_the_route_weights_the_pools_of_the_tracks(owner: Owner) -> None:
    route = build_pool_route(owner, traffic_of(spec_with()), Weights.of(15, 15))
    assert route["metadata"]["name"] == "tiny"
    assert route["metadata"]["labels"][ROUTER_LABEL] == "inferencePool"
    assert route["spec"]["parentRefs"] == [{"name": "inference", "namespace": "gw"}]
    assert route["spec"]["hostnames"] == ["llm.example.com"]
    [rule] = route["spec"]["rules"]
    assert rule["backendRefs"] == [
        {
            "group": INFERENCEPOOL.group,
            "kind": "InferencePool",
            "name": "tiny-stable",
            "weight": 70,
        },
        {
            "group": INFERENCEPOOL.group,
            "kind": "InferencePool",
            "name": "tiny-canary",
            "weight": 15,
        },
        {
            "group": INFERENCEPOOL.group,
            "kind": "InferencePool",
            "name": "tiny-baseline",
            "weight": 15,
        },
    ]
    # Read back as pools; a Service of the same name is another backend.
    assert route_weights(route, kind="InferencePool") == {
        "tiny-stable": 70,
        "tiny-canary": 15,
        "tiny-baseline": 15,
    }
    assert route_weights(route) == {}


def test_each_pool_has_its_own_picker_for_that_pool_only(owner: Owner) -> None:
    spec = spec_with(endpointPicker={"args": ["--v=3"], "failureMode": "FailOpen"})
    picker = build_picker(owner, "baseline", traffic_of(spec))
    assert picker["metadata"]["name"] == "tiny-baseline-epp"
    pod = picker["spec"]["template"]
    [container] = pod["spec"]["containers"]
    assert container["image"] == ENDPOINT_PICKER_IMAGE
    assert container["args"][:3] == [
        "--pool-name=tiny-baseline",
        "--pool-namespace=ml",
        "--pool-group=inference.networking.k8s.io",
    ]
    assert container["args"][-1] == "--v=3"
    assert pod["spec"]["serviceAccountName"] == "tiny-endpoint-picker"
    # Not a revision's pod: no llmcanary.io/deployment (the operator lists revisions, and
    # the local stack runs Triton, by it), but the arm for the metrics' PodMonitor.
    labels = pod["metadata"]["labels"]
    assert LABEL_DEPLOYMENT not in labels and LABEL_REVISION not in labels
    assert labels[LABEL_PICKER] == "tiny" and labels["llmcanary.io/track"] == "baseline"
    assert LABEL_DEPLOYMENT not in picker["metadata"]["labels"]
    assert picker["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = build_picker_service(owner, "baseline")
    assert service["metadata"]["name"] == "tiny-baseline-epp"
    assert service["spec"]["selector"].items() <= labels.items()
    grpc = next(p for p in service["spec"]["ports"] if p["port"] == PICKER_GRPC_PORT)
    assert grpc["targetPort"] == "grpc"
    assert (
        build_pool(owner, "stable", "r1", traffic_of(spec))["spec"]["endpointPickerRef"][
            "failureMode"
        ]
        == "FailOpen"
    )


def test_the_pickers_may_read_their_pools_and_pods_and_nothing_else(owner: Owner) -> None:
    account, role, binding = build_picker_access(owner)
    assert (
        account["kind"] == "ServiceAccount"
        and account["metadata"]["name"] == "tiny-endpoint-picker"
    )
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "tiny-endpoint-picker",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "tiny-endpoint-picker", "namespace": "ml"}
    ]
    for rule in role["rules"]:
        assert set(rule["verbs"]) == {"get", "list", "watch"}
    assert {r for rule in role["rules"] for r in rule["resources"]} == {
        "pods",
        "inferencepools",
        "inferenceobjectives",
        "inferencemodelrewrites",
    }


# --- what the Gateway says ---------------------------------------------------------------


def route(generation: int = 1) -> dict[str, Any]:
    return {
        "kind": "HTTPRoute",
        "metadata": {"name": "tiny", "namespace": "ml", "generation": generation},
        "spec": {"parentRefs": [{"name": "inference", "namespace": "gw", "sectionName": "http"}]},
    }


def pool(
    generation: int = 1, *conditions: tuple[str, str, str], parent: str = "gw"
) -> dict[str, Any]:
    return {
        "kind": "InferencePool",
        "metadata": {"name": "tiny-canary", "namespace": "ml", "generation": generation},
        "status": {
            "parents": [
                {
                    "parentRef": {
                        "group": "gateway.networking.k8s.io",
                        "kind": "Gateway",
                        "name": "inference",
                        "namespace": parent,
                    },
                    "conditions": [
                        {
                            "type": kind,
                            "status": status,
                            "reason": reason,
                            "observedGeneration": generation,
                            "message": "the picker Service is missing" if status != "True" else "",
                        }
                        for kind, status, reason in conditions
                    ],
                }
            ]
        },
    }


ACCEPTED = ("Accepted", "True", "Accepted")
RESOLVED = ("ResolvedRefs", "True", "ResolvedRefs")


def test_a_pool_the_gateway_accepted_and_resolved_is_served() -> None:
    # The pool's parent is the Gateway itself: the route's listener is not part of it.
    assert pool_refusal(pool(1, ACCEPTED, RESOLVED), route()) is None


def test_a_pool_whose_picker_is_unresolved_holds_the_step_with_the_gateways_reason() -> None:
    why = pool_refusal(pool(1, ACCEPTED, ("ResolvedRefs", "False", "InvalidExtensionRef")), route())
    assert why == (
        "Gateway gw/inference refuses InferencePool ml/tiny-canary: ResolvedRefs=False"
        " (InvalidExtensionRef): the picker Service is missing"
    )


def test_a_pool_status_of_an_older_generation_is_not_taken_for_the_new_selector() -> None:
    stale = pool(1, ACCEPTED, RESOLVED)
    stale["metadata"]["generation"] = 2  # re-pointed at promotion, not yet seen
    why = pool_refusal(stale, route())
    assert (
        why == "Gateway gw/inference has not taken generation 2 of InferencePool ml/tiny-canary yet"
    )


def test_a_pool_no_gateway_reported_on_is_named() -> None:
    why = pool_refusal(pool(1, ACCEPTED, RESOLVED, parent="elsewhere"), route())
    assert why is not None
    assert why.startswith("Gateway gw/inference has not reported on InferencePool ml/tiny-canary")


def test_a_parent_ref_without_namespace_is_the_routes_namespace() -> None:
    same_namespace = route()
    same_namespace["spec"]["parentRefs"] = [{"name": "inference"}]
    assert pool_refusal(pool(1, ACCEPTED, RESOLVED, parent="ml"), same_namespace) is None


def ready_pod(ready: bool, deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "p"}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {
        "metadata": meta,
        "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


def test_a_pool_without_a_serving_picker_pod_holds_its_weight() -> None:
    assert picker_refusal([ready_pod(True)], "tiny-canary-epp") is None
    for pods in ([], [ready_pod(False)], [ready_pod(True, deleting=True)]):
        why = picker_refusal(pods, "tiny-canary-epp")
        assert why is not None and "tiny-canary-epp has no Ready pod" in why


# --- the router against a fake API --------------------------------------------------------


def picker_pod(track: str, ready: bool = True) -> dict[str, Any]:
    pod = ready_pod(ready)
    pod.update(apiVersion="v1", kind="Pod")
    pod["metadata"].update(
        name=f"tiny-{track}-epp-1",
        namespace="ml",
        labels={LABEL_PICKER: "tiny", "llmcanary.io/track": track},
    )
    return pod


def gateway_took(kube: FakeKube) -> None:
    """The Gateway's word on the route's current generation, as gw/inference writes it."""
    key = ("gateway.networking.k8s.io/v1", "HTTPRoute", "ml", "tiny")
    route = kube.objects[key]
    generation = route["metadata"].get("generation", 1)
    route["metadata"]["generation"] = generation
    route["status"] = {
        "parents": [
            {
                "parentRef": {"name": "inference", "namespace": "gw"},
                "conditions": [
                    {"type": t, "status": "True", "observedGeneration": generation}
                    for t in ("Accepted", "ResolvedRefs")
                ],
            }
        ]
    }


def test_reconcile_makes_a_pool_and_picker_per_track_and_drops_a_finished_baseline(
    owner: Owner,
) -> None:
    kube = FakeKube()
    for track in ("stable", "canary", "baseline"):
        kube.add(picker_pod(track))
    router = router_for(cast(Kube, kube), "inferencePool")
    spec = spec_with()
    router.reconcile(owner, spec, Weights.of(10, 10), {**BACKENDS, "baseline": "r1-baseline"})
    names = {(key[1], key[3]) for key in kube.objects}
    for track in ("stable", "canary", "baseline"):
        assert ("InferencePool", f"tiny-{track}") in names
        assert ("Deployment", f"tiny-{track}-epp") in names
        assert ("Service", f"tiny-{track}-epp") in names
    assert {("ServiceAccount", "tiny-endpoint-picker"), ("Role", "tiny-endpoint-picker")} <= names
    assert router.get_weights(owner) == Weights.of(10, 10)
    # The rollout ends: the route drops the baseline at once; its pool and picker go only
    # once the Gateway has taken that route (until then it may still send them requests).
    router.reconcile(owner, spec, Weights.of(0), BACKENDS)
    assert router.get_weights(owner) == Weights.of(0)
    assert ("InferencePool", "tiny-baseline") in {(k[1], k[3]) for k in kube.objects}
    gateway_took(kube)
    router.reconcile(owner, spec, Weights.of(0), BACKENDS)
    names = {(key[1], key[3]) for key in kube.objects}
    assert ("InferencePool", "tiny-baseline") not in names
    assert ("Deployment", "tiny-baseline-epp") not in names
    router.finalize(owner)
    assert {key[1] for key in kube.objects} == {"Pod"}  # the test's picker pods


def test_no_weight_moves_onto_a_pool_whose_picker_does_not_serve(owner: Owner) -> None:
    kube = FakeKube()
    router = router_for(cast(Kube, kube), "inferencePool")
    spec = spec_with()
    # A new LLMDeployment: no route until the stable pool's picker serves.
    router.reconcile(owner, spec, Weights.of(0), BACKENDS)
    assert router.get_weights(owner) is None
    check = router.verify_weights(owner, Weights.of(0))
    assert not check.held and check.why is not None
    assert "tiny-stable-epp has no Ready pod yet" in check.why
    kube.add(picker_pod("stable"))
    router.reconcile(owner, spec, Weights.of(0), BACKENDS)
    assert router.get_weights(owner) == Weights.of(0)
    # The canary's picker is not Ready: its first 5% waits, and status says why.
    kube.add(picker_pod("canary", ready=False))
    router.reconcile(owner, spec, Weights.of(5), BACKENDS)
    assert router.get_weights(owner) == Weights.of(0)
    check = router.verify_weights(owner, Weights.of(5))
    assert check.why is not None and "InferencePool ml/tiny-canary" in check.why
    kube.add(picker_pod("canary"))
    router.reconcile(owner, spec, Weights.of(25), BACKENDS)
    assert router.get_weights(owner) == Weights.of(25)
    # Its picker fails: taking the weight away is never held back.
    kube.add(picker_pod("canary", ready=False))
    router.reconcile(owner, spec, Weights.of(0), BACKENDS)
    assert router.get_weights(owner) == Weights.of(0)


def test_a_picker_image_outside_the_allowlist_is_never_run_nor_routed_to(
    owner: Owner,
) -> None:
    kube = FakeKube()
    router = router_for(cast(Kube, kube), "inferencePool", ["registry.example.com/*"])
    with pytest.raises(ReconcileError, match=r"endpointPicker\.image") as raised:
        router.reconcile(owner, spec_with(), Weights.of(0), BACKENDS)
    assert raised.value.reason == "ImageNotAllowed"
    kinds = {key[1] for key in kube.objects}
    assert "Deployment" not in kinds
    assert router.get_weights(owner) is None  # no route onto pools nobody picks for


def test_switching_from_gateway_api_keeps_the_pool_route(owner: Owner) -> None:
    kube = FakeKube()
    kube.add(picker_pod("stable"))
    pools = router_for(cast(Kube, kube), "inferencePool")
    pools.reconcile(owner, spec_with(), Weights.of(0), BACKENDS)
    # The reconciler finalizes the previous router after the new one wrote its route:
    # both own an HTTPRoute NAME, and the gatewayAPI router must leave the pools' one.
    router_for(cast(Kube, kube), "gatewayAPI").finalize(owner)
    assert pools.get_weights(owner) == Weights.of(0)


def test_a_long_name_still_gives_service_names_of_63_characters() -> None:
    long = "a" * 52  # the longest LLMDeployment name
    names = {picker_name(long, t) for t in ("stable", "canary", "baseline")}
    assert len(names) == 3
    assert all(len(n) <= 63 and n.endswith("-epp") for n in names)
    assert picker_name("tiny", "baseline") == "tiny-baseline-epp"


# --- the spec ----------------------------------------------------------------------------


def test_the_router_needs_its_gateways() -> None:
    with pytest.raises(ValueError, match=r"needs traffic\.inferencePool\.parentRefs"):
        make_spec(traffic={"router": "inferencePool"})
    with pytest.raises(ValueError, match="parentRefs"):
        make_spec(traffic={"router": "inferencePool", "inferencePool": {"parentRefs": []}})


@pytest.mark.parametrize(
    "arg",
    [
        "--pool-name=x",
        "-pool-namespace",  # its value as the next argument
        "--grpc-port=1",
        "--metrics-port=9",
        "--metrics-endpoint-auth=true",  # the PodMonitor scrapes without a token
        "--enable-pprof=true",
        "--ha-enable-leader-election",
        "--pool-name=x\n--v=2",
    ],
)
def test_the_pickers_pool_and_ports_are_the_operators(arg: str) -> None:
    with pytest.raises(ValueError, match="set by the operator"):
        spec_with(endpointPicker={"args": [arg]})
    spec_with(endpointPicker={"args": ["--v=4", "--config-file=/etc/epp/config.yaml"]})


def test_the_pickers_metrics_need_the_pool_router() -> None:
    analysis = {"analysis": {"metrics": "endpointPicker"}}
    assert make_spec(traffic=TRAFFIC, canary=analysis).canary.analysis.metrics == "endpointPicker"
    with pytest.raises(ValueError, match=r"needs traffic\.router inferencePool"):
        make_spec(canary=analysis)
    with pytest.raises(ValueError, match=r"needs traffic\.router gatewayAPI"):
        make_spec(traffic=TRAFFIC, canary={"analysis": {"metrics": "traefik"}})


def test_the_picker_flag_rule_is_the_same_in_cel() -> None:
    from llmcanary.api.crd import build_crd

    text = str(build_crd())
    assert re.search(r"self\.args\.all\(a, !a\.matches\('\^--\?\(pool-name", text)
