"""The inferencePool router on real inference: tiny-llm on real Triton behind two
InferencePools, one per arm, weighted by the operator's HTTPRoute, judged on the
endpoint pickers' series as a real Prometheus scraped them.

The Gateway that routes InferencePool backends, and the pickers, are the local stack's
stand-ins (``llmcanary_dev.localstack.inference_gateway``: no implementation that routes
pools runs on these machines); the API server, the operator, Triton and Prometheus are
real.
"""

from __future__ import annotations

import copy
import json
import math
import re
import time
import urllib.parse
import urllib.request
from typing import Any

import pytest
import yaml
from kubectl import ROOT, Kubectl, OperatorProcess, promote, wait_for
from load_driver import LoadDriver
from routes import WeightWatch, route_host, wait_until_served
from test_data_plane import revision, status, wait_for_or_none

from llmcanary_dev.localstack import stack as local
from llmcanary_dev.localstack.inference_gateway import count_requests
from llmcanary_dev.localstack.inference_routes import parent_ref

pytestmark = pytest.mark.k8s

NAME = "tiny-llm"
SLOW = {"layers": "8", "hidden_size": "512", "heads": "8"}


def manifest(stack: local.StackSettings, namespace: str) -> dict[str, Any]:
    """The local example, routed through InferencePools and judged on their pickers."""
    doc: dict[str, Any] = yaml.safe_load(
        (ROOT / "examples" / "local" / "tiny-llm.yaml").read_text()
    )
    doc["spec"]["traffic"] = {
        "router": "inferencePool",
        "inferencePool": {
            "parentRefs": [parent_ref()],
            "hostnames": [route_host(namespace, NAME)],
        },
    }
    analysis = doc["spec"]["canary"]["analysis"]
    analysis["prometheus"]["address"] = stack.prometheus_url
    analysis["metrics"] = "endpointPicker"
    return doc


def changed(doc: dict[str, Any], version: str, **parameters: str) -> dict[str, Any]:
    new = copy.deepcopy(doc)
    new["spec"]["model"]["version"] = version
    new["spec"]["triton"]["parameters"].update(parameters)
    return new


def pool_name(namespace: str, arm: str) -> str:
    """How the inference gateway's access log names an arm's pool."""
    return f"{namespace}/{NAME}-{arm}"


def pool_conditions(kubectl: Kubectl, namespace: str, arm: str) -> dict[str, str]:
    """``{type: status}`` the inference Gateway wrote on the arm's pool, for its
    current generation."""
    pool = kubectl.get("inferencepool", f"{NAME}-{arm}", namespace) or {}
    generation = pool.get("metadata", {}).get("generation")
    for parent in (pool.get("status") or {}).get("parents") or []:
        if parent["parentRef"]["name"] == parent_ref()["name"]:
            return {
                c["type"]: c["status"]
                for c in parent.get("conditions") or []
                if c.get("observedGeneration") == generation
            }
    return {}


def stable_pool_served(kubectl: Kubectl, namespace: str, rev: str) -> None:
    """The stable pool selects ``rev``'s pods, and the Gateway has taken that selector."""
    pool = kubectl.get("inferencepool", f"{NAME}-stable", namespace)
    assert pool is not None
    assert pool["spec"]["selector"]["matchLabels"]["llmcanary.io/revision"] == rev
    wait_for(
        f"the Gateway's word on the stable pool of {rev}",
        lambda: (
            pool_conditions(kubectl, namespace, "stable")
            == {"Accepted": "True", "ResolvedRefs": "True"}
        ),
        timeout=30,
    )


