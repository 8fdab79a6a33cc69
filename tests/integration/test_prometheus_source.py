"""PrometheusReader against a real Prometheus scraping real exporter processes.

The exporters (triton_metrics_exporter.py) expose Triton's and the vLLM backend's metric
names; the queries are the presets' own (llmcanary.sources.promql), so these tests also
pin the presets' PromQL to the servers' exposition. The last test drives the exporters
from the pods of the local cluster (TargetSync).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from conftest_metrics import FleetFactory
from kubectl import Kubectl, wait_for
from metrics import ExporterFleet, PrometheusServer, Target

from llmcanary.analysis.types import Arm, ArmReading
from llmcanary.api.spec import AnalysisSpec
from llmcanary.sources.base import MetricsUnavailable, Scope
from llmcanary.sources.prometheus import PrometheusReader

NS, NAME, MODEL = "ns1", "chat", "llm"
WINDOW = 10  # seconds: the analysis interval, so the queries read increase(...[10s])
REVISIONS: dict[Arm, str] = {"stable": "r1", "canary": "r2"}


def scope(arm: Arm, namespace: str = NS) -> Scope:
    return Scope(namespace, NAME, MODEL, arm, REVISIONS[arm], timedelta(seconds=WINDOW))


def analysis(**fields: Any) -> AnalysisSpec:
    return AnalysisSpec.model_validate({"interval": f"{WINDOW}s", **fields})


def read(source: PrometheusReader, arm: Arm, **fields: Any) -> ArmReading:
    return source.read(scope(arm), analysis(**fields))


def summary_p95(source: PrometheusReader, arm: Arm) -> float | None:
    """The arm's end-to-end P95 from Triton's summary (exact: no buckets in the way)."""
    triton = {"metrics": "triton", "criteria": [{"metric": "e2eLatency", "maxIncreasePercent": 20}]}
    return read(source, arm, **triton).latency["e2eLatency"].quantile(0.95)


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
    """Stable r1 on two pods (40 rps each, P95 100 ms, TTFT 30 ms, TPOT 5 ms); canary r2
    on one (20 rps, P95 250 ms, TTFT 90 ms, TPOT 8 ms, 10% errors)."""
    fleet.set_behaviour("r1", rps=40, p95_ms=100, ttft_p95_ms=30, tpot_p95_ms=5)
    fleet.set_behaviour("r2", rps=20, p95_ms=250, error_rate=0.1, ttft_p95_ms=90, tpot_p95_ms=8)
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


def test_each_arm_reads_its_pods_histograms_requests_and_errors(
    settled: PrometheusServer,
) -> None:
    source = PrometheusReader(settled.url, timeout_seconds=5)
    started = time.monotonic()
    stable = read(source, "stable")
    took = time.monotonic() - started
    canary = read(source, "canary")

    # tritonVLLM: one histogram per pod and signal, added up into the arm's quantile.
    assert set(stable.latency["ttft"].pods) == {"chat-r1-a", "chat-r1-b"}
    assert set(canary.latency["ttft"].pods) == {"chat-r2-a"}
    for reading, expected in ((stable, (100, 30, 5)), (canary, (250, 90, 8))):
        got = tuple(reading.latency[s].quantile(0.95) for s in ("e2eLatency", "ttft", "tpot"))
        assert got == pytest.approx(expected, rel=0.08), got
    # Counters: rps x window, within the counters' integer steps and scrape jitter.
    assert stable.requests == pytest.approx(2 * 40 * WINDOW, rel=0.15)
    assert stable.errors == pytest.approx(0, abs=0.5)
    assert canary.requests == pytest.approx(20 * 0.9 * WINDOW, rel=0.15)
    assert canary.errors == pytest.approx(20 * 0.1 * WINDOW, rel=0.35)
    assert canary.error_rate == pytest.approx(0.1, abs=0.04)
    # The histograms count the successful requests the counters count.
    e2e = stable.latency["e2eLatency"].samples
    assert e2e == pytest.approx(stable.requests, rel=0.15)
    assert took < 1.0, f"five instant queries took {took:.2f}s"


def test_a_histogram_is_also_read_block_by_block_through_the_window(
    settled: PrometheusServer,
) -> None:
    # A 2 s interval cuts the 10 s window into five 2 s blocks: one range query per
    # signal, stepping from the window's start.
    source = PrometheusReader(settled.url)
    # A window that ended a few scrapes ago (on a loaded machine the newest scrape can be
    # seconds late, and a block with no scrape in it is empty), and began after the
    # fixture's whole window of scrapes did: wait out the difference first.
    time.sleep(3)
    end = datetime.now(UTC) - timedelta(seconds=3)
    window = Scope(NS, NAME, MODEL, "stable", "r1", timedelta(seconds=WINDOW), end=end)
    stable = source.read(window, analysis(interval="2s"))
    ttft = stable.latency["ttft"]
    assert ttft.blocks is not None
    assert len(ttft.blocks) == WINDOW // 2
    counts = [block.count for block in ttft.blocks]
    # Two pods at 40 rps each over 2 s; a 2 s increase() extrapolates from two or three
    # 1 s scrapes, so each block is only roughly that, their sum closer to the window's.
    # On a loaded machine a scrape can come seconds late and leave one block with fewer
    # than two samples, which reads empty (measured in CI: [0, 160, 160, 160, 160]): one
    # such block is the machine, more would be the cutting.
    read_blocks = [block for block in ttft.blocks if block.count]
    assert len(read_blocks) >= len(ttft.blocks) - 1, counts
    assert all(b.count == pytest.approx(2 * 40 * 2, rel=0.5) for b in read_blocks), counts
    for block in read_blocks:
        assert block.quantile(0.95) == pytest.approx(30, rel=0.2)
    total = (
        source.read(
            Scope(NS, NAME, MODEL, "stable", "r1", timedelta(seconds=WINDOW), end=end), analysis()
        )
        .latency["ttft"]
        .histogram
    )
    assert total is not None
    # The blocks read add up to the window's count, less the share of an empty block.
    share = len(read_blocks) / len(ttft.blocks)
    assert sum(counts) == pytest.approx(total.count * share, rel=0.25)
    # The analysis interval itself as the window: too short to cut, and no range query.
    assert read(source, "stable").latency["ttft"].blocks == ()


def test_a_quantile_template_is_also_read_block_by_block_with_the_block_as_its_window(
    settled: PrometheusServer,
) -> None:
    # A user's PromQL answering one number: read at the end of each 2 s block of the 10 s
    # window, {window} then being the block's 2 s (one range query per quantile).
    source = PrometheusReader(settled.url)
    time.sleep(3)  # as the histogram blocks test: a window whose scrapes are all in
    end = datetime.now(UTC) - timedelta(seconds=3)
    template = (
        "histogram_quantile({quantile}, sum by (le) (rate(vllm:time_to_first_token_seconds_bucket"
        '{{namespace="{namespace}",llmdeployment="{name}",track="{arm}"}}[{window}]))) * 1000'
    )
    window = Scope(NS, NAME, MODEL, "stable", "r1", timedelta(seconds=WINDOW), end=end)
    ttft_only = [{"metric": "ttft", "maxIncreasePercent": 20}]
    stable = source.read(
        window, analysis(interval="2s", queries={"ttft": template}, criteria=ttft_only)
    )
    blocks = (stable.latency["ttft"].quantile_blocks or {})[0.95]
    assert len(blocks) == WINDOW // 2
    # A block whose 2 s held fewer than two scrapes on a loaded machine reads nothing.
    values = [v for v in blocks if v is not None]
    assert len(values) >= len(blocks) - 1, blocks
    assert all(v == pytest.approx(30, rel=0.25) for v in values), blocks
    # Triton's summary covers its own last minute whatever {window} says: its blocks are
    # never shorter, so a 10 s window has none (and sends no range query).
    summary = source.read(
        window,
        analysis(
            interval="2s",
            metrics="triton",
            criteria=[{"metric": "e2eLatency", "maxIncreasePercent": 20}],
        ),
    )
    assert summary.latency["e2eLatency"].quantile_blocks == {0.95: ()}


def test_the_triton_preset_reads_the_pods_summary_and_first_response_buckets(
    settled: PrometheusServer,
) -> None:
    source = PrometheusReader(settled.url)
    criteria = [
        {"metric": "e2eLatency", "quantile": 0.99, "maxIncreasePercent": 20},
        {"metric": "ttft", "maxIncreasePercent": 20},
    ]
    canary = read(source, "canary", metrics="triton", criteria=criteria)
    e2e = canary.latency["e2eLatency"]
    assert e2e.pods == {} and e2e.quantile(0.99) == pytest.approx(250 * 1.3)
    # Two stable pods alike: their geometric mean is either's.
    stable = read(source, "stable", metrics="triton", criteria=criteria)
    assert stable.latency["e2eLatency"].quantile(0.99) == pytest.approx(100 * 1.3)
    # The exporter's first-response histogram follows the end-to-end P95.
    assert canary.latency["ttft"].quantile(0.95) == pytest.approx(250, rel=0.08)


def test_changed_behaviour_shows_in_the_next_scrapes(
    prometheus: PrometheusServer, two_arms: ExporterFleet
) -> None:
    source = PrometheusReader(prometheus.url)
    two_arms.set_behaviour("r2", rps=20, p95_ms=900, error_rate=0.1)
    wait_for(
        "the canary's new P95",
        lambda: summary_p95(source, "canary") == pytest.approx(900),
        timeout=10,
        every=0.25,
    )
    assert summary_p95(source, "stable") == pytest.approx(100)


def test_missing_series_are_none(
    prometheus: PrometheusServer, exporter_fleet: FleetFactory
) -> None:
    source = PrometheusReader(prometheus.url)
    # No target at all: every query answers an empty vector.
    empty = read(source, "canary")
    assert (empty.requests, empty.errors, empty.samples) == (None, None, None)
    assert {s: r.quantile(0.95) for s, r in empty.latency.items()} == dict.fromkeys(
        ("e2eLatency", "ttft", "tpot")
    )

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
    stable, canary = read(source, "stable"), read(source, "canary")
    assert stable.requests == 0  # the series is there, the counter did not move
    assert stable.latency["ttft"].quantile(0.95) is None  # buckets there, none moved
    assert summary_p95(source, "stable") is None  # no summary series
    nan = prometheus.query(
        f'nv_inference_request_summary_us{{namespace="{NS}",track="canary",quantile="0.95"}}'
    )
    assert [s["value"][1] for s in nan] == ["NaN"]  # the series is there, its value NaN
    assert summary_p95(source, "canary") is None
    assert canary.requests == 0


def test_a_quantile_template_answering_two_series_is_unavailable(
    settled: PrometheusServer,
) -> None:
    source = PrometheusReader(settled.url)
    per_pod = (
        'nv_inference_request_summary_us{{quantile="{quantile}",namespace="{namespace}",'
        'llmdeployment="{name}",track="{arm}"}} / 1000'
    )
    with pytest.raises(MetricsUnavailable) as raised:
        read(source, "stable", queries={"e2eLatency": per_pod})
    message = str(raised.value)
    assert "2 series" in message
    assert "max" in message and "sum" in message
    assert "stable e2eLatency" in message
    assert settled.url in message


def test_bad_promql_is_unavailable_with_prometheus_reason(prometheus: PrometheusServer) -> None:
    source = PrometheusReader(prometheus.url)
    with pytest.raises(MetricsUnavailable) as raised:
        read(source, "canary", queries={"ttft": "max("})
    message = str(raised.value)
    assert "HTTP 400" in message and "parse error" in message
    assert "canary ttft" in message and prometheus.url in message
    assert "\n" not in message and "Traceback" not in message


def test_killed_prometheus_is_unavailable_at_once_and_back_after_restart(
    prometheus: PrometheusServer, two_arms: ExporterFleet
) -> None:
    source = PrometheusReader(prometheus.url, timeout_seconds=2)
    assert summary_p95(source, "canary") == pytest.approx(250)

    prometheus.kill()
    started = time.monotonic()
    with pytest.raises(MetricsUnavailable) as raised:
        read(source, "canary")
    took = time.monotonic() - started
    assert took < 2, f"a refused connection took {took:.2f}s to report"
    message = str(raised.value)
    assert "cannot connect" in message and prometheus.url in message and "canary" in message
    assert "\n" not in message

    prometheus.start().wait_ready()  # same address, same data directory
    wait_for(
        "the canary's P95 after the restart",
        lambda: _p95_or_none(source, "canary") == pytest.approx(250),
        timeout=15,
        every=0.25,
    )


def _p95_or_none(source: PrometheusReader, arm: Arm) -> float | None:
    try:
        return summary_p95(source, arm)
    except MetricsUnavailable:
        return None


def test_hung_prometheus_is_unavailable_within_the_timeout(
    prometheus: PrometheusServer,
) -> None:
    assert prometheus.proc is not None
    source = PrometheusReader(prometheus.url, timeout_seconds=1)
    os.kill(prometheus.proc.pid, signal.SIGSTOP)  # accepts connections, never answers
    try:
        started = time.monotonic()
        with pytest.raises(MetricsUnavailable) as raised:
            read(source, "stable")
        took = time.monotonic() - started
    finally:
        os.kill(prometheus.proc.pid, signal.SIGCONT)
    # The first query times out and the reading stops there.
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
    serving = f"llmcanary.io/deployment={NAME},llmcanary.io/revision"  # the serving pods
    pods = {p["metadata"]["name"]: p for p in kubectl.list("pods", namespace, serving)}
    assert set(by_pod) == set(pods)
    for pod, labels in by_pod.items():
        pod_labels = pods[pod]["metadata"]["labels"]
        assert labels["namespace"] == namespace
        assert labels["llmdeployment"] == NAME
        assert labels["revision"] == pod_labels["llmcanary.io/revision"]
        assert labels["track"] == pod_labels["llmcanary.io/track"]
    assert sorted(t or "" for t in tracks(result).values()) == ["canary", "stable", "stable"]

    # The revision's behaviour reaches Prometheus through the synced exporters.
    source = PrometheusReader(prometheus.url)
    wait_for(
        "the stable arm's P95",
        lambda: (
            source.read(scope("stable", namespace), analysis()).latency["e2eLatency"].quantile(0.95)
            == pytest.approx(80, rel=0.08)
        ),
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
