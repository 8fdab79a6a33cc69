"""The local Kubernetes control plane of the project (README.md, "The local cluster").

etcd, kube-apiserver, kube-controller-manager and kube-scheduler built from the
Kubernetes Go modules (``devcluster/``), with KWOK playing the kubelet of simulated
GPU nodes. Used by ``llmcanary devcluster ...``, ``make`` and the integration tests::

    from llmcanary_dev import devcluster

    devcluster.ensure_built()
    cluster = devcluster.up()
    cluster.kubectl("get", "nodes")
    devcluster.down()
"""

from llmcanary_dev.devcluster.cluster import (
    Cluster,
    ClusterStatus,
    DevClusterError,
    NodeStatus,
    down,
    ensure_built,
    env,
    kubectl,
    set_pod_readiness,
    status,
    up,
)
from llmcanary_dev.devcluster.nodes import DEFAULT_GPU_NODES, GpuNode
from llmcanary_dev.devcluster.paths import COMPONENTS, Ports, Settings, find_repo_root

__all__ = [
    "COMPONENTS",
    "DEFAULT_GPU_NODES",
    "Cluster",
    "ClusterStatus",
    "DevClusterError",
    "GpuNode",
    "NodeStatus",
    "Ports",
    "Settings",
    "down",
    "ensure_built",
    "env",
    "find_repo_root",
    "kubectl",
    "set_pod_readiness",
    "status",
    "up",
]
