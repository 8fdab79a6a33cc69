"""charts/llmcanary in the real local cluster, and the proof that its RBAC is enough and
no more.

The chart's pods are KWOK pods: they are scheduled and reported Running, but no container
runs here (no kubelet, no image). So the operator runs as a local process that
authenticates as the chart's ServiceAccount (a token from the TokenRequest API) and so
holds exactly the chart's ClusterRole: the canary flow of test_canary.py must succeed
under it, two such processes with --peering must leave exactly one working, and the
same rules minus one verb must give a clear error in the log and in status, not a crash.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubectl import Kubectl, OperatorProcess, canary_route_weight, wait_for
from metrics import PrometheusServer
from test_canary import (  # noqa: F401  (exporters: a fixture, used by name)
    NAME,
    WALK,
    WALK_TIMEOUT,
    exporters,
    manifest,
    revision,
    status,
    weight_changes,
)
from test_pool_router import TRAFFIC as POOL_TRAFFIC
from test_routers import Setup

import chart_render
from llmcanary.kube.client import Kube
from llmcanary.routing import Weights
from llmcanary.routing.inference_pool import PICKER_RULES

pytestmark = pytest.mark.k8s

RELEASE = "llmcanary"
RELEASE_NS = "llmcanary-system"
CHART = chart_render.CHART


def helm(kubectl: Kubectl, *args: str) -> str:
    return chart_render.helm(*args, env=kubectl.env, timeout=300).stdout


@dataclass(frozen=True)
class Release:
    namespace: str
    service_account: str
    cluster_role: str
    peering: str


@pytest.fixture(scope="module")
def release(kubectl: Kubectl) -> Iterator[Release]:
    """The chart installed with its defaults (no Prometheus Operator objects: the local
    cluster has no monitoring.coreos.com CRDs)."""
    helm(
        kubectl,
        "upgrade",
        "--install",
        RELEASE,
        str(CHART),
        "-n",
        RELEASE_NS,
        "--create-namespace",
        "--wait",
        "--timeout",
        "120s",
    )
    yield Release(RELEASE_NS, RELEASE, RELEASE, RELEASE)
    helm(kubectl, "uninstall", RELEASE, "-n", RELEASE_NS, "--wait")


def token_kubeconfig(
    kubectl: Kubectl, cluster: Any, namespace: str, account: str, path: Path
) -> Path:
    """A kubeconfig that authenticates as ServiceAccount ``namespace/account``."""
    token = kubectl.run(
        "create", "token", account, "-n", namespace, "--duration", "2h"
    ).stdout.strip()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "dev",
                "cluster": {
                    "server": cluster.server,
                    "certificate-authority": str(cluster.ca_file),
                },
            }
        ],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "dev", "user": account}}],
        "current-context": "sa",
    }
    path.write_text(yaml.safe_dump(config))
    return path


def json_log(proc: OperatorProcess) -> list[dict[str, Any]]:
    out = []
    for line in proc.log_lines():
        try:
            out.append(json.loads(line))
        except ValueError:
            out.append({"message": line})
    return out


def messages(proc: OperatorProcess) -> list[str]:
    return [str(entry.get("message", "")) for entry in json_log(proc)]


def logged(proc: OperatorProcess, text: str) -> bool:
    return any(text in m for m in messages(proc))


# What the API server's RBAC says when it denies a request (the operator's Forbidden quotes
# it). Other 403s are not the chart's doing: with `-A` the operator also sees earlier tests'
# objects, whose namespaces may be terminating (writes there get 403 NamespaceTerminating),
# so "403" alone is no sign of missing rules.
RBAC_DENIAL = re.compile(r'forbidden: User \\*"[^"\\]+\\*" cannot')


def rbac_denials(proc: OperatorProcess) -> list[str]:
    return [m for m in messages(proc) if RBAC_DENIAL.search(m)]


def show(proc: OperatorProcess, label: str, lines: int = 25) -> None:
    print(f"--- {label} operator log (tail) ---")
    print("\n".join(proc.log_lines()[-lines:]))


def canary_flow(kubectl: Kubectl, namespace: str, prometheus: PrometheusServer) -> None:
    """test_canary's healthy rollout: revision 1 Stable, then revision 2 walked through
    every weight of its HTTPRoute and promoted."""
    v1 = manifest("1", prometheus=prometheus.url)
    kubectl.apply(v1, namespace)
    wait_for("revision 1 Stable", lambda: status(kubectl, namespace).get("phase") == "Stable", 90)
    v2 = manifest("2", prometheus=prometheus.url)
    kubectl.apply(v2, namespace)
    wait_for(
        "a canary with its HTTPRoute weight",
        lambda: (canary_route_weight(kubectl, namespace, NAME) or 0) > 0,
        timeout=90,
    )
    final = wait_for(
        "revision 2 promoted",
        lambda: (st := status(kubectl, namespace)).get("stableRevision") == revision(v2) and st,
        timeout=WALK_TIMEOUT,
    )
    assert final["phase"] == "Stable"
    assert final["history"][0]["outcome"] == "Promoted"
    assert weight_changes(kubectl, namespace) == WALK


def test_the_chart_installs_its_objects(kubectl: Kubectl, release: Release) -> None:
    ns = release.namespace
    deployment = kubectl.get("deployment", RELEASE, ns)
    assert deployment is not None
    assert deployment["spec"]["replicas"] == 2
    # --wait: both (KWOK) pods Ready; nothing runs in them here.
    assert deployment["status"].get("readyReplicas") == 2
    sa = kubectl.get("serviceaccount", release.service_account, ns)
    assert sa is not None
    pdb = kubectl.get("poddisruptionbudget", RELEASE, ns)
    assert pdb is not None and pdb["spec"]["minAvailable"] == 1
    role = json.loads(kubectl.run("get", "clusterrole", release.cluster_role, "-o", "json").stdout)
    assert role["rules"], role
    binding = json.loads(
        kubectl.run("get", "clusterrolebinding", release.cluster_role, "-o", "json").stdout
    )
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": release.service_account, "namespace": ns}
    ]
    for crd in (
        "llmdeployments.llmcanary.io",
        "clusterkopfpeerings.kopf.dev",
        "kopfpeerings.kopf.dev",
    ):
        kubectl.run("wait", "--for=condition=Established", "--timeout=30s", f"crd/{crd}")
    kubectl.run("get", "clusterkopfpeering", release.peering)
    dashboard = kubectl.get("configmap", f"{RELEASE}-dashboard", ns)
    assert dashboard is not None
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"


def can_i(kubeconfig: Path, kubectl: Kubectl, *args: str) -> str:
    done = subprocess.run(
        [kubectl.binary, "auth", "can-i", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        timeout=30,
    )
    return done.stdout.strip()


def test_the_canary_flow_runs_under_the_charts_service_account_with_one_active_peer(
    kubectl: Kubectl,
    cluster: Any,
    crd: None,
    release: Release,
    namespace: str,
    prometheus: PrometheusServer,
    exporters: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    config = token_kubeconfig(
        kubectl, cluster, release.namespace, release.service_account, tmp_path / "sa.kubeconfig"
    )
    # What it must not do (and can: a sanity check of the token kubeconfig).
    denied = {
        ("delete", "secrets"): can_i(config, kubectl, "delete", "secrets", "-n", namespace),
        ("list", "secrets"): can_i(config, kubectl, "list", "secrets", "-n", namespace),
        ("create", "pods/exec"): can_i(config, kubectl, "create", "pods/exec", "-n", namespace),
        ("create", "pods"): can_i(config, kubectl, "create", "pods", "-n", namespace),
        ("delete", "namespaces"): can_i(config, kubectl, "delete", "namespaces"),
        ("update", "clusterroles"): can_i(config, kubectl, "update", "clusterroles"),
        ("delete", "llmdeployments"): can_i(
            config, kubectl, "delete", "llmdeployments", "-n", namespace
        ),
    }
    print(f"kubectl auth can-i as the chart's ServiceAccount: {denied}")
    assert set(denied.values()) == {"no"}, denied
    assert can_i(config, kubectl, "patch", "httproutes", "-n", namespace) == "yes"

    # The chart's arguments, with priorities chosen here (the chart draws random ones):
    # the first peer works alone, then a higher one arrives and takes over.
    serve = ["-A", "--peering", release.peering]
    first = OperatorProcess(
        config, namespace, tmp_path / "op1.log", serve=[*serve, "--priority", "100"]
    ).start()
    second = None
    try:
        wait_for("peer 1 working", lambda: logged(first, "Resuming operations"), timeout=60)
        second = OperatorProcess(
            config, namespace, tmp_path / "op2.log", serve=[*serve, "--priority", "200"]
        ).start()
        wait_for("peer 2 working", lambda: logged(second, "Resuming operations"), timeout=60)
        wait_for(
            "peer 1 paused for peer 2",
            lambda: logged(first, "Pausing operations in favour of"),
            timeout=60,
        )
        active, passive = second, first
        peering = json.loads(
            kubectl.run("get", "clusterkopfpeering", release.peering, "-o", "json").stdout
        )
        print(f"ClusterKopfPeering status: {json.dumps(peering.get('status'))}")
        live = {p["priority"] for p in peering["status"].values() if p["lifetime"] > 0}
        assert live == {100, 200}

        canary_flow(kubectl, namespace, prometheus)

        assert active.proc is not None and active.proc.poll() is None
        assert passive.proc is not None and passive.proc.poll() is None

        def work(proc: OperatorProcess) -> list[str]:
            """What ``proc`` changed in this test's namespace, from its log. With -A, peer 1
            (alone at first) may also have worked on what earlier tests left in terminating
            namespaces, under the same LLMDeployment name: that is not this test's object."""
            return [
                m
                for m in messages(proc)
                if m.startswith(("created ", "updated ", "resized ")) and f"{namespace}/" in m
            ]

        assert work(active), "the active peer did no work"
        assert work(passive) == [], work(passive)
        for proc in (active, passive):
            assert rbac_denials(proc) == [], rbac_denials(proc)
    finally:
        for proc, label in ((first, "peer 1"), (second, "peer 2")):
            if proc is not None:
                proc.stop()
                show(proc, label, 8)


