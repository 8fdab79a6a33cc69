"""``llmcanary status``: the pure rendering of an LLMDeployment, line by line."""

from __future__ import annotations

from typing import Any

from llmcanary.api.status import ArmEstimate, CriterionRecord
from llmcanary.cli.render import newest_first, render_status


def llmd(status: dict[str, Any] | None, **extra: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "llmcanary.io/v1alpha1",
        "kind": "LLMDeployment",
        "metadata": {"name": "tiny-llm", "namespace": "ml", **extra.pop("metadata", {})},
        "spec": {
            "model": {"name": "tiny-llm", "version": "2"},
            "traffic": {"router": "gatewayAPI"},
            "canary": {"analysis": {"failureLimit": 2, "inconclusiveLimit": 4}},
            **extra.pop("spec", {}),
        },
    }
    if status is not None:
        obj["status"] = status
    return obj


def line_with(text: str, needle: str) -> str:
    found = [line for line in text.splitlines() if needle in line]
    assert found, f"no line with {needle!r} in:\n{text}"
    return found[0]


def words(line: str) -> list[str]:
    return line.split()


def criterion(
    name: str,
    verdict: str,
    canary: float | None,
    stable: float | None,
    samples: tuple[int, int],
    effect: tuple[float, float, float] | None = None,
) -> dict[str, Any]:
    """One entry of status.lastAnalysis.criteria, as the operator writes it."""
    value, lower, upper = effect if effect else (None, None, None)
    record = CriterionRecord(
        criterion=name,
        unit="%" if name == "errorRate" else "ms",
        verdict=verdict,  # type: ignore[arg-type]
        reason=f"{name}: {verdict}",
        canary=ArmEstimate(value=canary, samples=samples[0]),
        reference=ArmEstimate(value=stable, samples=samples[1]),
        effect=value,
        lower=lower,
        upper=upper,
    )
    return record.model_dump(mode="json", by_alias=True)


PROGRESSING = {
    "phase": "Progressing",
    "stableRevision": "5d8c9f",
    "canaryRevision": "77ab01",
    "canaryWeight": 15,
    "currentStep": 2,
    "stepStartedAt": "2025-03-01T10:30:00Z",
    "failedChecks": 1,
    "inconclusiveChecks": 0,
    "canaryReplicas": 1,
    "canaryReadyReplicas": 1,
    "router": "gatewayAPI",
    "lastAnalysis": {
        "time": "2025-03-01T10:41:00Z",
        "verdict": "fail",
        "reason": "canary ttft p95 2400 ms vs baseline 1500 ms: +60% (+31..+96%), limit +20%",
        "reference": "baseline",
        "since": "2025-03-01T10:30:30Z",
        "loadRatio": 1.04,
        "criteria": [
            criterion("ttft p95", "fail", 2400.0, 1500.0, (240, 231), (60.0, 31.2, 95.8)),
            criterion("errorRate", "pass", 1.25, 0.1, (240, 231), (1.15, -0.4, 2.7)),
        ],
    },
    "conditions": [
        {
            "type": "Ready",
            "status": "True",
            "reason": "StableServing",
            "message": "2/2 stable replicas ready",
            "lastTransitionTime": "2025-03-01T09:00:00Z",
        },
        {
            "type": "Progressing",
            "status": "True",
            "reason": "CanaryStep",
            "message": "step 2 at 15%",
            "lastTransitionTime": "2025-03-01T10:00:00Z",
        },
    ],
}


def test_progressing_header_names_the_rollout_at_a_glance() -> None:
    text = render_status(llmd(PROGRESSING))
    header = text.splitlines()[0]
    assert words(header) == [
        "tiny-llm",
        "(ml)",
        "Progressing",
        "stable",
        "5d8c9f",
        "canary",
        "77ab01",
        "weight",
        "15%",
        "step",
        "2",
        "router",
        "gatewayAPI",
    ]
    assert "Canary replicas: 1/1 ready" in text


def test_progressing_shows_the_last_analysis_as_a_table() -> None:
    text = render_status(llmd(PROGRESSING))
    assert "Last analysis: fail at 2025-03-01T10:41:00Z" in text
    assert "canary ttft p95 2400 ms vs baseline 1500 ms: +60% (+31..+96%), limit +20%" in text
    context = "(against the baseline; requests since 2025-03-01T10:30:30Z;"
    assert line_with(text, "against the").strip().startswith(context)
    assert "per-pod load canary/baseline 1.04" in text
    header = ["CRITERION", "VERDICT", "CANARY", "BASELINE", "EFFECT", "(BOUNDS)", "SAMPLES", "C/B"]
    assert words(line_with(text, "CRITERION")) == header
    row = ["ttft", "p95", "fail", "2400.0", "ms", "1500.0", "ms", "+60%", "(+31..+96)"]
    assert words(line_with(text, "ttft p95  ")) == [*row, "240", "/", "231"]
    assert words(line_with(text, "errorRate  ")) == [
        *("errorRate", "pass", "1.25", "%", "0.10", "%", "+1.15", "pt", "(-0.40..+2.70)"),
        *("240", "/", "231"),
    ]


