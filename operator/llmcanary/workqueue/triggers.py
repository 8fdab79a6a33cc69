"""Which watch events of an LLMDeployment ask for a pass.

The operator writes every LLMDeployment's status, and each write comes back as a watch
event; reconciling on it would double every pass for nothing. What the reconciler acts
on is the spec (``generation``), the request annotations, and deletion: an event that
changes none of them is the echo of a status write, or of kopf's finalizer, and is
dropped. A resync still passes over every object, so nothing depends on this filter.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from llmcanary.workqueue.queue import Key

Fingerprint = tuple[object, tuple[tuple[str, str], ...], bool]


def fingerprint(body: Mapping[str, Any]) -> Fingerprint:
    meta = body.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    return (
        meta.get("generation"),
        tuple(sorted((str(k), str(v)) for k, v in annotations.items())),
        bool(meta.get("deletionTimestamp")),
    )


class ChangeFilter:
    """Remembers the last fingerprint seen per object. Thread-safe."""

    def __init__(self) -> None:
        self._seen: dict[Key, Fingerprint] = {}
        self._lock = threading.Lock()

    def changed(self, key: Key, body: Mapping[str, Any]) -> bool:
        """Whether ``body`` differs from the last one seen in what a pass acts on."""
        seen = fingerprint(body)
        with self._lock:
            if self._seen.get(key) == seen:
                return False
            self._seen[key] = seen
            return True

    def forget(self, key: Key) -> None:
        with self._lock:
            self._seen.pop(key, None)