@dataclass(frozen=True)
class Missing:
    """One verb taken away from the chart's rules, and what the operator must say."""

    resource: str
    group: str
    verb: str
    says: str  # how the operator names the call
    rbac: str  # the RBAC verb it names
    degraded: bool  # whether the pass got as far as deciding (sets Degraded)


MISSING = [
    # Acting: server-side apply of the HTTPRoute (after the Deployment and Services).
    Missing(
        "httproutes",
        "gateway.networking.k8s.io",
        "patch",
        "may not apply HTTPRoute",
        "(RBAC verb: patch, and create for a new object)",
        degraded=True,
    ),
    # Observing: reading the revision's Deployment (kopf's list/watch still works).
    Missing("deployments", "apps", "get", "may not get Deployment", "(RBAC verb: get)", False),
]


@pytest.mark.parametrize("missing", MISSING, ids=lambda m: f"no-{m.verb}-{m.resource}")
def test_a_missing_permission_is_a_clear_error_in_log_and_status_not_a_crash(
    kubectl: Kubectl,
    cluster: Any,
    crd: None,
    release: Release,
    namespace: str,
    tmp_path: Path,
    missing: Missing,
) -> None:
    """The chart's rules minus one verb, bound to a ServiceAccount of its own."""
    crippled = f"llmcanary-no-{missing.resource}-{missing.verb}"
    role = json.loads(kubectl.run("get", "clusterrole", release.cluster_role, "-o", "json").stdout)
    rules = []
    for rule in role["rules"]:
        if rule["resources"] == [missing.resource] and rule["apiGroups"] == [missing.group]:
            rule = {**rule, "verbs": [v for v in rule["verbs"] if v != missing.verb]}
        rules.append(rule)
    objects = [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": crippled, "namespace": release.namespace},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": crippled},
            "rules": rules,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": crippled},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": crippled,
            },
            "subjects": [
                {"kind": "ServiceAccount", "name": crippled, "namespace": release.namespace}
            ],
        },
    ]
    kubectl.apply({"apiVersion": "v1", "kind": "List", "items": objects}, release.namespace)
    config = token_kubeconfig(kubectl, cluster, release.namespace, crippled, tmp_path / "k")
    wait_for(
        "the binding to take effect",
        lambda: can_i(config, kubectl, "list", missing.resource, "-n", namespace) == "yes",
    )
    assert can_i(config, kubectl, missing.verb, missing.resource, "-n", namespace) == "no"

    proc = OperatorProcess(config, namespace, tmp_path / "operator.log", serve=["-A"]).start()
    try:
        kubectl.apply(manifest("1", prometheus="http://127.0.0.1:9"), namespace)
        st = wait_for(
            "the Forbidden error in status",
            lambda: missing.says in ((s := status(kubectl, namespace)).get("message") or "") and s,
            timeout=60,
        )
        message = st["message"]
        print(f"status.message: {message}")
        assert missing.rbac in message
        said = f'cannot {missing.verb} resource "{missing.resource}" in API group'
        assert f'{said} "{missing.group}" in the namespace "{namespace}"' in message
        assert "ClusterRole" in message
        if missing.degraded:
            degraded = next(c for c in st["conditions"] if c["type"] == "Degraded")
            assert (degraded["status"], degraded["reason"]) == ("True", "Forbidden")
        events = [
            e
            for e in kubectl.list("event", namespace)
            if e.get("reason") == "Forbidden" and e["involvedObject"]["name"] == NAME
        ]
        assert events and events[0]["type"] == "Warning"
        assert events[0]["message"] == message
        # Still alive and still trying (each pass logs it again), never a crash loop.
        found = wait_for(
            "the error logged on two passes",
            lambda: (
                (
                    hits := [
                        e
                        for e in json_log(proc)
                        if missing.says in (text := str(e.get("message"))) and namespace in text
                    ]
                )[1:]
                and hits
            ),
            timeout=60,
        )
        print(f"operator log: {json.dumps(found[0])}")
        assert found[0]["severity"] == "warn" and found[0]["reason"] == "Forbidden"
        # The detector the chart tests rely on sees a real RBAC denial.
        assert any(missing.says in m for m in rbac_denials(proc)), rbac_denials(proc)
        assert proc.proc is not None and proc.proc.poll() is None, "the operator exited"
        tracebacks = [e for e in json_log(proc) if "Traceback" in json.dumps(e)]
        assert tracebacks == [], tracebacks[:1]
    finally:
        proc.stop()
        show(proc, "crippled", 4)
        kubectl.run("delete", "clusterrolebinding,clusterrole", crippled, check=False)
        kubectl.run("delete", "serviceaccount", crippled, "-n", release.namespace, check=False)


