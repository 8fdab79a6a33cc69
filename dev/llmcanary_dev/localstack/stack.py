"""The local stack: the dev cluster plus a real data plane, up and down with one command.

``llmcanary stack up`` starts (or reuses) the dev cluster, hands pod readiness to the
data plane (:func:`llmcanary_dev.devcluster.set_pod_readiness`), installs the CRD, and starts
``llmcanary stack serve`` in the background. That process owns the data plane until
``llmcanary stack down``:

- :class:`~llmcanary_dev.localstack.pods.PodRunner`: one ``tritonserver`` per pod;
- :class:`~llmcanary_dev.localstack.gateway.Traefik`, the Gateway API implementation that
  serves the HTTPRoutes attached to the stack's Gateway, over EndpointSlices
  :mod:`~llmcanary_dev.localstack.endpoints` mirrors from the pods;
- :class:`~llmcanary_dev.localstack.inference_gateway.InferenceGateway`, the stack's own
  stand-in for a Gateway that routes InferencePool backends, and the pools' endpoint
  pickers' metrics (:mod:`~llmcanary_dev.localstack.inference_routes` says what it does);
- :class:`~llmcanary_dev.localstack.prometheus.Prometheus` scraping the Tritons, the
  gateway and the pickers.

It re-reads the cluster every half second and writes ``<state>/stack.json`` (URLs and
its pid) once everything answers. ``down`` stops it (it stops its children), gives
readiness back to KWOK and stops the cluster unless told to keep it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmcanary.kube.client import Kube
from llmcanary.kube.errors import ApiConflict
from llmcanary.routing.httproute import HTTPROUTE
from llmcanary.routing.inference_pool import INFERENCEPOOL
from llmcanary_dev import devcluster
from llmcanary_dev.devcluster.paths import find_repo_root
from llmcanary_dev.localstack import inference_routes
from llmcanary_dev.localstack.endpoints import MANAGED_BY, MANAGED_BY_LABEL, sync_slices
from llmcanary_dev.localstack.gateway import Traefik, gateway_objects, traefik_binary
from llmcanary_dev.localstack.inference_gateway import InferenceGateway
from llmcanary_dev.localstack.pods import PodRunner
from llmcanary_dev.localstack.prometheus import PICKER_JOB, Prometheus, prometheus_binary
from llmcanary_dev.localstack.triton import find_triton

__all__ = ["StackError", "StackSettings", "down", "running", "serve", "up"]

log = logging.getLogger(__name__)

SYNC_INTERVAL_S = 0.5


class StackError(RuntimeError):
    pass


@dataclass(frozen=True)
class StackSettings:
    state_dir: Path
    model_root: Path
    gateway_port: int = 18080
    prometheus_port: int = 19090
    gateway_metrics_port: int = 18082
    inference_port: int = 18084

    @classmethod
    def from_env(cls) -> StackSettings:
        env = os.environ
        root = find_repo_root()
        return cls(
            state_dir=Path(env.get("LLMCANARY_STACK_DIR") or root / ".localstack").resolve(),
            model_root=Path(env.get("LLMCANARY_MODEL_REPO") or root / "model_repo").resolve(),
            gateway_port=int(env.get("LLMCANARY_STACK_GATEWAY_PORT") or 18080),
            prometheus_port=int(env.get("LLMCANARY_STACK_PROMETHEUS_PORT") or 19090),
            gateway_metrics_port=int(env.get("LLMCANARY_STACK_GATEWAY_METRICS_PORT") or 18082),
            inference_port=int(env.get("LLMCANARY_STACK_INFERENCE_PORT") or 18084),
        )

    def environment(self) -> dict[str, str]:
        """These settings as the variables :meth:`from_env` reads."""
        return {
            "LLMCANARY_STACK_DIR": str(self.state_dir),
            "LLMCANARY_MODEL_REPO": str(self.model_root),
            "LLMCANARY_STACK_GATEWAY_PORT": str(self.gateway_port),
            "LLMCANARY_STACK_PROMETHEUS_PORT": str(self.prometheus_port),
            "LLMCANARY_STACK_GATEWAY_METRICS_PORT": str(self.gateway_metrics_port),
            "LLMCANARY_STACK_INFERENCE_PORT": str(self.inference_port),
        }

    @property
    def info_file(self) -> Path:
        return self.state_dir / "stack.json"

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.prometheus_port}"

    @property
    def access_log(self) -> Path:
        return self.state_dir / "gateway" / "access.log"

    @property
    def inference_url(self) -> str:
        return f"http://127.0.0.1:{self.inference_port}"

    @property
    def inference_access_log(self) -> Path:
        return self.state_dir / "inference-gateway" / "access.log"

    @property
    def starts_file(self) -> Path:
        return self.state_dir / "pods" / "starts.jsonl"


# --- the serving process -----------------------------------------------------------


def sync_endpoints(
    kube: Kube, pods: list[dict[str, Any]], services: list[dict[str, Any]] | None = None
) -> int:
    """Mirror every Service's pods into the FQDN EndpointSlices the gateway reads."""
    return sync_slices(
        kube,
        kube.list_cluster("v1", "Service") if services is None else services,
        pods,
        kube.list_cluster(
            "discovery.k8s.io/v1",
            "EndpointSlice",
            label_selector=f"{MANAGED_BY_LABEL}={MANAGED_BY}",
        ),
    )


