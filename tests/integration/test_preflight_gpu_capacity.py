"""The GPU memory fit against the real API server and its KWOK GPU nodes.

The nodes carry what the NVIDIA device plugin and GPU Feature Discovery put on a real
node: gpu-node-a, 8 x NVIDIA-H100-80GB-HBM3 (81559 MiB each); gpu-node-b, 4 x
NVIDIA-A100-SXM4-40GB (40960 MiB). KWOK runs the pods bound to them, so pods that hold GPUs
are real objects the check must count. The opt-in probe's Job is created for real too,
but KWOK never runs its code: its result is covered by the unit tests.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml
from kubectl import ROOT, Kubectl, gpu_hog, wait_for
from kubernetes import client, config

from llmcanary.api.spec import LLMDeploymentSpec
from llmcanary.api.status import GpuFit
from llmcanary.builders import Owner
from llmcanary.config import OperatorConfig
from llmcanary.kube.client import Kube
from llmcanary.preflight.gpu_cluster import check_gpu_fit
from llmcanary.preflight.gpu_probe import LABEL_PROBE, run_probe

pytestmark = pytest.mark.k8s

H100 = "NVIDIA-H100-80GB-HBM3"
A100 = "NVIDIA-A100-SXM4-40GB"
NOW = datetime(2025, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def kube(cluster: Any) -> Kube:
    api_client = config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(cluster.kubeconfig), persist_config=False
    )
    return Kube(api_client)


def spec(sizing: dict[str, Any], **fields: Any) -> LLMDeploymentSpec:
    return LLMDeploymentSpec.model_validate(
        {"model": {"name": "m", "repository": "/models", "sizing": sizing}, **fields}
    )


LLAMA2_70B = {
    "parameters": 70e9,
    "dtype": "fp16",
    "layers": 80,
    "kvHeads": 8,
    "headDim": 128,
    "maxSequenceLength": 4096,
}
LLAMA2_7B = {
    "parameters": 7e9,
    "dtype": "fp16",
    "layers": 32,
    "kvHeads": 32,
    "headDim": 128,
    "maxSequenceLength": 4096,
}


def free_gpus(kubectl: Kubectl) -> dict[str, int]:
    """Allocatable minus what unfinished pods hold, per GPU node, as kubectl shows it."""
    nodes = json.loads(kubectl.run("get", "nodes", "-o", "json").stdout)["items"]
    pods = json.loads(kubectl.run("get", "pods", "-A", "-o", "json").stdout)["items"]
    free = {
        n["metadata"]["name"]: int(n["status"]["allocatable"].get("nvidia.com/gpu", "0"))
        for n in nodes
    }
    for pod in pods:
        node = pod["spec"].get("nodeName")
        if node in free and pod["status"].get("phase") not in ("Succeeded", "Failed"):
            for c in pod["spec"]["containers"]:
                free[node] -= int(c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0))
    return free


def test_a_70b_in_fp16_on_one_gpu_per_pod_does_not_fit(kube: Kube) -> None:
    fit = check_gpu_fit(kube, "default", spec(LLAMA2_70B, triton={"maxBatchSize": 1}), NOW)
    print(fit.model_dump_json(by_alias=True, indent=2))
    assert fit.fits is False
    assert fit.node_type == H100
    assert (fit.required_gi_b, fit.available_gi_b) == (144.8, 79.65)
    assert "set resources.gpus to 2 or more" in fit.message
    two = spec(LLAMA2_70B, triton={"maxBatchSize": 1}, resources={"gpus": 2})
    assert check_gpu_fit(kube, "default", two, NOW).fits is True


def test_a_7b_fits_on_the_h100_node_type(kube: Kube) -> None:
    # 12 sequences of 4096 tokens: 13.0 GiB of weights + 24 GiB of KV cache, + 10%.
    fit = check_gpu_fit(kube, "default", spec(LLAMA2_7B, triton={"maxBatchSize": 12}), NOW)
    print(fit.model_dump_json(by_alias=True, indent=2))
    assert fit.fits is True
    assert fit.node_type == H100
    assert fit.required_gi_b == 40.74
    assert fit.available_gi_b == 79.65
    # A short batch fits the smaller A100s, which the check prefers.
    small = check_gpu_fit(kube, "default", spec(LLAMA2_7B, triton={"maxBatchSize": 1}), NOW)
    assert (small.fits, small.node_type) == (True, A100)


def test_node_selector_for_a_product_that_exists_and_one_that_does_not(kube: Kube) -> None:
    on_a100 = spec(
        LLAMA2_7B, triton={"maxBatchSize": 1}, nodeSelector={"nvidia.com/gpu.product": A100}
    )
    fit = check_gpu_fit(kube, "default", on_a100, NOW)
    assert (fit.fits, fit.node_type, fit.available_gi_b) == (True, A100, 40.0)
    # The 12-sequence batch does not fit the A100s it is pinned to.
    pinned = spec(
        LLAMA2_7B, triton={"maxBatchSize": 12}, nodeSelector={"nvidia.com/gpu.product": A100}
    )
    too_big = check_gpu_fit(kube, "default", pinned, NOW)
    assert too_big.fits is False
    assert "the largest GPU node type, NVIDIA-A100-SXM4-40GB, has 40.0 GiB" in too_big.message
    missing = spec(LLAMA2_7B, nodeSelector={"nvidia.com/gpu.product": "NVIDIA-B200"})
    fit = check_gpu_fit(kube, "default", missing, NOW)
    print(fit.message)
    assert fit.fits is False
    assert fit.message.startswith(
        'no node matches nodeSelector {"nvidia.com/gpu.product": "NVIDIA-B200"}'
    )
    assert A100 in fit.message
    assert H100 in fit.message


def leaving_gpu_pods(kubectl: Kubectl) -> list[str]:
    """Pods on the GPU nodes that are on their way out: deleted, or in a namespace an
    earlier test deleted. They still hold their GPUs, for a moment."""
    pods = json.loads(kubectl.run("get", "pods", "-A", "-o", "json").stdout)["items"]
    namespaces = json.loads(kubectl.run("get", "namespaces", "-o", "json").stdout)["items"]
    leaving = {n["metadata"]["name"] for n in namespaces if n["metadata"].get("deletionTimestamp")}
    return [
        f"{p['metadata']['namespace']}/{p['metadata']['name']}"
        for p in pods
        if str(p["spec"].get("nodeName", "")).startswith("gpu-node")
        and (p["metadata"].get("deletionTimestamp") or p["metadata"]["namespace"] in leaving)
    ]


@pytest.fixture
def gpu_hogs(kubectl: Kubectl, namespace: str) -> Iterator[dict[str, int]]:
    """Plain pods bound to the GPU nodes that leave one H100 and no A100 free."""
    # Counted while they go, earlier tests' pods would free GPUs the hogs did not take.
    wait_for(
        "no pods of earlier tests left on the GPU nodes",
        lambda: not leaving_gpu_pods(kubectl),
        timeout=180,
    )
    before = free_gpus(kubectl)
    take = {"gpu-node-a": before["gpu-node-a"] - 1, "gpu-node-b": before["gpu-node-b"]}
    for node, gpus in take.items():
        kubectl.apply(gpu_hog(node, gpus), namespace)
    for node in take:
        wait_for(
            f"hog-{node} Running",
            lambda node=node: (
                (kubectl.get("pod", f"hog-{node}", namespace) or {}).get("status", {}).get("phase")
                == "Running"
            ),
        )
    yield take
    kubectl.run("delete", "pod", "--all", "-n", namespace, "--wait=true", "--timeout=60s")


def test_too_few_free_gpus(kube: Kube, kubectl: Kubectl, gpu_hogs: dict[str, int]) -> None:
    print(f"GPUs taken by the hogs: {gpu_hogs}")  # 7 and 4 on a quiet cluster
    # Judged against the stable pods: the first step is one canary pod.
    alone = {"analysis": {"baseline": "stable"}}
    two = spec(LLAMA2_7B, triton={"maxBatchSize": 1}, resources={"gpus": 2}, canary=alone)
    fit = check_gpu_fit(kube, "default", two, NOW)
    print(fit.model_dump_json(by_alias=True, indent=2))
    assert fit.fits is False
    assert (fit.gpus_needed, fit.gpus_free) == (2, 1)
    assert fit.message.startswith(
        "2 GPUs needed for the first canary replica(s) (1 x 2), 1 free on nodes that fit"
    )
    one = check_gpu_fit(
        kube, "default", spec(LLAMA2_7B, triton={"maxBatchSize": 1}, canary=alone), NOW
    )
    assert (one.fits, one.node_type) == (True, H100)  # the last free H100
    # With a fresh baseline (the default) the first step needs a pod more.
    fresh = check_gpu_fit(kube, "default", spec(LLAMA2_7B, triton={"maxBatchSize": 1}), NOW)
    assert (fresh.fits, fresh.gpus_needed, fresh.gpus_free) == (False, 2, 1)
    assert "or judge without a baseline (canary.analysis.baseline: stable)" in fresh.message


def _token_client(cluster: Any, kubectl: Kubectl, namespace: str, account: str) -> Kube:
    token = kubectl.run("create", "token", account, "-n", namespace).stdout.strip()
    configuration = client.Configuration()
    configuration.host = cluster.server
    configuration.ssl_ca_cert = str(cluster.ca_file)
    configuration.api_key = {"authorization": f"Bearer {token}"}
    return Kube(client.ApiClient(configuration))


def test_without_cluster_wide_read_the_check_names_the_permission(
    cluster: Any, kubectl: Kubectl, namespace: str
) -> None:
    kubectl.run("create", "serviceaccount", "op", "-n", namespace)
    weak = _token_client(cluster, kubectl, namespace, "op")
    fit = check_gpu_fit(weak, namespace, spec(LLAMA2_7B), NOW)
    print(fit.message)
    assert fit.fits is None
    assert "may not list nodes" in fit.message
    assert "ClusterRole" in fit.message
    role = f"{namespace}-nodes"
    kubectl.run("create", "clusterrole", role, "--verb=list", "--resource=nodes")
    try:
        kubectl.run(
            "create",
            "clusterrolebinding",
            role,
            f"--clusterrole={role}",
            f"--serviceaccount={namespace}:op",
        )

        def past_nodes() -> GpuFit | None:
            found = check_gpu_fit(weak, namespace, spec(LLAMA2_7B), NOW)
            return None if "may not list nodes" in found.message else found

        fit = wait_for("the node permission to take effect", past_nodes)
        print(fit.message)
        assert fit.fits is None
        assert "may not list pods in all namespaces" in fit.message
    finally:
        kubectl.run("delete", "clusterrolebinding", role, check=False)
        kubectl.run("delete", "clusterrole", role, check=False)


def test_the_probe_job_and_its_script_are_created_owned_by_the_llmdeployment(
    kube: Kube, kubectl: Kubectl, crd: None, namespace: str
) -> None:
    doc = yaml.safe_load((ROOT / "examples" / "tiny-llm.yaml").read_text())
    doc["spec"]["preflight"] = {"gpuMemory": {"probe": {"enabled": True}}}
    kubectl.apply(doc, namespace)
    created = kubectl.get("llmdeployment", "tiny-llm", namespace)
    assert created is not None
    owner = Owner("tiny-llm", namespace, created["metadata"]["uid"])
    llmd = LLMDeploymentSpec.model_validate(doc["spec"])
    image = OperatorConfig().gpu_probe_image

    outcome = run_probe(kube, owner, llmd, "r1", H100, image)
    print(outcome)
    assert outcome.done is False  # KWOK runs the pod but never the script
    assert outcome.message.startswith(f"Job {outcome.job} on {H100}: running")
    job = kubectl.get("job", outcome.job, namespace)
    cm = kubectl.get("configmap", "tiny-llm-gpu-probe", namespace)
    assert job is not None and cm is not None
    for obj in (job, cm):
        [ref] = obj["metadata"]["ownerReferences"]
        assert (ref["kind"], ref["name"], ref["uid"]) == (
            "LLMDeployment",
            "tiny-llm",
            owner.uid,
        )
    script = ROOT / "operator" / "llmcanary" / "preflight" / "scripts" / "gpu_memory_probe.py"
    assert cm["data"]["gpu_memory_probe.py"] == script.read_text()
    assert job["spec"]["ttlSecondsAfterFinished"] > 0
    assert job["spec"]["activeDeadlineSeconds"] > 0
    # The Job controller makes the pod and the scheduler puts it on the H100 node.
    pod = wait_for(
        "the probe pod on gpu-node-a",
        lambda: next(
            (
                p
                for p in kubectl.list("pod", namespace, f"{LABEL_PROBE}={outcome.job}")
                if p["spec"].get("nodeName")
            ),
            None,
        ),
    )
    assert pod["spec"]["nodeName"] == "gpu-node-a"
    assert pod["spec"]["containers"][0]["image"] == image
    # A second call creates nothing new and still waits. (Not the resourceVersion: the Job
    # controller keeps writing the Job's status while its pod starts.)
    again = run_probe(kube, owner, llmd, "r1", H100, image)
    assert (again.done, again.job) == (False, outcome.job)
    after = (kubectl.get("job", outcome.job, namespace) or {}).get("metadata", {})
    assert (after.get("uid"), after.get("generation")) == (
        job["metadata"]["uid"],
        job["metadata"]["generation"],
    ), "the probe Job was created again or its spec rewritten"
    # Deleting the owner takes the probe with it (garbage collector).
    kubectl.run("delete", "llmdeployment", "tiny-llm", "-n", namespace, "--wait=true")
    wait_for("the probe Job gone", lambda: kubectl.get("job", outcome.job, namespace) is None)
    wait_for(
        "the probe pod gone",
        lambda: not kubectl.list("pod", namespace, f"{LABEL_PROBE}={outcome.job}"),
    )