def test_the_namespaced_mode_runs_the_canary_flow_under_its_roles(
    kubectl: Kubectl,
    cluster: Any,
    crd: None,
    release: Release,  # the CRDs, installed by the first release
    namespace: str,
    prometheus: PrometheusServer,
    exporters: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    """watchNamespaces: a Role in the served namespace, a small ClusterRole, a KopfPeering."""
    name, system = "llmcanary-ns", "llmcanary-ns-system"
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"watchNamespaces": [namespace]}))
    helm(
        kubectl,
        *("upgrade", "--install", name, str(CHART), "-n", system, "--create-namespace"),
        *("-f", str(values), "--wait", "--timeout", "120s"),
    )
    proc = None
    try:
        assert kubectl.get("role", name, namespace) is not None
        assert kubectl.get("kopfpeering", name, namespace) is not None
        config = token_kubeconfig(kubectl, cluster, system, name, tmp_path / "sa.kubeconfig")
        wait_for(
            "the Role to take effect",
            lambda: can_i(config, kubectl, "patch", "httproutes", "-n", namespace) == "yes",
        )
        elsewhere = {
            ("patch", "httproutes", "default"): can_i(
                config, kubectl, "patch", "httproutes", "-n", "default"
            ),
            ("get", "secrets", "default"): can_i(
                config, kubectl, "get", "secrets", "-n", "default"
            ),
            ("list", "llmdeployments", "all"): can_i(
                config, kubectl, "list", "llmdeployments", "-A"
            ),
        }
        print(f"kubectl auth can-i outside {namespace}: {elsewhere}")
        assert set(elsewhere.values()) == {"no"}, elsewhere

        proc = OperatorProcess(
            config, namespace, tmp_path / "op.log", serve=["-n", namespace, "--peering", name]
        ).start()
        wait_for("the operator working", lambda: logged(proc, "Resuming operations"), 60)
        canary_flow(kubectl, namespace, prometheus)
        assert rbac_denials(proc) == [], rbac_denials(proc)
    finally:
        if proc is not None:
            proc.stop()
            show(proc, "namespaced", 6)
        helm(kubectl, "uninstall", name, "-n", system, "--wait")