def test_a_slow_revision_is_rolled_back_and_a_healthy_one_promoted_through_pools(
    kubectl: Kubectl, namespace: str, operator: OperatorProcess, stack: local.StackSettings
) -> None:
    doc = manifest(stack, namespace)
    host = route_host(namespace, NAME)
    kubectl.apply(doc, namespace)
    wait_for(
        "revision 1 Stable with Triton serving",
        lambda: status(kubectl, namespace).get("phase") == "Stable",
        timeout=180,
    )
    wait_until_served(stack.inference_url, host)
    stable_pool_served(kubectl, namespace, revision(doc))

    # Eight closed-loop streams, as the gatewayAPI test sends a slow canary.
    load = LoadDriver(stack.inference_url, concurrency=8, host=host).start()
    try:
        time.sleep(5)
        slow = changed(doc, "2", **SLOW)
        kubectl.apply(slow, namespace)
        with WeightWatch(kubectl, namespace, NAME) as watch:
            st = wait_for(
                "phase RolledBack",
                lambda: (s := status(kubectl, namespace)).get("phase") == "RolledBack" and s,
                timeout=480,
            )
            wait_for("the route back at 0", lambda: "at_0" in watch.seen, timeout=10)
        seen = watch.seen
        assert st["rolledBackRevision"] == revision(slow)
        reason = st["history"][0]["reason"]
        assert re.search(r"canary e2eLatency p95 \d+ ms vs baseline \d+ ms: \+\d+%", reason), reason
        print(f"rollback: {reason}")

        # While the route said 25%, the stand-in gateway sent each pool its share: within
        # three standard deviations of a binomial share, plus half a point for requests in
        # flight across the changes (it applies a table every 0.5 s: 2 s trimmed each end).
        counts = count_requests(
            stack.inference_access_log, since=seen["at_25"] + 2.0, until=seen["at_0"] - 2.0
        )
        arms = {arm: counts[pool_name(namespace, arm)] for arm in ("canary", "baseline", "stable")}
        total = sum(arms.values())
        tolerance = 3 * math.sqrt(0.25 * 0.75 / total) + 0.005
        print(f"at 25%: {arms} of {total} requests (25% +-{tolerance:.2%} each)")
        assert total >= 250
        assert abs(arms["canary"] / total - 0.25) <= tolerance
        assert abs(arms["baseline"] / total - 0.25) <= tolerance

        # A healthy revision: the same model, a new version.
        healthy = changed(doc, "3")
        new = revision(healthy)
        kubectl.apply(healthy, namespace)

        def decided() -> dict[str, Any] | None:
            s = status(kubectl, namespace)
            if s.get("phase") == "RolledBack" and s.get("rolledBackRevision") == new:
                return s
            return s if s.get("stableRevision") == new and s.get("phase") == "Stable" else None

        started = time.monotonic()
        final = wait_for_or_none(decided, 600)
        if final is None:
            # As in test_data_plane: a judge still collecting at the bound is promoted on
            # request; what must never happen is a rollback of identical arms.
            s = status(kubectl, namespace)
            assert s.get("phase") == "Progressing", s.get("message")
            print(f"still collecting after 600 s ({s['lastAnalysis']['reason']}): promoting")
            promote(kubectl, namespace, NAME)
            final = wait_for("revision 3 promoted on request", decided, timeout=120)
        if final["phase"] == "RolledBack":
            print(json.dumps(final.get("lastAnalysis"), indent=1))
            raise AssertionError(f"an identical revision was rolled back: {final['message']}")
        print(f"promoted after {time.monotonic() - started:.0f} s")
    finally:
        results = load.stop()

    # Promotion re-pointed the stable pool at the promoted pods; the baseline's pool and
    # picker are gone; the Gateway took the re-pointed pool.
    stable_pool_served(kubectl, namespace, new)
    wait_for(
        "the baseline's pool gone",
        lambda: kubectl.get("inferencepool", f"{NAME}-baseline", namespace) is None,
        timeout=30,
    )
    # The pickers' series reached Prometheus with the arm of their pool (over the whole
    # test: the baseline's picker is gone since the promotion, and its series with it).
    query = (
        f'sum by (track) (max_over_time(inference_objective_request_total{{namespace="{namespace}",'
        f'llmdeployment="{NAME}"}}[30m]))'
    )
    url = f"{stack.prometheus_url}/api/v1/query?query={urllib.parse.quote(query)}"
    with urllib.request.urlopen(url, timeout=10) as reply:
        answer = json.loads(reply.read())
    tracks = {r["metric"].get("track") for r in answer["data"]["result"]}
    assert {"stable", "canary", "baseline"} <= tracks, tracks
    errors = [r for r in results if not r.ok]
    print(f"load: {len(results)} requests, {len(errors)} errors: {errors[:3]}")
    assert len(results) > 100
    assert len(errors) <= len(results) * 0.01
