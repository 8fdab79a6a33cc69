"""Faults against the real API server: what it refuses reaches status in the user's words,
the operator deletes only what it owns and never writes status from a stale read, and a
canary that loses its pods loses its weight, then its rollout.

The unit tests (tests/unit/test_kube_faults.py, test_rollout_faults.py) cover every code
path with a fake; these prove the assumptions those rest on about the API server: that it
honours a resourceVersion in a status merge patch and a UID precondition on delete, how it
words a refusal, and what a Deployment's conditions say under a ResourceQuota.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubectl import Kubectl, OperatorProcess, wait_for
from metrics import ExporterFleet, PrometheusServer
from test_canary import (  # noqa: F401  (fixtures)
    NAME,
    exporters,
    llmcanary,
    manifest,
    revision,
    roll_out,
    route_weight,
    stable_v1,
    status,
)

from llmcanary.api import API_VERSION, KIND
from llmcanary.api.spec import LLMDeploymentSpec
from llmcanary.builders import Owner
from llmcanary.builders.workload import build_deployment
from llmcanary.kube.client import Kube
from llmcanary.kube.errors import ApiConflict, ChildRejected
from llmcanary.rollout.revision import revision_of

pytestmark = pytest.mark.k8s


@pytest.fixture
def kube(kubectl: Kubectl) -> Kube:
    return Kube.connect(str(kubectl.kubeconfig))


def _minimal(name: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name},
        "spec": {"model": {"name": "tiny-llm", "repository": "/models"}},
    }


def test_a_stale_status_write_is_refused_by_the_api_server(
    kubectl: Kubectl, crd: None, namespace: str, kube: Kube
) -> None:
    kubectl.apply(_minimal("rv"), namespace)
    read = kube.get(API_VERSION, KIND, namespace, "rv")
    assert read is not None
    version = read["metadata"]["resourceVersion"]
    kube.patch_status(
        API_VERSION, KIND, namespace, "rv", {"message": "first"}, resource_version=version
    )
    with pytest.raises(ApiConflict) as refused:
        kube.patch_status(
            API_VERSION, KIND, namespace, "rv", {"message": "stale"}, resource_version=version
        )
    assert refused.value.code == 409
    stored = kube.get(API_VERSION, KIND, namespace, "rv")
    assert stored is not None and stored["status"]["message"] == "first"
    # A user's change (an annotation) after the read makes that read stale too.
    fresh = stored["metadata"]["resourceVersion"]
    kubectl.run("annotate", "llmd", "rv", "-n", namespace, "example.com/touched=yes")
    with pytest.raises(ApiConflict):
        kube.patch_status(
            API_VERSION, KIND, namespace, "rv", {"message": "late"}, resource_version=fresh
        )


def test_delete_with_a_uid_precondition_spares_a_replaced_object(
    kubectl: Kubectl, namespace: str, kube: Kube
) -> None:
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "x"},
        "spec": {"ports": [{"port": 80}]},
    }
    kubectl.apply(service, namespace)
    found = kube.get("v1", "Service", namespace, "x")
    assert found is not None
    other = "00000000-0000-0000-0000-000000000000"
    assert kube.delete("v1", "Service", namespace, "x", uid=other) is False
    assert kube.get("v1", "Service", namespace, "x") is not None
    assert kube.delete("v1", "Service", namespace, "x", uid=found["metadata"]["uid"]) is True
    assert kube.get("v1", "Service", namespace, "x") is None


def _deployment(namespace: str, edit: str) -> dict[str, Any]:
    """The operator's Deployment for a valid spec, then one field as the API server refuses
    it (what an older CRD, or a bug in a builder, could let through)."""
    spec = LLMDeploymentSpec.model_validate(
        {"model": {"name": "tiny-llm", "repository": "pvc://models/llm"}, "resources": {"gpus": 0}}
    )
    owner = Owner(name="bad", namespace=namespace, uid="00000000-0000-0000-0000-00000000000b")
    doc = build_deployment(owner, spec, revision_of(spec), "stable", 1)
    doc["metadata"].pop("ownerReferences", None)
    pod = doc["spec"]["template"]["spec"]
    triton = next(c for c in pod["containers"] if c["name"] == "triton")
    if edit == "toleration":
        pod["tolerations"] = [{"key": "k", "operator": "Exists", "value": "v"}]
    elif edit == "cpu":
        triton["resources"] = {"requests": {"cpu": "-1"}, "limits": {"cpu": "-1"}}
    elif edit == "subPath":
        mount = next(m for m in triton["volumeMounts"] if m.get("subPath") is not None)
        mount["subPath"] = "../x"
    return copy.deepcopy(doc)


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        ("toleration", "spec.tolerations"),
        ("cpu", "spec.resources"),
        ("subPath", "spec.model.repository"),
    ],
)
def test_children_the_api_server_refuses_are_reported_with_the_field_to_fix(
    namespace: str, kube: Kube, edit: str, field: str
) -> None:
    with pytest.raises(ChildRejected) as refused:
        kube.apply(_deployment(namespace, edit))
    assert refused.value.code == 422
    assert refused.value.message.startswith("the API server refused Deployment")
    assert f"fix {field}" in refused.value.message


@pytest.fixture
def canary_deployments_refused(kubectl: Kubectl, namespace: str) -> Iterator[None]:
    """A ValidatingAdmissionPolicy of the namespace's admin: no canary Deployments here."""
    name = f"no-canary-{namespace}"[:63]
    kubectl.apply(
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": name},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": ["apps"],
                            "apiVersions": ["v1"],
                            "operations": ["CREATE", "UPDATE"],
                            "resources": ["deployments"],
                        }
                    ]
                },
                "validations": [
                    {
                        "expression": "!has(object.metadata.labels)"
                        " || !('llmcanary.io/track' in object.metadata.labels)"
                        " || object.metadata.labels['llmcanary.io/track'] != 'canary'",
                        "message": "canary Deployments are not allowed in this namespace",
                        "reason": "Invalid",
                    }
                ],
            },
        },
        namespace,
    )
    kubectl.apply(
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": name},
            "spec": {
                "policyName": name,
                "validationActions": ["Deny"],
                "matchResources": {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
                },
            },
        },
        namespace,
    )
    # The API server enforces a new policy a moment later: until it does, the operator's
    # canary Deployment would be admitted (seen under load in a fresh-clone run).
    probe = build_deployment(
        Owner(name="probe", namespace=namespace, uid="00000000-0000-0000-0000-000000000000"),
        LLMDeploymentSpec.model_validate({"model": {"name": "m", "repository": "/models"}}),
        "r0",
        "canary",
        0,
    )
    wait_for(
        "the policy to refuse canary Deployments",
        lambda: "canary Deployments are not allowed"
        in kubectl.run(
            "apply", "--dry-run=server", "-n", namespace, "-f", "-",
            stdin=json.dumps(probe), check=False,
        ).stderr,
        timeout=30,
    )  # fmt: skip
    yield
    kubectl.run("delete", "validatingadmissionpolicybinding", name, check=False)
    kubectl.run("delete", "validatingadmissionpolicy", name, check=False)


