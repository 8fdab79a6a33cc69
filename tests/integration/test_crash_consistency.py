"""Crash consistency: the operator SIGKILLed at the moments a rollout is most exposed, the
API server restarted, Prometheus down for a whole step; the rollout ends as one that ran
uninterrupted ends (tests/integration/test_canary.py shows that run): the same phase, the
same weights in the same order with no step taken twice, the same history, and no extra
model load (every pod of the new revision created once).

One rollout carries the interruptions in turn, each at its moment, and a second one is
killed just after its rollback decision. A kill lands as soon as a watch sees the moment's
status, so it falls wherever the operator then is: between its status write and the next
API call, or in the middle of one.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from kubectl import Kubectl, OperatorProcess, wait_for
from metrics import ExporterFleet, PrometheusServer
from test_canary import (  # noqa: F401  (fixtures)
    HEALTHY,
    INTERVAL_S,
    NAME,
    REPLICAS,
    WALK,
    WALK_TIMEOUT,
    Recorder,
    exporters,
    llmcanary,
    manifest,
    pods_created,
    revision,
    roll_out,
    route_weight,
    stable_v1,
    status,
    weight_changes,
)

from llmcanary_dev import devcluster
from llmcanary_dev.devcluster import processes

pytestmark = pytest.mark.k8s

Status = dict[str, Any]


class SlowPrometheus:
    """A proxy in front of Prometheus that can hold each query for a while, so that a kill
    lands while the operator is in the middle of an analysis."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.delay = 0.0
        self.in_flight = 0
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with proxy._lock:
                    proxy.in_flight += 1
                try:
                    time.sleep(proxy.delay)
                    try:
                        with urllib.request.urlopen(proxy.upstream + self.path, timeout=10) as r:
                            status, body = r.status, r.read()
                    except urllib.error.HTTPError as exc:
                        status, body = exc.code, exc.read()
                    except OSError:
                        status, body = 502, b""
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the operator was killed mid-answer
                finally:
                    with proxy._lock:
                        proxy.in_flight -= 1

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def slow_prometheus(prometheus: PrometheusServer) -> Iterator[SlowPrometheus]:
    proxy = SlowPrometheus(prometheus.url)
    yield proxy
    proxy.close()


def kill(operator: OperatorProcess) -> None:
    assert operator.proc is not None
    operator.proc.send_signal(signal.SIGKILL)
    operator.proc.wait()
    operator.proc = None


def kill_when(
    kubectl: Kubectl,
    namespace: str,
    operator: OperatorProcess,
    what: str,
    moment: Callable[[Status], bool],
    timeout: float,
) -> Status:
    """SIGKILL the operator as soon as the status shows ``moment``; start it again a
    second later. Returns the status it was killed at."""
    st = wait_for(
        what, lambda: (s := status(kubectl, namespace)) and moment(s) and s, timeout, every=0.05
    )
    kill(operator)
    time.sleep(1.0)
    operator.start()
    return st


