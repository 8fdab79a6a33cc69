"""The models refuse what the CRD's CEL rules refuse, so offline checks agree with the server."""

from typing import Any

import pytest
from pydantic import ValidationError

from llmcanary.api.spec import LLMDeploymentSpec, describe_errors
from llmcanary.api.types import parse_duration


def spec(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"model": {"name": "m", "repository": "/models"}}
    base.update(overrides)
    return base


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"canary": {"initialWeight": 60, "maxWeight": 50}}, "initialWeight must not exceed"),
        ({"canary": {"stepInterval": "30s"}}, "stepInterval must be at least"),
        ({"triton": {"maxBatchSize": 0, "dynamicBatching": {}}}, "needs maxBatchSize > 0"),
        (
            {"triton": {"maxBatchSize": 4, "dynamicBatching": {"preferredBatchSizes": [8]}}},
            "between 1 and maxBatchSize",
        ),
        ({"triton": {"backend": "vllm", "maxBatchSize": 8}}, "set maxBatchSize to 0"),
        (
            {"triton": {"backend": "vllm", "dynamicBatching": {}}},
            "remove dynamicBatching",
        ),
        ({"traffic": {"router": "istio"}}, "router istio needs"),
        (
            {"traffic": {"router": "replicas"}, "canary": {"analysis": {"baseline": "fresh"}}},
            "replicas router cannot give a baseline its own weight",
        ),
        (
            {
                "traffic": {"router": "replicas"},
                "canary": {"analysis": {"metrics": "traefik", "baseline": "stable"}},
            },
            "traefik metrics preset reads the gateway's series of each arm's Service",
        ),
        (
            {"canary": {"initialStepInterval": "1m", "analysis": {"warmup": "1m"}}},
            "warmup must be shorter than every step",
        ),
        ({"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}, "duplicate"),
        (
            {
                "model": {
                    "name": "m",
                    "repository": "/m",
                    "sizing": {"parameters": 1, "dtype": "fp16", "layers": 2},
                }
            },
            "set all four or none",
        ),
    ],
)
def test_cross_field_rules(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        LLMDeploymentSpec.model_validate(spec(**overrides))


def test_quantities_accept_numbers_as_yaml_writes_them() -> None:
    parsed = LLMDeploymentSpec.model_validate(spec(resources={"cpu": 8, "memory": "64Gi"}))
    assert parsed.resources.cpu == "8"


@pytest.mark.parametrize(("text", "seconds"), [("30m", 1800), ("1h30m", 5400), ("500ms", 0.5)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == seconds


def test_errors_name_the_field_path() -> None:
    with pytest.raises(ValidationError) as caught:
        LLMDeploymentSpec.model_validate(spec(canary={"stepInterval": "thirty minutes"}))
    assert "spec.canary.stepInterval: String should match pattern" in describe_errors(caught.value)


def test_the_baseline_defaults_to_fresh_where_the_router_can_weight_it() -> None:
    assert LLMDeploymentSpec.model_validate(spec()).baseline == "fresh"
    replicas = LLMDeploymentSpec.model_validate(spec(traffic={"router": "replicas"}))
    assert replicas.baseline == "stable"
    assert replicas.top_weight == 100
    assert LLMDeploymentSpec.model_validate(spec()).top_weight == 50


# The inputs of issue 15 that crashed or loaded the operator: each refused at its field.
ABUSE: list[tuple[str, dict[str, Any], str, str]] = [
    (
        "a step the state machine overflowed on",
        {"canary": {"initialStepInterval": "99999999999h"}},
        "canary.initialStepInterval",
        "must be a duration from 1s to 720h",
    ),
    (
        "an analysis every millisecond",
        {"canary": {"analysis": {"interval": "1ms"}}},
        "canary.analysis.interval",
        "must be a duration from 1s to 24h",
    ),
    ("a negative cpu", {"resources": {"cpu": "-1"}}, "resources.cpu", "should match pattern"),
    (
        "a repository path that climbs",
        {"model": {"name": "m", "repository": "pvc://c/../x"}},
        "model.repository",
        "no '..' segment",
    ),
    (
        "a format spec that allocates 600 MB",
        {"canary": {"analysis": {"queries": {"requests": "x{{a='{arm:>600000000}'}}"}}}},
        "canary.analysis.queries.requests",
        "no format spec or conversion",
    ),
    (
        "a toleration the API server refuses on a Pod",
        {"tolerations": [{"key": "k", "operator": "Exists", "value": "v"}]},
        "tolerations.0",
        "operator Exists takes no value",
    ),
    (
        "weights beyond any model",
        {
            "model": {
                "name": "m",
                "repository": "/m",
                "sizing": {"parameters": 1e308, "dtype": "fp16"},
            }
        },
        "model.sizing.parameters",
        "less than or equal to 1000000000000000",
    ),
    ("a number as a string", {"replicas": "2"}, "replicas", "valid integer"),
]


@pytest.mark.parametrize(
    ("overrides", "path", "message"), [c[1:] for c in ABUSE], ids=[c[0] for c in ABUSE]
)
def test_what_crashed_or_loaded_the_operator_is_refused_at_its_field(
    overrides: dict[str, Any], path: str, message: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        LLMDeploymentSpec.model_validate(spec(**overrides))
    errors = refused.value.errors()
    assert [".".join(str(p) for p in e["loc"]) for e in errors] == [path], errors
    assert message in errors[0]["msg"]


def test_a_stored_duration_past_a_year_is_a_value_error_not_an_overflow() -> None:
    with pytest.raises(ValueError, match="longer than a year"):
        parse_duration("99999999999h")
