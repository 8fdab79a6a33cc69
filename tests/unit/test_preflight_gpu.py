"""The GPU memory fit: the estimate against published figures, and capacity over node dicts."""

from __future__ import annotations

from typing import Any

import pytest

from llmcanary.api.spec import LLMDeploymentSpec, ModelSizing, Toleration
from llmcanary.preflight.gpu import GIB, capacity, estimate, pod_gpus, tolerates

KIB = 1 << 10
H100 = "NVIDIA-H100-80GB-HBM3"
A100 = "NVIDIA-A100-SXM4-40GB"

# --- the estimate ----------------------------------------------------------------------


def sizing(**fields: Any) -> ModelSizing:
    return ModelSizing.model_validate(fields)


LLAMA2_7B = {
    "parameters": 7e9,
    "dtype": "fp16",
    "layers": 32,
    "kvHeads": 32,
    "headDim": 128,
    "maxSequenceLength": 4096,
}
LLAMA3_8B = {
    "parameters": 8.03e9,
    "dtype": "bf16",
    "layers": 32,
    "kvHeads": 8,
    "headDim": 128,
    "maxSequenceLength": 8192,
}
LLAMA2_70B = {
    "parameters": 70e9,
    "dtype": "fp16",
    "layers": 80,
    "kvHeads": 8,
    "headDim": 128,
    "maxSequenceLength": 4096,
}


def test_7b_fp16_kv_cache_is_512_kib_per_token_and_2_gib_for_4096_tokens() -> None:
    est = estimate(sizing(**LLAMA2_7B), max_batch_size=1, headroom_percent=0)
    assert est.kv_bytes_per_token == 512 * KIB
    assert est.tokens == 4096
    assert est.kv_cache_bytes == 2 * GIB
    assert est.weights_bytes == 14_000_000_000
    assert round(est.weights_gib, 2) == 13.04
    assert round(est.required_gib, 2) == 15.04
    assert est.note == ""


def test_gqa_8_kv_heads_is_128_kib_per_token() -> None:
    est = estimate(sizing(**LLAMA3_8B), max_batch_size=1, headroom_percent=0)
    assert est.kv_bytes_per_token == 128 * KIB
    assert est.kv_cache_bytes == 1 * GIB  # 8192 tokens
    assert round(est.weights_gib, 2) == 14.96


def test_kv_cache_scales_with_max_batch_size_and_headroom_is_added() -> None:
    est = estimate(sizing(**LLAMA2_7B), max_batch_size=8, headroom_percent=10)
    assert est.kv_cache_bytes == 16 * GIB
    raw = 14_000_000_000 + 16 * GIB
    assert est.total_bytes == pytest.approx(raw * 1.1, abs=1)


def test_max_batch_size_0_means_one_sequence() -> None:
    assert estimate(sizing(**LLAMA2_7B), 0, 0).kv_cache_bytes == 2 * GIB


@pytest.mark.parametrize(
    ("dtype", "weights"),
    [
        ("fp32", 28e9),
        ("fp16", 14e9),
        ("bf16", 14e9),
        ("fp8", 7e9),
        ("int8", 7e9),
        ("int4", 3.5e9),
    ],
)
def test_bytes_per_dtype(dtype: str, weights: float) -> None:
    est = estimate(sizing(parameters=7e9, dtype=dtype), 1, 0)
    assert est.weights_bytes == weights
    assert est.total_bytes == weights


def test_without_the_kv_fields_the_kv_cache_is_0_with_a_note() -> None:
    est = estimate(sizing(parameters=7e9, dtype="fp16"), 8, 0)
    assert est.kv_cache_bytes == 0
    assert "maxSequenceLength" in est.note


# --- capacity --------------------------------------------------------------------------


def node(
    name: str,
    product: str,
    gpus: int,
    memory_mib: int | None,
    *,
    labels: dict[str, str] | None = None,
    taints: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    all_labels = {"kubernetes.io/hostname": name, "nvidia.com/gpu.product": product}
    if memory_mib is not None:
        all_labels["nvidia.com/gpu.memory"] = str(memory_mib)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {**all_labels, **(labels or {})}},
        "spec": {"taints": taints} if taints else {},
        "status": {
            "capacity": {"cpu": "64", "nvidia.com/gpu": str(gpus)},
            "allocatable": {"cpu": "64", "nvidia.com/gpu": str(gpus)},
        },
    }


NODES = [node("gpu-node-a", H100, 8, 81559), node("gpu-node-b", A100, 4, 40960)]


def pod(node_name: str, gpus: int, phase: str = "Running", *, limits_only: bool = False) -> dict:
    amounts = {"nvidia.com/gpu": str(gpus)}
    resources = {"limits": amounts} if limits_only else {"requests": amounts, "limits": amounts}
    return {
        "metadata": {"name": f"p-{node_name}-{gpus}", "namespace": "other"},
        "spec": {"nodeName": node_name, "containers": [{"name": "c", "resources": resources}]},
        "status": {"phase": phase},
    }


