"""Analysis, pure: the PromQL an arm gets, and the verdict over two arms."""

from __future__ import annotations

import pytest
from test_rollout_machine import HEALTHY, spec_for

from llmcanary.analysis.queries import QueryContext, arm_queries
from llmcanary.analysis.types import ArmSample
from llmcanary.analysis.verdict import judge


@pytest.mark.parametrize(
    ("stable", "canary", "verdict"),
    [
        (HEALTHY, HEALTHY, "pass"),
        (HEALTHY, ArmSample(119.0, 1000.0, 0.0), "pass"),
        (HEALTHY, ArmSample(121.0, 1000.0, 0.0), "fail"),
        (HEALTHY, ArmSample(100.0, 980.0, 20.0), "fail"),
        (HEALTHY, ArmSample(100.0, 995.0, 5.0), "pass"),
        (HEALTHY, ArmSample(None, 1000.0, 0.0), "inconclusive"),
        (HEALTHY, ArmSample(100.0, None, None), "inconclusive"),
        (ArmSample(100.0, 50.0, 0.0), HEALTHY, "inconclusive"),
        (HEALTHY, ArmSample(100.0, 1000.0, None), "pass"),
    ],
)
def test_verdicts(stable: ArmSample, canary: ArmSample, verdict: str) -> None:
    assert judge(spec_for().canary.analysis, stable, canary).verdict == verdict


def test_query_templates_render_every_variable_and_refuse_unknown_ones() -> None:
    spec = spec_for(
        "2",
        analysis={
            "queries": {
                "latency": 'max(lat{{ns="{namespace}",n="{name}",r="{revision}",t="{arm}"}})'
                " * {quantile} + {model}",
                "requests": "sum(increase(req[{window}]))",
            }
        },
    )
    context = QueryContext("ns", "tiny", "tiny-llm", {"stable": "aaa", "canary": "bbb"})
    queries = arm_queries(spec.canary.analysis, context, "canary")
    assert queries.latency == 'max(lat{ns="ns",n="tiny",r="bbb",t="canary"}) * 0.95 + tiny-llm'
    assert queries.requests == "sum(increase(req[20s]))"
    assert "nv_inference_request_failure" in queries.errors  # the built-in stays
    bad = spec_for("2", analysis={"queries": {"latency": "up{{job='{job}'}}"}})
    with pytest.raises(ValueError, match=r"unknown template variables \['job'\]"):
        arm_queries(bad.canary.analysis, context, "stable")


def test_at_100_percent_the_stable_arm_needs_no_traffic() -> None:
    analysis = spec_for().canary.analysis
    idle_stable = ArmSample(100.0, 0.0, 0.0)  # last P95 still known, no new requests
    assert judge(analysis, idle_stable, HEALTHY).verdict == "inconclusive"
    assert judge(analysis, idle_stable, HEALTHY, stable_share=0).verdict == "pass"
    slower = ArmSample(130.0, 1000.0, 0.0)
    assert judge(analysis, idle_stable, slower, stable_share=0).verdict == "fail"
    gone = ArmSample(None, None, None)  # the stable series aged out: absolute limits only
    check = judge(analysis, gone, slower, stable_share=0)
    assert check.verdict == "pass" and "absolute limits only" in check.reason
