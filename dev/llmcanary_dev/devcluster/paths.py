"""Where the dev cluster keeps its binaries and state, and which ports it listens on.

Everything is read from the environment once, into a frozen :class:`Settings`:

- ``LLMCANARY_CACHE`` (default ``~/.cache/llmcanary``): what ``devcluster/build.sh``
  produces: ``bin/`` (etcd, kube-apiserver, ... symlinks to one binary),
  ``gateway-api-crds/``, ``inference-extension-crds/`` (InferencePool), ``istio-crds/``
  (VirtualService, DestinationRule) and ``kwok/``
  (stages and RBAC), all copied from pinned Go modules by ``devcluster/data.sh``.
- ``LLMCANARY_DEVCLUSTER_DIR`` (default ``<repo>/.devcluster``): certificates,
  kubeconfigs, etcd data, logs and pid files of the running cluster.
- ``LLMCANARY_DEVCLUSTER_<NAME>_PORT``: the ports, all on 127.0.0.1. The defaults are
  deliberately not the upstream ones (6443, 2379, 10257, ...) so the dev cluster never
  collides with a real cluster, kind, or k3s on the same machine.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from llmcanary_dev.devcluster.stages import PodReadiness

__all__ = [
    "COMPONENTS",
    "PROCESSES",
    "READ_PODS",
    "Ports",
    "Settings",
    "bin_dir",
    "cache_dir",
    "find_repo_root",
    "kubeconfig",
    "state_dir",
]

#: The processes of the cluster, in start order (stopped in reverse).
COMPONENTS: tuple[str, ...] = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
)

#: The dev cluster's own kubelet for the operator's repository reads: a Python process
#: (``python -m llmcanary_dev.devcluster.read_pods``), not a binary; started after KWOK.
READ_PODS = "read-pods"
#: Every process of a running cluster.
PROCESSES: tuple[str, ...] = (*COMPONENTS, READ_PODS)

#: The binary build.sh links all the tools to (one multi-call Go binary).
MAIN_BINARY = "llmcanary-k8s"
TOOLS: tuple[str, ...] = (*COMPONENTS, "kubectl")


def find_repo_root(start: Path | None = None) -> Path:
    """The nearest directory at or above ``start`` (default: cwd) with a pyproject.toml.

    ``dev/`` (this distribution's own pyproject.toml) is passed over: the root is the
    checkout above it.
    """
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "pyproject.toml").is_file() and not (candidate / "llmcanary_dev").is_dir():
            return candidate
    return here


def _port(environ: Mapping[str, str], name: str, default: int) -> int:
    key = f"LLMCANARY_DEVCLUSTER_{name}_PORT"
    raw = environ.get(key)
    if raw is None or raw.strip() == "":
        return default
    try:
        port = int(raw)
    except ValueError:
        raise ValueError(f"{key}={raw!r} is not a port number") from None
    if not 0 < port < 65536:
        raise ValueError(f"{key}={port} is out of range 1-65535")
    return port


@dataclass(frozen=True)
class Ports:
    """TCP ports on :attr:`Settings.host` (env ``LLMCANARY_DEVCLUSTER_<FIELD>_PORT``)."""

    apiserver: int = 16443
    etcd: int = 12379
    etcd_peer: int = 12380
    controller_manager: int = 16257
    scheduler: int = 16259
    kwok: int = 16247

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Ports:
        env = os.environ if environ is None else environ
        d = cls()
        return cls(
            apiserver=_port(env, "APISERVER", d.apiserver),
            etcd=_port(env, "ETCD", d.etcd),
            etcd_peer=_port(env, "ETCD_PEER", d.etcd_peer),
            controller_manager=_port(env, "CONTROLLER_MANAGER", d.controller_manager),
            scheduler=_port(env, "SCHEDULER", d.scheduler),
            kwok=_port(env, "KWOK", d.kwok),
        )


@dataclass(frozen=True)
class Settings:
    """Locations and network settings of one dev cluster."""

    cache_dir: Path
    state_dir: Path
    ports: Ports = field(default_factory=Ports)
    host: str = "127.0.0.1"
    #: Virtual IPs of Services; the first one is the ``kubernetes`` Service.
    service_cidr: str = "10.96.0.0/16"
    kubernetes_service_ip: str = "10.96.0.1"
    #: Pod IPs that KWOK hands out. Loopback addresses on purpose: every 127.0.0.0/8
    #: address is local on Linux without configuration, so the local data plane (and the
    #: tests) can serve a pod's Triton on its own pod IP, and nothing sent to a pod IP
    #: ever leaves this machine.
    pod_cidr: str = "127.244.0.1/16"
    #: Who marks LLMDeployment pods Ready: KWOK at once, or the local data plane when
    #: Triton is (see devcluster.stages; changed on a running cluster by
    #: cluster.set_pod_readiness).
    pod_readiness: PodReadiness = "kwok"
    #: The address the API server publishes for the ``kubernetes`` Service
    #: (env ``LLMCANARY_DEVCLUSTER_ADVERTISE_ADDRESS``).
    advertise_address: str = "127.0.0.1"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        cache = env.get("LLMCANARY_CACHE") or str(Path.home() / ".cache" / "llmcanary")
        state = env.get("LLMCANARY_DEVCLUSTER_DIR") or str(find_repo_root() / ".devcluster")
        return cls(
            cache_dir=Path(cache).expanduser().resolve(),
            state_dir=Path(state).expanduser().resolve(),
            ports=Ports.from_env(env),
            advertise_address=env.get("LLMCANARY_DEVCLUSTER_ADVERTISE_ADDRESS") or "127.0.0.1",
        )

    # --- what build.sh produces -------------------------------------------------
    @property
    def bin_dir(self) -> Path:
        return self.cache_dir / "bin"

    def tool(self, name: str) -> Path:
        """Path of one tool (``kubectl``, ``etcd``, ...) in :attr:`bin_dir`."""
        return self.bin_dir / name

    @property
    def gateway_crds_dir(self) -> Path:
        return self.cache_dir / "gateway-api-crds"

    @property
    def istio_crds_dir(self) -> Path:
        return self.cache_dir / "istio-crds"

    @property
    def inference_crds_dir(self) -> Path:
        return self.cache_dir / "inference-extension-crds"

    @property
    def crd_dirs(self) -> tuple[Path, ...]:
        """The third-party CRDs ``up`` installs: Gateway API's, the Inference Extension's
        (InferencePool), Istio's and KWOK's Logs."""
        return (
            self.gateway_crds_dir,
            self.inference_crds_dir,
            self.istio_crds_dir,
            self.kwok_crds_dir,
        )

    @property
    def kwok_stages_dir(self) -> Path:
        return self.cache_dir / "kwok" / "stages"

    @property
    def kwok_rbac_file(self) -> Path:
        return self.cache_dir / "kwok" / "rbac" / "role.yaml"

    @property
    def kwok_crds_dir(self) -> Path:
        """KWOK's Logs CRD: where the data plane says which file holds a container's log."""
        return self.cache_dir / "kwok" / "crds"

    # --- the running cluster's state -------------------------------------------
    @property
    def kubeconfig(self) -> Path:
        """The admin (``system:masters``) kubeconfig."""
        return self.state_dir / "kubeconfig"

    @property
    def pki_dir(self) -> Path:
        return self.state_dir / "pki"

    @property
    def config_dir(self) -> Path:
        """Component kubeconfigs and configuration files."""
        return self.state_dir / "config"

    @property
    def etcd_data_dir(self) -> Path:
        return self.state_dir / "etcd"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def pids_dir(self) -> Path:
        return self.state_dir / "pids"

    @property
    def server(self) -> str:
        """The API server's URL."""
        return f"https://{self.host}:{self.ports.apiserver}"


# Shortcuts for callers that want one location, not a Settings object (test
# fixtures, the Makefile's helpers). Each reads the environment afresh.
def cache_dir() -> Path:
    """``$LLMCANARY_CACHE`` (default ``~/.cache/llmcanary``)."""
    return Settings.from_env().cache_dir


def bin_dir() -> Path:
    """Where build.sh puts etcd, kube-apiserver, ..., kubectl and kwok."""
    return Settings.from_env().bin_dir


def state_dir() -> Path:
    """``$LLMCANARY_DEVCLUSTER_DIR`` (default ``<repo>/.devcluster``)."""
    return Settings.from_env().state_dir


def kubeconfig() -> Path:
    """The admin kubeconfig of the dev cluster."""
    return Settings.from_env().kubeconfig
