from llmcanary_dev.demo.timeline import describe, outcomes, sample_of


def status(phase: str, weight: int, check: str | None = None, canary: float = 0.0) -> dict:
    analysis = (
        {
            "time": check,
            "verdict": "pass",
            "reason": "ok",
            "reference": "baseline",
            "criteria": [
                {"criterion": "ttft p95", "canary": {"value": 5.0}, "reference": {"value": 4.0}},
                {
                    "criterion": "e2eLatency p95",
                    "canary": {"value": canary},
                    "reference": {"value": 100.0},
                },
            ],
        }
        if check
        else None
    )
    return {"phase": phase, "canaryWeight": weight, "lastAnalysis": analysis, "message": "m"}


def test_only_what_changed_is_told() -> None:
    a = sample_of(1.0, "v2", status("Progressing", 5))
    b = sample_of(2.0, "v2", status("Progressing", 15, "t1", 110.0))
    c = sample_of(3.0, "v2", status("Progressing", 15, "t1", 110.0))
    assert describe(None, a) == ["[   1.0s] phase Progressing: m"]
    assert describe(a, b) == [
        "[   2.0s] canary weight 5% -> 15%",
        "[   2.0s] check: pass, e2eLatency p95 canary 110 ms / baseline 100 ms (ok)",
    ]
    assert describe(b, c) == []


def test_each_rollout_becomes_one_row() -> None:
    samples = [
        sample_of(0.0, "v1", status("Initializing", 0)),
        sample_of(9.0, "v1", status("Stable", 0)),
        sample_of(10.0, "v2", status("Progressing", 5, "t1", 110.0)),
        sample_of(20.0, "v2", status("Progressing", 15, "t2", 120.0)),
        sample_of(30.0, "v2", status("RolledBack", 0, "t2", 120.0)),
    ]
    v1, v2 = outcomes(samples)
    assert (v1.label, v1.result, v1.max_weight, v1.checks) == ("v1", "Stable", 0, 0)
    assert (v2.result, v2.seconds, v2.max_weight, v2.checks) == ("RolledBack", 20.0, 15, 2)
    assert v2.canary_ms == 120.0 and v2.reference_ms == 100.0
