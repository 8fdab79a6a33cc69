"""Canary rollouts end to end: the real operator process, the real API server, a real
Prometheus scraping exporter processes that publish Triton's metrics for each pod with
values the test sets (there is no GPU here to run Triton on; issue 5 brings real Triton).

Intervals are compressed to seconds through the spec, as a user could.
"""

from __future__ import annotations

import copy
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml
from kubectl import ROOT, Kubectl, OperatorProcess, canary_route_weight, wait_for
from metrics import Behaviour, ExporterFleet, PrometheusServer

from llmcanary.analysis.sequential import MIN_BLOCKS
from llmcanary.api.spec import LLMDeploymentSpec
from llmcanary.rollout.revision import revision_of

pytestmark = pytest.mark.k8s

NAME = "tiny-llm"
REPLICAS = 4
INTERVAL_S = 4  # analysis interval and step interval
# With a fresh baseline (the default) the canary's weight stops at 50%: the baseline
# takes as much.
WALK = [5, 15, 25, 35, 45, 50]
# A step ends on a passing check, and a latency is judged once the step holds MIN_BLOCKS
# time blocks of at least one interval: each of the six steps lasts about 5 intervals
# and the warm-up (~25 s here, 150 s a walk). The bound leaves room for a loaded machine.
WALK_TIMEOUT = 360
STEP_TIMEOUT = 60  # per step to reach, on top of the canary's pods becoming Ready (60 s)
# Per pod: 120 requests/s give each arm's pod ~360 requests in a step's 3 s of evidence.
HEALTHY = {"rps": 120.0, "p95_ms": 200.0, "error_rate": 0.0}


def manifest(version: str, **analysis: Any) -> dict[str, Any]:
    doc = yaml.safe_load((ROOT / "examples" / "tiny-llm.yaml").read_text())
    doc = copy.deepcopy(doc)
    spec = doc["spec"]
    spec["model"]["version"] = version
    spec["replicas"] = REPLICAS
    spec["canary"] = {
        "initialWeight": 5,
        "stepWeight": 10,
        "initialStepInterval": f"{INTERVAL_S}s",
        "stepInterval": f"{INTERVAL_S}s",
        "analysis": {
            "interval": f"{INTERVAL_S}s",
            # Steps of seconds: requests count after 1 s at each weight.
            "warmup": "1s",
            "prometheus": {"address": analysis.pop("prometheus")},
            "failureLimit": 1,
            # New targets reach Prometheus 5-6 s after a pod is Ready (its discovery
            # batches updates): allow a canary's first checks to find no series yet.
            "inconclusiveLimit": 4,
            **analysis,
        },
    }
    return doc


def revision(doc: dict[str, Any]) -> str:
    return revision_of(LLMDeploymentSpec.model_validate(doc["spec"]))


def status(kubectl: Kubectl, namespace: str) -> dict[str, Any]:
    obj = kubectl.get("llmd", NAME, namespace)
    assert obj is not None
    found: dict[str, Any] = obj.get("status", {})
    return found


def route_weight(kubectl: Kubectl, namespace: str) -> int | None:
    return canary_route_weight(kubectl, namespace, NAME)


