"""Revisions: a stable hash of the part of the spec that changes what runs in the pod."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from llmcanary.api.spec import POD_AFFECTING_FIELDS, LLMDeploymentSpec

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
    return dumped


def revision_of(spec: LLMDeploymentSpec) -> str:
    """The revision name of ``spec``: ten hex characters, stable under key order."""
    canonical = json.dumps(pod_affecting(spec), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:REVISION_LENGTH]