def test_checks_are_counted_against_the_spec_limits() -> None:
    text = render_status(llmd(PROGRESSING))
    checks = line_with(text, "Checks:")
    assert "failed 1/2" in checks
    assert "inconclusive 0/4" in checks


def test_limits_default_to_the_model_defaults_when_the_spec_omits_them() -> None:
    obj = llmd(PROGRESSING)
    del obj["spec"]["canary"]
    checks = line_with(render_status(obj), "Checks:")
    assert "failed 1/1" in checks
    assert "inconclusive 0/5" in checks


def test_conditions_are_listed_with_type_status_reason_message() -> None:
    text = render_status(llmd(PROGRESSING))
    assert "Conditions:" in text
    assert words(line_with(text, "StableServing")) == [
        "Ready",
        "True",
        "StableServing",
        "2/2",
        "stable",
        "replicas",
        "ready",
    ]
    assert words(line_with(text, "CanaryStep"))[:3] == ["Progressing", "True", "CanaryStep"]


def test_paused_shows_the_reason_and_what_holds_it() -> None:
    status = {
        **PROGRESSING,
        "phase": "Paused",
        "pauseReason": "5 inconclusive checks in a row: canary has 12 requests, needs 200",
        "failedChecks": 0,
        "inconclusiveChecks": 5,
        "lastAnalysis": {
            "time": "2025-03-01T11:00:00Z",
            "verdict": "inconclusive",
            "reason": "canary has 12 requests, needs 200",
            "criteria": [criterion("e2eLatency p95", "inconclusive", None, 900.5, (12, 3000))],
        },
    }
    obj = llmd(status, metadata={"annotations": {"llmcanary.io/paused": "true"}})
    text = render_status(obj)
    assert words(text.splitlines()[0])[2] == "Paused"
    assert (
        "Paused: 5 inconclusive checks in a row: canary has 12 requests, needs 200"
        in text.splitlines()
    )
    assert "llmcanary.io/paused=true" in text
    assert words(line_with(text, "e2eLatency p95  ")) == [
        *("e2eLatency", "p95", "inconclusive", "-", "ms", "900.5", "ms", "-", "12", "/", "3000")
    ]
    assert "inconclusive 5/4" in line_with(text, "Checks:")


def test_spec_paused_says_the_spec_must_change() -> None:
    text = render_status(llmd({**PROGRESSING, "phase": "Paused"}, spec={"paused": True}))
    assert "spec.paused" in line_with(text, "Paused by")
    assert "Git" in line_with(text, "Paused by")


HISTORY = [
    {
        "revision": "1111aa",
        "outcome": "Promoted",
        "startedAt": "2025-02-01T08:00:00Z",
        "finishedAt": "2025-02-01T12:00:00Z",
        "reason": "all steps passed",
    },
    {
        "revision": "77ab01",
        "outcome": "RolledBack",
        "startedAt": "2025-03-01T10:00:00Z",
        "finishedAt": "2025-03-01T10:42:00Z",
        "reason": "canary P95 2400 ms is 60% above stable 1500 ms",
    },
    {
        "revision": "2222bb",
        "outcome": "Superseded",
        "startedAt": "2025-02-10T08:00:00Z",
        "finishedAt": "2025-02-10T09:00:00Z",
        "reason": "",
    },
]


def test_rolled_back_lists_the_history_newest_first() -> None:
    status = {
        "phase": "RolledBack",
        "stableRevision": "5d8c9f",
        "canaryWeight": 0,
        "rolledBackRevision": "77ab01",
        "failedChecks": 2,
        "history": HISTORY,
    }
    text = render_status(llmd(status))
    lines = text.splitlines()
    assert words(lines[0])[:7] == [
        "tiny-llm",
        "(ml)",
        "RolledBack",
        "stable",
        "5d8c9f",
        "canary",
        "-",
    ]
    assert "weight 0%" in lines[0]
    assert "Rolled back revision: 77ab01" in line_with(text, "Rolled back")
    start = lines.index("History (newest first):")
    assert words(lines[start + 1]) == ["REVISION", "OUTCOME", "STARTED", "FINISHED", "REASON"]
    rows = [words(line) for line in lines[start + 2 : start + 5]]
    assert [r[:2] for r in rows] == [
        ["77ab01", "RolledBack"],
        ["2222bb", "Superseded"],
        ["1111aa", "Promoted"],
    ]
    assert rows[0][2:4] == ["2025-03-01T10:00:00Z", "2025-03-01T10:42:00Z"]
    assert " ".join(rows[0][4:]) == "canary P95 2400 ms is 60% above stable 1500 ms"
    assert "failed 2/2" in line_with(text, "Checks:")