def spec(
    model_sizing: dict[str, Any] | None, baseline: str = "stable", **fields: Any
) -> LLMDeploymentSpec:
    """A spec judged against the stable pods unless ``baseline="fresh"``: the GPU count of
    the first step is the canary's alone."""
    model: dict[str, Any] = {"name": "m", "repository": "/models"}
    if model_sizing is not None:
        model["sizing"] = model_sizing
    canary = fields.pop("canary", {})
    canary = {**canary, "analysis": {**canary.get("analysis", {}), "baseline": baseline}}
    return LLMDeploymentSpec.model_validate({"model": model, "canary": canary, **fields})


SEVEN_B = spec(LLAMA2_7B, triton={"maxBatchSize": 1})
SEVENTY_B = spec(LLAMA2_70B, triton={"maxBatchSize": 1})


def test_a_7b_fits_and_the_best_node_type_is_the_smallest_that_fits() -> None:
    fit = capacity(NODES, [], SEVEN_B)
    assert fit.fits is True
    assert fit.required_gi_b == 16.54  # (13.04 + 2) x 1.1
    assert fit.node_type == A100
    assert fit.available_gi_b == 40.0
    assert (fit.gpus_needed, fit.gpus_free) == (1, 12)
    assert A100 in fit.message


def test_a_7b_with_a_long_context_needs_the_h100() -> None:
    big_kv = spec({**LLAMA2_7B, "maxSequenceLength": 4096}, triton={"maxBatchSize": 12})
    fit = capacity(NODES, [], big_kv)
    assert fit.fits is True
    assert fit.node_type == H100
    assert fit.available_gi_b == 79.65
    assert fit.gpus_free == 8  # only the H100 node fits


def test_a_70b_with_one_gpu_per_pod_does_not_fit_and_says_set_resources_gpus() -> None:
    fit = capacity(NODES, [], SEVENTY_B)
    assert fit.fits is False
    assert fit.node_type == H100
    assert fit.available_gi_b == 79.65
    assert fit.required_gi_b == 144.8  # (130.39 + 1.25) x 1.1
    assert fit.message == (
        "needs 144.8 GiB per pod; the largest GPU node type, NVIDIA-H100-80GB-HBM3, has"
        " 79.6 GiB per pod with 1 GPU: set resources.gpus to 2 or more, or use a smaller dtype"
    )


def test_the_70b_fits_with_two_gpus_per_pod() -> None:
    fit = capacity(NODES, [], spec(LLAMA2_70B, triton={"maxBatchSize": 1}, resources={"gpus": 2}))
    assert fit.fits is True
    assert fit.node_type == H100
    assert (fit.gpus_needed, fit.gpus_free) == (2, 8)


def test_too_large_for_any_node_says_so() -> None:
    huge = spec({"parameters": 405e9, "dtype": "fp32"})
    fit = capacity(NODES, [], huge)
    assert fit.fits is False
    assert "no GPU node holds that much" in fit.message
    assert "gpu-node-a" in fit.message
    assert "use a smaller dtype" in fit.message


def test_a_large_kv_cache_suggests_shortening_it() -> None:
    fit = capacity(NODES, [], spec(LLAMA2_7B, triton={"maxBatchSize": 64}))
    assert fit.fits is False
    assert "lower maxSequenceLength or maxBatchSize (KV cache 128.0 GiB)" in fit.message


def test_node_selector_for_a_product_that_exists() -> None:
    only_h100 = spec(LLAMA2_7B, nodeSelector={"nvidia.com/gpu.product": H100})
    fit = capacity(NODES, [], only_h100)
    assert fit.fits is True
    assert fit.node_type == H100
    assert fit.gpus_free == 8


def test_node_selector_for_a_product_that_does_not_exist() -> None:
    fit = capacity(NODES, [], spec(LLAMA2_7B, nodeSelector={"nvidia.com/gpu.product": "B200"}))
    assert fit.fits is False
    assert fit.message.startswith('no node matches nodeSelector {"nvidia.com/gpu.product": "B200"}')
    assert f"{A100}, {H100}" in fit.message


def test_too_few_free_gpus() -> None:
    pods = [pod("gpu-node-a", 7), pod("gpu-node-b", 4, limits_only=True)]
    two = spec(LLAMA2_7B, replicas=2, canary={"initialWeight": 50})  # first replicas: 1
    fit = capacity(NODES, pods, spec(LLAMA2_7B, resources={"gpus": 2}))
    assert fit.fits is False
    assert (fit.gpus_needed, fit.gpus_free) == (2, 1)
    assert fit.node_type == A100  # neither has room: the smallest that fits
    assert fit.message.startswith(
        "2 GPUs needed for the first canary replica(s) (1 x 2), 1 free on nodes that fit"
    )
    last = capacity(NODES, pods, two)
    assert (last.fits, last.node_type) == (True, H100)  # the A100s are full: the H100 has room


def test_finished_pods_hold_no_gpus() -> None:
    pods = [pod("gpu-node-a", 8, "Succeeded"), pod("gpu-node-b", 4, "Failed")]
    assert capacity(NODES, pods, SEVEN_B).gpus_free == 12


