"""The local stack's gateway, pure parts: the EndpointSlices it is given, its flags, and
the reading of its access log."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

from llmcanary_dev.localstack.endpoints import MANAGED_BY, desired_slices
from llmcanary_dev.localstack.gateway import (
    backend_name,
    count_requests,
    gateway_objects,
    latency_buckets,
    traefik_argv,
)


def pod(
    name: str, ip: str | None, ready: bool, labels: dict[str, str], **meta: Any
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": "ml",
            "uid": f"uid-{name}",
            "labels": labels,
            **meta,
        },
        "spec": {
            "nodeName": "gpu-node-a",
            "containers": [{"name": "triton", "ports": [{"name": "http", "containerPort": 8000}]}],
        },
        "status": {
            **({"podIP": ip} if ip else {}),
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


SERVICE = {
    "metadata": {"name": "tiny-canary", "namespace": "ml", "uid": "svc-uid"},
    "spec": {
        "selector": {"app": "tiny", "rev": "b"},
        "ports": [{"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}],
    },
}


def test_a_service_gets_one_fqdn_slice_of_its_pods_with_the_controllers_conditions() -> None:
    pods = [
        pod("ready", "127.245.0.2", True, {"app": "tiny", "rev": "b"}),
        pod("loading", "127.245.0.3", False, {"app": "tiny", "rev": "b"}),
        pod("leaving", "127.245.0.4", True, {"app": "tiny", "rev": "b"}, deletionTimestamp="x"),
        pod("no-ip", None, False, {"app": "tiny", "rev": "b"}),
        pod("stable", "127.245.0.5", True, {"app": "tiny", "rev": "a"}),
    ]
    slices = desired_slices([SERVICE], pods)
    assert list(slices) == [("ml", "tiny-canary-local")]
    made = slices[("ml", "tiny-canary-local")]
    assert made["addressType"] == "FQDN"
    assert made["metadata"]["labels"] == {
        "kubernetes.io/service-name": "tiny-canary",
        "endpointslice.kubernetes.io/managed-by": MANAGED_BY,
    }
    assert made["metadata"]["ownerReferences"][0]["uid"] == "svc-uid"
    # The Service's port name, the container's port number (targetPort by name).
    assert made["ports"] == [{"name": "http", "port": 8000, "protocol": "TCP"}]
    found = {e["targetRef"]["name"]: (e["addresses"], e["conditions"]) for e in made["endpoints"]}
    assert found == {
        "leaving": (["127.245.0.4"], {"ready": False, "serving": True, "terminating": True}),
        "loading": (["127.245.0.3"], {"ready": False, "serving": False, "terminating": False}),
        "ready": (["127.245.0.2"], {"ready": True, "serving": True, "terminating": False}),
    }


def test_services_without_a_selector_get_no_slice() -> None:
    headless = {"metadata": {"name": "ext", "namespace": "ml", "uid": "u"}, "spec": {"ports": []}}
    assert desired_slices([headless], [pod("p", "127.245.0.2", True, {})]) == {}


def test_the_gateway_listens_on_the_stacks_port_and_takes_routes_from_every_namespace() -> None:
    _, gateway_class, gateway = gateway_objects(18080)
    assert gateway_class["spec"]["controllerName"] == "traefik.io/gateway-controller"
    listener = gateway["spec"]["listeners"][0]
    assert (listener["port"], listener["protocol"]) == (18080, "HTTP")
    assert listener["allowedRoutes"] == {"namespaces": {"from": "All"}}
    argv = traefik_argv(
        Path("/bin/traefik"),
        address="127.0.0.1",
        port=18080,
        metrics_port=18082,
        access_log=Path("/tmp/a.log"),
    )
    # Traefik serves a listener on the entryPoint whose port it names.
    assert "--entryPoints.web.address=127.0.0.1:18080" in argv
    assert "--metrics.prometheus.addServicesLabels=true" in argv


def test_histogram_bounds_are_never_more_than_10_percent_apart() -> None:
    # Rounded to 4 digits, they stay well inside the +20% rule's resolution.
    bounds = latency_buckets()
    assert bounds[0] == 0.005 and bounds[-1] >= 300
    assert all(b / a <= 1.1 + 1e-3 for a, b in itertools.pairwise(bounds))


def test_requests_are_counted_per_backend_from_the_access_log(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    web = backend_name("ml", "tiny-canary")
    assert web == "ml-tiny-canary-http-8000@kubernetesgateway"
    lines = [
        {"StartUTC": "2026-12-01T09:00:00.5Z", "ServiceName": web, "DownstreamStatus": 200},
        {"StartUTC": "2026-12-01T09:00:01Z", "ServiceName": web, "DownstreamStatus": 502},
        # No Ready endpoint: Traefik's router answers, no backend is named.
        {"StartUTC": "2026-12-01T09:00:02Z", "DownstreamStatus": 503},
        {"StartUTC": "2026-12-01T09:00:09Z", "ServiceName": web, "DownstreamStatus": 200},
    ]
    log.write_text("\n".join(json.dumps(line) for line in lines) + "\nnot json\n")
    start = 1_796_115_600.0  # 2026-12-01T09:00:00Z
    counts = count_requests(log, since=start + 0.5, until=start + 5)
    assert counts == {web: 2, "": 1}
