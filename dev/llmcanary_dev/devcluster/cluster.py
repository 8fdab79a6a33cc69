"""Bring the local control plane up and down: etcd, kube-apiserver, controller manager,
scheduler and KWOK playing the kubelet of simulated GPU nodes.

``up`` is idempotent and fast when the cluster already runs; a cold start (processes
stopped, state kept) and a start from nothing both aim at a usable cluster in well under
30 seconds once the binaries are built: the components start together and retry
until the API server answers, and the few bootstrap objects go over one TLS connection.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import http.client
import ipaddress
import logging
import os
import shlex
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmcanary_dev.devcluster import processes
from llmcanary_dev.devcluster.api import ApiClient, ApiError
from llmcanary_dev.devcluster.kubeconfig import write_kubeconfig
from llmcanary_dev.devcluster.nodes import (
    DEFAULT_GPU_NODES,
    KWOK_ANNOTATION,
    GpuNode,
    node_manifest,
)
from llmcanary_dev.devcluster.paths import (
    MAIN_BINARY,
    PROCESSES,
    READ_PODS,
    TOOLS,
    Settings,
    find_repo_root,
)
from llmcanary_dev.devcluster.pki import (
    ADMIN,
    CONTROLLER_MANAGER,
    ETCD_CLIENT,
    FRONT_PROXY_CLIENT,
    KUBELET_CLIENT,
    KWOK,
    SCHEDULER,
    Pki,
    ensure_pki,
)
from llmcanary_dev.devcluster.stages import PodReadiness, kwok_config

__all__ = [
    "Cluster",
    "ClusterStatus",
    "DevClusterError",
    "NodeStatus",
    "down",
    "ensure_built",
    "env",
    "kubectl",
    "status",
    "up",
]

log = logging.getLogger(__name__)

_MARKER = ".llmcanary-devcluster"
#: What ``down(purge=True)`` removes from the state directory (and nothing else).
_STATE_ENTRIES = (
    "pki",
    "config",
    "etcd",
    "logs",
    "pids",
    "kubeconfig",
    "lock",
    "read-pods",
    _MARKER,
)


class DevClusterError(RuntimeError):
    """The dev cluster could not be built, started or reached."""


# --------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class Cluster:
    """A running dev cluster, as returned by :func:`up`."""

    settings: Settings
    #: The components this ``up`` call started (empty if all were already running).
    started: tuple[str, ...] = ()
    #: Seconds ``up`` took.
    elapsed: float = 0.0

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig (user ``llmcanary-admin`` in ``system:masters``)."""
        return self.settings.kubeconfig

    @property
    def server(self) -> str:
        return self.settings.server

    @property
    def ca_file(self) -> Path:
        return self.settings.pki_dir / "ca.crt"

    def kubectl(
        self,
        *args: str,
        check: bool = True,
        input: str | None = None,
        timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster as the admin; see :func:`kubectl`."""
        return kubectl(*args, settings=self.settings, check=check, input=input, timeout=timeout)

    def env(self) -> dict[str, str]:
        """Environment variables that point clients at this cluster."""
        path = os.environ.get("PATH", "")
        return {"KUBECONFIG": str(self.kubeconfig), "PATH": f"{self.settings.bin_dir}:{path}"}


@dataclass(frozen=True)
class NodeStatus:
    name: str
    ready: bool
    gpus: str  # allocatable nvidia.com/gpu, "" if none
    product: str  # nvidia.com/gpu.product label, "" if none


@dataclass(frozen=True)
class ClusterStatus:
    settings: Settings
    #: Component name -> pid, or None when it is not running.
    components: dict[str, int | None]
    apiserver_ready: bool
    nodes: tuple[NodeStatus, ...] = ()
    #: Why the API could not be read, when it could not.
    error: str = ""

    @property
    def running(self) -> bool:
        """All components run and the API server is ready."""
        return self.apiserver_ready and all(p is not None for p in self.components.values())

    def format(self) -> str:
        def row(label: str, value: str) -> str:
            return f"{label + ':':<25}{value}"

        lines = [row("state", str(self.settings.state_dir))]
        for name, pid in self.components.items():
            lines.append(row(name, f"running (pid {pid})" if pid else "stopped"))
        ready = "ready" if self.apiserver_ready else f"not ready {self.error}".rstrip()
        lines.append(row("apiserver", f"{self.settings.server} {ready}"))
        if self.apiserver_ready:
            lines.append(row("kubeconfig", str(self.settings.kubeconfig)))
        for n in self.nodes:
            gpus = f", {n.gpus} x {n.product}" if n.gpus else ""
            lines.append(row(f"node {n.name}", f"{'Ready' if n.ready else 'NotReady'}{gpus}"))
        return "\n".join(lines)


# --------------------------------------------------------------------------------------
# Building


def _build_script() -> Path:
    override = os.environ.get("LLMCANARY_DEVCLUSTER_BUILD_SCRIPT")
    if override:
        return Path(override)
    candidates = [
        find_repo_root() / "devcluster" / "build.sh",
        # dev/llmcanary_dev/devcluster/cluster.py -> the repository root, in a checkout.
        Path(__file__).resolve().parents[3] / "devcluster" / "build.sh",
    ]
    for c in candidates:
        if c.is_file():
            return c
    raise DevClusterError(
        "devcluster/build.sh not found (run from the llmcanary checkout, or set "
        "LLMCANARY_DEVCLUSTER_BUILD_SCRIPT)"
    )


def _built(settings: Settings) -> bool:
    return (
        all(os.access(settings.tool(t), os.X_OK) for t in (MAIN_BINARY, *TOOLS))
        and all(any(d.glob("*.yaml")) for d in settings.crd_dirs)
        and any(settings.kwok_stages_dir.glob("*.yaml"))
        and settings.kwok_rbac_file.is_file()
    )


def ensure_built(settings: Settings | None = None, *, force: bool = False) -> Path:
    """Run ``devcluster/build.sh`` if a binary or data file is missing (or ``force``).

    ``build.sh`` itself skips the build when its stamp matches, so ``force=True`` is
    cheap when nothing changed. Returns the bin directory. The first build compiles
    Kubernetes: about 8 minutes on 2 cores with empty Go caches.
    """
    s = settings or Settings.from_env()
    if not force and _built(s):
        return s.bin_dir
    script = _build_script()
    log.info("building the dev cluster binaries with %s (first build: several minutes)", script)
    env = {**os.environ, "LLMCANARY_CACHE": str(s.cache_dir)}
    proc = subprocess.run(["bash", str(script)], env=env, check=False)
    if proc.returncode != 0:
        raise DevClusterError(f"{script} failed with exit status {proc.returncode}")
    if not _built(s):
        raise DevClusterError(f"{script} succeeded but {s.bin_dir} is incomplete")
    return s.bin_dir


# --------------------------------------------------------------------------------------
# kubectl


def kubectl(
    *args: str,
    settings: Settings | None = None,
    check: bool = True,
    input: str | None = None,
    timeout: float = 120.0,
) -> subprocess.CompletedProcess[str]:
    """Run the cluster's kubectl with the admin kubeconfig; capture text output.

    With ``check`` a non-zero exit raises :class:`DevClusterError` carrying stderr.
    """
    s = settings or Settings.from_env()
    argv = [str(s.tool("kubectl")), f"--kubeconfig={s.kubeconfig}", *args]
    proc = subprocess.run(
        argv, input=input, capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and proc.returncode != 0:
        raise DevClusterError(
            f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}"
        )
    return proc


# --------------------------------------------------------------------------------------
# Configuration files and component command lines


def _admin_client(settings: Settings, pki: Pki, *, timeout: float = 5.0) -> ApiClient:
    admin = pki.client(ADMIN)
    return ApiClient(
        settings.host,
        settings.ports.apiserver,
        pki.ca.cert,
        admin.cert,
        admin.key,
        timeout=timeout,
    )


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)


def _write_configs(settings: Settings, pki: Pki) -> dict[str, Path]:
    """Kubeconfigs for the admin and each component, the scheduler and KWOK configs."""
    cfg = settings.config_dir
    server = settings.server
    write_kubeconfig(
        settings.kubeconfig, server=server, ca_file=pki.ca.cert, client=pki.client(ADMIN)
    )
    paths: dict[str, Path] = {}
    for ident in (CONTROLLER_MANAGER, SCHEDULER, KWOK):
        paths[ident.stem] = write_kubeconfig(
            cfg / f"{ident.stem}.kubeconfig",
            server=server,
            ca_file=pki.ca.cert,
            client=pki.client(ident),
        )
    # The scheduler takes leader election off only from its config file, and a
    # single instance need not wait for a lease.
    paths["scheduler-config"] = cfg / "kube-scheduler.yaml"
    _write_text(
        paths["scheduler-config"],
        "apiVersion: kubescheduler.config.k8s.io/v1\n"
        "kind: KubeSchedulerConfiguration\n"
        "clientConnection:\n"
        f"  kubeconfig: {paths['kube-scheduler']}\n"
        "  qps: 100\n"
        "  burst: 200\n"
        "leaderElection:\n"
        "  leaderElect: false\n",
    )
    paths["kwok-config"] = _kwok_config_path(settings)
    _write_text(paths["kwok-config"], _kwok_config(settings, settings.pod_readiness))
    return paths


def _kwok_config_path(settings: Settings) -> Path:
    return settings.config_dir / "kwok.yaml"


def _kwok_config(settings: Settings, readiness: PodReadiness) -> str:
    # The stages kwokctl would give KWOK, copied from the pinned kwok module by build.sh.
    stages = sorted(settings.kwok_stages_dir.glob("*.yaml"))
    if not stages:
        raise DevClusterError(f"no KWOK stages in {settings.kwok_stages_dir}; run ensure_built()")
    return kwok_config([p.read_text() for p in stages], readiness)


def _component_args(settings: Settings, pki: Pki, cfg: dict[str, Path]) -> dict[str, list[str]]:
    h, p = settings.host, settings.ports
    etcd_url = f"https://{h}:{p.etcd}"
    peer_url = f"https://{h}:{p.etcd_peer}"
    sa_issuer = "https://kubernetes.default.svc.cluster.local"
    etcd_client = pki.client(ETCD_CLIENT)
    kubelet_client = pki.client(KUBELET_CLIENT)
    advertise_loopback = ipaddress.ip_address(settings.advertise_address).is_loopback
    return {
        "etcd": [
            "--name=llmcanary-dev",
            f"--data-dir={settings.etcd_data_dir}",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=llmcanary-dev={peer_url}",
            f"--cert-file={pki.etcd.cert}",
            f"--key-file={pki.etcd.key}",
            f"--trusted-ca-file={pki.ca.cert}",
            "--client-cert-auth",
            f"--peer-cert-file={pki.etcd.cert}",
            f"--peer-key-file={pki.etcd.key}",
            f"--peer-trusted-ca-file={pki.ca.cert}",
            "--peer-client-cert-auth",
            # A throwaway dev cluster: fsync would only make start-up and writes slow.
            "--unsafe-no-fsync",
            "--auto-compaction-retention=1",
            "--log-level=warn",
        ],
        "kube-apiserver": [
            f"--bind-address={h}",
            f"--advertise-address={settings.advertise_address}",
            # The API server listens on loopback only; Endpoints may not hold a
            # loopback address, so the `kubernetes` Service gets none (no real
            # pod could use it anyway). A routable advertise address keeps them.
            f"--endpoint-reconciler-type={'none' if advertise_loopback else 'lease'}",
            f"--secure-port={p.apiserver}",
            f"--etcd-servers={etcd_url}",
            f"--etcd-cafile={pki.ca.cert}",
            f"--etcd-certfile={etcd_client.cert}",
            f"--etcd-keyfile={etcd_client.key}",
            f"--tls-cert-file={pki.apiserver.cert}",
            f"--tls-private-key-file={pki.apiserver.key}",
            f"--client-ca-file={pki.ca.cert}",
            f"--requestheader-client-ca-file={pki.front_proxy_ca.cert}",
            f"--requestheader-allowed-names={FRONT_PROXY_CLIENT}",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={pki.front_proxy_client.cert}",
            f"--proxy-client-key-file={pki.front_proxy_client.key}",
            "--anonymous-auth=false",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            f"--service-account-issuer={sa_issuer}",
            f"--service-account-key-file={pki.service_account_pub}",
            f"--service-account-signing-key-file={pki.service_account_key}",
            f"--service-cluster-ip-range={settings.service_cidr}",
            "--allow-privileged=true",
            "--profiling=false",
            # ``kubectl logs`` (pods/log) reaches the node's kubelet: KWOK's server here,
            # at the address and port KWOK gives its nodes, verified against our CA.
            f"--kubelet-client-certificate={kubelet_client.cert}",
            f"--kubelet-client-key={kubelet_client.key}",
            f"--kubelet-certificate-authority={pki.ca.cert}",
            "--kubelet-preferred-address-types=InternalIP",
        ],
        "kube-controller-manager": [
            f"--kubeconfig={cfg['kube-controller-manager']}",
            f"--authentication-kubeconfig={cfg['kube-controller-manager']}",
            f"--authorization-kubeconfig={cfg['kube-controller-manager']}",
            f"--bind-address={h}",
            f"--secure-port={p.controller_manager}",
            f"--tls-cert-file={pki.controller_manager_serving.cert}",
            f"--tls-private-key-file={pki.controller_manager_serving.key}",
            "--leader-elect=false",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={pki.service_account_key}",
            f"--root-ca-file={pki.ca.cert}",
            f"--cluster-signing-cert-file={pki.ca.cert}",
            f"--cluster-signing-key-file={pki.ca.key}",
            # The default set (deployments, replicasets, garbage collector, namespaces,
            # service accounts, node lifecycle, ...) less the Endpoints/EndpointSlice
            # controllers: the API rejects loopback endpoint addresses, and pod IPs
            # are loopback here (Settings.pod_cidr). The local stack writes the
            # gateway's slices itself (llmcanary_dev.localstack.endpoints, type FQDN).
            "--controllers=*,-endpoints-controller,-endpointslice-controller,"
            "-endpointslice-mirroring-controller",
            "--kube-api-qps=100",
            "--kube-api-burst=200",
            "--profiling=false",
        ],
        "kube-scheduler": [
            f"--config={cfg['scheduler-config']}",
            f"--authentication-kubeconfig={cfg['kube-scheduler']}",
            f"--authorization-kubeconfig={cfg['kube-scheduler']}",
            f"--bind-address={h}",
            f"--secure-port={p.scheduler}",
            f"--tls-cert-file={pki.scheduler_serving.cert}",
            f"--tls-private-key-file={pki.scheduler_serving.key}",
            "--profiling=false",
        ],
        "kwok": [
            f"--kubeconfig={cfg['kwok']}",
            f"--config={cfg['kwok-config']}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={'='.join(KWOK_ANNOTATION)}",
            "--node-lease-duration-seconds=40",
            f"--server-address={h}:{p.kwok}",
            f"--cidr={settings.pod_cidr}",
            # The nodes' kubelet endpoint is KWOK's own server (HTTP and HTTPS on one
            # port), which serves a container's log from the file its Logs object names.
            f"--node-ip={h}",
            f"--node-port={p.kwok}",
            f"--tls-cert-file={pki.kwok_serving.cert}",
            f"--tls-private-key-file={pki.kwok_serving.key}",
            "--enable-crds=Logs",
        ],
    }


# --------------------------------------------------------------------------------------
# Bootstrap objects


def _kwok_binding() -> dict[str, Any]:
    """Bind KWOK's identity to the ClusterRole copied from kwok's own RBAC manifests."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "kwok-controller"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "kwok-controller",
        },
        "subjects": [
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": KWOK.user},
        ],
    }