def test_free_gpus_spread_over_nodes_do_not_make_a_pod() -> None:
    pods = [pod("gpu-node-a", 7)]
    nodes = [NODES[0], node("gpu-node-c", H100, 8, 81559)]
    nodes[1]["metadata"]["name"] = "gpu-node-c"
    fit = capacity(nodes, [*pods, pod("gpu-node-c", 7)], spec(LLAMA2_70B, resources={"gpus": 2}))
    assert fit.fits is False
    assert fit.gpus_free == 2
    assert "only 0 pod(s) of 2 GPUs fit" in fit.message


def test_first_replicas_follow_the_initial_weight() -> None:
    many = spec(LLAMA2_7B, replicas=10, canary={"initialWeight": 25})  # ceil(2.5) = 3
    assert capacity(NODES, [], many).gpus_needed == 3


def test_a_fresh_baseline_needs_as_many_gpus_again() -> None:
    many = spec(LLAMA2_7B, "fresh", replicas=10, canary={"initialWeight": 25})
    fit = capacity(NODES, [], many)
    assert fit.gpus_needed == 6
    assert "needed for the first canary and baseline replica(s)" in fit.message


def test_gpus_per_pod_beyond_any_node() -> None:
    fit = capacity(NODES, [], spec(LLAMA2_7B, resources={"gpus": 16}))
    assert fit.fits is False
    assert "resources.gpus is 16, but no GPU node has that many: the most is 8" in fit.message


def test_no_sizing_or_no_gpus_does_not_apply() -> None:
    no_sizing = capacity(NODES, [], spec(None))
    assert no_sizing.fits is None
    assert "does not apply" in no_sizing.message
    cpu_only = capacity(
        NODES, [], spec(LLAMA2_7B, triton={"maxBatchSize": 1}, resources={"gpus": 0})
    )
    assert cpu_only.fits is None
    assert cpu_only.required_gi_b == 16.54
    assert "resources.gpus is 0" in cpu_only.message
    disabled = capacity(NODES, [], spec(LLAMA2_7B, preflight={"gpuMemory": {"enabled": False}}))
    assert disabled.fits is None


def test_no_gpu_nodes_or_no_gfd_labels() -> None:
    assert capacity([], [], SEVEN_B).message == "the cluster has no nodes"
    cpu = node("cpu-1", "", 0, None)
    assert "offers nvidia.com/gpu" in capacity([cpu], [], SEVEN_B).message
    unlabelled = node("gpu-x", H100, 8, None)
    fit = capacity([cpu, unlabelled], [], SEVEN_B)
    assert fit.fits is False
    assert "gpu-x have no nvidia.com/gpu.memory label" in fit.message


TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}


def test_tainted_gpu_nodes_need_a_toleration() -> None:
    tainted = [node("gpu-node-a", H100, 8, 81559, taints=[TAINT])]
    fit = capacity(tainted, [], SEVEN_B)
    assert fit.fits is False
    assert "gpu-node-a (nvidia.com/gpu=present:NoSchedule)" in fit.message
    tolerated = spec(LLAMA2_7B, tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists"}])
    assert capacity(tainted, [], tolerated).fits is True


def test_prefer_no_schedule_does_not_block() -> None:
    soft = [node("gpu-node-a", H100, 8, 81559, taints=[{**TAINT, "effect": "PreferNoSchedule"}])]
    assert capacity(soft, [], SEVEN_B).fits is True


def test_an_unschedulable_node_is_left_out() -> None:
    cordoned = node("gpu-node-a", H100, 8, 81559)
    cordoned["spec"]["unschedulable"] = True
    assert (
        "node.kubernetes.io/unschedulable:NoSchedule" in capacity([cordoned], [], SEVEN_B).message
    )


@pytest.mark.parametrize(
    ("toleration", "expected"),
    [
        ({"operator": "Exists"}, True),  # empty key + Exists tolerates everything
        ({"key": "nvidia.com/gpu", "operator": "Exists"}, True),
        ({"key": "nvidia.com/gpu", "value": "present"}, True),  # operator defaults to Equal
        ({"key": "nvidia.com/gpu", "operator": "Equal", "value": "absent"}, False),
        ({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}, True),
        ({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoExecute"}, False),
        ({"key": "other", "operator": "Exists"}, False),
    ],
)
def test_toleration_matching(toleration: dict[str, str], expected: bool) -> None:
    assert tolerates(Toleration.model_validate(toleration), TAINT) is expected


def test_pod_gpus_counts_containers_and_init_containers_as_the_scheduler_does() -> None:
    def c(n: int, **extra: str) -> dict[str, Any]:
        return {"name": "x", "resources": {"limits": {"nvidia.com/gpu": str(n)}}, **extra}

    assert pod_gpus({"spec": {"containers": [c(1), c(2)]}}) == 3
    assert pod_gpus({"spec": {"containers": [c(1)], "initContainers": [c(4)]}}) == 4
    sidecar = c(1, restartPolicy="Always")
    assert pod_gpus({"spec": {"containers": [c(2)], "initContainers": [sidecar]}}) == 3
    assert pod_gpus({"spec": {"containers": [{"name": "cpu"}]}}) == 0
