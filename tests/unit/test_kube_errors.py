"""A 403 from the API server becomes advice that names the call, the RBAC verb and where
to grant it, with the API server's own words (which name the resource and its group)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from llmcanary.kube.client import Kube
from llmcanary.kube.errors import Forbidden, NamespaceTerminating

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


def test_other_api_errors_pass_through() -> None:
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
