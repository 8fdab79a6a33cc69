"""Preflight end to end: the real operator process against the real API server, its KWOK
GPU nodes (GFD labels, ``nvidia.com/gpu`` capacity) and HTTP dependencies served here.

Each test brings revision 1 to Stable, then applies a revision 2 that preflight must stop
(or let through), and checks what a user sees: ``status.preflight``, the
``PreflightPassed`` condition, the Event, and ``kubectl get llmd``. A stopped canary never
gets traffic and keeps no pod.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import argocd_lua
import pytest
import yaml
from kubectl import ROOT, Kubectl, OperatorProcess, gpu_hog, wait_for
from metrics import free_port

from llmcanary.api.spec import LLMDeploymentSpec
from llmcanary.rollout.revision import revision_of

pytestmark = pytest.mark.k8s

NAME = "chat"
SLOW_S = 1.5  # how long the slow dependency takes to answer
# A 1B-parameter fp16 model with a small KV cache: about 3 GiB per pod, fits any node.
SMALL = {
    "parameters": 1e9,
    "dtype": "fp16",
    "layers": 16,
    "kvHeads": 8,
    "headDim": 64,
    "maxSequenceLength": 2048,
}


class DependencyServer:
    """What a model server depends on, served here: ``/healthz`` answers 200 at once,
    ``/slow`` after SLOW_S seconds. No request body is ever sent back."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                if self.path.startswith("/slow"):
                    time.sleep(SLOW_S)
                code = 200 if self.path.startswith(("/healthz", "/slow")) else 404
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def dependency() -> Iterator[DependencyServer]:
    server = DependencyServer()
    yield server
    server.close()


@pytest.fixture
def operator_env() -> dict[str, str]:
    # The dependencies here live on 127.0.0.1, which a platform team would never allow;
    # the canary's own Triton readiness check is exercised by test_canary.py.
    return {
        "LLMCANARY_PREFLIGHT_ALLOWED_HOSTS": '["127.0.0.1"]',
        "LLMCANARY_CANARY_READY_CHECK": "false",
    }


def manifest(version: str, dependencies: list[dict[str, Any]]) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((ROOT / "examples" / "tiny-llm.yaml").read_text())
    doc["metadata"]["name"] = NAME
    spec = doc["spec"]
    spec["model"]["version"] = version
    spec["model"]["sizing"] = dict(SMALL)
    spec["replicas"] = 2
    spec["canary"] = {
        "initialStepInterval": "1h",  # the all-green canary stays at its first weight
        "stepInterval": "1h",
        "analysis": {"interval": "2s", "prometheus": {"address": "http://127.0.0.1:9"}},
    }
    spec["preflight"] = {"dependencies": dependencies}
    return doc


def status(kubectl: Kubectl, namespace: str) -> dict[str, Any]:
    obj = kubectl.get("llmd", NAME, namespace)
    assert obj is not None
    found: dict[str, Any] = obj.get("status", {})
    return found


def status_when(kubectl: Kubectl, namespace: str, **expected: Any) -> dict[str, Any] | None:
    """The status, once it has every ``expected`` field value; else None."""
    st = status(kubectl, namespace)
    return st if all(st.get(k) == v for k, v in expected.items()) else None


def condition(st: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in st.get("conditions", []) if c["type"] == kind)


def events(kubectl: Kubectl, namespace: str, reason: str) -> list[dict[str, Any]]:
    return [e for e in kubectl.list("event", namespace) if e.get("reason") == reason]


def get_llmd_row(kubectl: Kubectl, namespace: str) -> dict[str, str]:
    """``kubectl get llmd NAME`` as the user reads it: header -> cell."""
    out = kubectl.run("get", "llmd", NAME, "-n", namespace).stdout
    print(out)
    header, row = out.splitlines()[:2]
    starts = [i for i, c in enumerate(header) if c != " " and (i == 0 or header[i - 1] == " ")]
    ends = [*starts[1:], None]
    return {header[a:b].strip(): row[a:b].strip() for a, b in zip(starts, ends, strict=True)}


@pytest.fixture
def stable(
    kubectl: Kubectl, operator: OperatorProcess, namespace: str, dependency: DependencyServer
) -> dict[str, Any]:
    """Revision 1, Stable, with one healthy dependency."""
    doc = manifest("1", [{"name": "feature-store", "url": dependency.url("/healthz")}])
    kubectl.apply(doc, namespace)
    wait_for("revision 1 Stable", lambda: status(kubectl, namespace).get("phase") == "Stable")
    return doc