def test_sigkills_an_api_server_restart_and_a_prometheus_outage_change_nothing(
    kubectl: Kubectl,
    namespace: str,
    operator: OperatorProcess,
    stable_v1: dict[str, Any],  # noqa: F811
    prometheus: PrometheusServer,
    slow_prometheus: SlowPrometheus,
    exporters: ExporterFleet,  # noqa: F811
    cluster: Any,
) -> None:
    old = revision(stable_v1)
    killed: list[tuple[str, str | None, int | None]] = []  # (moment, phase, weight) at the kill
    with Recorder(kubectl, namespace) as recorder:
        new = roll_out(kubectl, namespace, manifest("2", prometheus=slow_prometheus.url))

        # 1. Preflight, 2. waiting for the canary's first pod.
        st = kill_when(
            kubectl,
            namespace,
            operator,
            "phase Preflight",
            lambda s: s.get("phase") == "Preflight" or s.get("canaryRevision") == new,
            30,
        )
        killed.append(("preflight", st.get("phase"), st.get("canaryWeight")))
        st = kill_when(
            kubectl,
            namespace,
            operator,
            "waiting for canary replicas",
            lambda s: s.get("canaryRevision") == new and "waiting for" in s.get("message", ""),
            60,
        )
        killed.append(("waiting for canary replicas", st.get("phase"), st.get("canaryWeight")))
        # 3. Mid-step: the weight just taken, its checks not yet passed.
        st = kill_when(
            kubectl,
            namespace,
            operator,
            "weight 15",
            lambda s: s.get("canaryWeight") == 15,
            WALK_TIMEOUT,
        )
        killed.append(("mid-step", st.get("phase"), st.get("canaryWeight")))
        # 4. During an analysis: the operator's queries held in the proxy.
        wait_for("weight 25", lambda: route_weight(kubectl, namespace) == 25, WALK_TIMEOUT)
        slow_prometheus.delay = 3.0
        wait_for("a query in flight", lambda: slow_prometheus.in_flight > 0, 30, every=0.05)
        kill(operator)
        slow_prometheus.delay = 0.0
        time.sleep(1.0)
        operator.start()
        killed.append(("during an analysis", None, 25))

        # The API server restarted mid-step: killed, then brought back as it was.
        wait_for("weight 35", lambda: route_weight(kubectl, namespace) == 35, WALK_TIMEOUT)
        settings = devcluster.Settings.from_env()
        pid = processes.running_pid(settings, "kube-apiserver")
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        time.sleep(3.0)
        devcluster.up(settings)

        # Prometheus down for a whole step: no weight moves on, and nothing is promoted.
        wait_for("weight 45", lambda: route_weight(kubectl, namespace) == 45, WALK_TIMEOUT)
        prometheus.kill()
        outage_until = time.monotonic() + 3 * INTERVAL_S
        while time.monotonic() < outage_until:
            st = status(kubectl, namespace)
            assert st.get("stableRevision") == old and st.get("phase") != "Promoting", st
            assert (route_weight(kubectl, namespace) or 0) <= 45
            time.sleep(0.5)
        prometheus.start()
        prometheus.wait_ready()

        def moving_on() -> bool:
            """Past 45%; a rollout the outage paused (inconclusiveLimit reached, or
            Prometheus still re-scraping its targets) is resumed, as its user would."""
            st = status(kubectl, namespace)
            if st.get("phase") == "Paused":
                llmcanary(kubectl, "resume", NAME, "-n", namespace)
                return False
            return (route_weight(kubectl, namespace) or 0) > 45 or st.get("stableRevision") == new

        wait_for("the rollout past 45%", moving_on, WALK_TIMEOUT, every=2.0)

        # 5. Promoting: the canary grown to full size, the route not yet moved.
        st = kill_when(
            kubectl,
            namespace,
            operator,
            "phase Promoting",
            lambda s: s.get("phase") == "Promoting" or s.get("stableRevision") == new,
            WALK_TIMEOUT,
        )
        killed.append(("promoting", st.get("phase"), st.get("canaryWeight")))
        final = wait_for(
            "revision 2 promoted",
            lambda: (s := status(kubectl, namespace)).get("stableRevision") == new and s,
            WALK_TIMEOUT,
        )
    assert final["phase"] == "Stable"
    assert [h["outcome"] for h in final["history"]][:1] == ["Promoted"]
    assert final["history"][0]["revision"] == new
    # The same weights, in order, none taken twice (a lost event may only drop one).
    events = weight_changes(kubectl, namespace)
    assert events == sorted(set(events)) and set(events) <= set(WALK), events
    seen = recorder.weights()
    assert seen[-1] == 0 and seen[:-1] == sorted(seen[:-1]) and set(seen) <= {0, *WALK}, seen
    steps = [
        s.get("currentStep") for _, _, s in recorder.samples if s.get("currentStep") is not None
    ]
    assert steps == sorted(steps), "a step was taken twice"
    # No extra model load: each of the new revision's pods was created once.
    assert pods_created(kubectl, namespace, new) == REPLICAS
    print("killed at:", killed)
    assert [moment for moment, _, _ in killed][:3] == [
        "preflight",
        "waiting for canary replicas",
        "mid-step",
    ]

    # 6. Just after a rollback decision.
    slower = manifest("3", prometheus=prometheus.url)
    exporters.set_behaviour(revision(slower), **{**HEALTHY, "p95_ms": HEALTHY["p95_ms"] * 1.5})
    rolled = roll_out(kubectl, namespace, slower)
    at_kill = kill_when(
        kubectl,
        namespace,
        operator,
        "phase RolledBack",
        lambda s: s.get("phase") == "RolledBack",
        120,
    )
    loads = pods_created(kubectl, namespace, rolled)
    after = wait_for(
        "the rolled-back canary at weight 0 and scaled to zero",
        lambda: (
            route_weight(kubectl, namespace) == 0
            and (kubectl.get("deployment", f"{NAME}-{rolled}", namespace) or {})
            .get("spec", {})
            .get("replicas")
            == 0
            and status(kubectl, namespace)
        ),
        60,
    )
    assert after["phase"] == "RolledBack" and after["stableRevision"] == new
    assert after["history"][0]["outcome"] == "RolledBack"
    assert after["history"][0]["revision"] == rolled
    assert after["history"][1:] == at_kill["history"][1:]  # nothing older rewritten
    assert len([h for h in after["history"] if h["revision"] == rolled]) == 1
    time.sleep(2 * INTERVAL_S)
    assert pods_created(kubectl, namespace, rolled) == loads, "the canary was loaded again"
    assert status(kubectl, namespace)["phase"] == "RolledBack"