def sync_inference(
    kube: Kube,
    gateway: InferenceGateway,
    pods: list[dict[str, Any]],
    services: list[dict[str, Any]],
) -> None:
    """Play the inference Gateway's controller for a pass: write what it says of each
    route and pool attached to it, and serve the routing table."""
    routes = kube.list_cluster(HTTPROUTE.api_version, HTTPROUTE.kind)
    pools = kube.list_cluster(INFERENCEPOOL.api_version, INFERENCEPOOL.kind)
    plan = inference_routes.plan(routes, pools, services, pods)
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for resource, objects, wanted in (
        (HTTPROUTE, routes, plan.route_status),
        (INFERENCEPOOL, pools, plan.pool_status),
    ):
        by_key = {(o["metadata"]["namespace"], o["metadata"]["name"]): o for o in objects}
        for key, ours in wanted.items():
            obj = by_key[key]
            parents = inference_routes.merged_parents(obj, ours, now)
            if parents is None:
                continue
            try:
                kube.patch_status(
                    resource.api_version,
                    resource.kind,
                    key[0],
                    key[1],
                    {"parents": parents},
                    resource_version=obj["metadata"]["resourceVersion"],
                )
            except ApiConflict:  # another controller wrote meanwhile: next pass
                continue
    gateway.update(plan.table)


def serve(settings: StackSettings, stop: threading.Event | None = None) -> None:
    """Run the data plane in this process until SIGTERM/SIGINT (or ``stop`` is set)."""
    stop = stop or threading.Event()
    cluster = devcluster.Settings.from_env()
    cache = cluster.cache_dir
    kube = Kube.from_kubeconfig(str(cluster.kubeconfig))
    work = settings.state_dir
    install = find_triton(work / "triton")
    runner = PodRunner(kube, install, work / "pods", settings.model_root)
    prometheus = Prometheus(work / "prometheus", prometheus_binary(cache), settings.prometheus_port)
    gateway = Traefik(
        traefik_binary(cache),
        work / "gateway",
        cluster.kubeconfig,
        port=settings.gateway_port,
        metrics_port=settings.gateway_metrics_port,
    )
    inference = InferenceGateway(work / "inference-gateway", port=settings.inference_port)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    claim = _claim_file(cluster)
    claim.write_text(json.dumps({"pid": os.getpid(), "state_dir": str(settings.state_dir)}))
    try:
        for obj in gateway_objects(settings.gateway_port) + inference_routes.gateway_objects(
            settings.inference_port
        ):
            kube.apply(obj)
        sync_endpoints(kube, kube.list_cluster("v1", "Pod"))
        prometheus.start(jobs={"gateway": gateway.metrics_address})
        gateway.start()
        inference.start()
        settings.info_file.write_text(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "gateway": settings.gateway_url,
                    "prometheus": settings.prometheus_url,
                    "kubeconfig": str(cluster.kubeconfig),
                    "access_log": str(settings.access_log),
                    "inference_gateway": settings.inference_url,
                    "inference_access_log": str(settings.inference_access_log),
                    "starts": str(settings.starts_file),
                }
            )
        )
        log.info(
            "local data plane serving",
            extra={"gateway": settings.gateway_url, "prometheus": settings.prometheus_url},
        )
        while not stop.is_set():
            try:
                runner.sync(kube.list_cluster("v1", "Pod"))
                # Listed again: the runner has just patched readiness and pod IPs, and the
                # operator may have re-pointed a Service meanwhile; slices built from the
                # first list would send traffic by a state that is already gone.
                pods = kube.list_cluster("v1", "Pod")
                services = kube.list_cluster("v1", "Service")
                sync_endpoints(kube, pods, services)
                sync_inference(kube, inference, pods, services)
                prometheus.set_targets(runner.targets())
                prometheus.set_targets(inference.targets(), job=PICKER_JOB)
            except Exception as exc:  # the API server restarting: try again next pass
                log.warning("data plane sync failed", extra={"error": str(exc)})
            if not gateway.process.running:
                raise StackError(f"Traefik exited:\n{gateway.process.log_tail()}")
            stop.wait(SYNC_INTERVAL_S)
    finally:
        settings.info_file.unlink(missing_ok=True)
        claim.unlink(missing_ok=True)
        # Each part stops whatever another one did.
        for part in (runner.stop_all, inference.stop, gateway.stop, prometheus.stop):
            try:
                part()
            except Exception as exc:
                log.warning("a part of the data plane did not stop", extra={"error": str(exc)})


