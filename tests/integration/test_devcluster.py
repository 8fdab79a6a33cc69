"""The local control plane is a real, secured Kubernetes cluster with simulated GPU nodes."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from cryptography import x509

from llmcanary_dev import devcluster
from llmcanary_dev.devcluster import Cluster

pytestmark = pytest.mark.k8s

T = TypeVar("T")


def _until(what: str, probe: Callable[[], T | None], timeout: float = 60.0) -> T:
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def _get_json(cluster: Cluster, *args: str) -> dict[str, Any]:
    data = json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)
    assert isinstance(data, dict)
    return data


def _https(
    cluster: Cluster,
    path: str,
    *,
    token: str | None = None,
    method: str = "GET",
    body: dict[str, Any] | None = None,
) -> tuple[int, dict[str, Any]]:
    """A request with no client certificate: anonymous, or authenticated by ``token``."""
    ctx = ssl.create_default_context(cafile=str(cluster.ca_file))
    s = cluster.settings
    conn = http.client.HTTPSConnection(s.host, s.ports.apiserver, context=ctx, timeout=10)
    headers = {"Accept": "application/json", "Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        conn.request(method, path, body=json.dumps(body) if body else None, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
    finally:
        conn.close()
    try:
        payload = json.loads(raw)
    except ValueError:
        payload = {"raw": raw.decode(errors="replace")}
    return resp.status, payload if isinstance(payload, dict) else {"raw": payload}


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    name = f"devcluster-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    _until(
        "the namespace's default ServiceAccount",
        lambda: cluster.kubectl("get", "sa", "default", "-n", name, check=False).returncode == 0,
    )
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def test_up_is_idempotent_and_fast_when_running(cluster: Cluster) -> None:
    again = devcluster.up(cluster.settings)
    assert again.started == ()
    assert again.elapsed < 5
    st = devcluster.status(cluster.settings)
    assert st.running, st.format()
    assert {n.name for n in st.nodes} >= {"gpu-node-a", "gpu-node-b"}


def test_apiserver_serves_tls_with_a_verifiable_certificate(cluster: Cluster) -> None:
    s = cluster.settings
    ctx = ssl.create_default_context(cafile=str(cluster.ca_file))
    with (
        socket.create_connection((s.host, s.ports.apiserver), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname=s.host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
    assert der is not None
    cert = x509.load_der_x509_certificate(der)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "kubernetes.default.svc" in names.get_values_for_type(x509.DNSName)

    # Plain HTTP on the secure port is refused.
    conn = http.client.HTTPConnection(s.host, s.ports.apiserver, timeout=5)
    try:
        conn.request("GET", "/api/v1/namespaces")
        assert conn.getresponse().status == 400
    finally:
        conn.close()


def test_apiserver_rejects_unauthenticated_requests(cluster: Cluster) -> None:
    for path in ("/api/v1/namespaces/default/pods", "/api/v1/secrets", "/apis"):
        status, body = _https(cluster, path)
        assert status == 401, (path, body)
    status, _ = _https(cluster, "/api/v1/namespaces/default/pods", token="not-a-token")
    assert status == 401


def test_rbac_forbids_a_service_account_without_bindings(cluster: Cluster, namespace: str) -> None:
    user = f"system:serviceaccount:{namespace}:nobody"
    cluster.kubectl("create", "serviceaccount", "nobody", "-n", namespace)

    # Impersonated: can-i says no (exit status 1), a real list is Forbidden.
    can = cluster.kubectl(
        "auth", "can-i", "list", "pods", "-n", namespace, f"--as={user}", check=False
    )
    assert (can.returncode, can.stdout.strip()) == (1, "no")
    listed = cluster.kubectl("get", "pods", "-n", namespace, f"--as={user}", check=False)
    assert listed.returncode != 0
    assert "Forbidden" in listed.stderr or "forbidden" in listed.stderr

    # With a real token: it authenticates as the ServiceAccount, and is forbidden.
    token = cluster.kubectl("create", "token", "nobody", "-n", namespace).stdout.strip()
    status, review = _https(
        cluster,
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        token=token,
        method="POST",
        body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
    )
    assert status == 201, review
    assert review["status"]["userInfo"]["username"] == user
    status, body = _https(cluster, f"/api/v1/namespaces/{namespace}/pods", token=token)
    assert status == 403, body
    assert body.get("reason") == "Forbidden"

    # A binding is what changes the answer: RBAC decides, not a blanket deny.
    cluster.kubectl(
        "create", "role", "pod-reader", "--verb=list", "--resource=pods", "-n", namespace
    )
    cluster.kubectl(
        "create", "rolebinding", "nobody-reads-pods", "--role=pod-reader",
        f"--serviceaccount={namespace}:nobody", "-n", namespace,
    )  # fmt: skip
    _until(
        "the RoleBinding to take effect",
        lambda: _https(cluster, f"/api/v1/namespaces/{namespace}/pods", token=token)[0] == 200,
        timeout=15,
    )
    can = cluster.kubectl(
        "auth", "can-i", "list", "pods", "-n", namespace, f"--as={user}", check=False
    )
    assert (can.returncode, can.stdout.strip()) == (0, "yes")
    can = cluster.kubectl(
        "auth", "can-i", "delete", "pods", "-n", namespace, f"--as={user}", check=False
    )
    assert can.stdout.strip() == "no"


def test_deployment_pods_are_scheduled_on_kwok_nodes_and_ready(
    cluster: Cluster, namespace: str
) -> None:
    cluster.kubectl("create", "deployment", "web", "--image=nginx", "--replicas=2", "-n", namespace)
    started = time.monotonic()
    cluster.kubectl("rollout", "status", "deployment/web", "-n", namespace, "--timeout=60s")
    took = time.monotonic() - started
    assert took < 60

    pods = _get_json(cluster, "pods", "-n", namespace, "-l", "app=web")["items"]
    assert len(pods) == 2
    kwok_nodes = {
        n["metadata"]["name"] for n in _get_json(cluster, "nodes", "-l", "type=kwok")["items"]
    }
    for pod in pods:
        assert pod["spec"]["nodeName"] in kwok_nodes
        assert pod["status"]["phase"] == "Running"
        ready = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
        assert ready["Ready"] == "True"
        assert pod["status"].get("podIP")


def _read_job(name: str, script: str) -> dict[str, Any]:
    """A Job labelled as the operator's repository reads are (the read-pods component's)."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": {"llmcanary.io/repository-read": name}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "read",
                            "image": "nvcr.io/nvidia/tritonserver:24.10-py3",
                            "command": ["/bin/sh", "-c", script],
                            "env": [{"name": "MODEL_REPOSITORY_ROOT", "value": "/models"}],
                        }
                    ],
                },
            },
        },
    }


