"""PrometheusProvider against a real Prometheus scraping real exporter processes.

The exporters (triton_metrics_exporter.py) expose Triton's metric names; the queries are
the operator's built-in ones (llmcanary.analysis.queries), so these tests also pin the
built-in PromQL to Triton's exposition. The last test drives the exporters from the
pods of the local cluster (TargetSync).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest_metrics import FleetFactory
from kubectl import Kubectl, wait_for
from metrics import ExporterFleet, PrometheusServer, Target

from llmcanary.analysis.providers.prometheus import PrometheusProvider
from llmcanary.analysis.queries import QueryContext, arm_queries
from llmcanary.analysis.types import Arm, ArmQueries, MetricsUnavailable
from llmcanary.api.spec import AnalysisSpec

NS, NAME, MODEL = "ns1", "chat", "llm"
WINDOW = 10  # seconds: the analysis interval, so the queries read increase(...[10s])
CONTEXT = QueryContext(NS, NAME, MODEL, {"stable": "r1", "canary": "r2"})


def queries(arm: Arm, metric: str = "summary") -> ArmQueries:
    analysis = AnalysisSpec.model_validate({"interval": f"{WINDOW}s", "metric": metric})
    return arm_queries(analysis, CONTEXT, arm)


def target(pod: str, revision: str, track: str | None) -> Target:
    return Target(namespace=NS, llmdeployment=NAME, pod=pod, revision=revision, track=track)


def wait_full_window(prometheus: PrometheusServer, targets: int) -> None:
    """Until every target has been scraped over a whole window, so that increase() over
    it is not cut short by a missing start."""
    prometheus.wait_for(
        f"{targets} targets scraped for {WINDOW}s",
        f'count_over_time(nv_inference_request_success{{namespace="{NS}"}}[{WINDOW}s]) >= {WINDOW}',
        lambda result: len(result) == targets,
        timeout=WINDOW + 30,
    )


def start_two_arms(fleet: ExporterFleet) -> None:
    """Stable r1 on two pods (40 rps each, P95 100 ms); canary r2 on one (20 rps, P95
    250 ms, 10% errors)."""
    fleet.set_behaviour("r1", rps=40, p95_ms=100)
    fleet.set_behaviour("r2", rps=20, p95_ms=250, error_rate=0.1)
    fleet.sync(
        (NS, NAME),
        [
            target("chat-r1-a", "r1", "stable"),
            target("chat-r1-b", "r1", "stable"),
            target("chat-r2-a", "r2", "canary"),
        ],
    )


@pytest.fixture(scope="module")
def settled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """Two arms scraped over a whole window, shared by the tests that only read: waiting
    for a window is most of such a test's time."""
    workdir = tmp_path_factory.mktemp("settled")
    prometheus = PrometheusServer(workdir / "prometheus").start()
    fleet = ExporterFleet(workdir / "exporters", prometheus.targets_dir, model=MODEL)
    try:
        prometheus.wait_ready()
        start_two_arms(fleet)
        wait_full_window(prometheus, 3)
        yield prometheus
    finally:
        fleet.close()
        prometheus.stop()
        print(f"--- prometheus log (tail) ---\n{prometheus.log_tail()}")


@pytest.fixture
def two_arms(prometheus: PrometheusServer, exporter_fleet: FleetFactory) -> ExporterFleet:
    """The two arms on this test's own Prometheus, once each target has been scraped."""
    fleet = exporter_fleet(model=MODEL)
    start_two_arms(fleet)
    prometheus.wait_for(
        "3 targets scraped",
        f'nv_inference_request_summary_us{{namespace="{NS}",quantile="0.95"}}',
        lambda result: len(result) == 3,
    )
    return fleet


def test_each_arm_reads_its_p95_requests_and_errors(settled: PrometheusServer) -> None:
    provider = PrometheusProvider(settled.url, timeout_seconds=5)
    started = time.monotonic()
    stable = provider.sample(queries("stable"))
    took = time.monotonic() - started
    canary = provider.sample(queries("canary"))

    # The summary's P95 is exact; the max over the stable pods is their (common) P95.
    assert stable.latency_ms == pytest.approx(100)
    assert canary.latency_ms == pytest.approx(250)
    # Counters: rps x window, within the counters' integer steps and scrape jitter.
    assert stable.requests == pytest.approx(2 * 40 * WINDOW, rel=0.15)
    assert stable.errors == pytest.approx(0, abs=0.5)
    assert canary.requests == pytest.approx(20 * 0.9 * WINDOW, rel=0.15)
    assert canary.errors == pytest.approx(20 * 0.1 * WINDOW, rel=0.35)
    assert canary.error_rate == pytest.approx(0.1, abs=0.04)
    assert took < 1.0, f"three instant queries took {took:.2f}s"


