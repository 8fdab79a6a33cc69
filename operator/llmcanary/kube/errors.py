"""Errors from the cluster, phrased as what the user or the admin must do.

Each is a :class:`~llmcanary.problems.ReconcileError`: the reconciler records its problem.
"""

from __future__ import annotations

import json
from typing import Any

from llmcanary.problems import ReconcileError


class ChildConflict(ReconcileError):
    def __init__(self, kind: str, name: str, owner: str) -> None:
        super().__init__(
            "ChildConflict",
            f"{kind} {name!r} already exists and is not owned by LLMDeployment {owner!r}:"
            f" delete or rename that {kind}, or rename the LLMDeployment",
        )


# The RBAC verbs behind the operator's calls where they differ from the call's name:
# server-side apply is a PATCH, and a PATCH that creates the object also needs create.
RBAC_VERBS = {"apply": "patch, and create for a new object"}


class Forbidden(ReconcileError):
    """The API server answered 403: the message names the call, the RBAC verb, the kind,
    the namespace and the API server's own words, and says where to grant it."""

    def __init__(self, verb: str, kind: str, namespace: str, detail: str = "") -> None:
        where = f"in namespace {namespace!r}" if namespace else "cluster-wide"
        message = (
            f"the operator may not {verb} {kind} {where} (RBAC verb:"
            f" {RBAC_VERBS.get(verb, verb)}): grant it to the operator's ServiceAccount in its"
            " ClusterRole or Role (the chart's rules are in charts/llmcanary/templates/_rbac.tpl,"
            " see docs/install.md)"
        )
        if detail:
            message += f"; the API server said: {detail}"
        super().__init__("Forbidden", message)
        self.verb = verb
        self.kind = kind
        self.namespace = namespace


class NamespaceTerminating(ReconcileError):
    """A 403 that is not about permissions: the namespace is being deleted, and the API
    server refuses new objects in it."""

    def __init__(self, verb: str, kind: str, namespace: str) -> None:
        super().__init__(
            "NamespaceTerminating",
            f"namespace {namespace!r} is being deleted: the API server refuses to {verb} {kind}"
            " there; nothing to do (the LLMDeployment goes with its namespace)",
        )


def terminating_namespace(exc: Any) -> bool:
    """Whether an ApiException's Status says its namespace is being deleted."""
    try:
        body = json.loads(exc.body or "")
        causes = (body.get("details") or {}).get("causes") or []
    except (ValueError, AttributeError):
        return False
    return any(isinstance(c, dict) and c.get("reason") == "NamespaceTerminating" for c in causes)


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