def _ensure_node(api: ApiClient, node: GpuNode, kubelet: tuple[str, int]) -> None:
    manifest = node_manifest(node, kubelet)
    if api.create("/api/v1/nodes", manifest):
        log.info("created node %s (%d x %s)", node.name, node.count, node.product)
        return
    # It exists (state kept from an earlier run): make labels and resources current.
    path = f"/api/v1/nodes/{node.name}"
    api.merge_patch(path, {"metadata": {"labels": manifest["metadata"]["labels"]}})
    api.merge_patch(
        path + "/status",
        {
            "status": {
                k: manifest["status"][k]
                for k in ("capacity", "allocatable", "addresses", "daemonEndpoints")
            }
        },
    )


def _release_node_leases(api: ApiClient) -> None:
    """Delete the node Leases a previous KWOK process held.

    KWOK takes a Lease per node and a new process (with a new random identity)
    would wait for the old one to expire (40s) before it moves any pod on that
    node; no other KWOK runs here, so the old leases can simply go.
    """
    key, value = KWOK_ANNOTATION
    for node in api.get("/api/v1/nodes")["items"]:
        meta = node["metadata"]
        if meta.get("annotations", {}).get(key) == value:
            name = meta["name"]
            if api.delete(f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}"):
                log.debug("released the stale lease of node %s", name)