def test_histogram_quantile_lands_near_the_p95(settled: PrometheusServer) -> None:
    provider = PrometheusProvider(settled.url)
    stable = provider.sample(queries("stable", metric="histogram"))
    canary = provider.sample(queries("canary", metric="histogram"))
    assert stable.latency_ms == pytest.approx(100, rel=0.1)
    assert canary.latency_ms == pytest.approx(250, rel=0.1)


def test_changed_behaviour_shows_in_the_next_scrapes(
    prometheus: PrometheusServer, two_arms: ExporterFleet
) -> None:
    provider = PrometheusProvider(prometheus.url)
    two_arms.set_behaviour("r2", rps=20, p95_ms=900, error_rate=0.1)
    wait_for(
        "the canary's new P95",
        lambda: provider.sample(queries("canary")).latency_ms == pytest.approx(900),
        timeout=10,
        every=0.25,
    )
    assert provider.sample(queries("stable")).latency_ms == pytest.approx(100)


def test_missing_series_are_none(
    prometheus: PrometheusServer, exporter_fleet: FleetFactory
) -> None:
    provider = PrometheusProvider(prometheus.url)
    # No target at all: every query answers an empty vector.
    empty = provider.sample(queries("canary"))
    assert (empty.latency_ms, empty.requests, empty.errors) == (None, None, None)
    assert empty.samples is None

    fleet = exporter_fleet(model=MODEL)
    fleet.set_no_traffic("r1")  # no behaviour file: counters frozen, no summary at all
    fleet.set_behaviour("r2", rps=0, p95_ms=100)  # summary present, quantiles NaN
    fleet.sync(
        (NS, NAME), [target("chat-r1-a", "r1", "stable"), target("chat-r2-a", "r2", "canary")]
    )
    prometheus.wait_for(
        "both targets scraped at least twice",
        f'count_over_time(nv_inference_request_success{{namespace="{NS}"}}[1m]) >= 2',
        lambda result: len(result) == 2,
    )
    stable = provider.sample(queries("stable"))
    canary = provider.sample(queries("canary"))
    assert stable.latency_ms is None  # no summary series
    assert stable.requests == 0  # the series is there, the counter did not move
    nan = prometheus.query(
        f'nv_inference_request_summary_us{{namespace="{NS}",track="canary",quantile="0.95"}}'
    )
    assert [s["value"][1] for s in nan] == ["NaN"]  # the series is there, its value NaN
    assert canary.latency_ms is None
    assert canary.requests == 0


def test_a_query_answering_two_series_is_unavailable(settled: PrometheusServer) -> None:
    provider = PrometheusProvider(settled.url)
    per_pod = ArmQueries(
        arm="stable",
        latency=f'nv_inference_request_summary_us{{quantile="0.95",namespace="{NS}",'
        f'llmdeployment="{NAME}",track="stable"}} / 1000',
        requests="vector(1)",
        errors="vector(0)",
    )
    with pytest.raises(MetricsUnavailable) as raised:
        provider.sample(per_pod)
    message = str(raised.value)
    assert "2 series" in message
    assert "max" in message and "sum" in message
    assert "stable latency" in message
    assert settled.url in message


def test_bad_promql_is_unavailable_with_prometheus_reason(prometheus: PrometheusServer) -> None:
    provider = PrometheusProvider(prometheus.url)
    bad = ArmQueries(arm="canary", latency="max(", requests="vector(1)", errors="vector(0)")
    with pytest.raises(MetricsUnavailable) as raised:
        provider.sample(bad)
    message = str(raised.value)
    assert "HTTP 400" in message and "parse error" in message
    assert "canary latency" in message and prometheus.url in message
    assert "\n" not in message and "Traceback" not in message


def test_killed_prometheus_is_unavailable_at_once_and_back_after_restart(
    prometheus: PrometheusServer, two_arms: ExporterFleet
) -> None:
    provider = PrometheusProvider(prometheus.url, timeout_seconds=2)
    assert provider.sample(queries("canary")).latency_ms == pytest.approx(250)

    prometheus.kill()
    started = time.monotonic()
    with pytest.raises(MetricsUnavailable) as raised:
        provider.sample(queries("canary"))
    took = time.monotonic() - started
    assert took < 2, f"a refused connection took {took:.2f}s to report"
    message = str(raised.value)
    assert "cannot connect" in message and prometheus.url in message and "canary" in message
    assert "\n" not in message

    prometheus.start().wait_ready()  # same address, same data directory
    wait_for(
        "the canary's P95 after the restart",
        lambda: _latency_or_none(provider, "canary") == pytest.approx(250),
        timeout=15,
        every=0.25,
    )


def _latency_or_none(provider: PrometheusProvider, arm: Arm) -> float | None:
    try:
        return provider.sample(queries(arm)).latency_ms
    except MetricsUnavailable:
        return None