def roll_out(kubectl: Kubectl, namespace: str, doc: dict[str, Any]) -> str:
    kubectl.apply(doc, namespace)
    return revision_of(LLMDeploymentSpec.model_validate(doc["spec"]))


def assert_stopped(
    kubectl: Kubectl, namespace: str, stable_doc: dict[str, Any], canary: str, why: str
) -> dict[str, Any]:
    """The rollout of ``canary`` is stopped by preflight, visibly and without traffic."""
    st = wait_for(
        "preflight to fail",
        lambda: status_when(kubectl, namespace, phase="Failed"),
        timeout=60,
    )
    print(json.dumps(st["preflight"], indent=2))
    preflight = st["preflight"]
    assert (preflight["revision"], preflight["passed"]) == (canary, False)
    assert why in preflight["reason"]
    assert st["message"] == f"preflight failed: {preflight['reason']}"
    passed = condition(st, "PreflightPassed")
    assert (passed["status"], passed["reason"]) == ("False", "Failed")
    assert why in passed["message"]
    degraded = condition(st, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "PreflightFailed")
    assert st["history"][-1]["outcome"] == "Failed"
    assert st["history"][-1]["revision"] == canary
    # No traffic and no pod for the canary; the stable revision serves on, untouched.
    assert st["canaryWeight"] == 0
    route = kubectl.get("httproute", NAME, namespace)
    assert route is not None
    weights = {r["name"]: r["weight"] for r in route["spec"]["rules"][0]["backendRefs"]}
    assert weights == {f"{NAME}-stable": 100, f"{NAME}-canary": 0}
    deployment = kubectl.get("deployment", f"{NAME}-{canary}", namespace)
    assert deployment is None or deployment["spec"]["replicas"] == 0
    stable_rev = revision_of(LLMDeploymentSpec.model_validate(stable_doc["spec"]))
    assert st["stableRevision"] == stable_rev
    assert st["readyReplicas"] == 2
    warnings = events(kubectl, namespace, "PreflightFailed")
    assert [e["type"] for e in warnings] == ["Warning"]
    assert why in warnings[0]["message"]
    row = get_llmd_row(kubectl, namespace)
    assert (row["PHASE"], row["STABLE"], row["CANARY"], row["WEIGHT"]) == (
        "Failed",
        stable_rev,
        canary,
        "0",
    )
    # Argo CD shows it Degraded, with the reason, and offers retry (argocd/ health.lua).
    obj = kubectl.get("llmd", NAME, namespace)
    assert obj is not None
    health = argocd_lua.health(obj)
    assert health["status"] == "Degraded" and why in health["message"]
    assert argocd_lua.discovery(obj)["retry"] and not argocd_lua.discovery(obj)["promote"]
    return st


# --- what preflight stops ------------------------------------------------------------


def too_large(doc: dict[str, Any], dependency: DependencyServer) -> str:
    doc["spec"]["model"]["sizing"]["parameters"] = 70e9  # 130 GiB of fp16 weights
    return "GPU memory: needs "


def dependency_down(doc: dict[str, Any], dependency: DependencyServer) -> str:
    closed = f"http://127.0.0.1:{free_port()}/healthz"
    doc["spec"]["preflight"]["dependencies"].append(
        {"name": "vector-db", "url": closed, "timeoutMilliseconds": 300}
    )
    return "dependency vector-db: "


def dependency_slow(doc: dict[str, Any], dependency: DependencyServer) -> str:
    doc["spec"]["preflight"]["dependencies"].append(
        {"name": "reranker", "url": dependency.url("/slow"), "timeoutMilliseconds": 300}
    )
    return "dependency reranker: timed out after 300 ms"


def dependency_not_allowed(doc: dict[str, Any], dependency: DependencyServer) -> str:
    doc["spec"]["preflight"]["dependencies"].append(
        {"name": "metadata", "url": "http://169.254.169.254/latest/meta-data/"}
    )
    return "dependency metadata: host 169.254.169.254 is not in the operator's allowlist"


def env_change(doc: dict[str, Any], dependency: DependencyServer) -> str:
    doc["spec"]["env"].append({"name": "TOKENIZER_PARALLELISM", "value": "true"})
    doc["spec"]["triton"]["maxBatchSize"] = 16
    return "environment differs outside preflight.envDiff.allowedDifferences"