def test_a_repository_read_pod_runs_for_real_and_its_log_is_served(
    cluster: Cluster, namespace: str
) -> None:
    """KWOK would complete it at once with no log: the read-pods component runs its script
    over model_repo/ (the root it names mapped there) and reports it as a kubelet would."""
    listing = 'printf "root %s\\n" "$MODEL_REPOSITORY_ROOT"; ls "$MODEL_REPOSITORY_ROOT"'
    ok = _read_job("lists", listing)
    failing = _read_job("fails", "echo no such thing >&2; exit 3")
    for job in (ok, failing):
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(job))

    def finished(name: str) -> dict[str, Any] | None:
        job = _get_json(cluster, "job", name, "-n", namespace)
        status = job.get("status") or {}
        return job if status.get("succeeded") or status.get("failed") else None

    assert _until("the listing Job to complete", lambda: finished("lists"))["status"]["succeeded"]
    log = cluster.kubectl("logs", "-n", namespace, "job/lists").stdout
    assert "tiny-llm" in log.splitlines() and "root /" in log
    assert "/models" not in log  # mapped to the local model_repo/
    assert _until("the failing Job to fail", lambda: finished("fails"))["status"]["failed"]
    (pod,) = _get_json(cluster, "pods", "-n", namespace, "-l", "job-name=fails")["items"]
    assert pod["status"]["phase"] == "Failed"
    assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 3
    logs = cluster.kubectl("logs", "-n", namespace, pod["metadata"]["name"]).stdout
    assert "no such thing" in logs