@dataclass
class Recorder:
    """Samples the HTTPRoute's canary weight and the status every 0.2 s, in a thread."""

    kubectl: Kubectl
    namespace: str
    samples: list[tuple[float, int | None, dict[str, Any]]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> Recorder:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        # The caller stops us the moment it sees the state it waited for, which can
        # fall between two samples: one last sample records that final state.
        self._sample()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(0.2)

    def _sample(self) -> None:
        try:
            weight = route_weight(self.kubectl, self.namespace)
            st = status(self.kubectl, self.namespace)
            self.samples.append((time.monotonic(), weight, st))
        except AssertionError:
            pass

    def weights(self) -> list[int]:
        """The distinct canary weights seen in the route, in order."""
        out: list[int] = []
        for _, weight, _ in self.samples:
            if weight is not None and (not out or out[-1] != weight):
                out.append(weight)
        return out


def weight_changes(kubectl: Kubectl, namespace: str) -> list[int]:
    """The operator's WeightChanged events, oldest first, as weights."""
    events = [e for e in kubectl.list("event", namespace) if e.get("reason") == "WeightChanged"]
    events.sort(key=lambda e: e.get("eventTime") or e.get("firstTimestamp") or "")
    out = []
    for event in events:
        text = event["message"]  # "canary weight 15% (step 1)"
        out += [int(text.split()[2].rstrip("%"))] * int(event.get("count") or 1)
    return out


def pods_created(kubectl: Kubectl, namespace: str, rev: str) -> int:
    """Pods the ReplicaSet controller created for revision ``rev`` (its own Events)."""
    prefix = f"{NAME}-{rev}-"
    return sum(
        int(e.get("count") or 1)
        for e in kubectl.list("event", namespace)
        if e.get("reason") == "SuccessfulCreate"
        and e["involvedObject"].get("kind") == "ReplicaSet"
        and e["involvedObject"]["name"].startswith(prefix)
    )


@pytest.fixture
def exporters(exporter_fleet: Any, kubectl: Kubectl, namespace: str) -> ExporterFleet:
    """One exporter per Ready pod of the LLMDeployment, healthy unless a test says not;
    each pod also answers Triton's readiness on its (loopback) pod IP."""
    fleet: ExporterFleet = exporter_fleet(model=NAME, default=Behaviour(**HEALTHY))
    fleet.serve_triton_health()
    fleet.follow(kubectl.kubeconfig, namespace, NAME)
    return fleet


@pytest.fixture
def stable_v1(
    kubectl: Kubectl,
    operator: OperatorProcess,
    namespace: str,
    prometheus: PrometheusServer,
    exporters: ExporterFleet,
) -> dict[str, Any]:
    doc = manifest("1", prometheus=prometheus.url)
    kubectl.apply(doc, namespace)
    wait_for(
        "revision 1 Stable",
        lambda: status(kubectl, namespace).get("phase") == "Stable",
        timeout=90,
    )
    return doc


def roll_out(kubectl: Kubectl, namespace: str, doc: dict[str, Any]) -> str:
    kubectl.apply(doc, namespace)
    return revision(doc)


def test_a_healthy_canary_walks_every_step_and_is_promoted_without_new_pods(
    kubectl: Kubectl, namespace: str, stable_v1: dict[str, Any], prometheus: PrometheusServer
) -> None:
    old = revision(stable_v1)
    with Recorder(kubectl, namespace) as recorder:
        new = roll_out(kubectl, namespace, manifest("2", prometheus=prometheus.url))
        final = wait_for(
            "revision 2 promoted",
            lambda: (st := status(kubectl, namespace)).get("stableRevision") == new and st,
            timeout=WALK_TIMEOUT,
        )
    assert final["phase"] == "Stable"
    assert final["history"][0]["outcome"] == "Promoted"
    assert weight_changes(kubectl, namespace) == WALK
    seen = recorder.weights()
    assert seen[-1] == 0 and seen[:-1] == sorted(seen[:-1]), seen
    assert set(seen) <= {0, *WALK}
    # Zero extra model loads: the new revision's pods were created once, REPLICAS of
    # them, and those same pods are the stable ones now.
    assert pods_created(kubectl, namespace, new) == REPLICAS
    pods = kubectl.list("pod", namespace, f"llmcanary.io/revision={new}")
    assert len(pods) == REPLICAS
    assert {p["metadata"]["labels"]["llmcanary.io/track"] for p in pods} == {"stable"}
    # Every check was against the fresh baseline, at the canary's size; it is gone now.
    assert final["history"][0]["reason"].startswith("canary e2eLatency p95")
    wait_for(
        "the baseline removed",
        lambda: (
            kubectl.get("deployment", f"{NAME}-{old}-baseline", namespace) is None
            and kubectl.get("service", f"{NAME}-baseline", namespace) is None
        ),
        timeout=30,
    )
    route = kubectl.get("httproute", NAME, namespace)
    assert route is not None
    assert [r["name"] for r in route["spec"]["rules"][0]["backendRefs"]] == [
        f"{NAME}-stable",
        f"{NAME}-canary",
    ]
    stable_svc = kubectl.get("service", f"{NAME}-stable", namespace)
    assert stable_svc is not None
    assert stable_svc["spec"]["selector"]["llmcanary.io/revision"] == new
    assert route_weight(kubectl, namespace) == 0
    wait_for(
        "the old revision scaled to zero",
        lambda: (
            (kubectl.get("deployment", f"{NAME}-{old}", namespace) or {})["spec"]["replicas"] == 0
        ),
        timeout=30,
    )


def test_a_slower_canary_is_rolled_back_within_a_few_intervals_of_the_regression(
    kubectl: Kubectl,
    namespace: str,
    stable_v1: dict[str, Any],
    prometheus: PrometheusServer,
    exporters: ExporterFleet,
) -> None:
    new = roll_out(kubectl, namespace, manifest("2", prometheus=prometheus.url))
    wait_for(
        "weight 15", lambda: route_weight(kubectl, namespace) == 15, timeout=60 + 1 * STEP_TIMEOUT
    )
    slow = HEALTHY["p95_ms"] * 1.5
    exporters.set_behaviour(new, **{**HEALTHY, "p95_ms": slow})
    # What the operator reads: the canary's end-to-end P95 over one analysis window.
    query = (
        "histogram_quantile(0.95, sum by (le) (increase(vllm:e2e_request_latency_seconds_bucket"
        f'{{namespace="{namespace}",llmdeployment="{NAME}",track="canary"}}[{INTERVAL_S}s])))'
        " * 1000"
    )
    wait_for(
        "Prometheus to show the canary past +20%",
        lambda: (
            (value := prometheus.value(query)) is not None
            and value > HEALTHY["p95_ms"] * 1.2 * 1.02
        ),
        timeout=30,
        every=0.1,
    )
    visible = time.monotonic()
    wait_for(
        "canary weight 0", lambda: route_weight(kubectl, namespace) == 0, timeout=60, every=0.1
    )
    reaction = time.monotonic() - visible
    print(f"regression visible in Prometheus -> weight 0 in the HTTPRoute: {reaction:.2f}s")
    # A latency is judged once the step holds MIN_BLOCKS time blocks (here one interval
    # each), and the step's evidence began before the regression: its blocks must show
    # a shift, not a burst. Those blocks and two intervals more, plus the time to run
    # the check and write the route (measured: 23 s).
    assert reaction <= (MIN_BLOCKS + 2) * INTERVAL_S + 1.5

    st = wait_for(
        "phase RolledBack", lambda: (s := status(kubectl, namespace))["phase"] == "RolledBack" and s
    )
    assert st["rolledBackRevision"] == new
    assert "canary e2eLatency p95" in st["history"][0]["reason"]
    deployment = kubectl.get("deployment", f"{NAME}-{new}", namespace)
    assert deployment is not None and deployment["spec"]["replicas"] == 0
    warnings = [
        e
        for e in kubectl.list("event", namespace)
        if e.get("type") == "Warning" and e.get("reason") == "RolledBack"
    ]
    assert warnings and "vs baseline" in warnings[0]["message"]
    # Remembered: it is not tried again while the spec stays the same.
    time.sleep(3 * INTERVAL_S)
    assert status(kubectl, namespace)["phase"] == "RolledBack"
    assert route_weight(kubectl, namespace) == 0


@pytest.mark.parametrize(
    ("criterion", "regression"),
    [
        # TTFT 40 -> 80 ms, end-to-end the same (a slower prefill, a faster decode).
        ("ttft p95", {"ttft_p95_ms": 80.0}),
        # TPOT 5.2 -> 10 ms, end-to-end the same (a slower decode, a faster prefill).
        ("tpot p95", {"tpot_p95_ms": 10.0}),
    ],
)
def test_a_canary_regressing_on_one_criterion_alone_is_rolled_back_naming_it(
    kubectl: Kubectl,
    namespace: str,
    stable_v1: dict[str, Any],
    prometheus: PrometheusServer,
    exporters: ExporterFleet,
    criterion: str,
    regression: dict[str, float],
) -> None:
    doc = manifest("2", prometheus=prometheus.url)
    exporters.set_behaviour(revision(doc), **HEALTHY, **regression)
    new = roll_out(kubectl, namespace, doc)
    st = wait_for(
        "phase RolledBack",
        lambda: (s := status(kubectl, namespace))["phase"] == "RolledBack" and s,
        timeout=60,
    )
    assert st["rolledBackRevision"] == new
    records = {c["criterion"]: c for c in st["lastAnalysis"]["criteria"]}
    assert records[criterion]["verdict"] == "fail"
    others = {k: c["verdict"] for k, c in records.items() if k != criterion}
    assert set(others.values()) == {"pass"}, others
    mine, theirs = records[criterion]["canary"], records[criterion]["reference"]
    print(f"{criterion}: canary {mine}, baseline {theirs}")
    assert mine["value"] > theirs["value"] * 1.2 and mine["samples"] > 0
    assert records[criterion]["lower"] > 20, "failed only once the bound passed the limit"
    assert st["lastAnalysis"]["reference"] == "baseline"
    warnings = [
        e["message"]
        for e in kubectl.list("event", namespace)
        if e.get("type") == "Warning" and e.get("reason") == "RolledBack"
    ]
    assert warnings and f"canary {criterion}" in warnings[0], warnings


def test_a_canary_with_too_few_requests_never_promotes_and_keeps_collecting(
    kubectl: Kubectl,
    namespace: str,
    stable_v1: dict[str, Any],
    prometheus: PrometheusServer,
    exporters: ExporterFleet,
) -> None:
    doc = manifest("2", prometheus=prometheus.url)
    exporters.set_behaviour(revision(doc), rps=2.0, p95_ms=200.0, error_rate=0.0)
    roll_out(kubectl, namespace, doc)

    def collecting() -> dict[str, Any] | None:
        st = status(kubectl, namespace)
        last = st.get("lastAnalysis") or {}
        return st if last.get("waiting") and "collecting evidence" in last["reason"] else None

    st = wait_for("a check waiting for requests", collecting, timeout=60)
    assert st["lastAnalysis"]["verdict"] == "inconclusive"
    assert st["lastAnalysis"]["needed"] > 0
    assert "~" in st["lastAnalysis"]["reason"] and "requests/s" in st["lastAnalysis"]["reason"]
    time.sleep(3 * INTERVAL_S)
    # Waiting for evidence is not a fault: no pause, no step, the weight holds.
    st = status(kubectl, namespace)
    assert st["phase"] == "Progressing" and st.get("pauseReason") is None
    assert st["inconclusiveChecks"] == 0 and st["canaryWeight"] == 5
    assert route_weight(kubectl, namespace) == 5


def test_identical_arms_at_unequal_per_pod_load_are_promoted_against_a_fresh_baseline(
    kubectl: Kubectl,
    namespace: str,
    stable_v1: dict[str, Any],
    prometheus: PrometheusServer,
    exporters: ExporterFleet,
) -> None:
    """The local stack's measurement, as exporters: pods with a third of the stable's
    load read 60% slower. Against the stable pods that is a +60% "regression" (the
    point-estimate rule rolled this back); the baseline has the canary's load."""
    doc = manifest("2", prometheus=prometheus.url)
    light = {"rps": 40.0, "p95_ms": 320.0}
    exporters.set_behaviour(revision(doc), **light)
    exporters.set_behaviour(f"{revision(stable_v1)}-baseline", **light)
    new = roll_out(kubectl, namespace, doc)
    st = wait_for(
        "revision 2 promoted",
        lambda: (s := status(kubectl, namespace)).get("stableRevision") == new and s,
        timeout=WALK_TIMEOUT,
    )
    assert st["history"][0]["outcome"] == "Promoted"
    assert weight_changes(kubectl, namespace) == WALK


def test_without_a_baseline_unequal_per_pod_load_is_refused_not_rolled_back(
    kubectl: Kubectl,
    namespace: str,
    stable_v1: dict[str, Any],
    prometheus: PrometheusServer,
    exporters: ExporterFleet,
) -> None:
    doc = manifest("2", prometheus=prometheus.url, baseline="stable")
    exporters.set_behaviour(revision(doc), rps=40.0, p95_ms=320.0)
    roll_out(kubectl, namespace, doc)
    st = wait_for(
        "phase Paused",
        lambda: (s := status(kubectl, namespace)).get("phase") == "Paused" and s,
        timeout=90,
    )
    # 40 requests/s on the canary's pod, 120 on each stable pod: about 1/3 (increase()
    # extrapolates a series born inside the window less than one that spans it).
    assert "per-pod load differs: the canary's pods serve 0." in st["pauseReason"]
    assert 0.2 <= st["lastAnalysis"]["loadRatio"] <= 0.45
    assert st["failedChecks"] == 0 and st["canaryWeight"] == 5
    assert kubectl.get("deployment", f"{NAME}-{revision(stable_v1)}-baseline", namespace) is None


def test_a_canary_30_percent_slower_is_rolled_back_at_its_first_steps(
    kubectl: Kubectl,
    namespace: str,
    stable_v1: dict[str, Any],
    prometheus: PrometheusServer,
    exporters: ExporterFleet,
) -> None:
    doc = manifest("2", prometheus=prometheus.url)
    exporters.set_behaviour(revision(doc), **{**HEALTHY, "p95_ms": HEALTHY["p95_ms"] * 1.3})
    new = roll_out(kubectl, namespace, doc)
    st = wait_for(
        "phase RolledBack",
        lambda: (s := status(kubectl, namespace))["phase"] == "RolledBack" and s,
        timeout=90,
    )
    assert st["rolledBackRevision"] == new
    assert max(weight_changes(kubectl, namespace)) <= 25
    failed = [c for c in st["lastAnalysis"]["criteria"] if c["verdict"] == "fail"]
    assert failed and all(20 < c["effect"] < 40 for c in failed), failed


def test_prometheus_killed_mid_rollout_holds_the_weight_then_pauses(
    kubectl: Kubectl, namespace: str, stable_v1: dict[str, Any], prometheus: PrometheusServer
) -> None:
    roll_out(kubectl, namespace, manifest("2", prometheus=prometheus.url))
    wait_for(
        "weight 25", lambda: route_weight(kubectl, namespace) == 25, timeout=60 + 2 * STEP_TIMEOUT
    )
    prometheus.kill()
    with Recorder(kubectl, namespace) as recorder:
        st = wait_for(
            "phase Paused",
            lambda: (s := status(kubectl, namespace)).get("phase") == "Paused" and s,
            timeout=60,
        )
    assert "metrics unavailable" in st["pauseReason"]
    assert set(recorder.weights()) <= {25, 35}  # at most the step already passed
    assert st["stableRevision"] == revision(stable_v1)


def test_an_operator_killed_between_steps_resumes_at_the_same_step(
    kubectl: Kubectl,
    namespace: str,
    operator: OperatorProcess,
    stable_v1: dict[str, Any],
    prometheus: PrometheusServer,
) -> None:
    with Recorder(kubectl, namespace) as recorder:
        new = roll_out(kubectl, namespace, manifest("2", prometheus=prometheus.url))
        # Between steps: the route and the status both at 35 (the route is applied first,
        # the status written after it; a kill between the two is another test's case).
        wait_for(
            "weight 35 in the route and in status",
            lambda: (
                route_weight(kubectl, namespace) == 35
                and status(kubectl, namespace).get("canaryWeight") == 35
            ),
            timeout=60 + 3 * STEP_TIMEOUT,
        )
        assert operator.proc is not None
        operator.proc.send_signal(signal.SIGKILL)
        operator.proc.wait()
        at_kill = status(kubectl, namespace)
        time.sleep(2 * INTERVAL_S)  # the step would have ended meanwhile
        assert route_weight(kubectl, namespace) == at_kill["canaryWeight"]
        operator.start()
        wait_for(
            "revision 2 promoted after the restart",
            lambda: status(kubectl, namespace).get("stableRevision") == new,
            timeout=WALK_TIMEOUT,
        )
    seen = recorder.weights()
    assert seen[-1] == 0 and seen[:-1] == sorted(seen[:-1]), seen
    assert set(seen) <= {0, *WALK}, seen
    steps = [
        s.get("currentStep") for _, _, s in recorder.samples if s.get("currentStep") is not None
    ]
    assert steps == sorted(steps), "a step was repeated"
    assert set(steps) >= set(range(len(WALK))) - {0}, "a step was skipped"
    assert pods_created(kubectl, namespace, new) == REPLICAS


def llmcanary(kubectl: Kubectl, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "llmcanary", *args, "--kubeconfig", str(kubectl.kubeconfig)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_abort_retry_and_promote_requested_through_the_cli(
    kubectl: Kubectl, namespace: str, stable_v1: dict[str, Any], prometheus: PrometheusServer
) -> None:
    new = roll_out(kubectl, namespace, manifest("2", prometheus=prometheus.url))
    wait_for(
        "weight 15", lambda: route_weight(kubectl, namespace) == 15, timeout=60 + 1 * STEP_TIMEOUT
    )
    llmcanary(kubectl, "abort", NAME, "-n", namespace)
    st = wait_for(
        "RolledBack", lambda: (s := status(kubectl, namespace))["phase"] == "RolledBack" and s
    )
    assert st["history"][0]["outcome"] == "Aborted"
    assert route_weight(kubectl, namespace) == 0

    llmcanary(kubectl, "retry", NAME, "-n", namespace)
    wait_for("the retried canary at 5%", lambda: route_weight(kubectl, namespace) == 5, timeout=60)
    assert status(kubectl, namespace)["currentStep"] == 0

    llmcanary(kubectl, "promote", NAME, "-n", namespace)
    st = wait_for(
        "promoted on request",
        lambda: (s := status(kubectl, namespace)).get("stableRevision") == new and s,
        timeout=60,
    )
    assert st["phase"] == "Stable"
    assert [h["outcome"] for h in st["history"][:2]] == ["Promoted", "Aborted"]
    assert "stable" in llmcanary(kubectl, "status", NAME, "-n", namespace).lower()
    # Aborted canary pods were scaled away, the retry and promotion made exactly `replicas`.
    assert len(kubectl.list("pod", namespace, f"llmcanary.io/revision={new}")) == REPLICAS


def test_the_first_weight_waits_until_triton_serves_the_model_on_the_canary_pods(
    kubectl: Kubectl,
    namespace: str,
    stable_v1: dict[str, Any],
    prometheus: PrometheusServer,
    exporters: ExporterFleet,
) -> None:
    doc = manifest("2", prometheus=prometheus.url)
    new = revision(doc)
    exporters.set_model_ready(False, revision=new)
    roll_out(kubectl, namespace, doc)

    def model_check() -> dict[str, Any] | None:
        # Until the harness serves the new pod's IP, whatever answers there says 404.
        st = status(kubectl, namespace)
        checks = (st.get("preflight") or {}).get("dependencies") or []
        model = next((d for d in checks if d["name"].endswith("/model")), None)
        return st if model and "503" in model["message"] else None

    st = wait_for("the operator to find the model not ready (503)", model_check, timeout=60)
    assert st["canaryWeight"] == 0
    assert "waiting for the canary to serve" in st["message"]
    time.sleep(2 * INTERVAL_S)
    assert route_weight(kubectl, namespace) == 0
    exporters.set_model_ready(True, revision=new)
    wait_for(
        "weight 5 once Triton serves", lambda: route_weight(kubectl, namespace) == 5, timeout=30
    )
    checks = {d["name"]: d for d in status(kubectl, namespace)["preflight"]["dependencies"]}
    assert all(d["ok"] for k, d in checks.items() if k.startswith("canary/"))