@pytest.mark.parametrize(
    "change",
    [too_large, dependency_down, dependency_slow, dependency_not_allowed, env_change],
    ids=lambda f: f.__name__,
)
def test_preflight_stops_the_canary_before_any_traffic(
    kubectl: Kubectl,
    namespace: str,
    stable: dict[str, Any],
    dependency: DependencyServer,
    change: Callable[[dict[str, Any], DependencyServer], str],
) -> None:
    doc = manifest("2", copy.deepcopy(stable["spec"]["preflight"]["dependencies"]))
    why = change(doc, dependency)
    canary = roll_out(kubectl, namespace, doc)
    st = assert_stopped(kubectl, namespace, stable, canary, why)
    preflight = st["preflight"]
    healthy = next(d for d in preflight["dependencies"] if d["name"] == "feature-store")
    assert healthy["ok"] and healthy["statusCode"] == 200 and healthy["latencyMs"] >= 0
    if change is too_large:
        gpu = preflight["gpuMemory"]
        assert gpu["fits"] is False
        assert "the largest GPU node type, NVIDIA-H100-80GB-HBM3" in gpu["message"]
        assert gpu["requiredGiB"] > gpu["availableGiB"] > 0
    if change is dependency_slow:
        slow = next(d for d in preflight["dependencies"] if d["name"] == "reranker")
        assert not slow["ok"] and slow.get("statusCode") is None
    if change is env_change:
        refused = {d["key"]: d for d in preflight["envDiff"] if not d["allowed"]}
        assert set(refused) == {"env.TOKENIZER_PARALLELISM", "triton.maxBatchSize"}
        assert (
            refused["triton.maxBatchSize"]["stable"],
            refused["triton.maxBatchSize"]["canary"],
        ) == (
            "8",
            "16",
        )
        allowed = {d["key"] for d in preflight["envDiff"] if d["allowed"]}
        assert "model.version" in allowed
        assert "env.TOKENIZER_PARALLELISM (- -> true)" in st["preflight"]["reason"]


def _gpu_holders(kubectl: Kubectl) -> tuple[dict[str, int], bool]:
    """Free GPUs per GPU node, and whether anything is still being deleted (a namespace
    or a pod) that would free some later."""
    nodes = json.loads(kubectl.run("get", "nodes", "-o", "json").stdout)["items"]
    pods = json.loads(kubectl.run("get", "pods", "-A", "-o", "json").stdout)["items"]
    spaces = json.loads(kubectl.run("get", "namespaces", "-o", "json").stdout)["items"]
    free = {
        n["metadata"]["name"]: int(n["status"]["allocatable"].get("nvidia.com/gpu", "0"))
        for n in nodes
    }
    free = {node: gpus for node, gpus in free.items() if gpus}
    # Namespaces of earlier tests may stay Terminating (an LLMDeployment's finalizer with no
    # operator left to remove it); what matters is that their pods are gone.
    leaving = {
        ns["metadata"]["name"] for ns in spaces if ns["status"].get("phase") == "Terminating"
    }
    settling = False
    for pod in pods:
        node = pod["spec"].get("nodeName")
        settling |= bool(pod["metadata"].get("deletionTimestamp"))
        settling |= pod["metadata"]["namespace"] in leaving
        if node in free and pod["status"].get("phase") not in ("Succeeded", "Failed"):
            for c in pod["spec"]["containers"]:
                free[node] -= int(c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0))
    return free, settling


def _settled_free_gpus(kubectl: Kubectl) -> dict[str, int] | None:
    free, settling = _gpu_holders(kubectl)
    return None if settling else free


@pytest.fixture
def every_free_gpu_taken(
    kubectl: Kubectl, namespace: str, stable: dict[str, Any]
) -> Iterator[dict[str, int]]:
    """Once revision 1 runs: plain pods bound to each GPU node that hold every GPU still
    free there."""
    free = wait_for(
        "earlier tests' pods to be gone",
        lambda: _settled_free_gpus(kubectl),
        timeout=120,
    )
    for node, gpus in free.items():
        if gpus > 0:
            kubectl.apply(gpu_hog(node, gpus), namespace)
    assert all(gpus == 0 for gpus in _gpu_holders(kubectl)[0].values())
    yield free
    hogs = [f"hog-{node}" for node, gpus in free.items() if gpus > 0]
    kubectl.run("delete", "pod", *hogs, "-n", namespace, "--timeout=60s", check=False)