@pytest.mark.parametrize(
    ("node", "gpus", "product", "memory"),
    [
        ("gpu-node-a", "8", "NVIDIA-H100-80GB-HBM3", "81559"),
        ("gpu-node-b", "4", "NVIDIA-A100-SXM4-40GB", "40960"),
    ],
)
def test_gpu_nodes_carry_gpus_and_gfd_labels(
    cluster: Cluster, node: str, gpus: str, product: str, memory: str
) -> None:
    obj = _get_json(cluster, "node", node)
    assert obj["status"]["allocatable"]["nvidia.com/gpu"] == gpus
    assert obj["status"]["capacity"]["nvidia.com/gpu"] == gpus
    labels = obj["metadata"]["labels"]
    assert labels["nvidia.com/gpu.product"] == product
    assert labels["nvidia.com/gpu.memory"] == memory
    assert labels["nvidia.com/gpu.count"] == gpus
    assert labels["nvidia.com/gpu.present"] == "true"
    assert labels["type"] == "kwok"
    ready = {c["type"]: c["status"] for c in obj["status"]["conditions"]}
    assert ready["Ready"] == "True"


def _gpu_pod(name: str, gpus: int) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name},
            "spec": {
                "containers": [
                    {
                        "name": "triton",
                        "image": "nvcr.io/nvidia/tritonserver:24.10-py3",
                        "resources": {"limits": {"nvidia.com/gpu": str(gpus)}},
                    }
                ]
            },
        }
    )


def test_six_gpu_pod_lands_on_the_eight_gpu_node_only(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=_gpu_pod("six", 6))
    node = _until(
        "the 6-GPU pod to be scheduled",
        lambda: _get_json(cluster, "pod", "six", "-n", namespace)["spec"].get("nodeName"),
    )
    assert node == "gpu-node-a"
    cluster.kubectl("wait", "pod/six", "-n", namespace, "--for=condition=Ready", "--timeout=60s")

    # A second one fits nowhere: 2 GPUs are left on the H100 node, 4 on the A100 node.
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=_gpu_pod("six-more", 6))

    def unschedulable() -> bool:
        pod = _get_json(cluster, "pod", "six-more", "-n", namespace)
        assert not pod["spec"].get("nodeName"), "a second 6-GPU pod must not be scheduled"
        return any(
            c["type"] == "PodScheduled"
            and c["status"] == "False"
            and "nvidia.com/gpu" in c.get("message", "")
            for c in pod["status"].get("conditions", [])
        )

    _until("the second 6-GPU pod to be reported unschedulable", unschedulable)


def test_gateway_api_crds_are_established(cluster: Cluster) -> None:
    for crd in (
        "httproutes.gateway.networking.k8s.io",
        "gateways.gateway.networking.k8s.io",
        "gatewayclasses.gateway.networking.k8s.io",
        "referencegrants.gateway.networking.k8s.io",
    ):
        obj = _get_json(cluster, "crd", crd)
        conditions = {c["type"]: c["status"] for c in obj["status"]["conditions"]}
        assert conditions.get("Established") == "True", crd
    assert "v1" in {
        v["name"]
        for v in _get_json(cluster, "crd", "httproutes.gateway.networking.k8s.io")["spec"][
            "versions"
        ]
    }


def test_istio_crds_are_established(cluster: Cluster) -> None:
    for crd in ("virtualservices.networking.istio.io", "destinationrules.networking.istio.io"):
        obj = _get_json(cluster, "crd", crd)
        conditions = {c["type"]: c["status"] for c in obj["status"]["conditions"]}
        assert conditions.get("Established") == "True", crd
    versions = _get_json(cluster, "crd", "virtualservices.networking.istio.io")["spec"]["versions"]
    assert {"v1", "v1beta1"} <= {v["name"] for v in versions if v["served"]}


def test_up_installs_a_crd_the_running_cluster_lacks(cluster: Cluster) -> None:
    crd = "destinationrules.networking.istio.io"
    cluster.kubectl("delete", "crd", crd, "--wait=true")
    again = devcluster.up(cluster.settings)
    assert again.started == ()
    obj = _get_json(cluster, "crd", crd)
    assert any(
        c["type"] == "Established" and c["status"] == "True" for c in obj["status"]["conditions"]
    )