def _crd_names(settings: Settings) -> list[str]:
    """CRD names (``metadata.name``) of the copied Gateway API and Istio manifests."""
    names = []
    for d in settings.crd_dirs:
        for path in sorted(d.glob("*.yaml")):
            stem = path.stem  # gateway.networking.k8s.io_httproutes
            if "_" in stem and not stem.endswith("_vap_safeupgrades"):
                group, plural = stem.split("_", 1)
                names.append(f"{plural}.{group}")
    return names


def _crds_established(api: ApiClient, names: Sequence[str]) -> bool:
    base = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
    for name in names:
        resp = api.request("GET", base + name)
        if resp.status != 200 or not _established(resp.json()):
            return False
    return True


def _kubectl_apply(s: Settings, *paths: Path) -> subprocess.Popen[str]:
    """Start a server-side ``kubectl apply`` of YAML files (idempotent)."""
    argv = [
        str(s.tool("kubectl")),
        f"--kubeconfig={s.kubeconfig}",
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=llmcanary-devcluster",
        *(f"--filename={p}" for p in paths),
    ]
    pipe = subprocess.PIPE
    return subprocess.Popen(argv, stdout=pipe, stderr=pipe, text=True)


def _finish_apply(apply: subprocess.Popen[str], what: str, deadline: float) -> None:
    out, err = apply.communicate(timeout=max(1.0, deadline - time.monotonic()))
    if apply.returncode != 0:
        raise DevClusterError(f"kubectl apply of {what} failed: {err.strip()}")
    log.debug("kubectl apply: %s", out.strip())


