"""``contains``: when a child already has what the builders want (no write, no log line)."""

from __future__ import annotations

from typing import Any

import pytest
from specs import make_spec

from llmcanary.builders.meta import Owner
from llmcanary.builders.workload import build_deployment
from llmcanary.kube.children import contains


def test_fields_the_api_server_adds_are_not_drift() -> None:
    desired = {"spec": {"ports": [{"port": 80}]}}
    actual = {"spec": {"clusterIP": "10.96.0.9", "ports": [{"port": 80, "protocol": "TCP"}]}}
    assert contains(actual, desired)


@pytest.mark.parametrize("empty", [[], {}, None])
def test_a_field_desired_empty_matches_the_field_the_api_server_dropped(empty: Any) -> None:
    assert contains({"spec": {"containers": [{"name": "c"}]}}, {"spec": {"env": empty}})


@pytest.mark.parametrize(
    ("actual", "desired"),
    [
        ({"env": [{"name": "A", "value": "1"}]}, {"env": []}),  # extra item is drift
        ({}, {"env": [{"name": "A", "value": "1"}]}),  # missing item
        ({"replicas": 1}, {"replicas": 2}),
        ({"args": ["a", "b"]}, {"args": ["b", "a"]}),  # order matters in lists
        ({}, {"replicas": 0}),  # zero is a value, not an empty field
    ],
)
def test_real_differences_are_drift(actual: dict[str, Any], desired: dict[str, Any]) -> None:
    assert not contains(actual, desired)


def _drop_empty(value: Any) -> Any:
    """What the API server stores: empty lists and maps omitted."""
    if isinstance(value, dict):
        return {k: _drop_empty(v) for k, v in value.items() if v not in ([], {}, None)}
    if isinstance(value, list):
        return [_drop_empty(v) for v in value]
    return value


def test_a_deployment_without_env_is_unchanged_once_stored() -> None:
    # The regression: `env: []` made every pass re-apply every Deployment.
    spec = make_spec()
    assert not spec.env
    owner = Owner(namespace="ml", name="tiny", uid="u-1")
    desired = build_deployment(owner, spec, "abc123", "stable", 2)
    assert contains(_drop_empty(desired), desired)