def test_too_few_free_gpus_for_the_first_canary_replica(
    kubectl: Kubectl,
    namespace: str,
    stable: dict[str, Any],
    every_free_gpu_taken: dict[str, int],
    dependency: DependencyServer,
) -> None:
    print(f"GPUs taken: {every_free_gpu_taken}")
    doc = manifest("2", copy.deepcopy(stable["spec"]["preflight"]["dependencies"]))
    canary = roll_out(kubectl, namespace, doc)
    # The first step's pods: one canary and one fresh baseline.
    why = "GPU memory: 2 GPUs needed for the first canary and baseline replica(s) (2 x 1), 0 free"
    st = assert_stopped(kubectl, namespace, stable, canary, why)
    gpu = st["preflight"]["gpuMemory"]
    assert (gpu["fits"], gpu["gpusNeeded"], gpu["gpusFree"]) == (False, 2, 0)
    assert "free GPUs on those nodes or add GPU nodes" in gpu["message"]


def test_a_secret_change_is_reported_as_changed_and_its_values_are_never_shown(
    kubectl: Kubectl, namespace: str, operator: OperatorProcess, dependency: DependencyServer
) -> None:
    values = {"api-keys-v1": "sk-first-7f3a9c", "api-keys-v2": "sk-second-b81d02"}
    for secret, value in values.items():
        kubectl.run(
            "create", "secret", "generic", secret, f"--from-literal=token={value}", "-n", namespace
        )
    deps = [{"name": "feature-store", "url": dependency.url("/healthz")}]

    def with_secret(version: str, secret: str) -> dict[str, Any]:
        doc = manifest(version, copy.deepcopy(deps))
        doc["spec"]["env"].append(
            {"name": "API_TOKEN", "valueFrom": {"secretKeyRef": {"name": secret, "key": "token"}}}
        )
        return doc

    stable_doc = with_secret("1", "api-keys-v1")
    kubectl.apply(stable_doc, namespace)
    wait_for("revision 1 Stable", lambda: status(kubectl, namespace).get("phase") == "Stable")
    canary = roll_out(kubectl, namespace, with_secret("2", "api-keys-v2"))
    st = assert_stopped(kubectl, namespace, stable_doc, canary, "env.API_TOKEN")
    token = next(d for d in st["preflight"]["envDiff"] if d["key"] == "env.API_TOKEN")
    assert token["masked"] is True and token["allowed"] is False
    assert "(secret" in (token["stable"] or "") and "changed" in (token["canary"] or "")
    # Neither value, nor its base64 form, anywhere a user or a log collector could see.
    seen = json.dumps(st) + json.dumps(kubectl.list("event", namespace))
    seen += "\n".join(operator.log_lines())
    for value in values.values():
        assert value not in seen
        assert base64.b64encode(value.encode()).decode() not in seen


# --- what preflight lets through ------------------------------------------------------


def test_an_all_green_preflight_lets_the_canary_take_its_first_weight(
    kubectl: Kubectl,
    namespace: str,
    stable: dict[str, Any],
    dependency: DependencyServer,
) -> None:
    deps = copy.deepcopy(stable["spec"]["preflight"]["dependencies"])
    deps.append(
        {"name": "tcp-cache", "url": f"tcp://127.0.0.1:{dependency.server.server_address[1]}"}
    )
    doc = manifest("2", deps)
    doc["spec"]["env"][0]["value"] = "0.5"  # MODEL_TEMPERATURE: env.MODEL_* is allowed
    canary = roll_out(kubectl, namespace, doc)
    st = wait_for(
        "the canary at 5%",
        lambda: status_when(kubectl, namespace, canaryWeight=5),
        timeout=60,
    )
    print(json.dumps(st["preflight"], indent=2))
    preflight = st["preflight"]
    assert (preflight["revision"], preflight["passed"], preflight.get("reason")) == (
        canary,
        True,
        None,
    )
    assert {d["name"]: d["ok"] for d in preflight["dependencies"]} == {
        "feature-store": True,
        "tcp-cache": True,
    }
    assert {d["key"]: d["allowed"] for d in preflight["envDiff"]} == {
        "model.version": True,
        "env.MODEL_TEMPERATURE": True,
    }
    gpu = preflight["gpuMemory"]
    assert gpu["fits"] is True and gpu["availableGiB"] >= gpu["requiredGiB"] > 2
    assert gpu["nodeType"] in ("NVIDIA-H100-80GB-HBM3", "NVIDIA-A100-SXM4-40GB")
    passed = condition(st, "PreflightPassed")
    assert (passed["status"], passed["reason"]) == ("True", "Passed")
    assert [e["type"] for e in events(kubectl, namespace, "PreflightPassed")] == ["Normal"]
    assert events(kubectl, namespace, "PreflightFailed") == []
    row = get_llmd_row(kubectl, namespace)
    assert (row["PHASE"], row["CANARY"], row["WEIGHT"]) == ("Progressing", canary, "5")
    route = kubectl.get("httproute", NAME, namespace)
    assert route is not None
    weights = {r["name"]: r["weight"] for r in route["spec"]["rules"][0]["backendRefs"]}
    # The fresh baseline takes the canary's weight.
    assert weights == {f"{NAME}-stable": 90, f"{NAME}-canary": 5, f"{NAME}-baseline": 5}


