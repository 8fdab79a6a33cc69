"""Bring child objects to their desired state without writing when nothing changed."""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import Any

from llmcanary.kube.client import KubeApi, ObjectKey
from llmcanary.kube.errors import ChildConflict

log = logging.getLogger(__name__)


class Outcome(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"


def contains(actual: Any, desired: Any) -> bool:
    """True when every field of ``desired`` is in ``actual`` with the same value.

    The API server adds defaults (``imagePullPolicy``, ``clusterIP``, ...) that the
    builders do not set; those are not drift. It also drops empty lists and maps
    (``env: []``), so a field desired empty matches a field that is absent. Lists match
    item by item.
    """
    if isinstance(desired, dict):
        return isinstance(actual, dict) and all(
            contains(actual[k], v) if k in actual else _empty(v) for k, v in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(desired)
            and all(contains(a, d) for a, d in zip(actual, desired, strict=True))
        )
    return bool(actual == desired)


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, list | dict) and not value)


def owned_by(obj: dict[str, Any], owner_uid: str) -> bool:
    refs = obj.get("metadata", {}).get("ownerReferences") or []
    return any(ref.get("uid") == owner_uid for ref in refs)


def ensure(kube: KubeApi, desired: dict[str, Any]) -> tuple[Outcome, dict[str, Any]]:
    """Create ``desired`` or correct the fields it sets; never adopt a stranger's object."""
    key = ObjectKey.of(desired)
    owner_ref = desired["metadata"]["ownerReferences"][0]
    current = kube.get(key.api_version, key.kind, key.namespace, key.name)
    if current is not None:
        if not owned_by(current, owner_ref["uid"]):
            raise ChildConflict(key.kind, key.name, owner_ref["name"])
        if contains(current, desired):
            return Outcome.UNCHANGED, current
    applied = kube.apply(desired)
    outcome = Outcome.CREATED if current is None else Outcome.UPDATED
    log.info("%s %s", outcome.value, key, extra={"child": str(key), "outcome": outcome.value})
    return outcome, applied
