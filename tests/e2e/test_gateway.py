"""The local stack's gateway is a real Gateway API implementation (Traefik): what clients
get through it, and what it writes on the routes it serves.

The first test needs no operator and no Triton: its backend is a plain HTTP server bound
to the IP KWOK gave a pod, the way every Triton of the stack serves on its pod's IP. The
second runs the operator with a Gateway that refuses its route.
"""

from __future__ import annotations

import http.server
import math
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from kubectl import ROOT, Kubectl, OperatorProcess, wait_for
from load_driver import LoadDriver
from routes import attach, route_conditions, wait_until_served

from llmcanary.api.spec import LLMDeploymentSpec
from llmcanary.rollout.revision import revision_of
from llmcanary_dev.localstack import stack as local
from llmcanary_dev.localstack.gateway import (
    GATEWAY_CLASS,
    GATEWAY_NAME,
    GATEWAY_NAMESPACE,
    backend_name,
    count_requests,
)

pytestmark = pytest.mark.k8s

PORT = 8080


class Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"hello from the backend\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def web_pod(kubectl: Kubectl, namespace: str) -> Iterator[str]:
    """A pod KWOK starts (Ready, with an IP) and an HTTP server on that IP: its container."""
    kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {
                "containers": [
                    {
                        "name": "web",
                        "image": "web:1",
                        "ports": [{"name": "http", "containerPort": PORT}],
                    }
                ]
            },
        },
        namespace,
    )

    def ready_ip() -> str | None:
        pod = kubectl.get("pod", "web", namespace) or {}
        status = pod.get("status") or {}
        ready = any(
            c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or []
        )
        return status.get("podIP") if ready else None

    ip = wait_for("the web pod Ready with an IP", ready_ip, timeout=90)
    server = http.server.ThreadingHTTPServer((ip, PORT), Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield ip
    server.shutdown()
    server.server_close()


def service(name: str, app: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {
            "selector": {"app": app},
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
        },
    }


def route(name: str, host: str, backends: dict[str, int]) -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name},
        "spec": {
            "parentRefs": [{"name": GATEWAY_NAME, "namespace": GATEWAY_NAMESPACE}],
            "hostnames": [host],
            "rules": [
                {
                    "backendRefs": [
                        {"name": svc, "port": 80, "weight": weight}
                        for svc, weight in backends.items()
                    ]
                }
            ],
        },
    }


def statuses(url: str, host: str, n: int) -> Counter[int]:
    got: Counter[int] = Counter()
    for _ in range(n):
        request = urllib.request.Request(url, headers={"Host": host})
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                got[answer.status] += 1
        except urllib.error.HTTPError as exc:
            got[exc.code] += 1
    return got


def parent_condition(kubectl: Kubectl, namespace: str, name: str, kind: str) -> dict[str, Any]:
    found = kubectl.get("httproute", name, namespace) or {}
    for parent in (found.get("status") or {}).get("parents") or []:
        for condition in parent.get("conditions") or []:
            if condition["type"] == kind:
                return dict(condition)
    return {}


def test_the_gateway_serves_routes_as_written_splits_by_weight_and_reports_what_it_cannot(
    kubectl: Kubectl, namespace: str, stack: local.StackSettings, web_pod: str
) -> None:
    kubectl.apply(service("web", "web"), namespace)
    kubectl.apply(service("empty", "nobody"), namespace)  # selects no pod
    host = f"split.{namespace}.test"
    kubectl.apply(route("split", host, {"web": 50, "empty": 50}), namespace)
    wait_for(
        "the gateway to accept the route and resolve its backends",
        lambda: (
            route_conditions(kubectl, namespace, "split")
            == {"Accepted": "True", "ResolvedRefs": "True"}
        ),
        timeout=30,
    )
    url = stack.gateway_url + "/"
    wait_for("the route served", lambda: statuses(url, host, 4)[200] > 0, timeout=15)

    # Half the requests go to a Service with no Ready endpoint: the client gets 503 for
    # those, 200 for the rest, split as the weights say. The gateway's access log counts
    # what the backend took; the 503s no backend took.
    since = time.time()
    n = 400
    got = statuses(url, host, n)
    assert set(got) <= {200, 503} and sum(got.values()) == n, got
    tolerance = 3 * math.sqrt(0.25 / n)
    assert abs(got[200] / n - 0.5) <= tolerance, got
    logged = count_requests(stack.access_log, since=since)
    assert logged[backend_name(namespace, "web", "http", 80)] == got[200]
    assert logged[""] == got[503]
    # A hostname the route does not name is not served by it.
    since = time.time()
    assert statuses(url, f"other.{namespace}.test", 3)[200] == 0
    assert (
        count_requests(stack.access_log, since=since)[backend_name(namespace, "web", "http", 80)]
        == 0
    )

    # A backendRef to a Service that does not exist: the gateway says so on the route, and
    # answers 500 for that backend's share (the Gateway API's rule for an invalid ref).
    kubectl.apply(
        route("broken", f"broken.{namespace}.test", {"web": 50, "missing": 50}), namespace
    )
    resolved = wait_for(
        "ResolvedRefs=False on the broken route",
        lambda: (
            (c := parent_condition(kubectl, namespace, "broken", "ResolvedRefs")).get("status")
            == "False"
            and c
        ),
        timeout=30,
    )
    assert resolved["reason"] == "BackendNotFound"
    assert f"{namespace}/missing" in resolved["message"]
    time.sleep(3)  # Traefik applies a new configuration within its 2 s throttle
    broken = statuses(url, f"broken.{namespace}.test", 60)
    assert set(broken) == {200, 500}, broken


