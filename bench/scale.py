"""How the operator scales: N LLMDeployments against one ``llmcanary run -A`` on the dev cluster.

Starts (or reuses) the project's local control plane, adds KWOK GPU nodes for N
single-GPU pods, starts the operator as a user would (``llmcanary run -A`` with /metrics
and a liveness endpoint), then measures:

- creation to ``Stable`` per object (p50, p99, max), all N created at once;
- the operator's RSS (now and peak) and thread count;
- API requests per minute while idle, and while one rollout is Paused: counted at the
  operator's client (``llmcanary_kube_requests_total``) and cross-checked with the API
  server's own ``apiserver_request_total`` for the kinds the operator touches (other
  clients such as the controllers are in that figure too);
- spec change to canary Deployment, for 20 objects changed one after another;
- SIGTERM to exit;
- then deletes everything it made (unless ``--keep``).

Prints the figures as Markdown for docs/benchmarks.md; ``--json FILE`` keeps them.

    .venv/bin/python bench/scale.py --objects 100
    .venv/bin/python bench/scale.py --objects 1000 --json /tmp/scale-1000.json

Not a test: nothing here asserts. It needs the binaries of ``make cluster-bins``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import yaml
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from prometheus_client.parser import text_string_to_metric_families

from llmcanary.api import GROUP, PLURAL, VERSION
from llmcanary.api.spec import LLMDeploymentSpec
from llmcanary.kube.client import Kube
from llmcanary.rollout.revision import revision_of
from llmcanary_dev import devcluster
from llmcanary_dev.devcluster.nodes import GpuNode, node_manifest

ROOT = Path(__file__).resolve().parents[1]
#: The kinds the operator reads and writes (the API server's ``resource`` label).
OUR_RESOURCES = {"llmdeployments", "deployments", "pods", "services", "configmaps", "httproutes"}
WRITE_VERBS = {"POST", "PUT", "PATCH", "APPLY", "DELETE"}
SCALE_NODE_PREFIX = "scale-gpu-"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "count": len(values),
        "p50": percentile(values, 0.5),
        "p99": percentile(values, 0.99),
        "max": max(values, default=math.nan),
    }


def manifest(index: int, version: str = "1", **spec: Any) -> dict[str, Any]:
    doc = copy.deepcopy(yaml.safe_load((ROOT / "examples" / "tiny-llm.yaml").read_text()))
    doc["metadata"] = {"name": f"llm-{index:04d}"}
    doc["spec"]["model"]["version"] = version
    doc["spec"]["replicas"] = 1
    doc["spec"].update(spec)
    return doc


def canary_name(doc: dict[str, Any]) -> str:
    spec = LLMDeploymentSpec.model_validate(doc["spec"])
    return f"{doc['metadata']['name']}-{revision_of(spec)}"


@dataclass
class Watcher:
    """Records, per object, when it was first seen in some state (a watch, in a thread)."""

    list_fn: Callable[..., Any]
    kwargs: dict[str, Any]
    test: Callable[[str, dict[str, Any]], bool]
    seen: dict[str, float] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Watcher:
        threading.Thread(target=self._run, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                for event in watch.Watch().stream(self.list_fn, timeout_seconds=60, **self.kwargs):
                    obj = event["object"]  # a dict: every watch here is a custom-object list
                    name = obj["metadata"]["name"]
                    if name not in self.seen and self.test(event["type"], obj):
                        self.seen[name] = time.monotonic()
                    if self._stop.is_set():
                        return
            except Exception as exc:  # a watch ends (timeout, 410): start another
                print(f"  (watch restarted: {type(exc).__name__})", file=sys.stderr)
                time.sleep(0.5)


class Operator:
    def __init__(self, kubeconfig: Path, workdir: Path, env: dict[str, str]) -> None:
        self.kubeconfig = kubeconfig
        self.workdir = workdir
        self.env = env
        self.metrics_port = free_port()
        self.resync_seconds = float(env["LLMCANARY_RESYNC_SECONDS"])
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = (self.workdir / "operator.log").open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llmcanary",
                "run",
                "-A",
                "--log-format",
                "json",
                "--metrics-port",
                str(self.metrics_port),
                "--liveness",
                f"http://127.0.0.1:{free_port()}/healthz",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "KUBECONFIG": str(self.kubeconfig), **self.env},
            cwd=self.workdir,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                self.scrape()
                return
            except requests.RequestException:
                time.sleep(0.5)
        raise SystemExit("the operator's /metrics did not come up in 60 s")

    def scrape(self) -> dict[str, float]:
        text = requests.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).text
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                out[f"{sample.name}{{{labels}}}"] = sample.value
        return out

    def proc_status(self) -> dict[str, int]:
        assert self.proc is not None
        fields = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "Threads"):
                fields[key] = int(value.split()[0])
        return fields

    def sigterm(self, timeout: float = 60) -> float:
        assert self.proc is not None
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return math.inf
        finally:
            self.proc = None
        return time.monotonic() - started


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def kube_requests(scraped: dict[str, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in scraped.items():
        if key.startswith("llmcanary_kube_requests_total{"):
            out[key.split("verb=")[1].rstrip("}")] = value
    return out


def passes(scraped: dict[str, float]) -> float:
    return sum(
        v for k, v in scraped.items() if k.startswith("llmcanary_reconcile_duration_seconds_count")
    )


def apiserver_requests(cluster: devcluster.Cluster) -> dict[str, float]:
    """apiserver_request_total summed by verb, over the kinds the operator touches."""
    text = cluster.kubectl("get", "--raw", "/metrics").stdout
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "apiserver_request":
            continue
        for sample in family.samples:
            if sample.name != "apiserver_request_total":
                continue
            if sample.labels.get("resource") not in OUR_RESOURCES:
                continue
            if sample.labels.get("subresource") not in ("", "status", None):
                continue
            verb = sample.labels["verb"]
            out[verb] = out.get(verb, 0.0) + sample.value
    return out


def scraped_objects(scraped: dict[str, float]) -> float:
    return scraped.get("llmcanary_objects{}", 0.0)


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: after.get(k, 0.0) - before.get(k, 0.0) for k in set(after) | set(before)}


def per_minute(
    counts: dict[str, float], seconds: float, verbs: Iterable[str] | None = None
) -> float:
    chosen = counts if verbs is None else {k: v for k, v in counts.items() if k in verbs}
    return sum(v for k, v in chosen.items() if k != "WATCH") * 60 / seconds


def measure_window(op: Operator, cluster: devcluster.Cluster, seconds: float) -> dict[str, Any]:
    before = op.scrape()
    ours0, server0 = kube_requests(before), apiserver_requests(cluster)
    time.sleep(seconds)
    scraped = op.scrape()
    ours = delta(kube_requests(scraped), ours0)
    server = delta(apiserver_requests(cluster), server0)
    n = scraped_objects(scraped)
    return {
        "seconds": seconds,
        # Above 1 would mean more than one pass per object per resync period.
        "passes_per_object_per_resync": (passes(scraped) - passes(before))
        / (n * seconds / op.resync_seconds)
        if n
        else 0.0,
        "operator_requests_per_min": per_minute(ours, seconds),
        "operator_writes": sum(ours.get(v, 0) for v in ("apply", "patch", "delete")),
        "operator_by_verb": {k: v for k, v in sorted(ours.items()) if v},
        "passes": passes(scraped) - passes(before),
        "apiserver_requests_per_min": per_minute(server, seconds),
        "apiserver_writes_per_min": per_minute(server, seconds, WRITE_VERBS),
        "apiserver_by_verb": {k: v for k, v in sorted(server.items()) if v},
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    settings = devcluster.Settings.from_env()
    devcluster.ensure_built(settings)
    cluster = devcluster.up(settings)
    kubeconfig = cluster.kubeconfig
    api = config.new_client_from_config(config_file=str(kubeconfig))
    api.configuration.connection_pool_maxsize = 16
    core = client.CoreV1Api(api)
    custom = client.CustomObjectsApi(api)
    # Plain dicts, as the API server takes them (the typed client insists on every field).
    dynamic = DynamicClient(api)
    node_api = dynamic.resources.get(api_version="v1", kind="Node")
    purge_leftovers(kubeconfig)
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", "crd/llmdeployments.llmcanary.io"
    )

    n = args.objects
    namespace = f"scale-{int(time.time())}"
    dynamic.resources.get(api_version="v1", kind="Namespace").create(
        body={"metadata": {"name": namespace}}
    )
    workdir = Path(tempfile.mkdtemp(prefix="llmcanary-scale-"))
    env = {
        "LLMCANARY_CANARY_READY_CHECK": "false",  # KWOK pods run no Triton
        "LLMCANARY_WORKERS": str(args.workers),
        "LLMCANARY_RESYNC_SECONDS": str(args.resync_seconds),
        **dict(item.split("=", 1) for item in args.operator_env),
    }
    op = Operator(kubeconfig, workdir, env)
    nodes = [
        GpuNode(
            f"{SCALE_NODE_PREFIX}{i:03d}",
            "NVIDIA-H100-80GB-HBM3",
            args.gpus_per_node,
            81559,
            "hopper",
            9,
            0,
        )
        for i in range(math.ceil(n / args.gpus_per_node))
    ]
    watchers: list[Watcher] = []
    figures: dict[str, Any] = {
        "objects": n,
        "workers": args.workers,
        "resync_seconds": args.resync_seconds,
        "operator_env": args.operator_env,
        "machine": f"{os.cpu_count()} CPUs, {platform.machine()},"
        f" Python {platform.python_version()}",
        "operator_log": str(workdir / "operator.log"),
    }
    try:
        for node in nodes:
            try:
                node_api.create(body=node_manifest(node, (settings.host, settings.ports.kwok)))
            except ApiException as exc:
                if exc.status != 409:
                    raise
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:  # KWOK marks the new nodes Ready
            ready = sum(
                any(c.type == "Ready" and c.status == "True" for c in (k.status.conditions or []))
                for k in core.list_node(label_selector="type=kwok").items
                if k.metadata.name.startswith(SCALE_NODE_PREFIX)
            )
            if ready == len(nodes):
                break
            time.sleep(1)
        print(
            f"{n} objects in namespace {namespace};"
            f" {len(nodes)} KWOK nodes of {args.gpus_per_node} GPUs"
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # the default ServiceAccount, for the pods
            try:
                core.read_namespaced_service_account("default", namespace)
                break
            except ApiException:
                time.sleep(0.5)
        op.start()
        stable = Watcher(
            custom.list_namespaced_custom_object,
            {"group": GROUP, "version": VERSION, "namespace": namespace, "plural": PLURAL},
            lambda _t, obj: (obj.get("status") or {}).get("phase") == "Stable",
        ).start()
        created_deployments = Watcher(
            # Plain dicts: the typed client's models cost this process more CPU than the
            # operator uses, on a machine every component shares.
            custom.list_namespaced_custom_object,
            {"group": "apps", "version": "v1", "namespace": namespace, "plural": "deployments"},
            lambda t, _obj: t in ("ADDED", "MODIFIED"),
        ).start()
        watchers += [stable, created_deployments]

        # --- creation to Stable ---------------------------------------------------------
        created: dict[str, float] = {}

        def create(index: int) -> None:
            doc = manifest(index)
            created[doc["metadata"]["name"]] = time.monotonic()
            custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, doc)

        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(create, range(n)))
        print(f"created {n} in {time.monotonic() - started:.1f} s; waiting for Stable")
        peak_threads = 0
        deadline = time.monotonic() + args.timeout
        while len(stable.seen) < n and time.monotonic() < deadline:
            peak_threads = max(peak_threads, op.proc_status()["Threads"])
            time.sleep(2)
            print(
                f"  {len(stable.seen)}/{n} Stable after {time.monotonic() - started:.0f} s",
                end="\r",
            )
        print()
        latencies = [stable.seen[k] - created[k] for k in created if k in stable.seen]
        first_revision = {k: canary_name(manifest(int(k.split("-")[1]))) for k in created}
        to_children = [
            created_deployments.seen[first_revision[k]] - created[k]
            for k in created
            if first_revision[k] in created_deployments.seen
        ]
        figures["deployment_created"] = summary(to_children)
        print(f"creation to its Deployment: {figures['deployment_created']}")
        figures["stable"] = {
            **summary(latencies),
            "all_stable_seconds": (max(stable.seen.values()) - started) if stable.seen else None,
        }
        print(f"stable: {figures['stable']}")

        # --- idle -------------------------------------------------------------------------
        time.sleep(args.settle)
        figures["idle"] = measure_window(op, cluster, args.window)
        print(f"idle: {figures['idle']}")

        # --- one rollout Paused -------------------------------------------------------------
        held = manifest(0, version="2", paused=True)
        custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, held["metadata"]["name"], {"spec": held["spec"]}
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            obj = custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, held["metadata"]["name"]
            )
            if (obj.get("status") or {}).get("phase") == "Paused":
                break
            time.sleep(1)
        else:
            print("the held rollout never reached Paused", file=sys.stderr)
        time.sleep(args.settle)
        figures["paused"] = measure_window(op, cluster, args.window)
        print(f"one Paused: {figures['paused']}")

        # --- spec change to canary Deployment --------------------------------------------------
        changes: list[float] = []
        for index in range(1, 1 + min(args.changes, n - 1)):
            doc = manifest(index, version="2")
            name = canary_name(doc)
            changed = time.monotonic()
            custom.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, doc["metadata"]["name"], {"spec": doc["spec"]}
            )
            deadline = changed + 60
            while name not in created_deployments.seen and time.monotonic() < deadline:
                time.sleep(0.01)
            if name in created_deployments.seen:
                changes.append(created_deployments.seen[name] - changed)
            time.sleep(args.change_gap)
        figures["spec_change"] = summary(changes)
        print(f"spec change to canary Deployment: {figures['spec_change']}")

        status = op.proc_status()
        figures["operator"] = {
            "rss_mib": status["VmRSS"] / 1024,
            "peak_rss_mib": status["VmHWM"] / 1024,
            "threads": status["Threads"],
            "peak_threads_sampled": max(peak_threads, status["Threads"]),
        }
        print(f"operator: {figures['operator']}")

        # --- SIGTERM ----------------------------------------------------------------------
        figures["sigterm_seconds"] = op.sigterm()
        print(f"SIGTERM to exit: {figures['sigterm_seconds']:.2f} s")
    finally:
        for watcher in watchers:
            watcher.stop()
        if op.proc is not None:
            op.sigterm()
        if not args.keep:
            cleanup(op, core, namespace, nodes)
    return figures


def scale_namespaces(kube: Kube) -> list[str]:
    return [
        n["metadata"]["name"]
        for n in kube.list_cluster("v1", "Namespace")
        if n["metadata"]["name"].startswith("scale-")
    ]


def purge_leftovers(kubeconfig: Path) -> None:
    """Remove what a killed earlier run left: its objects would load this run's operator.

    Without an operator running, its finalizers are taken off by hand (what
    docs/troubleshooting.md tells a user to do).
    """
    kube = Kube.from_kubeconfig(str(kubeconfig))
    left = scale_namespaces(kube)
    for namespace in left:
        for obj in kube.list(f"{GROUP}/{VERSION}", "LLMDeployment", namespace):
            if obj["metadata"].get("finalizers"):
                kube.patch(
                    f"{GROUP}/{VERSION}",
                    "LLMDeployment",
                    namespace,
                    obj["metadata"]["name"],
                    {"metadata": {"finalizers": None}},
                )
        kube.delete("v1", "Namespace", "", namespace)
    for node in kube.list_cluster("v1", "Node"):
        if node["metadata"]["name"].startswith(SCALE_NODE_PREFIX):
            kube.delete("v1", "Node", "", node["metadata"]["name"])
    deadline = time.monotonic() + 900
    while left and time.monotonic() < deadline:
        time.sleep(5)
        left = scale_namespaces(kube)
    if left:
        raise SystemExit(f"namespaces of an earlier run are still terminating: {left}")


def cleanup(op: Operator, core: client.CoreV1Api, namespace: str, nodes: list[GpuNode]) -> None:
    """The LLMDeployments carry the operator's finalizer: it must run while they go."""
    print("cleaning up (the operator removes its finalizers)")
    op.start()
    try:
        core.delete_namespace(namespace)
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            try:
                core.read_namespace(namespace)
            except ApiException as exc:
                if exc.status == 404:
                    break
            time.sleep(2)
    finally:
        op.sigterm()
    for node in nodes:
        with contextlib.suppress(ApiException):
            core.delete_node(node.name)


