"""The local stack's inference Gateway, pure part: what it routes and what it says of
routes and pools (served for real in tests/e2e/test_inference_pools.py)."""

from __future__ import annotations

from typing import Any

from llmcanary_dev.localstack.inference_gateway import EPP_LATENCY_BUCKETS, PickerMetrics, model_of
from llmcanary_dev.localstack.inference_routes import (
    CONTROLLER_NAME,
    GATEWAY_NAME,
    GATEWAY_NAMESPACE,
    merged_parents,
    plan,
)

POOL_REF = {"group": "inference.networking.k8s.io", "kind": "InferencePool"}
OURS = {"name": GATEWAY_NAME, "namespace": GATEWAY_NAMESPACE}


def route(*backends: dict[str, Any], parents: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": "tiny", "namespace": "ml", "generation": 3},
        "spec": {
            "parentRefs": parents if parents is not None else [OURS],
            "hostnames": ["tiny.ml.test"],
            "rules": [{"backendRefs": list(backends)}],
        },
    }


def pool(name: str, revision: str, picker: str = "") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "ml", "generation": 2},
        "spec": {
            "selector": {"matchLabels": {"llmcanary.io/revision": revision}},
            "targetPorts": [{"number": 8000}],
            "endpointPickerRef": {"name": picker or f"{name}-epp", "port": {"number": 9002}},
        },
    }


def service(name: str, selector: dict[str, str]) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ml"}, "spec": {"selector": selector}}