# --- up / down ---------------------------------------------------------------------


def running(settings: StackSettings) -> dict[str, Any] | None:
    """The serving process's ``stack.json`` if that process is alive."""
    try:
        info: dict[str, Any] = json.loads(settings.info_file.read_text())
        os.kill(int(info["pid"]), 0)
    except (FileNotFoundError, ValueError, KeyError, ProcessLookupError):
        return None
    return info


def _claim_file(cluster: devcluster.Settings) -> Path:
    """One data plane per cluster: two would both start a Triton on every pod IP."""
    return cluster.state_dir / "data-plane.json"


def _other_data_plane(settings: StackSettings, cluster: devcluster.Settings) -> str | None:
    try:
        claim = json.loads(_claim_file(cluster).read_text())
        os.kill(int(claim["pid"]), 0)
    except (FileNotFoundError, ValueError, KeyError, ProcessLookupError):
        return None
    if Path(claim["state_dir"]) == settings.state_dir:
        return None
    return f"pid {claim['pid']}, state {claim['state_dir']}"


def up(settings: StackSettings, *, timeout: float = 120.0) -> dict[str, Any]:
    """Start whatever is not running; idempotent. Returns ``stack.json``'s content."""
    cluster_settings = devcluster.Settings.from_env()
    other = _other_data_plane(settings, cluster_settings)
    if other is not None:
        raise StackError(
            f"another data plane serves this cluster ({other}): stop it with"
            " `llmcanary stack down` (with its LLMCANARY_STACK_DIR) first"
        )
    devcluster.ensure_built(cluster_settings)
    # Started fresh, KWOK gets the data plane's readiness at once; a running cluster has
    # KWOK restarted once (KWOK keeps pod IPs in memory: restarting it while pods come and
    # go can hand one IP to two pods; LLMDeployment pods get theirs from the data plane).
    devcluster.up(dataclasses.replace(cluster_settings, pod_readiness="external"))
    devcluster.set_pod_readiness(cluster_settings, "external")
    crds = find_repo_root() / "crds"
    devcluster.kubectl("apply", "--server-side", "-f", str(crds), settings=cluster_settings)
    info = running(settings)
    if info is not None:
        return info
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    logfile = settings.state_dir / "stack.log"
    with logfile.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llmcanary", "stack", "serve"],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, **settings.environment()},
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = running(settings)
        if info is not None:
            return info
        if proc.poll() is not None:
            tail = "\n".join(logfile.read_text(errors="replace").splitlines()[-20:])
            raise StackError(f"the data plane exited ({proc.returncode}):\n{tail}")
        time.sleep(0.2)
    raise StackError(f"the data plane did not come up in {timeout:.0f}s; see {logfile}")


def down(settings: StackSettings, *, keep_cluster: bool = False, timeout: float = 60.0) -> None:
    """Stop the data plane (and its Tritons, Traefik, Prometheus), then the cluster."""
    info = running(settings)
    if info is not None:
        pid = int(info["pid"])
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
        else:
            os.killpg(pid, signal.SIGKILL)
    cluster_settings = devcluster.Settings.from_env()
    if keep_cluster:
        if devcluster.status(cluster_settings).running:
            devcluster.set_pod_readiness(cluster_settings, "kwok")
    else:
        devcluster.down(cluster_settings)
