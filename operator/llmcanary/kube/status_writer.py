"""The one status writer: a JSON merge patch of the status subresource, sent only when
something changed, and only onto the version of the object it was decided from."""

from __future__ import annotations

from typing import Any

from llmcanary.api import API_VERSION, KIND
from llmcanary.api.status import LLMDeploymentStatus
from llmcanary.kube.client import StatusPatcher


def status_to_wire(status: LLMDeploymentStatus) -> dict[str, Any]:
    return status.model_dump(mode="json", by_alias=True, exclude_none=True)


def parse_status(raw: dict[str, Any] | None) -> LLMDeploymentStatus:
    """The operator's status from the object; fields it does not know are ignored."""
    known = LLMDeploymentStatus.model_fields
    aliases = {f.alias or n for n, f in known.items()}
    return LLMDeploymentStatus.model_validate(
        {k: v for k, v in (raw or {}).items() if k in aliases}
    )


def status_patch(old: dict[str, Any] | None, new: LLMDeploymentStatus) -> dict[str, Any] | None:
    """The JSON merge patch from ``old`` to ``new``, or ``None`` when nothing changed."""
    wire = status_to_wire(new)
    previous = {k: v for k, v in (old or {}).items() if k in wire or k in _owned_keys()}
    if previous == wire:
        return None
    patch: dict[str, Any] = {k: v for k, v in wire.items() if previous.get(k) != v}
    for key in previous:
        if key not in wire:
            patch[key] = None  # merge patch: null removes the key
    return patch


def _owned_keys() -> set[str]:
    return {f.alias or n for n, f in LLMDeploymentStatus.model_fields.items()}


def write_status(
    kube: StatusPatcher,
    namespace: str,
    name: str,
    old: dict[str, Any] | None,
    new: LLMDeploymentStatus,
    *,
    resource_version: str | None = None,
) -> bool:
    """Patch the status subresource if it changed. Returns whether it wrote.

    ``resource_version``: the object's version that ``old`` was read at (and ``new``
    decided from). The API server refuses the patch with a 409
    (:class:`~llmcanary.kube.errors.ApiConflict`) if the object changed since: another
    writer's status is never overwritten by one decided from older state.
    """
    patch = status_patch(old, new)
    if patch is None:
        return False
    kube.patch_status(API_VERSION, KIND, namespace, name, patch, resource_version=resource_version)
    return True
