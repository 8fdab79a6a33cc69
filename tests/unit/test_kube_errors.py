"""A 403 from the API server becomes advice that names the call, the RBAC verb and where
to grant it, with the API server's own words (which name the resource and its group); every
other failed call of the operator's client becomes an error that says what it means."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import ProtocolError, ReadTimeoutError

from llmcanary.kube.client import Kube
from llmcanary.kube.errors import (
    ApiConflict,
    ApiError,
    ApiUnavailable,
    ChildRejected,
    Forbidden,
    NamespaceTerminating,
    StatusRejected,
    spec_field,
)

DENIED = (
    'httproutes.gateway.networking.k8s.io "tiny-llm" is forbidden: User'
    ' "system:serviceaccount:llmcanary:llmcanary" cannot patch resource "httproutes" in API'
    ' group "gateway.networking.k8s.io" in the namespace "ml"'
)


def forbidden(**_: Any) -> None:
    exc = ApiException(status=403, reason="Forbidden")
    exc.body = json.dumps({"kind": "Status", "reason": "Forbidden", "message": DENIED}).encode()
    raise exc


def test_a_403_names_the_verb_the_kind_the_namespace_and_the_api_servers_words() -> None:
    with pytest.raises(Forbidden) as caught:
        Kube._call("apply", "HTTPRoute", forbidden, namespace="ml", name="tiny-llm")
    err = caught.value
    assert err.reason == "Forbidden"
    assert (err.verb, err.kind, err.namespace) == ("apply", "HTTPRoute", "ml")
    assert err.message.startswith(
        "the operator may not apply HTTPRoute in namespace 'ml'"
        " (RBAC verb: patch, and create for a new object)"
    )
    assert "ClusterRole or Role" in err.message
    assert "docs/install.md" in err.message
    assert err.message.endswith(f"the API server said: {DENIED}")


def test_a_cluster_wide_403_says_cluster_wide_and_keeps_plain_verbs() -> None:
    with pytest.raises(Forbidden) as caught:
        Kube._call("list", "Node", forbidden)
    assert caught.value.message.startswith(
        "the operator may not list Node cluster-wide (RBAC verb: list)"
    )


def test_other_api_errors_pass_through_the_bare_call() -> None:
    def conflict(**_: Any) -> None:
        raise ApiException(status=409, reason="Conflict")

    with pytest.raises(ApiException) as caught:
        Kube._call("apply", "Service", conflict, namespace="ml")
    assert not isinstance(caught.value, Forbidden)
    assert caught.value.status == 409


def test_a_403_for_a_terminating_namespace_is_not_called_a_missing_permission() -> None:
    """The Status the API server answered in CI when the operator wrote into a namespace
    being deleted."""

    def terminating(**_: Any) -> None:
        exc = ApiException(status=403, reason="Forbidden")
        exc.body = json.dumps(
            {
                "kind": "Status",
                "status": "Failure",
                "message": 'configmaps "tiny-llm-abc" is forbidden: unable to create new content'
                " in namespace ml because it is being terminated",
                "reason": "Forbidden",
                "details": {
                    "name": "tiny-llm-abc",
                    "kind": "configmaps",
                    "causes": [
                        {
                            "reason": "NamespaceTerminating",
                            "message": "namespace ml is being terminated",
                            "field": "metadata.namespace",
                        }
                    ],
                },
                "code": 403,
            }
        ).encode()
        raise exc

    with pytest.raises(NamespaceTerminating) as caught:
        Kube._call("apply", "ConfigMap", terminating, namespace="ml")
    assert caught.value.reason == "NamespaceTerminating"
    assert caught.value.message.startswith("namespace 'ml' is being deleted")
    assert "RBAC" not in caught.value.message


# --- every other failed call ---------------------------------------------------------------


def operators_kube(explain_errors: bool = True) -> Kube:
    """A Kube whose calls go to the functions a test passes (no API server, no discovery)."""
    kube = Kube.__new__(Kube)
    kube._on_request = None
    kube.explain_errors = explain_errors
    return kube


def raising(exc: BaseException) -> Any:
    def call(**_: Any) -> None:
        raise exc

    return call


def status_error(code: int, message: str, causes: list[dict[str, str]] | None = None) -> Any:
    exc = ApiException(status=code, reason="Error")
    body: dict[str, Any] = {"kind": "Status", "message": message, "code": code}
    if causes:
        body["details"] = {"causes": causes}
    exc.body = json.dumps(body).encode()
    return exc


CPU = (
    'Deployment.apps "tiny-abc" is invalid: spec.template.spec.containers[0].resources'
    '.requests[cpu]: Invalid value: "-1": must be greater than or equal to 0'
)


@pytest.mark.parametrize(
    ("code", "message", "field"),
    [
        (422, CPU, "spec.resources"),
        (
            422,
            'Deployment.apps "tiny-env" is invalid: spec.template.spec.containers[0]'
            ".volumeMounts[0].subPath: Invalid value: \"../x\": must not contain '..'",
            "spec.model.repository",
        ),
        (400, "the object is invalid", None),
    ],
)
def test_a_refused_child_says_what_the_api_server_said_and_which_spec_field(
    code: int, message: str, field: str | None
) -> None:
    with pytest.raises(ChildRejected) as caught:
        operators_kube()._request(
            "apply",
            "Deployment",
            raising(status_error(code, message)),
            namespace="ml",
            name="tiny-abc",
        )
    err = caught.value
    assert err.reason == "ChildRejected" and not err.transient
    assert (err.verb, err.kind, err.name, err.code) == ("apply", "Deployment", "tiny-abc", code)
    assert err.message.startswith(f"the API server refused Deployment 'tiny-abc' ({code}): ")
    assert message in err.message
    assert (f"fix {field}" if field else "fix the field it names") in err.message


def test_the_spec_field_comes_from_the_causes_not_the_objects_name() -> None:
    # "tiny-env" must not point at spec.env.
    assert spec_field(["spec.template.spec.tolerations[0].value"]) == "spec.tolerations"
    with pytest.raises(ChildRejected) as caught:
        operators_kube()._request(
            "apply",
            "Deployment",
            raising(
                status_error(
                    422,
                    'Deployment.apps "tiny-env" is invalid: [...]',
                    [{"field": "spec.template.spec.nodeSelector", "reason": "FieldValueInvalid"}],
                )
            ),
            namespace="ml",
            name="tiny-env",
        )
    assert "fix spec.nodeSelector" in caught.value.message


def test_a_long_message_is_capped() -> None:
    with pytest.raises(ChildRejected) as caught:
        operators_kube()._request(
            "apply", "Deployment", raising(status_error(422, "x" * 5000)), namespace="ml", name="n"
        )
    assert len(caught.value.message) < 700


@pytest.mark.parametrize(
    ("exc", "kind", "expected", "words"),
    [
        (status_error(409, "the object has been modified"), "Deployment", ApiConflict, "409"),
        (status_error(410, "too old resource version"), "Pod", ApiUnavailable, "answered 410"),
        (status_error(429, "too many requests"), "Pod", ApiUnavailable, "answered 429"),
        (status_error(500, "etcdserver: timeout"), "Pod", ApiUnavailable, "answered 500"),
        (status_error(504, "gateway timeout"), "Pod", ApiUnavailable, "answered 504"),
        (status_error(401, "Unauthorized"), "Pod", ApiError, "answered 401"),
        (
            status_error(422, "status.phase: Unsupported value"),
            "LLMDeployment/status",
            StatusRejected,
            "refused the status of LLMDeployment",
        ),
        (
            ReadTimeoutError(None, "/api", "Read timed out."),
            "Pod",
            ApiUnavailable,  # type: ignore[arg-type]
            "gave no usable answer",
        ),
        (
            ProtocolError("Connection aborted.", ConnectionResetError()),
            "Pod",
            ApiUnavailable,
            "ProtocolError",
        ),
    ],
)
def test_every_other_failure_says_the_call_the_code_and_that_it_is_retried(
    exc: BaseException, kind: str, expected: type[ApiError], words: str
) -> None:
    with pytest.raises(ApiError) as caught:
        operators_kube()._request("patch", kind, raising(exc), namespace="ml", name="tiny")
    err = caught.value
    assert type(err) is expected
    assert words in err.message
    assert "tries again" in err.message or "retries" in err.message
    assert err.__cause__ is exc


def test_the_cli_client_leaves_api_errors_to_the_cli() -> None:
    exc = status_error(500, "boom")
    with pytest.raises(ApiException):
        operators_kube(explain_errors=False)._request("get", "Pod", raising(exc), namespace="ml")
    timeout = ReadTimeoutError(None, "/api", "Read timed out.")  # type: ignore[arg-type]
    with pytest.raises(ReadTimeoutError):
        operators_kube(explain_errors=False)._request("get", "Pod", raising(timeout))


def test_a_status_the_caller_handles_is_passed_through() -> None:
    exc = status_error(404, "not found")
    with pytest.raises(ApiException):
        operators_kube()._request("get", "Pod", raising(exc), passthrough=(404,), name="x")
    with pytest.raises(ApiError):
        operators_kube()._request("apply", "Pod", raising(exc), name="x", namespace="ml")


class Answer:
    def __init__(self, data: bytes) -> None:
        self.data = data


@pytest.mark.parametrize("data", [b"<html>proxy error</html>", b"[]", b"null"])
def test_an_answer_that_is_not_a_json_object_is_an_unavailable_api(data: bytes) -> None:
    with pytest.raises(ApiUnavailable) as caught:
        operators_kube()._request_json(
            "get", "Pod", lambda **_: Answer(data), namespace="ml", name="x"
        )
    assert "gave no usable answer to get Pod 'x'" in caught.value.message


class Resource:
    """A dynamic-client resource whose delete answers as a test says, recording its calls."""

    def __init__(self, exc: BaseException | None = None) -> None:
        self.exc = exc
        self.calls: list[dict[str, Any]] = []

    def delete(self, **kwargs: Any) -> None:
        self.calls.append(kwargs)
        if self.exc is not None:
            raise self.exc


def test_a_delete_names_the_uid_it_may_delete_and_a_replaced_object_is_left_alone() -> None:
    precondition = status_error(
        409,
        "Precondition failed: UID in precondition: 1111, UID in object meta: 2222",
    )
    resource = Resource(precondition)
    kube = operators_kube()
    kube._resource = lambda *_: resource  # type: ignore[method-assign]
    assert kube.delete("v1", "Service", "ml", "tiny", uid="1111") is False
    [call] = resource.calls
    assert call["body"]["preconditions"] == {"uid": "1111"}

    deleted = Resource()
    kube._resource = lambda *_: deleted  # type: ignore[method-assign]
    assert kube.delete("v1", "Service", "ml", "tiny", uid="1111") is True
    assert kube.delete("v1", "Service", "ml", "tiny") is True
    assert "body" not in deleted.calls[-1]


def test_a_409_on_a_delete_without_a_uid_is_an_error() -> None:
    kube = operators_kube()
    kube._resource = lambda *_: Resource(status_error(409, "conflict"))  # type: ignore[method-assign]
    with pytest.raises(ApiConflict):
        kube.delete("v1", "Service", "ml", "tiny")
