"""Pod readiness read from the pod's own object."""

from __future__ import annotations

from typing import Any

from llmcanary.kube.pods import pod_ready, pod_serving


def pod(ready: str | None = "True", *, deleting: bool = False) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": "p"}
    if deleting:
        metadata["deletionTimestamp"] = "2026-11-29T00:00:00Z"
    conditions = [{"type": "PodScheduled", "status": "True"}]
    if ready is not None:
        conditions.append({"type": "Ready", "status": ready})
    return {"metadata": metadata, "status": {"conditions": conditions}}


def test_ready_is_the_ready_condition() -> None:
    assert pod_ready(pod("True"))
    assert not pod_ready(pod("False"))
    assert not pod_ready(pod(None))
    # A terminating pod may still be Ready: pod_ready says so, pod_serving does not.
    assert pod_ready(pod("True", deleting=True))


def test_serving_is_ready_and_not_terminating() -> None:
    assert pod_serving(pod("True"))
    assert not pod_serving(pod("False"))
    assert not pod_serving(pod("True", deleting=True))


def test_a_pod_without_status_or_metadata_is_neither() -> None:
    for bare in ({}, {"metadata": None, "status": None}, {"status": {"conditions": None}}):
        assert not pod_ready(bare)
        assert not pod_serving(bare)
