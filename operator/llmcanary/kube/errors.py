"""Errors from the cluster, phrased as what the user or the admin must do."""

from __future__ import annotations

import json
from typing import Any


class ReconcileError(Exception):
    """A problem that stops reconciliation until someone acts; the message says what to do.

    ``reason`` is a CamelCase word for conditions and events.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class ChildConflict(ReconcileError):
    def __init__(self, kind: str, name: str, owner: str) -> None:
        super().__init__(
            "ChildConflict",
            f"{kind} {name!r} already exists and is not owned by LLMDeployment {owner!r}:"
            f" delete or rename that {kind}, or rename the LLMDeployment",
        )


class Forbidden(ReconcileError):
    def __init__(self, verb: str, kind: str, namespace: str) -> None:
        super().__init__(
            "Forbidden",
            f"the operator may not {verb} {kind} in namespace {namespace!r}: grant it to the"
            " operator's ServiceAccount (see the chart's Role/ClusterRole)",
        )


class MissingApi(ReconcileError):
    def __init__(self, api_version: str, kind: str, hint: str) -> None:
        super().__init__("MissingAPI", f"the cluster does not serve {kind} ({api_version}): {hint}")


def api_message(exc: Any) -> str:
    """The API server's own message in an ApiException (its Status body), else its reason."""
    try:
        body = json.loads(exc.body or "")
        return str(body.get("message") or exc.reason)
    except (ValueError, AttributeError):
        return str(getattr(exc, "reason", None) or exc)