def pod(name: str, ip: str, labels: dict[str, str], ready: bool = True) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "ml", "labels": labels},
        "spec": {"containers": [{"ports": [{"name": "metrics", "containerPort": 9090}]}]},
        "status": {
            "podIP": ip,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


PICKER_LABELS = {"llmcanary.io/endpoint-picker": "tiny", "llmcanary.io/track": "canary"}
CLUSTER = {
    "pools": [pool("tiny-stable", "r1"), pool("tiny-canary", "r2")],
    "services": [
        service("tiny-stable-epp", {"app": "epp-stable"}),
        service("tiny-canary-epp", {"app": "epp-canary"}),
    ],
    "pods": [
        pod("r1-a", "127.0.0.2", {"llmcanary.io/revision": "r1"}),
        pod("r1-b", "127.0.0.3", {"llmcanary.io/revision": "r1"}, ready=False),
        pod("r2-a", "127.0.0.4", {"llmcanary.io/revision": "r2"}),
        pod("epp-c", "127.244.0.9", {"app": "epp-canary", **PICKER_LABELS}),
    ],
}


def weighted(name: str, weight: int) -> dict[str, Any]:
    return {**POOL_REF, "name": name, "weight": weight}


def test_a_route_of_pools_is_routed_and_accepted_with_its_refs_resolved() -> None:
    found = plan(
        [route(weighted("tiny-stable", 75), weighted("tiny-canary", 25))],
        CLUSTER["pools"],
        CLUSTER["services"],
        CLUSTER["pods"],
    )
    [entry] = found.table.routes
    assert found.table.route_for("tiny.ml.test") == entry
    assert found.table.route_for("other.test") is None
    assert [(b.pool, b.weight) for b in entry.backends] == [
        (("ml", "tiny-stable"), 75),
        (("ml", "tiny-canary"), 25),
    ]
    # Only Ready pods of the pool's revision, on its target port.
    assert found.table.pools[("ml", "tiny-stable")].endpoints == ("127.0.0.2:8000",)
    canary = found.table.pools[("ml", "tiny-canary")]
    assert canary.endpoints == ("127.0.0.4:8000",)
    # The canary's picker has a Ready pod: its metrics, labelled like the PodMonitor's.
    assert canary.scheduling is not None
    assert canary.scheduling.labels == {
        "namespace": "ml",
        "pod": "epp-c",
        "llmdeployment": "tiny",
        "track": "canary",
    }
    assert found.table.pools[("ml", "tiny-stable")].scheduling is None  # no Ready picker pod
    [parent] = found.route_status[("ml", "tiny")]
    assert parent["parentRef"] == OURS and parent["controllerName"] == CONTROLLER_NAME
    assert [(c["type"], c["status"], c["observedGeneration"]) for c in parent["conditions"]] == [
        ("Accepted", "True", 3),
        ("ResolvedRefs", "True", 3),
    ]
    for name in ("tiny-stable", "tiny-canary"):
        entry_ = found.pool_status[("ml", name)]
        assert entry_ is not None
        assert entry_["parentRef"]["namespace"] == GATEWAY_NAMESPACE  # explicit
        assert {c["type"]: c["status"] for c in entry_["conditions"]} == {
            "Accepted": "True",
            "ResolvedRefs": "True",
        }


def test_what_it_cannot_resolve_it_says_as_an_implementation_does() -> None:
    found = plan(
        [route(weighted("tiny-stable", 50), weighted("tiny-gone", 50))],
        [pool("tiny-stable", "r1", picker="no-such-service")],
        CLUSTER["services"],
        CLUSTER["pods"],
    )
    [parent] = found.route_status[("ml", "tiny")]
    resolved = parent["conditions"][1]
    assert (resolved["status"], resolved["reason"]) == ("False", "BackendNotFound")
    assert "tiny-gone" in resolved["message"]
    entry = found.pool_status[("ml", "tiny-stable")]
    assert entry is not None
    resolved = entry["conditions"][1]
    assert (resolved["status"], resolved["reason"]) == ("False", "InvalidExtensionRef")
    # A Service backend is not this Gateway's to route.
    found = plan([route({"name": "tiny-stable", "port": 8000})], [], [], [])
    reason = found.route_status[("ml", "tiny")][0]["conditions"][1]["reason"]
    assert reason == "InvalidKind"


def test_routes_of_other_gateways_are_left_alone_and_unweighted_pools_lose_its_entry() -> None:
    traefiks = route(
        weighted("tiny-stable", 100), parents=[{"name": "local", "namespace": GATEWAY_NAMESPACE}]
    )
    left = pool("tiny-stable", "r1")
    left["status"] = {"parents": [{"parentRef": {**OURS, "kind": "Gateway"}, "conditions": []}]}
    found = plan([traefiks], [left], [], [])
    assert found.table.routes == () and found.route_status == {}
    assert found.pool_status == {("ml", "tiny-stable"): None}


def test_status_keeps_other_gateways_entries_and_unchanged_transition_times() -> None:
    other = {"parentRef": {"name": "local", "namespace": GATEWAY_NAMESPACE}, "conditions": []}
    ours = {
        "parentRef": OURS,
        "controllerName": CONTROLLER_NAME,
        "conditions": [
            {
                "type": "Accepted",
                "status": "True",
                "reason": "Accepted",
                "message": "",
                "observedGeneration": 3,
            }
        ],
    }
    obj: dict[str, Any] = {"metadata": {"namespace": "ml"}, "status": {"parents": [other]}}
    merged = merged_parents(obj, [ours], "T1")
    assert merged is not None and merged[0] == other
    assert merged[1]["conditions"][0]["lastTransitionTime"] == "T1"
    obj["status"]["parents"] = merged
    assert merged_parents(obj, [ours], "T2") is None  # nothing changed: nothing written
    assert merged_parents(obj, None, "T2") == [other]  # its entry removed


def test_the_pickers_series_are_the_epps() -> None:
    metrics = PickerMetrics(pool="tiny-canary", ready_pods=1)
    metrics.requests["tiny-llm"] += 3
    metrics.errors[("tiny-llm", "ModelServerError")] += 1
    for seconds in (0.03, 0.15, 7.0):
        metrics.observe("tiny-llm", seconds)
    text = metrics.text()
    labels = 'model_name="tiny-llm",target_model_name="tiny-llm"'
    assert f'inference_objective_request_total{{{labels},priority=""}} 3' in text
    assert (
        f'inference_objective_request_error_total{{{labels},error_code="ModelServerError"}} 1'
        in text
    )
    name = "inference_objective_request_duration_seconds_bucket"
    assert f'{name}{{{labels},le="0.05"}} 1' in text
    assert f'{name}{{{labels},le="0.2"}} 2' in text
    assert f'{name}{{{labels},le="+Inf"}} 3' in text
    assert (
        len([line for line in text.splitlines() if line.startswith(name)])
        == len(EPP_LATENCY_BUCKETS) + 1
    )
    assert model_of(b'{"model": "llama", "prompt": "hi"}', "/v1/completions") == "llama"
    assert model_of(b'{"text_input": "hi"}', "/v2/models/tiny-llm/generate_stream") == "tiny-llm"
