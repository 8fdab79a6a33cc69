"""Kubeconfig files for the admin and for each component identity."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import yaml

from llmcanary_dev.devcluster.pki import CertPair

__all__ = ["CLUSTER_NAME", "write_kubeconfig"]

#: Cluster, user and context name in every kubeconfig this package writes.
CLUSTER_NAME = "llmcanary-dev"


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def write_kubeconfig(path: Path, *, server: str, ca_file: Path, client: CertPair) -> Path:
    """Write a self-contained kubeconfig (certificates embedded), mode 0600."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": CLUSTER_NAME,
                "cluster": {"server": server, "certificate-authority-data": _b64(ca_file)},
            }
        ],
        "users": [
            {
                "name": CLUSTER_NAME,
                "user": {
                    "client-certificate-data": _b64(client.cert),
                    "client-key-data": _b64(client.key),
                },
            }
        ],
        "contexts": [
            {"name": CLUSTER_NAME, "context": {"cluster": CLUSTER_NAME, "user": CLUSTER_NAME}}
        ],
        "current-context": CLUSTER_NAME,
        "preferences": {},
    }
    text = yaml.safe_dump(config, sort_keys=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    tmp.replace(path)
    return path