def test_a_rejected_child_reaches_status_and_abort_still_works(
    kubectl: Kubectl,
    namespace: str,
    stable_v1: dict[str, Any],  # noqa: F811
    prometheus: PrometheusServer,
    canary_deployments_refused: None,
) -> None:
    new = roll_out(kubectl, namespace, manifest("2", prometheus=prometheus.url))
    st = wait_for(
        "the refusal in status",
        lambda: "refused Deployment" in (s := status(kubectl, namespace)).get("message", "") and s,
        timeout=90,
    )
    assert "canary Deployments are not allowed in this namespace" in st["message"]
    events = [e for e in kubectl.list("event", namespace) if e.get("reason") == "ChildRejected"]
    assert events and events[0]["type"] == "Warning"
    assert (route_weight(kubectl, namespace) or 0) == 0

    llmcanary(kubectl, "abort", NAME, "-n", namespace)
    done = wait_for(
        "the rollout aborted",
        lambda: (s := status(kubectl, namespace)).get("phase") == "RolledBack" and s,
        timeout=60,
    )
    assert done["history"][0]["outcome"] == "Aborted"
    assert done["history"][0]["revision"] == new
    assert route_weight(kubectl, namespace) == 0


def test_a_router_switch_spares_someone_elses_service(
    kubectl: Kubectl, crd: None, namespace: str, operator: OperatorProcess, kube: Kube
) -> None:
    kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "chat"},
            "spec": {"ports": [{"port": 80}]},
        },
        namespace,
    )
    theirs = kube.get("v1", "Service", namespace, "chat")
    assert theirs is not None
    doc = _minimal("chat")
    doc["spec"]["resources"] = {"gpus": 0}
    doc["spec"]["triton"] = {"instanceGroup": {"kind": "KIND_CPU"}}  # no GPU: CPU instances
    doc["spec"]["traffic"] = {"router": "replicas"}
    kubectl.apply(doc, namespace)
    wait_for(
        "the conflict in status",
        lambda: (
            "ChildConflict" in str(kubectl.list("event", namespace))
            or "not owned by LLMDeployment" in (status_of(kubectl, namespace, "chat"))
        ),
        timeout=60,
    )
    doc["spec"]["traffic"] = {"router": "gatewayAPI"}
    kubectl.apply(doc, namespace)
    wait_for(
        "the gatewayAPI router in place",
        lambda: kubectl.get("httproute", "chat", namespace) is not None,
        timeout=60,
    )
    after = kube.get("v1", "Service", namespace, "chat")
    assert after is not None and after["metadata"]["uid"] == theirs["metadata"]["uid"]


