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


#: ``ensure``'s ``current`` when the caller has not read the object.
_UNREAD: Any = object()


def ensure(
    kube: KubeApi, desired: dict[str, Any], current: dict[str, Any] | None = _UNREAD
) -> tuple[Outcome, dict[str, Any]]:
    """Create ``desired`` or correct the fields it sets; never adopt a stranger's object.
    ``current``: the object as the caller has just read it (None: absent), to spare a
    second read."""
    key = ObjectKey.of(desired)
    owner_ref = desired["metadata"]["ownerReferences"][0]
    if current is _UNREAD:
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


class Removal(StrEnum):
    DELETED = "deleted"
    GONE = "gone"  # nothing by that name
    NOT_OURS = "not ours"  # another owner's object by that name, left alone


def remove(
    kube: KubeApi,
    api_version: str,
    kind: str,
    namespace: str,
    name: str,
    owner_uid: str,
    *,
    propagation: str | None = None,
) -> Removal:
    """Delete the child ``name`` only if it is the owner's: read it, check its owner
    reference, and delete with its UID as a precondition, so that an object someone
    created under that name meanwhile is not deleted either. Another's object is left
    alone with a log line (removing it is a cleanup, never needed to go on).
    ``propagation``: as for :meth:`Kube.delete` (a Job's pods go only with one)."""
    current = kube.get(api_version, kind, namespace, name)
    if current is None:
        return Removal.GONE
    child = f"{kind} {namespace}/{name}"
    if not owned_by(current, owner_uid):
        log.warning(
            "left %s alone: it is not a child of this LLMDeployment",
            child,
            extra={"child": child, "outcome": Removal.NOT_OURS.value},
        )
        return Removal.NOT_OURS
    uid = current.get("metadata", {}).get("uid")
    if not kube.delete(
        api_version, kind, namespace, name, uid=uid or None, propagation=propagation
    ):
        # Gone meanwhile, or replaced by another object (the client logged which).
        return Removal.GONE
    log.info("deleted %s", child, extra={"child": child, "outcome": Removal.DELETED.value})
    return Removal.DELETED
