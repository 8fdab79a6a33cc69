"""Errors from the cluster, phrased as what the user or the admin must do.

Each is a :class:`~llmcanary.problems.ReconcileError`: the reconciler records its problem.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

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


# --- every other failed call --------------------------------------------------------------

#: The most of the API server's own words that a status message or event carries.
DETAIL_LIMIT = 500


def capped(text: str, limit: int = DETAIL_LIMIT) -> str:
    """``text`` on one line, at most ``limit`` characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _target(kind: str, namespace: str, name: str | None) -> str:
    if name:
        return f"{kind} {name!r}"
    return f"{kind} in namespace {namespace!r}" if namespace else f"{kind} cluster-wide"


class ApiError(ReconcileError):
    """An API call that failed for another reason than a permission: the message names the
    call, the object, the HTTP status (0 for no answer) and the API server's words."""

    #: Whether the same call may well succeed when tried again unchanged.
    transient: ClassVar[bool] = True

    def __init__(
        self, reason: str, message: str, verb: str, kind: str, name: str | None, code: int
    ) -> None:
        super().__init__(reason, message)
        self.verb = verb
        self.kind = kind
        self.name = name
        self.code = code

    @classmethod
    def other(
        cls, verb: str, kind: str, namespace: str, name: str | None, code: int, detail: str
    ) -> ApiError:
        return cls(
            "ApiError",
            f"the API server answered {code} to {verb} {_target(kind, namespace, name)}:"
            f" {capped(detail)}; the operator tries again",
            verb,
            kind,
            name,
            code,
        )


#: Where an API server's complaint about a child points in the LLMDeployment's spec: the
#: first field path fragment found in its message names the spec field.
SPEC_FIELDS: tuple[tuple[str, str], ...] = (
    ("tolerations", "spec.tolerations"),
    ("nodeSelector", "spec.nodeSelector"),
    ("resources", "spec.resources"),
    ("subPath", "spec.model.repository"),
    ("claimName", "spec.model.repository"),
    ("volume", "spec.model.repository"),
    ("env", "spec.env"),
    ("image", "spec.triton.image"),
    ("args", "spec.triton.args"),
    ("hostnames", "spec.traffic.gatewayAPI.hostnames"),
    ("parentRefs", "spec.traffic.gatewayAPI.parentRefs"),
    ("gateways", "spec.traffic.istio.gateways"),
    ("hosts", "spec.traffic.istio.hosts"),
)


def spec_field(paths: list[str]) -> str | None:
    """The LLMDeployment spec field the API server's complaint about a child points at:
    ``paths`` are the field paths of its causes (``spec.template.spec.tolerations[0]``)."""
    for path in paths:
        for fragment, field in SPEC_FIELDS:
            if fragment in path:
                return field
    return None


def cause_fields(exc: Any) -> list[str]:
    """The field paths an ApiException's Status names (``details.causes[].field``); else
    the text after ``is invalid:`` (never the object's name, which could match anything)."""
    try:
        body = json.loads(exc.body or "")
        causes = (body.get("details") or {}).get("causes") or []
        fields = [str(c["field"]) for c in causes if isinstance(c, dict) and c.get("field")]
        if fields:
            return fields
        _, found, rest = str(body.get("message") or "").partition(" is invalid: ")
        return [rest] if found else []
    except (ValueError, AttributeError, TypeError):
        return []


class ChildRejected(ApiError):
    """400, 413 or 422: the API server (its validation or an admission webhook) refuses the
    object the operator built from the spec. Trying again changes nothing."""

    transient = False

    def __init__(
        self,
        verb: str,
        kind: str,
        name: str | None,
        code: int,
        detail: str,
        fields: list[str] | None = None,
    ) -> None:
        field = spec_field(fields or [])
        fix = f"fix {field}" if field else "fix the field it names in the LLMDeployment's spec"
        super().__init__(
            "ChildRejected",
            f"the API server refused {kind} {name or ''!r} ({code}): {capped(detail)}; {fix}"
            " (the operator applies it again when the spec changes)",
            verb,
            kind,
            name,
            code,
        )


class StatusRejected(ApiError):
    """400, 413 or 422 on the LLMDeployment's own status: not the user's spec (a status
    grown too large, or an operator older or newer than the CRD)."""

    transient = False

    def __init__(self, verb: str, kind: str, name: str | None, code: int, detail: str) -> None:
        super().__init__(
            "StatusRejected",
            f"the API server refused the status of {kind.removesuffix('/status')}"
            f" {name or ''!r} ({code}): {capped(detail)}; check that the CRD installed matches"
            " the operator's version (crds/); the operator tries again",
            verb,
            kind,
            name,
            code,
        )


class ApiConflict(ApiError):
    """409: the object changed since it was read (a precondition or resourceVersion no
    longer holds), or it was created meanwhile. The next pass reads it again."""

    def __init__(self, verb: str, kind: str, name: str | None, detail: str) -> None:
        super().__init__(
            "ApiConflict",
            f"the API server refused to {verb} {kind} {name or ''!r} (409 Conflict:"
            f" {capped(detail)}): it changed meanwhile; the operator reads it again and retries",
            verb,
            kind,
            name,
            409,
        )


class ApiUnavailable(ApiError):
    """410, 429, 5xx, a timeout, a broken connection or an answer that is not what the API
    promises: nothing the user did; the call is tried again later."""

    def __init__(
        self, verb: str, kind: str, namespace: str, name: str | None, code: int, detail: str
    ) -> None:
        what = f"answered {code}" if code else "gave no usable answer"
        super().__init__(
            "ApiUnavailable",
            f"the API server {what} to {verb} {_target(kind, namespace, name)}:"
            f" {capped(detail)}; the operator tries again with a growing delay",
            verb,
            kind,
            name,
            code,
        )


def explain(exc: Any, verb: str, kind: str, namespace: str, name: str | None) -> ApiError:
    """An ApiException (anything with ``status``, ``reason`` and ``body``) other than a 403,
    as the error that says what it means and what to do."""
    code = int(getattr(exc, "status", 0) or 0)
    detail = api_message(exc)
    if code in (400, 413, 422):
        if kind.endswith("/status"):
            return StatusRejected(verb, kind, name, code, detail)
        return ChildRejected(verb, kind, name, code, detail, cause_fields(exc))
    if code == 409:
        return ApiConflict(verb, kind, name, detail)
    if code in (408, 410, 429) or code >= 500 or code == 0:
        return ApiUnavailable(verb, kind, namespace, name, code, detail)
    return ApiError.other(verb, kind, namespace, name, code, detail)


def unreachable(
    exc: BaseException, verb: str, kind: str, namespace: str, name: str | None
) -> ApiUnavailable:
    """A call that got no usable answer: a timeout, a refused or broken connection (urllib3's
    errors), or a body that is not the JSON object the API promises."""
    return ApiUnavailable(verb, kind, namespace, name, 0, f"{type(exc).__name__}: {exc}")
