"""Status conditions: set one, read one. Pure."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from llmcanary.api.status import Condition, ConditionType, LLMDeploymentStatus
from llmcanary.api.times import rfc3339


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
    value: Literal["True", "False"] = "True" if status else "False"
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
