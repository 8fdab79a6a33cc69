"""The simulated GPU nodes: Node objects that KWOK keeps Ready and whose pods it runs.

They carry what a real GPU node carries once the NVIDIA device plugin and GPU Feature
Discovery (GFD) run on it: ``nvidia.com/gpu`` in capacity/allocatable and the
``nvidia.com/gpu.*`` labels, so the scheduler and the operator's preflight see the
same thing they would on a real cluster. They have no taint: ordinary pods land on them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["DEFAULT_GPU_NODES", "KWOK_ANNOTATION", "GpuNode", "node_manifest"]

#: The annotation that selects the nodes this cluster's KWOK manages.
KWOK_ANNOTATION = ("kwok.x-k8s.io/node", "fake")


@dataclass(frozen=True)
class GpuNode:
    name: str
    product: str  # GFD's nvidia.com/gpu.product
    count: int
    memory_mib: int  # GFD's nvidia.com/gpu.memory, per GPU
    family: str  # GFD's nvidia.com/gpu.family
    compute_major: int
    compute_minor: int
    cpu: str = "64"
    memory: str = "512Gi"
    pods: int = 110
    ephemeral_storage: str = "1Ti"

    def labels(self) -> dict[str, str]:
        return {
            "type": "kwok",
            "kubernetes.io/hostname": self.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "nvidia.com/gpu.present": "true",
            "nvidia.com/gpu.product": self.product,
            "nvidia.com/gpu.count": str(self.count),
            "nvidia.com/gpu.memory": str(self.memory_mib),
            "nvidia.com/gpu.family": self.family,
            "nvidia.com/gpu.compute.major": str(self.compute_major),
            "nvidia.com/gpu.compute.minor": str(self.compute_minor),
        }

    def resources(self) -> dict[str, str]:
        return {
            "cpu": self.cpu,
            "memory": self.memory,
            "pods": str(self.pods),
            "ephemeral-storage": self.ephemeral_storage,
            "nvidia.com/gpu": str(self.count),
        }


DEFAULT_GPU_NODES: tuple[GpuNode, ...] = (
    GpuNode(
        "gpu-node-a", "NVIDIA-H100-80GB-HBM3", 8, 81559, "hopper", 9, 0, cpu="96", memory="1Ti"
    ),
    GpuNode("gpu-node-b", "NVIDIA-A100-SXM4-40GB", 4, 40960, "ampere", 8, 0),
)


def node_manifest(node: GpuNode, kubelet: tuple[str, int]) -> dict[str, Any]:
    """The Node object; status is accepted on create, KWOK fills in its conditions.

    ``kubelet``: the address and port of the node's kubelet endpoint, where the API server
    goes for ``kubectl logs``: KWOK's server, for every node."""
    key, value = KWOK_ANNOTATION
    address, port = kubelet
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node.name,
            "labels": node.labels(),
            "annotations": {key: value, "node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": {},
        "status": {
            "capacity": node.resources(),
            "allocatable": node.resources(),
            "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux"},
            "addresses": [
                {"type": "InternalIP", "address": address},
                {"type": "Hostname", "address": node.name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
        },
    }
