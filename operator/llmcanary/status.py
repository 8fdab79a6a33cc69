"""Status: condition helpers (pure) and the one writer that patches only real changes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Protocol

from llmcanary.api import API_VERSION, KIND
from llmcanary.api.status import Condition, ConditionType, LLMDeploymentStatus


def rfc3339(moment: datetime) -> str:
    """Kubernetes' time format: UTC, second precision, trailing Z."""
    return moment.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def timestamp(moment: datetime) -> str:
    """Rollout timestamps in status: RFC 3339 UTC with milliseconds.

    Steps and checks can be seconds apart; second precision would let a check taken
    in the step's first second count for the step before it.
    """
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def parse_time(text: str) -> datetime:
    """Read an RFC 3339 time written by :func:`rfc3339` or :func:`timestamp`."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def set_condition(
    conditions: list[Condition],
    type_: ConditionType,
    status: bool,
    reason: str,
    message: str,
    now: datetime,
    generation: int | None,
) -> list[Condition]:
    """Conditions with ``type_`` set; ``lastTransitionTime`` moves only when status flips."""
    value = "True" if status else "False"
    previous = next((c for c in conditions if c.type == type_), None)
    transition = (
        previous.last_transition_time
        if previous is not None and previous.status == value
        else rfc3339(now)
    )
    updated = Condition(
        type=type_,
        status=value,
        reason=reason,
        message=message,
        last_transition_time=transition,
        observed_generation=generation,
    )
    others = [c for c in conditions if c.type != type_]
    return sorted([*others, updated], key=lambda c: c.type)


def condition(status: LLMDeploymentStatus, type_: ConditionType) -> Condition | None:
    return next((c for c in status.conditions if c.type == type_), None)


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


class StatusPatcher(Protocol):
    def patch_status(
        self, api_version: str, kind: str, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any]: ...


def write_status(
    kube: StatusPatcher,
    namespace: str,
    name: str,
    old: dict[str, Any] | None,
    new: LLMDeploymentStatus,
) -> bool:
    """Patch the status subresource if it changed. Returns whether it wrote."""
    patch = status_patch(old, new)
    if patch is None:
        return False
    kube.patch_status(API_VERSION, KIND, namespace, name, patch)
    return True
