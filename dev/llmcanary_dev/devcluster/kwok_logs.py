"""KWOK ``Logs`` objects: how ``kubectl logs`` reaches a container's log in the dev cluster.

KWOK's server is every node's kubelet endpoint; for pods/log it reads the CRI-format file
a ``Logs`` object names for the pod's container (and the previous run's, for
``--previous``). The object is owned by the pod, so it goes when the pod does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["logs_object"]


def logs_object(
    namespace: str,
    pod: str,
    uid: str,
    container: str,
    log_file: Path,
    previous_log_file: Path | None = None,
) -> dict[str, Any]:
    entry: dict[str, Any] = {"containers": [container], "logsFile": str(log_file)}
    if previous_log_file is not None:
        entry["previousLogsFile"] = str(previous_log_file)
    return {
        "apiVersion": "kwok.x-k8s.io/v1alpha1",
        "kind": "Logs",
        "metadata": {
            "name": pod,
            "namespace": namespace,
            "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": pod, "uid": uid}],
        },
        "spec": {"logs": [entry]},
    }
