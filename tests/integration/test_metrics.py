"""The operator's /metrics against a real rollout: the real operator process started with
``--metrics-port``, the real API server, a real Prometheus scraping the test's Triton
exporters (the canary fixtures of test_canary.py). Every figure scraped is compared with
the LLMDeployment's status at that moment; a restarted operator counts nothing again.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from kubectl import Kubectl, OperatorProcess, wait_for
from metrics import ExporterFleet, PrometheusServer, free_port
from prometheus_client.parser import text_string_to_metric_families
from test_canary import (  # noqa: F401  (exporters, stable_v1: fixtures used by name)
    HEALTHY,
    NAME,
    STEP_TIMEOUT,
    exporters,
    manifest,
    revision,
    route_weight,
    stable_v1,
    status,
)
from test_canary import llmcanary as llmcanary_cli

from llmcanary import __version__

pytestmark = pytest.mark.k8s

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def operator(
    kubectl: Kubectl, crd: None, namespace: str, tmp_path: Path, operator_env: dict[str, str]
) -> Iterator[OperatorProcess]:
    proc = OperatorProcess(
        kubectl.kubeconfig,
        namespace,
        tmp_path / "operator.log",
        extra_env=operator_env,
        metrics_port=free_port(),
    ).start()
    yield proc
    proc.stop()
    print("--- operator log (tail) ---\n" + "\n".join(proc.log_lines()[-40:]))


def scrape_text(operator: OperatorProcess) -> str:
    url = f"http://127.0.0.1:{operator.metrics_port}/metrics"
    answer = requests.get(url, timeout=5)
    answer.raise_for_status()
    return answer.text


def scrape(operator: OperatorProcess) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(scrape_text(operator))
        for sample in family.samples
    }


def get(samples: Samples, metric: str, /, **labels: str) -> float | None:
    return samples.get((metric, frozenset(labels.items())))


def of(namespace: str, **labels: str) -> dict[str, str]:
    return {"namespace": namespace, "name": NAME, **labels}


def current_phase(samples: Samples, namespace: str) -> str | None:
    """The phase whose gauge is 1; fails unless exactly one is."""
    ones = [
        dict(labels)["phase"]
        for (name, labels), value in samples.items()
        if name == "llmcanary_rollout_phase"
        and dict(labels).get("namespace") == namespace
        and value == 1
    ]
    assert len(ones) <= 1, f"more than one phase at 1: {ones}"
    return ones[0] if ones else None


def agrees(operator: OperatorProcess, kubectl: Kubectl, namespace: str) -> tuple[Samples, Any]:
    """A scrape and a status read that agree on phase and weight (the gauges move right
    after the status write, so a scrape may briefly trail the status it is read with)."""

    def probe() -> tuple[Samples, Any] | None:
        st = status(kubectl, namespace)
        try:
            samples = scrape(operator)
        except requests.ConnectionError:
            return None  # the operator is (re)starting
        same = current_phase(samples, namespace) == st.get("phase") and get(
            samples, "llmcanary_canary_weight", **of(namespace)
        ) == (st.get("canaryWeight") or 0)
        return (samples, st) if same else None

    return wait_for("/metrics to agree with the status", probe, timeout=20, every=0.2)


def verdicts(samples: Samples, namespace: str) -> dict[str, float | None]:
    return {
        v: get(samples, "llmcanary_analysis_verdicts_total", **of(namespace, verdict=v))
        for v in ("pass", "fail", "inconclusive")
    }


def test_metrics_follow_a_rollout_through_rollback_restart_retry_and_promotion(
    kubectl: Kubectl,
    namespace: str,
    operator: OperatorProcess,
    stable_v1: dict[str, Any],  # noqa: F811
    prometheus: PrometheusServer,
    exporters: ExporterFleet,  # noqa: F811
) -> None:
    samples, st = agrees(operator, kubectl, namespace)
    assert st["phase"] == "Stable"
    assert get(samples, "llmcanary_rollbacks_total", **of(namespace)) == 0
    assert get(samples, "llmcanary_promotions_total", **of(namespace)) == 0
    assert get(samples, "llmcanary_build_info", version=__version__) == 1

    # A canary that passes its first check and takes its second weight.
    doc = manifest("2", prometheus=prometheus.url)
    new = revision(doc)
    kubectl.apply(doc, namespace)
    wait_for("weight 15", lambda: route_weight(kubectl, namespace) == 15, timeout=60 + STEP_TIMEOUT)
    samples, st = agrees(operator, kubectl, namespace)
    assert st["phase"] == "Progressing" and st["canaryWeight"] in (15, 25)
    assert (verdicts(samples, namespace)["pass"] or 0) >= 1
    assert verdicts(samples, namespace)["fail"] == 0

    # It turns slower: one failed check (failureLimit 1) rolls it back.
    exporters.set_behaviour(new, **{**HEALTHY, "p95_ms": HEALTHY["p95_ms"] * 1.5})
    wait_for("RolledBack", lambda: status(kubectl, namespace)["phase"] == "RolledBack", timeout=60)
    samples, st = agrees(operator, kubectl, namespace)
    assert st["phase"] == "RolledBack" and st["canaryWeight"] == 0
    assert get(samples, "llmcanary_rollbacks_total", **of(namespace)) == 1
    assert verdicts(samples, namespace)["fail"] == st["failedChecks"] == 1
    assert get(samples, "llmcanary_promotions_total", **of(namespace)) == 0
    scrape_rolled_back = scrape_text(operator)

    # A restarted operator reads the same status back and counts none of it again.
    operator.stop()
    operator.start()
    samples, st = agrees(operator, kubectl, namespace)
    assert st["phase"] == "RolledBack" and len(st["history"]) == 1
    assert get(samples, "llmcanary_rollbacks_total", **of(namespace)) == 0
    assert verdicts(samples, namespace) == {"pass": 0, "fail": 0, "inconclusive": 0}

    # Healthy again: a retry, then a promotion on request.
    exporters.set_behaviour(new, **HEALTHY)
    llmcanary_cli(kubectl, "retry", NAME, "-n", namespace)
    wait_for("the retried canary at 5%", lambda: route_weight(kubectl, namespace) == 5, timeout=60)
    llmcanary_cli(kubectl, "promote", NAME, "-n", namespace)
    wait_for(
        "promoted", lambda: status(kubectl, namespace).get("stableRevision") == new, timeout=60
    )
    samples, st = agrees(operator, kubectl, namespace)
    assert st["phase"] == "Stable"
    assert [h["outcome"] for h in st["history"][:2]] == ["Promoted", "RolledBack"]
    assert get(samples, "llmcanary_promotions_total", **of(namespace)) == 1
    assert get(samples, "llmcanary_rollbacks_total", **of(namespace)) == 0  # not re-counted
    assert verdicts(samples, namespace)["fail"] == 0
    ok = get(samples, "llmcanary_reconcile_duration_seconds_count", result="ok")
    assert ok is not None and ok > 0

    print("--- /metrics after the rollback (llmcanary_* lines) ---")
    print("\n".join(line for line in scrape_rolled_back.splitlines() if "llmcanary_" in line))

    # Deleted: its series leave /metrics.
    kubectl.run("delete", "llmd", NAME, "-n", namespace, "--wait=true", "--timeout=60s")

    def gone() -> bool:
        return not any(dict(labels).get("namespace") == namespace for _, labels in scrape(operator))

    wait_for("its series to leave /metrics", gone, timeout=20)
    # The start-up line about /metrics is structured like every other log line.
    records = [json.loads(line) for line in operator.log_lines() if line.strip()]
    assert any(r.get("port") == operator.metrics_port for r in records)


def test_prometheus_going_away_shows_as_query_errors_and_a_paused_phase(
    kubectl: Kubectl,
    namespace: str,
    operator: OperatorProcess,
    stable_v1: dict[str, Any],  # noqa: F811
    prometheus: PrometheusServer,
) -> None:
    kubectl.apply(manifest("2", prometheus=prometheus.url), namespace)
    wait_for("weight 15", lambda: route_weight(kubectl, namespace) == 15, timeout=60 + STEP_TIMEOUT)
    before = scrape(operator)
    assert get(before, "llmcanary_prometheus_query_errors_total", reason="connection") == 0
    prometheus.kill()
    wait_for("Paused", lambda: status(kubectl, namespace).get("phase") == "Paused", timeout=60)
    samples, st = agrees(operator, kubectl, namespace)
    assert "metrics unavailable" in st["pauseReason"]
    # Since the scrape at 15% (earlier inconclusive checks were reset by a pass or by a
    # check waiting for requests): one failed query per check (its first query fails,
    # the others are not sent), each check inconclusive, and the status counts them the
    # same. A check that only waited for requests before the kill is inconclusive too.
    errors = get(samples, "llmcanary_prometheus_query_errors_total", reason="connection")
    assert errors is not None and errors >= 1
    inconclusive = verdicts(samples, namespace)["inconclusive"] or 0
    assert inconclusive - (verdicts(before, namespace)["inconclusive"] or 0) >= errors
    assert errors == st["inconclusiveChecks"]