def markdown(f: dict[str, Any]) -> str:
    d = f["deployment_created"]
    s, idle, paused, change, op = (
        f["stable"],
        f["idle"],
        f["paused"],
        f["spec_change"],
        f["operator"],
    )
    rows = [
        ("objects Stable", f"{s['count']} / {f['objects']}"),
        (
            "creation to Stable p50 / p99 / max (s)",
            f"{s['p50']:.1f} / {s['p99']:.1f} / {s['max']:.1f}",
        ),
        ("all Stable after (s)", f"{s['all_stable_seconds']:.0f}"),
        (
            "creation to its Deployment p50 / p99 / max (s): the operator's share",
            f"{d['p50']:.2f} / {d['p99']:.2f} / {d['max']:.2f}",
        ),
        ("operator RSS now / peak (MiB)", f"{op['rss_mib']:.0f} / {op['peak_rss_mib']:.0f}"),
        ("operator threads", f"{op['threads']} (peak sampled {op['peak_threads_sampled']})"),
        (
            f"idle: operator requests/min, writes ({idle['seconds']:.0f} s window)",
            f"{idle['operator_requests_per_min']:.1f}, {idle['operator_writes']:.0f}"
            f" ({idle['passes']:.0f} passes,"
            f" {idle['passes_per_object_per_resync']:.2f} per object per resync period)",
        ),
        (
            "idle: API server requests/min on those kinds (all clients), writes/min",
            f"{idle['apiserver_requests_per_min']:.1f}, {idle['apiserver_writes_per_min']:.1f}",
        ),
        (
            "one Paused: operator requests/min, writes",
            f"{paused['operator_requests_per_min']:.1f}, {paused['operator_writes']:.0f}"
            f" ({paused['passes']:.0f} passes)",
        ),
        (
            "one Paused: API server requests/min (all clients), writes/min",
            f"{paused['apiserver_requests_per_min']:.1f}, {paused['apiserver_writes_per_min']:.1f}",
        ),
        (
            f"spec change to canary Deployment p50 / p99 / max (s, {change['count']} changes)",
            f"{change['p50']:.2f} / {change['p99']:.2f} / {change['max']:.2f}",
        ),
        ("SIGTERM to exit (s)", f"{f['sigterm_seconds']:.2f}"),
    ]
    lines = ["| | value |", "| --- | ---: |", *(f"| {a} | {b} |" for a, b in rows)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=4, help="LLMCANARY_WORKERS")
    parser.add_argument(
        "--resync-seconds", type=float, default=600, help="LLMCANARY_RESYNC_SECONDS"
    )
    parser.add_argument("--gpus-per-node", type=int, default=8)
    parser.add_argument(
        "--operator-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an environment variable for the operator process (repeatable)",
    )
    parser.add_argument("--window", type=float, default=120, help="seconds of each idle window")
    parser.add_argument("--settle", type=float, default=10, help="seconds before a window")
    parser.add_argument("--changes", type=int, default=20)
    parser.add_argument("--change-gap", type=float, default=1.0)
    parser.add_argument("--timeout", type=float, default=3600, help="for all to be Stable")
    parser.add_argument("--keep", action="store_true", help="leave the objects and nodes")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    figures = run(args)
    print()
    print(markdown(figures))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str))


if __name__ == "__main__":
    main()
