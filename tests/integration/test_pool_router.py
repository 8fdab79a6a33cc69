"""The inferencePool router against the real API server with the Gateway API Inference
Extension's CRDs (pinned by devcluster/data.sh): pools, pickers and the route, weights
walked and verified, and a Gateway's word on each pool.

No Gateway implementation that routes InferencePool backends runs here: the test plays
that Gateway's controller, writing ``status.parents`` of the route and of each pool as
an implementation does (the local stack's gateway does the same in the e2e tests). KWOK
makes the pickers' pods Ready.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kubectl import Kubectl, wait_for
from test_routers import CANARY, NAME, STABLE, Setup

from llmcanary.builders.meta import Track, baseline_revision, revision_selector
from llmcanary.kube.client import Kube
from llmcanary.routing import Weights
from llmcanary.routing.inference_pool import INFERENCEPOOL, InferencePoolRouter

pytestmark = pytest.mark.k8s

GATEWAY = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "inference"}
GATEWAY_NAMESPACE = "gateways"
TRAFFIC = {
    "router": "inferencePool",
    "inferencePool": {
        "parentRefs": [{"name": "inference", "namespace": GATEWAY_NAMESPACE}],
        "hostnames": ["llm.example.com"],
    },
}
ROUTE = ("gateway.networking.k8s.io/v1", "HTTPRoute")
POOL = (INFERENCEPOOL.api_version, INFERENCEPOOL.kind)


class Pools(Setup):
    router: InferencePoolRouter

    def backends(self, stable: str, canary: str, baseline: bool = False) -> dict[Track, str]:
        backends: dict[Track, str] = {"stable": stable, "canary": canary}
        if baseline:
            backends["baseline"] = baseline_revision(stable)
        return backends

    def obj(self, api_version_kind: tuple[str, str], name: str) -> dict[str, Any] | None:
        return self.kube.get(*api_version_kind, self.owner.namespace, name)

    def gateway_reports(
        self, refused: dict[str, tuple[str, str]] | None = None, route_refused: str | None = None
    ) -> None:
        """Write, as the Gateway's controller would, its word on the route and on every
        pool the route weights, for their current generations. ``refused``: pool name ->
        (condition type, reason) that is False; ``route_refused``: the route's
        ResolvedRefs reason when False."""
        refused = refused or {}
        route = self.obj(ROUTE, NAME)
        assert route is not None
        ref = {**GATEWAY, "namespace": GATEWAY_NAMESPACE}
        resolved = route_refused is None
        self.kube.patch_status(
            *ROUTE,
            self.owner.namespace,
            NAME,
            {
                "parents": [
                    {
                        "parentRef": ref,
                        "controllerName": "example.com/inference-gateway",
                        "conditions": conditions(
                            route["metadata"]["generation"],
                            ("Accepted", True, "Accepted"),
                            ("ResolvedRefs", resolved, route_refused or "ResolvedRefs"),
                        ),
                    }
                ]
            },
        )
        for backend in route["spec"]["rules"][0]["backendRefs"]:
            pool = self.obj(POOL, backend["name"])
            assert pool is not None
            kind, reason = refused.get(backend["name"], ("", ""))
            self.kube.patch_status(
                *POOL,
                self.owner.namespace,
                backend["name"],
                {
                    "parents": [
                        {
                            "parentRef": ref,
                            "conditions": conditions(
                                pool["metadata"]["generation"],
                                ("Accepted", kind != "Accepted", reason or "Accepted"),
                                ("ResolvedRefs", kind != "ResolvedRefs", reason or "ResolvedRefs"),
                            ),
                        }
                    ]
                },
            )

    def held(self, weights: Weights) -> str | None:
        """None when the router holds ``weights``, else why not."""
        check = self.router.verify_weights(self.owner, weights)
        return None if check.held else (check.why or "not held")


def conditions(generation: int, *states: tuple[str, bool, str]) -> list[dict[str, Any]]:
    return [
        {
            "type": kind,
            "status": "True" if ok else "False",
            "reason": reason,
            "message": "" if ok else f"the test's Gateway says {reason}",
            "observedGeneration": generation,
            "lastTransitionTime": "2026-12-01T00:00:00Z",
        }
        for kind, ok, reason in states
    ]


@pytest.fixture
def pools(kube: Kube, kubectl: Kubectl, crd: None, namespace: str) -> Iterator[Pools]:
    setup = Pools(kube, kubectl, namespace, "inferencePool", traffic=TRAFFIC)
    assert isinstance(setup.router, InferencePoolRouter)
    yield setup


def test_pools_pickers_and_route_are_the_llmdeployments_and_pinned_per_revision(
    pools: Pools,
) -> None:
    pools.workloads(stable=2, canary=1)
    pools.reconcile(Weights.of(5), pools.backends(STABLE, CANARY))
    for track, revision in (("stable", STABLE), ("canary", CANARY)):
        pool = pools.obj(POOL, f"{NAME}-{track}")
        assert pool is not None
        [ref] = pool["metadata"]["ownerReferences"]
        assert (ref["kind"], ref["uid"]) == ("LLMDeployment", pools.owner.uid)
        assert pool["spec"]["selector"]["matchLabels"] == revision_selector(NAME, revision)
        assert pool["spec"]["targetPorts"] == [{"number": 8000}]
        # The API server's defaults for the picker reference: a Service.
        assert pool["spec"]["endpointPickerRef"]["kind"] == "Service"
        for api_version, kind in (("apps/v1", "Deployment"), ("v1", "Service")):
            picker = pools.obj((api_version, kind), f"{NAME}-{track}-epp")
            assert picker is not None
            assert picker["metadata"]["ownerReferences"][0]["uid"] == pools.owner.uid
    for api_version, kind in (
        ("v1", "ServiceAccount"),
        ("rbac.authorization.k8s.io/v1", "Role"),
        ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ):
        assert pools.obj((api_version, kind), f"{NAME}-endpoint-picker") is not None
    route = pools.obj(ROUTE, NAME)
    assert route is not None
    assert {
        (b["kind"], b["name"], b["weight"]) for b in route["spec"]["rules"][0]["backendRefs"]
    } == {
        ("InferencePool", f"{NAME}-stable", 95),
        ("InferencePool", f"{NAME}-canary", 5),
    }
    # A second pass writes nothing.
    versions = {
        name: pools.obj(kind, name)["metadata"]["resourceVersion"]  # type: ignore[index]
        for kind, name in ((ROUTE, NAME), (POOL, f"{NAME}-stable"), (POOL, f"{NAME}-canary"))
    }
    pools.reconcile(Weights.of(5), pools.backends(STABLE, CANARY))
    for kind, name in ((ROUTE, NAME), (POOL, f"{NAME}-stable"), (POOL, f"{NAME}-canary")):
        assert pools.obj(kind, name)["metadata"]["resourceVersion"] == versions[name]  # type: ignore[index]


def test_a_weight_waits_for_the_gateways_word_on_route_and_pools(pools: Pools) -> None:
    pools.workloads(stable=2, canary=1)
    backends = pools.backends(STABLE, CANARY)
    pools.reconcile(Weights.of(5), backends)
    # Nothing reported yet: the step waits, and says for whom.
    why = pools.held(Weights.of(5))
    assert why is not None and why.startswith(
        f"Gateway {GATEWAY_NAMESPACE}/inference has not reported on HTTPRoute"
    )
    # The Gateway took the route but cannot resolve the canary pool's picker.
    pools.gateway_reports(refused={f"{NAME}-canary": ("ResolvedRefs", "InvalidExtensionRef")})
    pools.router.reconcile(pools.owner, pools.spec, Weights.of(5), backends)
    why = pools.held(Weights.of(5))
    assert why is not None
    assert why.startswith(
        f"Gateway {GATEWAY_NAMESPACE}/inference refuses InferencePool"
        f" {pools.owner.namespace}/{NAME}-canary: ResolvedRefs=False (InvalidExtensionRef)"
    ), why
    # Resolved: the weight holds once the pickers' pods are Ready.
    pools.gateway_reports()
    wait_for("the split held", lambda: pools.held(Weights.of(5)) is None, timeout=60)

    # The weights walk; every change is a new route generation the Gateway must take.
    for weight in (15, 25, 35, 45):
        pools.router.reconcile(pools.owner, pools.spec, Weights.of(weight), backends)
        why = pools.held(Weights.of(weight))
        assert why is not None and "has not taken generation" in why, why
        pools.gateway_reports()
        assert pools.held(Weights.of(weight)) is None
        assert pools.router.get_weights(pools.owner) == Weights.of(weight)
        assert pools.held(Weights.of(weight + 10)) is not None

    # Rollback: everything on the stable pool at once, held as soon as the route is.
    pools.router.reconcile(pools.owner, pools.spec, Weights.of(0), backends)
    assert pools.router.get_weights(pools.owner) == Weights(100, 0)


def test_a_fresh_baseline_gets_its_own_pool_and_promotion_repoints_the_stable_one(
    pools: Pools,
) -> None:
    pools.workloads(stable=2, canary=1)
    with_baseline = pools.backends(STABLE, CANARY, baseline=True)
    pools.reconcile(Weights.of(15, 15), with_baseline)
    baseline = pools.obj(POOL, f"{NAME}-baseline")
    assert baseline is not None
    assert baseline["spec"]["selector"]["matchLabels"] == revision_selector(
        NAME, baseline_revision(STABLE)
    )
    pools.gateway_reports()
    wait_for("the split held", lambda: pools.held(Weights.of(15, 15)) is None, timeout=60)
    stable = pools.obj(POOL, f"{NAME}-stable")
    assert stable is not None

    # Promotion: both Services and pools point at the canary's pods; the baseline goes.
    pools.router.reconcile(pools.owner, pools.spec, Weights.of(0), pools.backends(CANARY, CANARY))
    promoted = pools.obj(POOL, f"{NAME}-stable")
    assert promoted is not None
    assert promoted["metadata"]["uid"] == stable["metadata"]["uid"]  # the same pool
    assert promoted["spec"]["selector"]["matchLabels"] == revision_selector(NAME, CANARY)
    assert promoted["metadata"]["generation"] > stable["metadata"]["generation"]
    # The route no longer weights the baseline's pool; the pool goes once the Gateway has
    # taken that route (until then it may still send it requests).
    assert pools.obj(POOL, f"{NAME}-baseline") is not None
    pools.gateway_reports()
    promote = pools.backends(CANARY, CANARY)
    pools.router.reconcile(pools.owner, pools.spec, Weights.of(0), promote)
    wait_for(
        "the baseline's pool and picker gone",
        lambda: (
            pools.obj(POOL, f"{NAME}-baseline") is None
            and pools.obj(("apps/v1", "Deployment"), f"{NAME}-baseline-epp") is None
        ),
        timeout=30,
    )
    assert pools.router.get_weights(pools.owner) == Weights(100, 0)


def test_finalize_and_deletion_clean_up(pools: Pools, kubectl: Kubectl) -> None:
    pools.workloads(stable=1, canary=0)
    backends = pools.backends(STABLE, STABLE)
    pools.reconcile(Weights.of(0), backends)
    pools.router.finalize(pools.owner)
    assert pools.obj(ROUTE, NAME) is None
    assert pools.obj(POOL, f"{NAME}-stable") is None
    assert pools.obj(("v1", "ServiceAccount"), f"{NAME}-endpoint-picker") is None
    assert pools.router.get_weights(pools.owner) is None

    # Deleting the LLMDeployment takes everything the router made with it.
    pools.reconcile(Weights.of(0), backends)
    assert pools.obj(POOL, f"{NAME}-canary") is not None
    ns = pools.owner.namespace
    kubectl.run("delete", "llmd", NAME, "-n", ns, "--wait=true", "--timeout=60s")

    def leftovers() -> list[str]:
        kinds = "inferencepools,httproutes,deployments,services,serviceaccounts,roles,rolebindings"
        out = kubectl.run(
            "get", kinds, "-n", ns, "-o", "name", "-l", "app.kubernetes.io/managed-by=llmcanary"
        )
        return [line for line in out.stdout.split() if line]

    wait_for("the router's objects garbage-collected", lambda: not leftovers(), timeout=60)
