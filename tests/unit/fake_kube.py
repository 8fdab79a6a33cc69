"""A small in-memory Kubernetes API for fast unit tests of the reconciler's ordering.

It keeps objects as dicts and records every write in order; it does no admission, no
defaulting and no garbage collection. Behaviour against a real API server is what the
integration tests check; this fake answers "in which order did the operator write?".
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from llmcanary.kube.errors import MissingApi

Key = tuple[str, str, str, str]  # api_version, kind, namespace, name


@dataclass(frozen=True)
class Write:
    verb: str  # apply | patch | patch_status | delete
    kind: str
    name: str
    body: dict[str, Any]


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    """A JSON merge patch (RFC 7386) of ``target`` in place."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


def _selects(selector: str, labels: dict[str, str]) -> bool:
    for term in filter(None, selector.split(",")):
        if "=" in term:
            key, value = term.split("=", 1)
            if labels.get(key) != value:
                return False
        elif term not in labels:
            return False
    return True


@dataclass
class FakeKube:
    objects: dict[Key, dict[str, Any]] = field(default_factory=dict)
    writes: list[Write] = field(default_factory=list)
    # Kinds the "cluster" does not serve (every call on them raises MissingApi).
    missing: set[str] = field(default_factory=set)
    _version: int = 0

    def _check(self, api_version: str, kind: str) -> None:
        if kind in self.missing:
            raise MissingApi(api_version, kind, "install the API that serves it")

    def _stamp(self, obj: dict[str, Any]) -> None:
        self._version += 1
        obj.setdefault("metadata", {})["resourceVersion"] = str(self._version)

    def add(self, obj: dict[str, Any]) -> None:
        """Put an object in place without recording a write (the test's starting state)."""
        meta = obj["metadata"]
        key = (obj["apiVersion"], obj["kind"], meta.get("namespace", ""), meta["name"])
        self.objects[key] = copy.deepcopy(obj)

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        self._check(api_version, kind)
        found = self.objects.get((api_version, kind, namespace, name))
        return copy.deepcopy(found) if found is not None else None

    def list(
        self, api_version: str, kind: str, namespace: str, label_selector: str = ""
    ) -> list[dict[str, Any]]:
        self._check(api_version, kind)
        return [
            copy.deepcopy(obj)
            for (v, k, ns, _), obj in sorted(self.objects.items())
            if (v, k, ns) == (api_version, kind, namespace)
            and _selects(label_selector, obj["metadata"].get("labels") or {})
        ]

    def apply(self, obj: dict[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
        self._check(obj["apiVersion"], obj["kind"])
        meta = obj["metadata"]
        key = (obj["apiVersion"], obj["kind"], meta.get("namespace", ""), meta["name"])
        current = copy.deepcopy(self.objects.get(key, {}))
        _merge(current, obj)
        self._stamp(current)
        if not dry_run:
            self.objects[key] = current
            self.writes.append(Write("apply", obj["kind"], meta["name"], copy.deepcopy(obj)))
        return copy.deepcopy(current)

    def patch(
        self, api_version: str, kind: str, namespace: str, name: str, patch: dict[str, Any]
    ) -> dict[str, Any] | None:
        self._check(api_version, kind)
        current = self.objects.get((api_version, kind, namespace, name))
        if current is None:
            return None
        _merge(current, patch)
        self._stamp(current)
        self.writes.append(Write("patch", kind, name, copy.deepcopy(patch)))
        return copy.deepcopy(current)

    def patch_status(
        self, api_version: str, kind: str, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        current = self.objects[(api_version, kind, namespace, name)]
        current.setdefault("status", {})
        _merge(current["status"], status)
        self.writes.append(Write("patch_status", kind, name, copy.deepcopy(status)))
        return copy.deepcopy(current)

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        self._check(api_version, kind)
        gone = self.objects.pop((api_version, kind, namespace, name), None)
        if gone is not None:
            self.writes.append(Write("delete", kind, name, {}))
        return gone is not None