def test_the_inference_pool_rules_let_the_router_run_its_pickers(
    kubectl: Kubectl,
    cluster: Any,
    crd: None,
    release: Release,  # the CRDs, installed by the first release
    namespace: str,
    tmp_path: Path,
) -> None:
    """rbac.inferencePool: the router's pools, pickers and the pickers' Role (which the API
    server lets the operator create only if it holds every rule in it) under exactly the
    chart's rules, and nothing of it without them."""
    name, system = "llmcanary-pools", "llmcanary-pools-system"
    helm(
        kubectl,
        *("upgrade", "--install", name, str(CHART), "-n", system, "--create-namespace"),
        *("--set", "rbac.inferencePool=true", "--wait", "--timeout", "120s"),
    )
    try:
        config = token_kubeconfig(kubectl, cluster, system, name, tmp_path / "sa.kubeconfig")
        wait_for(
            "the ClusterRole to take effect",
            lambda: can_i(config, kubectl, "create", "inferencepools", "-n", namespace) == "yes",
        )
        # Granting a Role, not binding one it does not hold: no bind or escalate.
        for verb, resource in (("bind", "roles"), ("escalate", "roles")):
            assert can_i(config, kubectl, verb, resource, "-n", namespace) == "no"
        pools = Setup(
            Kube.from_kubeconfig(str(config)),
            kubectl,
            namespace,
            "inferencePool",
            traffic=POOL_TRAFFIC,
        )
        pools.workloads(stable=1, canary=1)
        pools.reconcile(Weights.of(5))
        role = kubectl.get("role", f"{NAME}-endpoint-picker", namespace)
        assert role is not None and role["rules"] == PICKER_RULES
        assert kubectl.get("deployment", f"{NAME}-canary-epp", namespace) is not None
        assert pools.router.get_weights(pools.owner) == Weights.of(5)
        pools.router.finalize(pools.owner)
        assert kubectl.get("inferencepool", f"{NAME}-canary", namespace) is None
        assert kubectl.get("role", f"{NAME}-endpoint-picker", namespace) is None
    finally:
        helm(kubectl, "uninstall", name, "-n", system, "--wait")
    # The default release (rbac.inferencePool false) may read pools, never write them.
    config = token_kubeconfig(
        kubectl, cluster, release.namespace, release.service_account, tmp_path / "d.kubeconfig"
    )
    assert can_i(config, kubectl, "watch", "inferencepools", "-n", namespace) == "yes"
    assert can_i(config, kubectl, "create", "inferencepools", "-n", namespace) == "no"
    assert can_i(config, kubectl, "create", "roles", "-n", namespace) == "no"