def _ensure_crds(s: Settings, deadline: float) -> None:
    """Install the third-party CRDs into a running cluster that lacks some of them.

    A cluster started before the cache gained a CRD (e.g. Istio's) gets it here.
    """
    crds = _crd_names(s)
    with _admin_client(s, ensure_pki(s)) as api:
        if _crds_established(api, crds):
            return
        log.info("installing the CRDs the running cluster lacks")
        with _kubectl_apply(s, *s.crd_dirs) as apply:
            _finish_apply(apply, "the CRDs", deadline)
        _wait(
            "CRDs Established",
            lambda: _crds_established(api, crds),
            deadline,
            s,
            ("kube-apiserver",),
        )


# --------------------------------------------------------------------------------------
# Waiting


def _wait(
    what: str, check: Callable[[], bool], deadline: float, settings: Settings, logs: Sequence[str]
) -> None:
    delay = 0.05
    while True:
        if check():
            return
        for name in logs:
            if processes.running_pid(settings, name) is None:
                log_file = settings.logs_dir / f"{name}.log"
                raise DevClusterError(
                    f"{name} exited while waiting for {what}; last lines of {log_file}:\n"
                    f"{processes.log_tail(settings, name)}"
                )
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {n}.log\n{processes.log_tail(settings, n, 10)}" for n in logs)
            raise DevClusterError(f"timed out waiting for {what}\n{tails}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)


def _node_ready(node: dict[str, Any]) -> bool:
    conditions = node.get("status", {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _established(crd: dict[str, Any]) -> bool:
    conditions = crd.get("status", {}).get("conditions") or []
    return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)


def _http_ok(settings: Settings, port: int, path: str = "/healthz") -> bool:
    conn = http.client.HTTPConnection(settings.host, port, timeout=2.0)
    try:
        conn.request("GET", path)
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def _exists(api: ApiClient, path: str) -> bool:
    try:
        return api.request("GET", path).status == 200
    except OSError:
        api.close()
        return False


# --------------------------------------------------------------------------------------
# up / down / status / env


@contextlib.contextmanager
def _locked(settings: Settings) -> Iterator[None]:
    """Serialise up/down across processes (e.g. parallel pytest workers)."""
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    (settings.state_dir / _MARKER).touch()
    with (settings.state_dir / "lock").open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _healthy(settings: Settings) -> bool:
    if not all(processes.running_pid(settings, c) for c in PROCESSES):
        return False
    if not settings.kubeconfig.is_file():
        return False
    pki = ensure_pki(settings)
    with _admin_client(settings, pki, timeout=2.0) as api:
        return api.ready("/readyz")


def _bring_up(
    s: Settings, deadline: float, gpu_nodes: Sequence[GpuNode], started: list[str]
) -> None:
    """Start what is not running and wait until the cluster is usable; record what started."""
    t0 = time.monotonic()
    for d in (s.logs_dir, s.pids_dir, s.config_dir):
        d.mkdir(parents=True, exist_ok=True)
    _check_ports(s)
    pki = ensure_pki(s)
    cfg = _write_configs(s, pki)
    args = _component_args(s, pki, cfg)

    def start(name: str) -> None:
        if processes.running_pid(s, name) is None:
            processes.start(s, name, args[name])
            started.append(name)

    # etcd and the API server start together (the API server retries etcd).
    # The controller manager and scheduler exit if the API server is up but
    # has not finished bootstrapping RBAC, so they wait for /readyz.
    for name in ("etcd", "kube-apiserver"):
        start(name)
    with _admin_client(s, pki) as api:
        _wait(
            "the API server's /readyz",
            lambda: api.ready("/readyz"),
            deadline,
            s,
            ("etcd", "kube-apiserver"),
        )
        log.info("API server ready after %.1fs", time.monotonic() - t0)
        for name in ("kube-controller-manager", "kube-scheduler"):
            start(name)

        # KWOK's RBAC (ClusterRole from kwok's manifests) and the Gateway API and
        # Istio CRDs go through kubectl (YAML); server-side apply keeps it idempotent.
        with _kubectl_apply(s, s.kwok_rbac_file, *s.crd_dirs) as apply:
            # Meanwhile, the small objects over the open connection.
            api.create("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", _kwok_binding())
            for node in gpu_nodes:
                _ensure_node(api, node, (s.host, s.ports.kwok))
            _finish_apply(apply, "KWOK RBAC and the CRDs", deadline)
        if processes.running_pid(s, "kwok") is None:
            _release_node_leases(api)
        start("kwok")
        if processes.running_pid(s, READ_PODS) is None:
            processes.start(s, READ_PODS, _read_pods_args(s), module=READ_PODS_MODULE)
            started.append(READ_PODS)

        crds = _crd_names(s)

        def crds_established() -> bool:
            return _crds_established(api, crds)

        def sa_exists() -> bool:
            return _exists(api, "/api/v1/namespaces/default/serviceaccounts/default")

        names = {n.name for n in gpu_nodes}

        def nodes_ready() -> bool:
            items = api.get("/api/v1/nodes")["items"]
            ready = {n["metadata"]["name"] for n in items if _node_ready(n)}
            return names <= ready

        _wait("CRDs Established", crds_established, deadline, s, ("kube-apiserver",))
        _wait("the default ServiceAccount", sa_exists, deadline, s, ("kube-controller-manager",))
        # KWOK serving /healthz means it watches the nodes, so their Ready
        # condition is live, not one left in etcd by an earlier run.
        _wait("KWOK's /healthz", lambda: _http_ok(s, s.ports.kwok), deadline, s, ("kwok",))
        _wait("GPU nodes Ready", nodes_ready, deadline, s, ("kwok",))
        for name, port in (
            ("kube-controller-manager", s.ports.controller_manager),
            ("kube-scheduler", s.ports.scheduler),
        ):
            with ApiClient(s.host, port, pki.ca.cert, timeout=2.0) as health:
                probe = functools.partial(health.ready, "/healthz")
                _wait(f"{name}'s /healthz", probe, deadline, s, (name,))


READ_PODS_MODULE = "llmcanary_dev.devcluster.read_pods"


def _read_pods_args(s: Settings) -> list[str]:
    """The read pods run over the dev stack's model repository (``model_repo/``)."""
    model_root = os.environ.get("LLMCANARY_MODEL_REPO") or str(find_repo_root() / "model_repo")
    return [
        f"--kubeconfig={s.kubeconfig}",
        f"--model-root={Path(model_root).resolve()}",
        f"--work-dir={s.state_dir / 'read-pods'}",
    ]


def _check_ports(s: Settings) -> None:
    """Fail clearly if a port of a component that is not running is taken by something else."""
    p = s.ports
    wanted = {
        "etcd": [("ETCD", p.etcd), ("ETCD_PEER", p.etcd_peer)],
        "kube-apiserver": [("APISERVER", p.apiserver)],
        "kube-controller-manager": [("CONTROLLER_MANAGER", p.controller_manager)],
        "kube-scheduler": [("SCHEDULER", p.scheduler)],
        "kwok": [("KWOK", p.kwok)],
    }
    for name, ports in wanted.items():
        if processes.running_pid(s, name) is not None:
            continue
        for env_name, port in ports:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind((s.host, port))
                except OSError as e:
                    raise DevClusterError(
                        f"{name} cannot listen on {s.host}:{port} ({e.strerror}): another "
                        f"process holds it (another dev cluster?); stop it or set "
                        f"LLMCANARY_DEVCLUSTER_{env_name}_PORT"
                    ) from e


#: Stop order: clients first, then the API server (which would otherwise wait for
#: their watches to end), then etcd (which the API server needs to shut down).
_STOP_GROUPS: tuple[tuple[str, ...], ...] = (
    (READ_PODS, "kwok", "kube-scheduler", "kube-controller-manager"),
    ("kube-apiserver",),
    ("etcd",),
)


def _stop(s: Settings, names: Sequence[str], timeout: float = 15.0) -> list[str]:
    stopped: list[str] = []
    for group in _STOP_GROUPS:
        stopped += processes.stop(s, [n for n in group if n in names], timeout=timeout)
    return stopped


def up(
    settings: Settings | None = None,
    *,
    timeout: float = 120.0,
    gpu_nodes: Sequence[GpuNode] = DEFAULT_GPU_NODES,
) -> Cluster:
    """Start the dev cluster (whatever part of it is not running) and wait until it is usable.

    Usable means: ``/readyz`` ok, the Gateway API and Istio CRDs Established, the ``default``
    ServiceAccount present in ``default`` (so pods can be created) and every GPU node
    Ready. Needs the binaries (:func:`ensure_built`). Raises :class:`DevClusterError`
    with the failing component's log tail on failure or after ``timeout`` seconds.
    """
    s = settings or Settings.from_env()
    t0 = time.monotonic()
    deadline = t0 + timeout
    if not _built(s):
        raise DevClusterError(
            f"the dev cluster binaries are not built in {s.bin_dir}: run "
            "`llmcanary devcluster build` (or ensure_built())"
        )
    with _locked(s):
        if _healthy(s):
            log.info("dev cluster already running (%s)", s.server)
            _ensure_crds(s, deadline)
            return Cluster(s, (), time.monotonic() - t0)
        started: list[str] = []
        try:
            _bring_up(s, deadline, gpu_nodes, started)
        except BaseException:
            # Leave nothing half-started behind (a failed fixture, a Ctrl-C).
            if started:
                log.warning("up failed; stopping what it started: %s", ", ".join(started))
                _stop(s, started, timeout=5.0)
            raise
    elapsed = time.monotonic() - t0
    log.info("dev cluster up in %.1fs (started: %s)", elapsed, ", ".join(started) or "nothing")
    return Cluster(s, tuple(started), elapsed)


def set_pod_readiness(
    settings: Settings, readiness: PodReadiness, *, timeout: float = 30.0
) -> bool:
    """Make KWOK mark LLMDeployment pods Ready itself (``kwok``) or leave it to the
    local data plane (``external``); see :mod:`llmcanary_dev.devcluster.stages`.

    Rewrites KWOK's config and restarts KWOK (about a second; running pods keep their
    status) only when the mode changes. Returns whether it did. The cluster must be up.
    """
    settings = dataclasses.replace(settings, pod_readiness=readiness)
    with _locked(settings):
        path = _kwok_config_path(settings)
        if path.is_file() and path.read_text() == _kwok_config(settings, readiness):
            return False
        if processes.running_pid(settings, "kube-apiserver") is None:
            raise DevClusterError("the dev cluster is not running: `llmcanary devcluster up`")
        pki = ensure_pki(settings)
        args = _component_args(settings, pki, _write_configs(settings, pki))
        processes.stop(settings, ["kwok"])
        processes.start(settings, "kwok", args["kwok"])
        deadline = time.monotonic() + timeout
        _wait(
            "KWOK's /healthz",
            lambda: _http_ok(settings, settings.ports.kwok),
            deadline,
            settings,
            ("kwok",),
        )
        log.info("KWOK restarted with %s pod readiness", readiness)
        return True


def down(
    settings: Settings | None = None, *, purge: bool = False, timeout: float = 15.0
) -> list[str]:
    """Stop every component (SIGTERM, SIGKILL after ``timeout``); idempotent.

    With ``purge`` also delete the cluster's state (certificates, etcd data, logs,
    kubeconfigs) so the next ``up`` starts from nothing. Returns the components that
    were running.
    """
    s = settings or Settings.from_env()
    if not s.state_dir.is_dir():
        return []
    with _locked(s):
        stopped = _stop(s, PROCESSES, timeout=timeout)
        if purge:
            # Only what this package created: never rmtree a directory that a
            # mistyped LLMCANARY_DEVCLUSTER_DIR might point at.
            for entry in _STATE_ENTRIES:
                path = s.state_dir / entry
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                elif path.exists() or path.is_symlink():
                    path.unlink()
    if purge:
        with contextlib.suppress(OSError):
            s.state_dir.rmdir()  # only if empty
        log.info("dev cluster state purged (%s)", s.state_dir)
    return stopped


def status(settings: Settings | None = None) -> ClusterStatus:
    """Which components run, whether the API server is ready, and the nodes."""
    s = settings or Settings.from_env()
    comps = {c: processes.running_pid(s, c) for c in PROCESSES}
    ca = s.pki_dir / "ca.crt"
    admin = s.pki_dir / f"{ADMIN.stem}.crt"
    if comps["kube-apiserver"] is None or not (ca.is_file() and admin.is_file()):
        return ClusterStatus(s, comps, False)
    api = ApiClient(
        s.host, s.ports.apiserver, ca, admin, s.pki_dir / f"{ADMIN.stem}.key", timeout=3.0
    )
    with api:
        if not api.ready("/readyz"):
            return ClusterStatus(s, comps, False, error="(/readyz not ok)")
        try:
            items = api.get("/api/v1/nodes")["items"]
        except (ApiError, OSError) as e:
            return ClusterStatus(s, comps, True, error=str(e))
    nodes = tuple(
        NodeStatus(
            name=n["metadata"]["name"],
            ready=_node_ready(n),
            gpus=n.get("status", {}).get("allocatable", {}).get("nvidia.com/gpu", ""),
            product=n["metadata"].get("labels", {}).get("nvidia.com/gpu.product", ""),
        )
        for n in items
    )
    return ClusterStatus(s, comps, True, nodes)


def env(settings: Settings | None = None) -> str:
    """Shell lines that point kubectl and clients at the dev cluster (for ``eval``)."""
    s = settings or Settings.from_env()
    kubeconfig = shlex.quote(str(s.kubeconfig))
    bin_dir = shlex.quote(str(s.bin_dir))
    return f'export KUBECONFIG={kubeconfig}\nexport PATH={bin_dir}:"$PATH"\n'
