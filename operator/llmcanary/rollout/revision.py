"""Revisions: a stable hash of the part of the spec that changes what runs in the pod."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from llmcanary.api.spec import (
    DEFAULT_BACKEND,
    DEFAULT_INSTANCE_COUNT,
    DEFAULT_INSTANCE_KIND,
    DEFAULT_MAX_BATCH_SIZE,
    POD_AFFECTING_FIELDS,
    LLMDeploymentSpec,
)

REVISION_LENGTH = 10


def pod_affecting(spec: LLMDeploymentSpec) -> dict[str, Any]:
    """The pod-affecting fields of ``spec``, in wire form, defaults left out.

    Leaving defaults out makes ``replicas: 1`` written out and omitted hash the same,
    and keeps existing revisions stable when a later release adds a defaulted field.
    """
    dumped = spec.model_dump(
        mode="json",
        by_alias=True,
        include=set(POD_AFFECTING_FIELDS),
        exclude_defaults=True,
        exclude_none=True,
    )
    _drop_former_defaults(dumped)
    return dumped


# spec.triton's defaults before the operator overlaid repositories' config.pbtxt: the API
# server wrote them into every object then, so they hash as absent to keep those revisions.
_FORMER_TRITON_DEFAULTS: dict[str, Any] = {
    "backend": DEFAULT_BACKEND,
    "maxBatchSize": DEFAULT_MAX_BATCH_SIZE,
    "decoupled": False,
}
_FORMER_INSTANCE_DEFAULTS: dict[str, Any] = {
    "kind": DEFAULT_INSTANCE_KIND,
    "count": DEFAULT_INSTANCE_COUNT,
}


def _drop_former_defaults(dumped: dict[str, Any]) -> None:
    triton = dumped.get("triton")
    if triton is None:
        return
    _drop_equal(triton, _FORMER_TRITON_DEFAULTS)
    if "instanceGroup" in triton:
        _drop_equal(triton["instanceGroup"], _FORMER_INSTANCE_DEFAULTS)
        if not triton["instanceGroup"]:
            del triton["instanceGroup"]
    if not triton:
        del dumped["triton"]


def _drop_equal(values: dict[str, Any], defaults: dict[str, Any]) -> None:
    for key, default in defaults.items():
        if key in values and values[key] == default:
            del values[key]


def revision_of(spec: LLMDeploymentSpec) -> str:
    """The revision name of ``spec``: ten hex characters, stable under key order."""
    canonical = json.dumps(pod_affecting(spec), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:REVISION_LENGTH]