def test_a_failed_preflight_runs_again_when_the_spec_changes_and_not_before(
    kubectl: Kubectl, namespace: str, stable: dict[str, Any], dependency: DependencyServer
) -> None:
    deps = copy.deepcopy(stable["spec"]["preflight"]["dependencies"])
    broken = manifest("2", [*deps, {"name": "reranker", "url": dependency.url("/nothing")}])
    canary = roll_out(kubectl, namespace, broken)
    st = assert_stopped(kubectl, namespace, stable, canary, "dependency reranker: HTTP 404")
    first_check = st["preflight"]["checkedAt"]
    time.sleep(5)  # more than two analysis intervals: the failed revision is not re-checked
    assert status(kubectl, namespace)["preflight"]["checkedAt"] == first_check
    fixed = manifest("3", deps)
    fixed_rev = roll_out(kubectl, namespace, fixed)
    st = wait_for(
        "the fixed revision at 5%",
        lambda: status_when(kubectl, namespace, canaryWeight=5),
        timeout=60,
    )
    assert (st["canaryRevision"], st["preflight"]["revision"], st["preflight"]["passed"]) == (
        fixed_rev,
        fixed_rev,
        True,
    )
    assert condition(st, "PreflightPassed")["status"] == "True"


def test_the_cli_preflight_checks_a_manifest_against_the_live_stable_revision(
    kubectl: Kubectl, namespace: str, stable: dict[str, Any], tmp_path: Path
) -> None:
    before = kubectl.get("llmd", NAME, namespace)
    assert before is not None

    def preflight(doc: dict[str, Any]) -> tuple[int, str]:
        path = tmp_path / "deployment.yaml"
        path.write_text(yaml.safe_dump(doc))
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "llmcanary",
                "preflight",
                "-f",
                str(path),
                "--kubeconfig",
                str(kubectl.kubeconfig),
                "-n",
                namespace,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        print(done.stdout, done.stderr)
        return done.returncode, done.stdout

    allowed = manifest("2", copy.deepcopy(stable["spec"]["preflight"]["dependencies"]))
    code, out = preflight(allowed)
    assert code == 0
    assert "schema (server)  ok      accepted by the API server (dry run)" in out
    assert re.search(r"gpu memory\s+ok\s+needs \d+\.\d GiB per pod", out)
    assert re.search(r"env diff\s+ok\s+1 difference\(s\), all allowed", out)
    assert re.search(r"model\.version\s+1\s+2\s+allowed", out)

    refused = copy.deepcopy(allowed)
    refused["spec"]["env"].append({"name": "TOKENIZER_PARALLELISM", "value": "true"})
    refused["spec"]["triton"]["maxBatchSize"] = 16
    code, out = preflight(refused)
    assert code == 1
    assert re.search(r"env diff\s+FAIL\s+2 difference\(s\) outside", out)
    assert re.search(r"triton\.maxBatchSize\s+8\s+16\s+NOT ALLOWED", out)

    # Dry runs and reads only: the live object is exactly as it was.
    after = kubectl.get("llmd", NAME, namespace)
    assert after is not None
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert after["spec"] == before["spec"]