def status_of(kubectl: Kubectl, namespace: str, name: str) -> str:
    obj = kubectl.get("llmd", name, namespace) or {}
    return str((obj.get("status") or {}).get("message", ""))


def test_a_canary_that_loses_its_pods_loses_its_weight_then_rolls_back_at_the_deadline(
    kubectl: Kubectl,
    namespace: str,
    stable_v1: dict[str, Any],  # noqa: F811
    prometheus: PrometheusServer,
    exporters: ExporterFleet,  # noqa: F811
) -> None:
    doc = manifest("2", prometheus=prometheus.url)
    doc["spec"]["canary"]["readyDeadline"] = "1m"
    new = roll_out(kubectl, namespace, doc)
    wait_for("the canary at a weight", lambda: (route_weight(kubectl, namespace) or 0) > 0, 120)
    # No pod may be created any more; the canary's pods go. (A quota counts the pods not
    # yet ended: not the repository reads, which have.)
    pods = [
        p
        for p in kubectl.list("pod", namespace)
        if p["status"].get("phase") not in ("Succeeded", "Failed")
    ]
    kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": "no-more-pods"},
            "spec": {"hard": {"pods": str(len(pods) - 1)}},
        },
        namespace,
    )
    wait_for(
        "the quota counted",
        lambda: (
            (q := kubectl.get("resourcequota", "no-more-pods", namespace))
            and (q.get("status") or {}).get("used", {}).get("pods")
        ),
        timeout=30,
    )
    kubectl.run(
        "delete",
        "pod",
        "-n",
        namespace,
        "-l",
        f"llmcanary.io/revision={new}",
        "--grace-period=0",
        "--force",
    )
    gone = time.monotonic()
    lost = wait_for(
        "the weight taken from the canary",
        lambda: route_weight(kubectl, namespace) == 0 and status(kubectl, namespace),
        timeout=30,
    )
    print(f"weight 0 after {time.monotonic() - gone:.1f}s")
    assert lost["canaryRevision"] == new
    reasons = {e.get("reason") for e in kubectl.list("event", namespace)}
    assert "CanaryUnavailable" in reasons
    wait_for(
        "the quota's refusal in status",
        lambda: "exceeded quota" in status(kubectl, namespace).get("message", ""),
        timeout=60,
    )
    print(f"the quota's refusal in status after {time.monotonic() - gone:.1f}s")
    done = wait_for(
        "rolled back at readyDeadline",
        lambda: (s := status(kubectl, namespace)).get("phase") == "RolledBack" and s,
        timeout=150,
    )
    print(f"rolled back after {time.monotonic() - gone:.1f}s (readyDeadline 1m)")
    assert done["history"][0]["revision"] == new
    assert done["history"][0]["outcome"] == "RolledBack"
    assert "exceeded quota" in done["history"][0]["reason"]
    assert route_weight(kubectl, namespace) == 0
    assert revision(stable_v1) == done["stableRevision"]


def test_triton_pods_are_admitted_by_a_namespace_that_enforces_pod_security_restricted(
    kubectl: Kubectl, crd: None, namespace: str, operator: OperatorProcess
) -> None:
    """The API server's PodSecurity admission, enforcing "restricted": the operator's pods
    pass as they are (no token, non-root, RuntimeDefault seccomp, nothing escalated)."""
    kubectl.run("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    # Enforced indeed: a pod with no securityContext is refused.
    plain = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "plain"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }
    refused_pod = kubectl.apply(plain, namespace, check=False)
    assert refused_pod.returncode != 0 and "violates PodSecurity" in refused_pod.stderr
    doc = _minimal("tight")
    doc["spec"]["resources"] = {"gpus": 0}
    doc["spec"]["triton"] = {"instanceGroup": {"kind": "KIND_CPU"}}  # no GPU: CPU instances
    doc["spec"]["replicas"] = 2
    kubectl.apply(doc, namespace)
    wait_for("phase Stable", lambda: status_of_phase(kubectl, namespace, "tight") == "Stable", 90)
    pods = kubectl.list("pod", namespace, "llmcanary.io/deployment=tight,llmcanary.io/revision")
    assert len(pods) == 2
    refused = [
        e["message"]
        for e in kubectl.list("event", namespace)
        if e.get("reason") == "FailedCreate" and "violates PodSecurity" in e.get("message", "")
    ]
    assert refused == []


def status_of_phase(kubectl: Kubectl, namespace: str, name: str) -> str | None:
    obj = kubectl.get("llmd", name, namespace) or {}
    phase = (obj.get("status") or {}).get("phase")
    return str(phase) if phase else None
