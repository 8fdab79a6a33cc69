"""The operator's /metrics: what moves them, and when (each event counted once)."""

from __future__ import annotations

import socket
import urllib.request
from datetime import timedelta

import pytest

from llmcanary import __version__
from llmcanary.api.spec import AnalysisSpec
from llmcanary.api.status import (
    AnalysisRecord,
    DependencyResult,
    EnvDifference,
    GpuFit,
    HistoryEntry,
    LLMDeploymentStatus,
    PreflightStatus,
)
from llmcanary.observability.metrics import (
    PHASES,
    OperatorMetrics,
    failed_preflight_checks,
    transitions,
)
from llmcanary.sources.base import MetricsUnavailable, Scope
from llmcanary.sources.prometheus import PrometheusReader

NS, NAME = "team", "tiny-llm"


@pytest.fixture
def metrics() -> OperatorMetrics:
    return OperatorMetrics(process=False)


def value(metrics: OperatorMetrics, sample: str, /, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(sample, labels)


def phases(metrics: OperatorMetrics) -> dict[str, float | None]:
    return {
        p: value(metrics, "llmcanary_rollout_phase", namespace=NS, name=NAME, phase=p)
        for p in PHASES
    }


def check(verdict: str, time: str) -> AnalysisRecord:
    return AnalysisRecord(time=time, verdict=verdict, reason="r")  # type: ignore[arg-type]


def entry(outcome: str, finished: str) -> HistoryEntry:
    return HistoryEntry(revision="b", outcome=outcome, finished_at=finished)  # type: ignore[arg-type]


PROGRESSING = LLMDeploymentStatus(phase="Progressing", canary_revision="b", canary_weight=15)


def test_the_phase_gauge_is_one_hot_and_follows_the_status(metrics: OperatorMetrics) -> None:
    metrics.observe(NS, NAME, LLMDeploymentStatus(), PROGRESSING, written=True)
    seen = phases(metrics)
    assert seen["Progressing"] == 1
    assert sum(v or 0 for v in seen.values()) == 1
    assert set(seen.values()) == {0, 1}  # every phase has a series
    assert value(metrics, "llmcanary_canary_weight", namespace=NS, name=NAME) == 15

    rolled = PROGRESSING.model_copy(update={"phase": "RolledBack", "canary_weight": 0})
    metrics.observe(NS, NAME, PROGRESSING, rolled, written=True)
    seen = phases(metrics)
    assert seen["RolledBack"] == 1 and seen["Progressing"] == 0
    assert sum(v or 0 for v in seen.values()) == 1
    assert value(metrics, "llmcanary_canary_weight", namespace=NS, name=NAME) == 0


def test_a_rollback_is_counted_once_however_often_its_status_is_seen(
    metrics: OperatorMetrics,
) -> None:
    rolled = PROGRESSING.model_copy(
        update={
            "phase": "RolledBack",
            "canary_weight": 0,
            "failed_checks": 1,
            "last_analysis": check("fail", "2026-11-24T12:00:20.000Z"),
            "history": [entry("RolledBack", "2026-11-24T12:00:20.000Z")],
        }
    )
    metrics.observe(NS, NAME, PROGRESSING, rolled, written=True)
    # Later reconciles read the status back: nothing new, whether or not they write.
    metrics.observe(NS, NAME, rolled, rolled, written=False)
    changed = rolled.model_copy(update={"message": "rolled back: still"})
    metrics.observe(NS, NAME, rolled, changed, written=True)
    assert value(metrics, "llmcanary_rollbacks_total", namespace=NS, name=NAME) == 1
    assert value(metrics, "llmcanary_promotions_total", namespace=NS, name=NAME) == 0
    verdicts = {
        v: value(metrics, "llmcanary_analysis_verdicts_total", namespace=NS, name=NAME, verdict=v)
        for v in ("pass", "fail", "inconclusive")
    }
    assert verdicts == {"pass": 0, "fail": 1, "inconclusive": 0}


def test_a_restarted_operator_counts_nothing_for_a_status_already_there(
    metrics: OperatorMetrics,
) -> None:
    # A fresh process: its first reconcile reads a status with a promotion and a check.
    old = LLMDeploymentStatus(
        phase="Stable",
        last_analysis=check("pass", "2026-11-24T12:00:20.000Z"),
        history=[entry("Promoted", "2026-11-24T12:01:00.000Z")],
    )
    new = old.model_copy(update={"ready_replicas": 4})
    metrics.observe(NS, NAME, old, new, written=True)
    assert value(metrics, "llmcanary_promotions_total", namespace=NS, name=NAME) == 0
    assert (
        value(metrics, "llmcanary_analysis_verdicts_total", namespace=NS, name=NAME, verdict="pass")
        == 0
    )
    assert phases(metrics)["Stable"] == 1


def test_each_new_check_counts_once_and_an_unwritten_status_counts_nothing(
    metrics: OperatorMetrics,
) -> None:
    first = PROGRESSING.model_copy(update={"last_analysis": check("inconclusive", "t1")})
    second = first.model_copy(update={"last_analysis": check("pass", "t2")})
    third = second.model_copy(update={"last_analysis": check("pass", "t3")})
    metrics.observe(NS, NAME, PROGRESSING, first, written=True)
    metrics.observe(NS, NAME, first, second, written=True)
    metrics.observe(NS, NAME, second, third, written=False)  # the write did not happen
    assert transitions(second, third).verdict == "pass"
    got = {
        v: value(metrics, "llmcanary_analysis_verdicts_total", namespace=NS, name=NAME, verdict=v)
        for v in ("pass", "fail", "inconclusive")
    }
    assert got == {"pass": 1, "fail": 0, "inconclusive": 1}


def test_promotions_and_aborts_come_from_new_history_entries() -> None:
    old = LLMDeploymentStatus(history=[entry("Aborted", "t0")])
    new = LLMDeploymentStatus(history=[entry("Promoted", "t2"), entry("Aborted", "t0")])
    moved = transitions(old, new)
    assert (moved.promotions, moved.rollbacks) == (1, 0)
    aborted = LLMDeploymentStatus(history=[entry("Aborted", "t3"), *new.history])
    assert transitions(new, aborted).rollbacks == 1
    superseded = LLMDeploymentStatus(history=[entry("Superseded", "t4"), *aborted.history])
    assert transitions(aborted, superseded) == transitions(aborted, aborted)


def test_a_failed_preflight_counts_each_failing_check(metrics: OperatorMetrics) -> None:
    preflight = PreflightStatus(
        revision="b",
        passed=False,
        checked_at="t1",
        reason="...",
        env_diff=[EnvDifference(key="env/X", stable="1", canary="2", allowed=False)],
        gpu_memory=GpuFit(fits=False, message="needs 80 GiB"),
        dependencies=[
            DependencyResult(name="rag", ok=False, message="HTTP 503"),
            DependencyResult(name="canary/pod-0/model", ok=True),
        ],
    )
    old = LLMDeploymentStatus(phase="Preflight", canary_revision="b")
    new = old.model_copy(
        update={"phase": "Failed", "preflight": preflight, "history": [entry("Failed", "t1")]}
    )
    metrics.observe(NS, NAME, old, new, written=True)
    metrics.observe(NS, NAME, new, new, written=True)
    got = {
        c: value(metrics, "llmcanary_preflight_failures_total", namespace=NS, name=NAME, check=c)
        for c in ("envdiff", "gpu", "dependencies", "canary", "error")
    }
    assert got == {"envdiff": 1, "gpu": 1, "dependencies": 1, "canary": 0, "error": 0}
    # A preflight that could not run at all (e.g. a Secret it may not read).
    assert failed_preflight_checks(PreflightStatus(passed=False, reason="forbidden")) == ("error",)
    assert failed_preflight_checks(preflight.model_copy(update={"passed": True})) == ()


def test_failed_canary_readiness_runs_count_as_canary_preflight_failures(
    metrics: OperatorMetrics,
) -> None:
    waiting = [DependencyResult(name="canary/pod-0/model", ok=False, message="HTTP 503")]
    metrics.canary_checks(NS, NAME, waiting)
    metrics.canary_checks(NS, NAME, waiting)
    metrics.canary_checks(NS, NAME, [DependencyResult(name="canary/pod-0/model", ok=True)])
    labels = {"namespace": NS, "name": NAME, "check": "canary"}
    assert value(metrics, "llmcanary_preflight_failures_total", **labels) == 2


def test_deleting_the_llmdeployment_removes_its_series(metrics: OperatorMetrics) -> None:
    metrics.observe(NS, NAME, LLMDeploymentStatus(), PROGRESSING, written=True)
    metrics.observe("other", NAME, LLMDeploymentStatus(), PROGRESSING, written=True)
    metrics.forget(NS, NAME)
    metrics.forget(NS, NAME)  # the DELETED event after the deletionTimestamp: harmless
    mine = [
        s
        for m in metrics.registry.collect()
        for s in m.samples
        if s.labels.get("namespace") == NS and s.labels.get("name") == NAME
    ]
    assert mine == []
    assert value(metrics, "llmcanary_canary_weight", namespace="other", name=NAME) == 15


def test_reconcile_durations_and_query_errors_have_their_labels(metrics: OperatorMetrics) -> None:
    metrics.reconciled(0.02, "ok")
    metrics.reconciled(0.3, "error")
    metrics.query_error("timeout")
    assert value(metrics, "llmcanary_reconcile_duration_seconds_count", result="ok") == 1
    assert value(metrics, "llmcanary_reconcile_duration_seconds_count", result="error") == 1
    assert value(metrics, "llmcanary_prometheus_query_errors_total", reason="timeout") == 1
    # Every reason exists from the start, at 0, so that increase() sees the first one.
    assert value(metrics, "llmcanary_prometheus_query_errors_total", reason="http") == 0
    assert value(metrics, "llmcanary_build_info", version=__version__) == 1


def test_two_instances_do_not_share_series() -> None:
    a, b = OperatorMetrics(process=False), OperatorMetrics(process=False)
    a.query_error("http")
    assert value(b, "llmcanary_prometheus_query_errors_total", reason="http") == 0


def test_metrics_are_served_over_http_with_process_metrics() -> None:
    metrics = OperatorMetrics()
    metrics.observe(NS, NAME, LLMDeploymentStatus(), PROGRESSING, written=True)
    server = metrics.serve(0, addr="127.0.0.1")
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as answer:
            text = answer.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    series = f'llmcanary_rollout_phase{{name="{NAME}",namespace="{NS}",phase="Progressing"}}'
    assert f"{series} 1.0" in text
    assert "process_cpu_seconds_total" in text or "python_info" in text


def test_the_provider_says_why_a_query_failed() -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    source = PrometheusReader(f"http://127.0.0.1:{port}", timeout_seconds=1)
    scope = Scope("ns", "name", "model", "canary", "abc", timedelta(seconds=30))
    with pytest.raises(MetricsUnavailable) as caught:
        source.read(scope, AnalysisSpec())
    assert caught.value.reason == "connection"
    assert MetricsUnavailable("anything").reason == "error"


def test_a_taken_metrics_port_stops_llmcanary_run_with_what_to_do(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from click.testing import CliRunner

    from llmcanary.cli.run import run

    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(run, ["-n", "x", "--metrics-port", str(port)])
        assert result.exit_code == 1
        assert f"cannot serve metrics on port {port}" in result.output
        assert "--metrics-port" in result.output
        monkeypatch.setenv("LLMCANARY_METRICS_PORT", str(port))  # the setting, without the flag
        result = CliRunner().invoke(run, ["-n", "x"])
        assert f"cannot serve metrics on port {port}" in result.output
    assert CliRunner().invoke(run, ["-n", "x", "--metrics-port", "70000"]).exit_code == 2
