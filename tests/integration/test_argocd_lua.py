"""Argo CD's view of an LLMDeployment: the health check and the actions in
argocd/resource_customizations, run by a Lua 5.1 interpreter over the objects the real
operator writes during a real canary (real API server, real Prometheus), and the actions'
patches applied to the cluster as Argo CD would apply them."""

from __future__ import annotations

import json
import signal
from typing import Any

import pytest
from argocd_lua import annotation_patch, discovery, health
from kubectl import Kubectl, OperatorProcess, wait_for
from metrics import ExporterFleet, PrometheusServer
from test_canary import (  # noqa: F401  (fixtures)
    NAME,
    exporters,
    manifest,
    revision,
    stable_v1,
)

pytestmark = pytest.mark.k8s


def live(kubectl: Kubectl, namespace: str) -> dict[str, Any]:
    obj = kubectl.get("llmd", NAME, namespace)
    assert obj is not None
    return obj


def act(kubectl: Kubectl, namespace: str, action: str) -> None:
    obj = live(kubectl, namespace)
    assert discovery(obj)[action], f"{action} is disabled on phase {obj['status'].get('phase')}"
    patch = annotation_patch(obj, action)
    kubectl.run("patch", "llmd", NAME, "-n", namespace, "--type=merge", "-p", json.dumps(patch))


def health_when(
    kubectl: Kubectl, namespace: str, phase: str, timeout: float = 60
) -> dict[str, str]:
    obj = wait_for(
        f"phase {phase}",
        lambda: (o := live(kubectl, namespace)).get("status", {}).get("phase") == phase and o,
        timeout=timeout,
    )
    return health(obj)


def test_argo_cd_health_and_actions_follow_a_real_rollout(
    kubectl: Kubectl,
    namespace: str,
    operator: OperatorProcess,
    stable_v1: dict[str, Any],  # noqa: F811
    prometheus: PrometheusServer,
    exporters: ExporterFleet,  # noqa: F811
) -> None:
    stable = live(kubectl, namespace)
    assert health(stable) == {"status": "Healthy", "message": "Stable"}
    actions = discovery(stable)
    assert not actions["promote"] and not actions["abort"] and not actions["retry"]
    assert actions["pause"] and not actions["resume"]

    # A spec change the operator has not observed yet is Progressing, whatever the phase:
    # the operator is stopped (SIGSTOP) while the change lands, so the lag is certain.
    doc = manifest("2", prometheus=prometheus.url)
    new = revision(doc)
    assert operator.proc is not None
    operator.proc.send_signal(signal.SIGSTOP)
    try:
        kubectl.apply(doc, namespace)
        lagging = live(kubectl, namespace)
    finally:
        operator.proc.send_signal(signal.SIGCONT)
    assert lagging["status"]["phase"] == "Stable"
    assert lagging["status"]["observedGeneration"] < lagging["metadata"]["generation"]
    assert health(lagging) == {
        "status": "Progressing",
        "message": "Waiting for the llmcanary operator to observe generation "
        + str(lagging["metadata"]["generation"]),
    }

    progressing = health_when(kubectl, namespace, "Progressing")
    assert progressing["status"] == "Progressing"
    assert f"canary {new} at" in progressing["message"]
    running = live(kubectl, namespace)
    assert discovery(running)["promote"] and discovery(running)["abort"]
    # Once checked, the message carries the headline criterion (canary / stable).
    checked = wait_for(
        "a check's headline",
        lambda: (o := live(kubectl, namespace))["status"].get("headline") and o,
        timeout=60,
    )
    assert checked["status"]["headline"].startswith("e2eLatency p95 ")
    assert checked["status"]["headline"] in health(checked)["message"]

    act(kubectl, namespace, "pause")
    assert health_when(kubectl, namespace, "Paused")["status"] == "Suspended"
    assert not discovery(live(kubectl, namespace))["pause"]
    act(kubectl, namespace, "resume")
    assert health_when(kubectl, namespace, "Progressing")["status"] == "Progressing"
    annotations = live(kubectl, namespace)["metadata"].get("annotations") or {}
    assert "llmcanary.io/paused" not in annotations and "llmcanary.io/resume" in annotations

    act(kubectl, namespace, "abort")
    degraded = health_when(kubectl, namespace, "RolledBack")
    assert degraded["status"] == "Degraded"
    assert "RolledBack" in degraded["message"]
    rolled_back = live(kubectl, namespace)
    assert discovery(rolled_back)["retry"] and not discovery(rolled_back)["abort"]

    act(kubectl, namespace, "retry")
    health_when(kubectl, namespace, "Progressing")
    act(kubectl, namespace, "promote")
    final = wait_for(
        "revision 2 promoted",
        lambda: (
            (o := live(kubectl, namespace))["status"].get("stableRevision") == new
            and o["status"].get("phase") == "Stable"
            and o
        ),
        timeout=90,
    )
    assert health(final)["status"] == "Healthy"
