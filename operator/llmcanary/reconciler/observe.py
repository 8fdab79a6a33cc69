"""What a pass reads of the cluster for the machine: workloads and command annotations."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from llmcanary.api import ANNOTATION_PAUSED, REQUEST_ANNOTATIONS
from llmcanary.builders import Owner
from llmcanary.builders.meta import LABEL_DEPLOYMENT, LABEL_REVISION, deployment_name
from llmcanary.kube.children import owned_by
from llmcanary.kube.client import KubeApi
from llmcanary.rollout.observation import (
    Commands,
    WorkloadObservation,
    deployment_failure,
    pod_problem,
)


def workload_of(deployment: Mapping[str, Any] | None, revision: str) -> WorkloadObservation | None:
    if deployment is None:
        return None
    status = deployment.get("status") or {}
    return WorkloadObservation(
        revision=revision,
        desired=int(deployment.get("spec", {}).get("replicas") or 0),
        ready=int(status.get("readyReplicas") or 0),
        updated=int(status.get("updatedReplicas") or 0),
        failure=deployment_failure(deployment),
    )


def commands_of(meta: Mapping[str, Any]) -> Commands:
    annotations = meta.get("annotations") or {}
    return Commands(
        values={k: str(annotations[k]) for k in REQUEST_ANNOTATIONS if k in annotations},
        paused=str(annotations.get(ANNOTATION_PAUSED, "")).lower() == "true",
    )


def observe_workload(kube: KubeApi, owner: Owner, revision: str) -> WorkloadObservation | None:
    """The revision's Deployment, why it cannot create or start its pods when its
    conditions say (``ReplicaFailure``, ``ProgressDeadlineExceeded``), and why a pod is not
    Ready when one says; None when absent or not ours (applying the plan reports the
    conflict)."""
    name = deployment_name(owner.name, revision)
    deployment = kube.get("apps/v1", "Deployment", owner.namespace, name)
    if deployment is not None and not owned_by(deployment, owner.uid):
        return None
    observed = workload_of(deployment, revision)
    if observed is not None and observed.ready < observed.desired:
        pods = kube.list(
            "v1",
            "Pod",
            owner.namespace,
            f"{LABEL_DEPLOYMENT}={owner.name},{LABEL_REVISION}={revision}",
        )
        observed = replace(observed, problem=pod_problem(pods))
    return observed
