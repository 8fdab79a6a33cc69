"""The GPU memory fit against the cluster: list the nodes and the pods on them, then judge.

The judging is :func:`llmcanary.preflight.gpu.capacity` (pure); this module only reads.
It needs cluster-wide read access the namespaced Role does not give: ``list nodes`` and
``list pods`` in all namespaces (the pods tell which GPUs are taken). Without them the
check does not apply (``fits`` None) and says which permission is missing.
"""

from __future__ import annotations

import logging
from datetime import datetime

from llmcanary.api.spec import LLMDeploymentSpec
from llmcanary.api.status import GpuFit
from llmcanary.kube.client import Kube
from llmcanary.kube.errors import Forbidden
from llmcanary.preflight.gpu import candidate_nodes, capacity

__all__ = ["MAX_NODE_QUERIES", "check_gpu_fit"]

log = logging.getLogger(__name__)

#: Up to this many candidate nodes, pods are listed node by node (fieldSelector
#: spec.nodeName); beyond it, every unfinished pod in the cluster in one list.
MAX_NODE_QUERIES = 16

_UNFINISHED = "status.phase!=Succeeded,status.phase!=Failed"
_PERMISSIONS = (
    "bind the operator's ServiceAccount to a ClusterRole that allows list on nodes and on pods"
    " (verbs: list; resources: nodes, pods)"
)


def check_gpu_fit(kube: Kube, namespace: str, spec: LLMDeploymentSpec, now: datetime) -> GpuFit:
    """Whether the canary's pods fit the GPUs they can land on, and enough of them are free.

    ``namespace`` and ``now`` are the LLMDeployment's namespace and the tick's time, the
    arguments every preflight check takes; this one reads cluster-scoped data only.
    """
    if spec.model.sizing is None or spec.resources.gpus == 0:
        return capacity([], [], spec)  # says why the check does not apply; nothing to read
    try:
        nodes = kube.list_cluster("v1", "Node")
    except Forbidden:
        return GpuFit(
            message="GPU memory fit not checked: the operator may not list nodes"
            f" (cluster-scoped): {_PERMISSIONS}"
        )
    names = candidate_nodes(nodes, spec)
    try:
        if len(names) <= MAX_NODE_QUERIES:
            pods = [
                pod
                for name in names
                for pod in kube.list_cluster(
                    "v1", "Pod", field_selector=f"spec.nodeName={name},{_UNFINISHED}"
                )
            ]
        else:
            pods = kube.list_cluster("v1", "Pod", field_selector=_UNFINISHED)
    except Forbidden:
        return GpuFit(
            message="GPU memory fit not checked: the operator may not list pods in all"
            f" namespaces (needed to count the GPUs they hold): {_PERMISSIONS}"
        )
    fit = capacity(nodes, pods, spec)
    log.debug(
        "GPU memory fit",
        extra={
            "namespace": namespace,
            "at": now.isoformat(),
            "nodes": len(nodes),
            "candidates": len(names),
            "pods": len(pods),
            "fits": fit.fits,
        },
    )
    return fit