def test_history_without_times_keeps_the_latest_appended_first() -> None:
    entries = [
        {"revision": "a"},
        {"revision": "b"},
        {"revision": "c", "finishedAt": "2025-01-01T00:00:00Z"},
    ]
    assert [e["revision"] for e in newest_first(entries)] == ["c", "b", "a"]


def test_stable_without_rollout_fields_is_short() -> None:
    status = {
        "phase": "Stable",
        "stableRevision": "5d8c9f",
        "canaryWeight": 0,
        "replicas": 2,
        "readyReplicas": 2,
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "AllReplicasReady",
                "message": "",
                "lastTransitionTime": "2025-03-01T09:00:00Z",
            }
        ],
    }
    text = render_status(llmd(status))
    assert text.splitlines()[0].split()[:5] == ["tiny-llm", "(ml)", "Stable", "stable", "5d8c9f"]
    assert "canary -" in text.splitlines()[0]
    assert "Replicas: 2/2 ready" in text
    for absent in ("Last analysis", "Checks:", "History", "Paused", "Canary replicas", "Requested"):
        assert absent not in text
    assert words(line_with(text, "AllReplicasReady")) == ["Ready", "True", "AllReplicasReady"]
    assert text.endswith("\n")


def test_no_status_yet_says_so() -> None:
    text = render_status(llmd(None))
    assert text.splitlines()[0].startswith("tiny-llm (ml)")
    assert "No status yet" in text


def test_pending_requests_are_shown_until_handled() -> None:
    annotations = {
        "llmcanary.io/promote": "2025-03-01T11:00:00.000001Z",
        "llmcanary.io/abort": "2025-03-01T10:00:00.000001Z",
    }
    status = {
        **PROGRESSING,
        "handledRequests": {"llmcanary.io/abort": "2025-03-01T10:00:00.000001Z"},
    }
    text = render_status(llmd(status, metadata={"annotations": annotations}))
    assert "Requested: promote at 2025-03-01T11:00:00.000001Z (not yet acted on)" in text
    assert "Requested: abort" not in text


def test_render_is_pure_and_tolerates_odd_shapes() -> None:
    obj = llmd({"phase": "Failed", "conditions": None, "history": "nope", "lastAnalysis": {}})
    before = repr(obj)
    assert render_status(obj) == render_status(obj)
    assert repr(obj) == before
    assert render_status({}).splitlines()[0].startswith("?")


def test_a_failed_preflight_shows_what_differs_what_fits_and_what_answered() -> None:
    status = {
        "phase": "Failed",
        "stableRevision": "5d8c9f",
        "canaryRevision": "77ab01",
        "canaryWeight": 0,
        "preflight": {
            "revision": "77ab01",
            "passed": False,
            "checkedAt": "2025-03-01T10:00:00Z",
            "reason": "environment differs outside preflight.envDiff.allowedDifferences:"
            " env.API_TOKEN",
            "envDiff": [
                {"key": "model.version", "stable": "1", "canary": "2", "allowed": True},
                {
                    "key": "env.API_TOKEN",
                    "stable": "(secret)",
                    "canary": "(secret, changed)",
                    "allowed": False,
                    "masked": True,
                },
            ],
            "gpuMemory": {"fits": True, "message": "needs 3.4 GiB per pod"},
            "dependencies": [
                {"name": "feature-store", "ok": True, "latencyMs": 2.14, "statusCode": 200},
                {"name": "vector-db", "ok": False, "message": "connection refused (2 tries)"},
            ],
        },
    }
    text = render_status(llmd(status))
    print(text)
    assert "Preflight of 77ab01: FAILED at 2025-03-01T10:00:00Z" in text
    assert "  environment differs outside" in text
    assert words(line_with(text, "env.API_TOKEN  ")) == [
        "env.API_TOKEN",
        "(secret)",
        "(secret,",
        "changed)",
        "NOT",
        "ALLOWED",
    ]
    assert words(line_with(text, "model.version")) == ["model.version", "1", "2", "allowed"]
    assert "GPU memory: fits: needs 3.4 GiB per pod" in text
    assert words(line_with(text, "feature-store")) == ["feature-store", "ok", "2.1", "200"]
    assert words(line_with(text, "vector-db"))[:2] == ["vector-db", "FAIL"]
    assert line_with(text, "vector-db").endswith("connection refused (2 tries)")