def test_hung_prometheus_is_unavailable_within_the_timeout(
    prometheus: PrometheusServer,
) -> None:
    assert prometheus.proc is not None
    provider = PrometheusProvider(prometheus.url, timeout_seconds=1)
    os.kill(prometheus.proc.pid, signal.SIGSTOP)  # accepts connections, never answers
    try:
        started = time.monotonic()
        with pytest.raises(MetricsUnavailable) as raised:
            provider.sample(queries("stable"))
        took = time.monotonic() - started
    finally:
        os.kill(prometheus.proc.pid, signal.SIGCONT)
    assert 0.9 < took < 2.5, f"took {took:.2f}s with a 1s timeout"
    assert "no answer within 1s" in str(raised.value)


# --- Driven by the cluster ---------------------------------------------------------------


def _deployment(name: str, revision: str, track: str, replicas: int) -> dict[str, Any]:
    labels = {
        "app": f"{NAME}-{revision}",
        "llmcanary.io/deployment": NAME,
        "llmcanary.io/revision": revision,
        "llmcanary.io/track": track,
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": labels["app"]}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "triton", "image": "tritonserver:stub"}]},
            },
        },
    }


@pytest.mark.k8s
def test_target_sync_follows_pods_and_their_labels(
    kubectl: Kubectl,
    namespace: str,
    prometheus: PrometheusServer,
    exporter_fleet: FleetFactory,
) -> None:
    fleet = exporter_fleet(model=MODEL)
    fleet.set_behaviour("r1", rps=10, p95_ms=80)
    sync = fleet.follow(kubectl.kubeconfig, namespace, NAME)
    kubectl.apply(_deployment(f"{NAME}-r1", "r1", "stable", 2), namespace)
    kubectl.apply(_deployment(f"{NAME}-r2", "r2", "canary", 1), namespace)

    up = f'up{{namespace="{namespace}",llmdeployment="{NAME}"}} == 1'

    def tracks(result: list[dict[str, Any]]) -> dict[str, str | None]:
        return {s["metric"]["pod"]: s["metric"].get("track") for s in result}

    result = prometheus.wait_for("three Ready pods scraped", up, lambda r: len(r) == 3, timeout=60)
    by_pod = {s["metric"]["pod"]: s["metric"] for s in result}
    pods = {
        p["metadata"]["name"]: p
        for p in kubectl.list("pods", namespace, f"llmcanary.io/deployment={NAME}")
    }
    assert set(by_pod) == set(pods)
    for pod, labels in by_pod.items():
        pod_labels = pods[pod]["metadata"]["labels"]
        assert labels["namespace"] == namespace
        assert labels["llmdeployment"] == NAME
        assert labels["revision"] == pod_labels["llmcanary.io/revision"]
        assert labels["track"] == pod_labels["llmcanary.io/track"]
    assert sorted(t or "" for t in tracks(result).values()) == ["canary", "stable", "stable"]

    # The revision's behaviour reaches Prometheus through the synced exporters.
    provider = PrometheusProvider(prometheus.url)
    in_ns = QueryContext(namespace, NAME, MODEL, {"stable": "r1", "canary": "r2"})
    stable_queries = arm_queries(AnalysisSpec.model_validate({"interval": "10s"}), in_ns, "stable")
    wait_for(
        "the stable arm's P95",
        lambda: provider.sample(stable_queries).latency_ms == pytest.approx(80),
        timeout=15,
        every=0.25,
    )

    # Promotion relabels the canary pod in place; the target's label follows.
    canary_pod = next(p for p, t in tracks(result).items() if t == "canary")
    kubectl.run(
        "label", "pod", canary_pod, "-n", namespace, "llmcanary.io/track=stable", "--overwrite"
    )
    prometheus.wait_for(
        "the relabelled pod's series with track=stable",
        f'up{{namespace="{namespace}",pod="{canary_pod}",track="stable"}} == 1',
        lambda r: len(r) == 1,
    )
    # A pod without a track label is scraped without one.
    kubectl.run("label", "pod", canary_pod, "-n", namespace, "llmcanary.io/track-")
    prometheus.wait_for(
        "the pod's series without a track",
        f'up{{namespace="{namespace}",pod="{canary_pod}",track=""}} == 1',
        lambda r: len(r) == 1,
    )

    # Scaling the stable Deployment to 0 stops its exporters and drops its targets.
    kubectl.run("scale", "deployment", f"{NAME}-r1", "-n", namespace, "--replicas=0")
    wait_for("the stable exporters stopped", lambda: len(fleet.targets) == 1, timeout=60)
    assert [t.pod for t in fleet.targets] == [canary_pod]
    assert sync.last_error is None
