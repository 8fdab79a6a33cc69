"""GPU memory fit: does the model fit the GPUs its pods can land on, and are enough free?

PURE: the spec, and node and pod dicts as the API server returns them, go in; a
:class:`~llmcanary.api.status.GpuFit` comes out. :mod:`llmcanary.preflight.gpu_cluster`
gathers the dicts.

- :func:`estimate`: weights (``parameters x bytes(dtype)``) + KV cache
  (``2 x layers x kvHeads x headDim x maxSequenceLength x maxBatchSize x bytes(dtype)``),
  plus ``headroomPercent``.
- :func:`capacity`: the GPU nodes the pod could be scheduled on (nodeSelector, taints and
  tolerations as the scheduler matches them), the per-pod GPU memory from GPU Feature
  Discovery's ``nvidia.com/gpu.memory`` label (MiB per GPU) times ``resources.gpus``, and the
  unallocated ``nvidia.com/gpu`` on those nodes for the canary's first replicas.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llmcanary.api.spec import (
    Dtype,
    LLMDeploymentSpec,
    ModelSizing,
    Toleration,
)
from llmcanary.api.status import GpuFit
from llmcanary.builders.triton_config import overlay
from llmcanary.rollout.steps import replicas_for

__all__ = [
    "BYTES_PER_DTYPE",
    "GIB",
    "LABEL_MEMORY",
    "LABEL_PRODUCT",
    "RESOURCE_GPU",
    "GpuNodeInfo",
    "MemoryEstimate",
    "candidate_nodes",
    "capacity",
    "estimate",
    "gpu_nodes",
    "matches_node_selector",
    "pod_gpus",
    "tolerates",
    "untolerated_taints",
]

GIB = 1 << 30
MIB = 1 << 20

#: Bytes per element of the weights and of the KV cache.
BYTES_PER_DTYPE: Mapping[Dtype, float] = {
    "fp32": 4,
    "fp16": 2,
    "bf16": 2,
    "fp8": 1,
    "int8": 1,
    "int4": 0.5,
}

#: GPU Feature Discovery's labels, and the device plugin's extended resource.
LABEL_PRODUCT = "nvidia.com/gpu.product"
LABEL_MEMORY = "nvidia.com/gpu.memory"  # MiB per GPU
RESOURCE_GPU = "nvidia.com/gpu"

#: Taint effects that keep a pod off a node; PreferNoSchedule only discourages it.
_BLOCKING_EFFECTS = ("NoSchedule", "NoExecute")
_UNSCHEDULABLE_TAINT = {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}
_TERMINAL_PHASES = ("Succeeded", "Failed")


# --- the estimate ----------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryEstimate:
    """GPU memory one pod needs, in bytes."""

    weights_bytes: int
    kv_cache_bytes: int
    kv_bytes_per_token: int  # of one sequence, across all layers; 0 when not estimated
    tokens: int  # maxSequenceLength x batch: the KV cache's capacity in tokens
    headroom_percent: float
    total_bytes: int  # (weights + KV cache) x (1 + headroom)
    note: str = ""

    @property
    def weights_gib(self) -> float:
        return self.weights_bytes / GIB

    @property
    def kv_cache_gib(self) -> float:
        return self.kv_cache_bytes / GIB

    @property
    def required_gib(self) -> float:
        return self.total_bytes / GIB


def effective_max_batch_size(spec: LLMDeploymentSpec) -> int:
    """The batch the KV cache is sized for: the rendered config.pbtxt's max_batch_size
    (the spec's, else its default: 8, 0 for the vllm backend)."""
    return overlay(None, spec.model, spec.triton).max_batch_size


def estimate(sizing: ModelSizing, max_batch_size: int, headroom_percent: float) -> MemoryEstimate:
    """Weights + KV cache + headroom for one pod (all its GPUs together).

    The KV cache uses the sizing's dtype, like the weights. ``maxBatchSize`` 0 means Triton
    does no batching: one sequence at a time, so it counts as 1.
    """
    per_element = BYTES_PER_DTYPE[sizing.dtype]
    weights = math.ceil(sizing.parameters * per_element)
    batch = max(1, max_batch_size)
    note = ""
    if (
        sizing.layers is not None
        and sizing.kv_heads is not None
        and sizing.head_dim is not None
        and sizing.max_sequence_length is not None
    ):
        # K and V, for every layer, KV head and head dimension.
        per_token = math.ceil(2 * sizing.layers * sizing.kv_heads * sizing.head_dim * per_element)
        tokens = sizing.max_sequence_length * batch
    else:
        per_token = tokens = 0
        note = (
            "KV cache not included: set model.sizing.layers, kvHeads, headDim and"
            " maxSequenceLength to count it"
        )
    kv_cache = per_token * tokens
    total = math.ceil((weights + kv_cache) * (1 + headroom_percent / 100))
    return MemoryEstimate(weights, kv_cache, per_token, tokens, headroom_percent, total, note)


# --- nodes and pods --------------------------------------------------------------------


def _count(value: Any) -> int:
    """An integer quantity such as ``"8"`` (extended resources are whole numbers)."""
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return 0


def _labels(node: Mapping[str, Any]) -> dict[str, str]:
    return dict((node.get("metadata") or {}).get("labels") or {})


def _allocatable_gpus(node: Mapping[str, Any]) -> int:
    return _count(((node.get("status") or {}).get("allocatable") or {}).get(RESOURCE_GPU))


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name", "?"))


def tolerates(toleration: Toleration, taint: Mapping[str, Any]) -> bool:
    """Kubernetes' ``Toleration.ToleratesTaint``: an empty key with Exists tolerates all."""
    if toleration.effect and toleration.effect != taint.get("effect"):
        return False
    if toleration.key and toleration.key != taint.get("key"):
        return False
    if (toleration.operator or "Equal") == "Exists":
        return True
    return (toleration.value or "") == (taint.get("value") or "")


def _describe_taint(taint: Mapping[str, Any]) -> str:
    value = taint.get("value")
    key = f"{taint.get('key', '')}={value}" if value else str(taint.get("key", ""))
    return f"{key}:{taint.get('effect', '')}"


def untolerated_taints(node: Mapping[str, Any], tolerations: Sequence[Toleration]) -> list[str]:
    """The node's NoSchedule/NoExecute taints that no toleration tolerates, described."""
    spec = node.get("spec") or {}
    taints = [dict(t) for t in spec.get("taints") or []]
    if spec.get("unschedulable") and not any(
        t.get("key") == _UNSCHEDULABLE_TAINT["key"] for t in taints
    ):
        taints.append(dict(_UNSCHEDULABLE_TAINT))
    return [
        _describe_taint(taint)
        for taint in taints
        if taint.get("effect") in _BLOCKING_EFFECTS
        and not any(tolerates(t, taint) for t in tolerations)
    ]


def pod_gpus(pod: Mapping[str, Any]) -> int:
    """``nvidia.com/gpu`` a pod holds: its requests (or limits), as the scheduler counts them.

    Containers (and restartable init containers, i.e. sidecars) add up; an ordinary init
    container runs alone, so the pod holds the larger of the two.
    """
    spec = pod.get("spec") or {}

    def amount(container: Mapping[str, Any]) -> int:
        resources = container.get("resources") or {}
        for kind in ("requests", "limits"):
            value = (resources.get(kind) or {}).get(RESOURCE_GPU)
            if value is not None:
                return _count(value)
        return 0

    inits = list(spec.get("initContainers") or [])
    sidecars = sum(amount(c) for c in inits if c.get("restartPolicy") == "Always")
    init = max((amount(c) for c in inits if c.get("restartPolicy") != "Always"), default=0)
    return max(sum(amount(c) for c in spec.get("containers") or []) + sidecars, init)


def _used_gpus(pods: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """GPUs held per node name by pods that are bound and not finished."""
    used: dict[str, int] = {}
    for pod in pods:
        node = (pod.get("spec") or {}).get("nodeName")
        phase = (pod.get("status") or {}).get("phase")
        if node and phase not in _TERMINAL_PHASES:
            used[node] = used.get(node, 0) + pod_gpus(pod)
    return used


@dataclass(frozen=True)
class GpuNodeInfo:
    """A node with GPUs, as the fit check sees it."""

    name: str
    product: str
    memory_mib: int  # per GPU
    allocatable: int  # nvidia.com/gpu
    free: int  # allocatable minus what running pods hold
    untolerated: tuple[str, ...]  # taints that keep the pod off

    def pod_bytes(self, gpus: int) -> int:
        return self.memory_mib * MIB * gpus


def gpu_nodes(
    nodes: Iterable[Mapping[str, Any]],
    pods: Iterable[Mapping[str, Any]],
    tolerations: Sequence[Toleration],
) -> list[GpuNodeInfo]:
    """Nodes with ``nvidia.com/gpu`` allocatable and GFD's memory label, with their free GPUs."""
    used = _used_gpus(pods)
    found = []
    for node in nodes:
        labels = _labels(node)
        allocatable = _allocatable_gpus(node)
        memory = _count(labels.get(LABEL_MEMORY))
        if allocatable <= 0 or memory <= 0:
            continue
        name = _name(node)
        found.append(
            GpuNodeInfo(
                name=name,
                product=labels.get(LABEL_PRODUCT, "unknown GPU"),
                memory_mib=memory,
                allocatable=allocatable,
                free=max(0, allocatable - used.get(name, 0)),
                untolerated=tuple(untolerated_taints(node, tolerations)),
            )
        )
    return found


def candidate_nodes(nodes: Iterable[Mapping[str, Any]], spec: LLMDeploymentSpec) -> list[str]:
    """Names of the GPU nodes the pod could be scheduled on: whose pods :func:`capacity` needs."""
    selected = [n for n in nodes if matches_node_selector(_labels(n), spec.node_selector)]
    return [n.name for n in gpu_nodes(selected, (), spec.tolerations) if not n.untolerated]


# --- the fit ---------------------------------------------------------------------------


def _gib(n_bytes: float) -> float:
    return round(n_bytes / GIB, 2)


def _gpus(n: int) -> str:
    return f"{n} GPU" if n == 1 else f"{n} GPUs"


def _selector(node_selector: Mapping[str, str]) -> str:
    return json.dumps(dict(sorted(node_selector.items())))


def matches_node_selector(labels: Mapping[str, str], node_selector: Mapping[str, str]) -> bool:
    """A pod's nodeSelector: every key present with an equal value."""
    return all(labels.get(key) == value for key, value in node_selector.items())


def _products(nodes: Iterable[GpuNodeInfo]) -> str:
    return ", ".join(sorted({n.product for n in nodes})) or "none"


def _smaller(est: MemoryEstimate, sizing: ModelSizing) -> str:
    """What else shrinks the footprint, for the advice."""
    options = []
    if sizing.dtype != "int4":
        options.append("use a smaller dtype")
    if est.kv_cache_bytes * 10 > est.weights_bytes + est.kv_cache_bytes:
        options.append(
            f"lower maxSequenceLength or maxBatchSize (KV cache {est.kv_cache_gib:.1f} GiB)"
        )
    return ", or ".join(options)


def capacity(
    nodes: Sequence[Mapping[str, Any]],
    pods: Sequence[Mapping[str, Any]],
    spec: LLMDeploymentSpec,
) -> GpuFit:
    """Whether one pod's estimate fits a GPU node type, and the first canary replicas fit free GPUs.

    ``nodes``: every Node; ``pods``: the pods bound to them (any namespace; finished pods are
    skipped). ``fits`` is None when the check does not apply (no sizing, no GPUs, disabled).
    """
    check = spec.preflight.gpu_memory
    if not check.enabled:
        return GpuFit(message="preflight.gpuMemory.enabled is false: GPU memory fit not checked")
    sizing = spec.model.sizing
    if sizing is None:
        return GpuFit(
            message="model.sizing is not set, so the GPU memory fit does not apply: set"
            " model.sizing.parameters and dtype to check it"
        )
    est = estimate(sizing, effective_max_batch_size(spec), check.headroom_percent)
    required = est.total_bytes
    gpus = spec.resources.gpus
    note = f" ({est.note})" if est.note else ""
    if gpus == 0:
        return GpuFit(
            required_gi_b=_gib(required),
            gpus_needed=0,
            message="resources.gpus is 0: the pods use no GPU, so the GPU memory fit does not"
            " apply",
        )
    # The first step's pods: the canary's, and as many for a fresh baseline beside it.
    first = replicas_for(spec.replicas, spec.canary.initial_weight)
    if spec.baseline == "fresh":
        first *= 2
    needed = first * gpus
    need = f"needs {required / GIB:.1f} GiB per pod{note}"

    def fail(message: str, **fields: Any) -> GpuFit:
        return GpuFit(
            required_gi_b=_gib(required),
            fits=False,
            gpus_needed=needed,
            gpus_free=fields.pop("gpus_free", 0),
            message=message,
            **fields,
        )

    selected = [n for n in nodes if matches_node_selector(_labels(n), spec.node_selector)]
    everywhere = gpu_nodes(nodes, (), spec.tolerations)
    if not nodes:
        return fail("the cluster has no nodes")
    if not selected:
        return fail(
            f"no node matches nodeSelector {_selector(spec.node_selector)}: fix"
            f" spec.nodeSelector (GPU node types in the cluster: {_products(everywhere)})"
        )
    candidates = gpu_nodes(selected, pods, spec.tolerations)
    where = f" matching nodeSelector {_selector(spec.node_selector)}" if spec.node_selector else ""
    if not candidates:
        unlabelled = [_name(n) for n in selected if _allocatable_gpus(n) > 0]
        if unlabelled:
            return fail(
                f"GPU node(s) {', '.join(sorted(unlabelled))} have no {LABEL_MEMORY} label: run"
                " NVIDIA GPU Feature Discovery on them so their GPU memory is known"
            )
        return fail(
            f"no node{where} offers {RESOURCE_GPU}: install the NVIDIA device plugin on the GPU"
            " nodes, or fix spec.nodeSelector"
        )
    schedulable = [n for n in candidates if not n.untolerated]
    if not schedulable:
        blocked = "; ".join(f"{n.name} ({', '.join(n.untolerated)})" for n in candidates)
        return fail(
            f"every GPU node{where} has a taint the pod does not tolerate: {blocked}: add"
            " matching spec.tolerations"
        )
    roomy = [n for n in schedulable if n.allocatable >= gpus]
    if not roomy:
        most = max(schedulable, key=lambda n: (n.allocatable, n.memory_mib))
        return fail(
            f"resources.gpus is {gpus}, but no GPU node{where} has that many: the most is"
            f" {most.allocatable} on {most.name} ({most.product}); lower resources.gpus",
            node_type=most.product,
        )

    fitting = [n for n in roomy if n.pod_bytes(gpus) >= required]
    if not fitting:
        largest = max(roomy, key=lambda n: (n.pod_bytes(gpus), n.product))
        available = largest.pod_bytes(gpus)
        has = (
            f"the largest GPU node type, {largest.product}, has {available / GIB:.1f} GiB per"
            f" pod with {_gpus(gpus)}"
        )
        # The fewest GPUs per pod that would hold it, on a node type that has that many.
        options = sorted(
            (math.ceil(required / (n.memory_mib * MIB)), n.product != largest.product, n.product)
            for n in schedulable
            if math.ceil(required / (n.memory_mib * MIB)) <= n.allocatable
        )
        smaller = _smaller(est, sizing)
        if options:
            more, elsewhere, product = options[0]
            on = f" (on {product})" if elsewhere else ""
            fix = f"set resources.gpus to {more} or more{on}"
            fix += f", or {smaller}" if smaller else ""
        else:
            biggest = max(schedulable, key=lambda n: n.pod_bytes(n.allocatable))
            fix = (
                f"no GPU node holds that much: the largest, {biggest.name} ({biggest.product}),"
                f" has {biggest.pod_bytes(biggest.allocatable) / GIB:.1f} GiB in all"
                f" {biggest.allocatable} GPUs; {smaller or 'use a smaller model'}"
            )
        return fail(
            f"{need}; {has}: {fix}", available_gi_b=_gib(available), node_type=largest.product
        )

    # The smallest type that fits, preferring one with room for a pod now.
    best = min(fitting, key=lambda n: (n.free < gpus, n.pod_bytes(gpus), n.product))
    available = best.pod_bytes(gpus)
    free = sum(n.free for n in fitting)
    slots = sum(n.free // gpus for n in fitting)
    fields: dict[str, Any] = {
        "required_gi_b": _gib(required),
        "available_gi_b": _gib(available),
        "node_type": best.product,
        "gpus_needed": needed,
        "gpus_free": free,
    }
    types = _products(fitting)
    if slots < first:
        short = (
            f"{_gpus(needed)} needed for the first canary{_and_baseline(spec)} replica(s)"
            f" ({first} x {gpus}), {free} free on nodes that fit ({types})"
        )
        if free >= needed:
            short += (
                f": only {slots} pod(s) of {_gpus(gpus)} fit, the free GPUs are spread over"
                " several nodes"
            )
        fix = "free GPUs on those nodes or add GPU nodes"
        if spec.baseline == "fresh":
            fix += ", or judge without a baseline (canary.analysis.baseline: stable)"
        elif first > 1:
            fix += ", or lower canary.initialWeight"
        return GpuFit(fits=False, message=f"{short}: {fix}", **fields)
    return GpuFit(
        fits=True,
        message=f"{need}; {best.product} has {available / GIB:.1f} GiB per pod with"
        f" {_gpus(gpus)}; {free} GPUs free on nodes that fit ({types}), {needed} needed for the"
        f" first canary{_and_baseline(spec)} replica(s)",
        **fields,
    )


def _and_baseline(spec: LLMDeploymentSpec) -> str:
    return " and baseline" if spec.baseline == "fresh" else ""
