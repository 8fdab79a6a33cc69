"""`llmcanary run`: standalone by default, kopf peering with --peering (the chart's
replicas), a random priority unless one is given."""

from __future__ import annotations

import logging
from typing import Any

import kopf
import pytest
from click.testing import CliRunner

from llmcanary.cli.run import run
from llmcanary.observability.logs import DropChildEventSuccess


@pytest.fixture
def kopf_run(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(kopf, "run", lambda **kwargs: calls.append(kwargs))
    monkeypatch.setattr(kopf, "configure", lambda **_: None)
    monkeypatch.delenv("LLMCANARY_PEERING", raising=False)
    monkeypatch.delenv("LLMCANARY_PEERING_PRIORITY", raising=False)
    monkeypatch.delenv("LLMCANARY_METRICS_PORT", raising=False)
    return calls


def invoke(*args: str) -> None:
    result = CliRunner().invoke(run, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output


def test_without_peering_it_runs_standalone(kopf_run: list[dict[str, Any]]) -> None:
    invoke("-n", "ml")
    assert kopf_run[0].pop("memo").own_metrics is None  # no --metrics-port: no /metrics
    assert kopf_run == [
        {
            "clusterwide": False,
            "namespaces": ("ml",),
            "standalone": True,
            "peering_name": None,
            "priority": None,
            "liveness_endpoint": None,
        }
    ]


def test_peering_draws_a_random_priority_per_process(kopf_run: list[dict[str, Any]]) -> None:
    for _ in range(5):
        invoke("-A", "--peering", "llmcanary")
    assert all(call["standalone"] is False for call in kopf_run)
    assert all(call["peering_name"] == "llmcanary" for call in kopf_run)
    assert all(call["clusterwide"] is True for call in kopf_run)
    priorities = [call["priority"] for call in kopf_run]
    assert all(1 <= p < 2**31 for p in priorities)
    assert len(set(priorities)) > 1


def test_a_given_priority_is_kept(
    kopf_run: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    invoke("-A", "--peering", "x", "--priority", "7")
    monkeypatch.setenv("LLMCANARY_PEERING", "from-env")
    monkeypatch.setenv("LLMCANARY_PEERING_PRIORITY", "9")
    invoke("-A")
    assert [(c["peering_name"], c["priority"]) for c in kopf_run] == [("x", 7), ("from-env", 9)]


def test_a_negative_priority_is_refused() -> None:
    result = CliRunner().invoke(run, ["-A", "--peering", "x", "--priority", "-1"])
    assert result.exit_code == 2
    assert "--priority" in result.output


def test_child_event_successes_are_dropped_and_everything_else_kept() -> None:
    def record(message: str, level: int = logging.INFO) -> logging.LogRecord:
        return logging.LogRecord("kopf.objects", level, __file__, 1, message, None, None)

    drop = DropChildEventSuccess()
    assert not drop.filter(record("Handler 'child-pods' succeeded."))
    assert not drop.filter(record("Handler 'child-httproutes' succeeded."))
    assert drop.filter(record("Handler 'llmdeployment_event' succeeded."))
    assert drop.filter(record("Handler 'child-pods' failed with an exception.", logging.ERROR))
    assert drop.filter(record("Daemon 'responsible_for' succeeded."))