def test_a_rollout_waits_with_the_gateways_reason_while_a_gateway_refuses_its_route(
    kubectl: Kubectl,
    namespace: str,
    operator: OperatorProcess,
    stack: local.StackSettings,
    load: LoadDriver,
) -> None:
    # A team's Gateway that takes routes only from its own namespace, beside the stack's.
    team = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": f"team-{namespace[-5:]}"},
        "spec": {
            "gatewayClassName": GATEWAY_CLASS,
            "listeners": [
                {
                    "name": "team",
                    "protocol": "HTTP",
                    "port": stack.gateway_port,
                    "allowedRoutes": {"namespaces": {"from": "Same"}},
                }
            ],
        },
    }
    gateway = team["metadata"]["name"]
    kubectl.apply(team, GATEWAY_NAMESPACE)
    try:
        doc: dict[str, Any] = yaml.safe_load((ROOT / "examples/local/tiny-llm.yaml").read_text())
        doc["spec"]["canary"]["analysis"]["prometheus"]["address"] = stack.prometheus_url
        attach(doc, namespace)
        refs = doc["spec"]["traffic"]["gatewayAPI"]["parentRefs"]
        # sectionName: Traefik 3.6 judges a parentRef against the listeners of every
        # Gateway the route names unless the listener is named (its matchListener does not
        # compare the Gateway), so the stack's listener would accept it for the team's.
        refs.append({"name": gateway, "namespace": GATEWAY_NAMESPACE, "sectionName": "team"})
        kubectl.apply(doc, namespace)
        wait_for(
            "revision 1 Stable",
            lambda: (
                (kubectl.get("llmd", "tiny-llm", namespace) or {}).get("status", {}).get("phase")
                == "Stable"
            ),
            timeout=180,
        )
        wait_until_served(stack.gateway_url, doc["spec"]["traffic"]["gatewayAPI"]["hostnames"][0])
        load.start()
        doc["spec"]["model"]["version"] = "2"
        kubectl.apply(doc, namespace)
        refused = (
            f"Gateway {GATEWAY_NAMESPACE}/{gateway} listener team refuses the HTTPRoute:"
            " Accepted=False (NotAllowedByListeners)"
        )

        def waiting() -> dict[str, Any] | None:
            st = (kubectl.get("llmd", "tiny-llm", namespace) or {}).get("status") or {}
            return st if refused in (st.get("message") or "") else None

        st = wait_for("the rollout to wait with the Gateway's reason", waiting, timeout=240)
        print(f"status: {st['message']}")
        assert st["message"] == (
            f"the gatewayAPI router does not hold canary 25% yet ({refused}): step 0 begins"
            " when it does"
        )
        assert st["canaryWeight"] == 25 and not st.get("stepStartedAt")
        assert route_conditions(kubectl, namespace, "tiny-llm", (GATEWAY_NAMESPACE, gateway)) == {
            "Accepted": "False",
            "ResolvedRefs": "True",
        }
        # The stack's own Gateway took it: traffic flows, only the split is not held by all.
        assert route_conditions(kubectl, namespace, "tiny-llm") == {
            "Accepted": "True",
            "ResolvedRefs": "True",
        }
        time.sleep(10)
        st = (kubectl.get("llmd", "tiny-llm", namespace) or {}).get("status") or {}
        assert not st.get("stepStartedAt") and not st.get("lastAnalysis"), st

        # The platform team lets the namespace in: the step begins.
        team["spec"]["listeners"][0]["allowedRoutes"] = {"namespaces": {"from": "All"}}
        kubectl.apply(team, GATEWAY_NAMESPACE)
        started = wait_for(
            "the step to begin",
            lambda: (
                (s := (kubectl.get("llmd", "tiny-llm", namespace) or {}).get("status") or {}).get(
                    "stepStartedAt"
                )
                and s
            ),
            timeout=60,
        )
        assert started["canaryWeight"] == 25
        assert started["canaryRevision"] == revision_of(
            LLMDeploymentSpec.model_validate(doc["spec"])
        )
    finally:
        kubectl.run("delete", "gateway", gateway, "-n", GATEWAY_NAMESPACE, check=False)
