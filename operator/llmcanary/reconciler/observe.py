"""What a pass reads of the cluster for the machine: workloads, why their pods are not
Ready (with a crashed Triton's whole log, read once per crash), and command annotations."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
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
    CrashedRun,
    WorkloadObservation,
    crashed_run,
    deployment_failure,
    pod_problem,
)

log = logging.getLogger(__name__)

#: How much of a crashed run's log is read: its end, where Triton's load errors and its
#: last words are (the model tables between them are a few dozen lines).
CRASH_LOG_LINES = 400
CRASH_LOG_BYTES = 256 * 1024


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


class CrashLogs:
    """The logs of crashed runs, read once each: a crash loop is observed every pass, and
    a run's log does not change once it has ended. Bounded (the oldest go first); one
    per reconciler, shared by its workers."""

    def __init__(self, kube: KubeApi, capacity: int = 512) -> None:
        self.kube = kube
        self.capacity = capacity
        self._logs: OrderedDict[tuple[str, str, str], str] = OrderedDict()
        self._guard = threading.Lock()

    def read(self, run: CrashedRun) -> str:
        """The run's log, "" when it cannot be read (gone, pods/log refused): the
        termination message then says what it can."""
        with self._guard:
            if run.key in self._logs:
                self._logs.move_to_end(run.key)
                return self._logs[run.key]
        try:
            text = self.kube.pod_log(
                run.namespace,
                run.pod,
                run.container,
                CRASH_LOG_BYTES,
                previous=run.previous,
                tail_lines=CRASH_LOG_LINES,
            )
        except Exception as exc:  # status falls back on the termination message
            log.info(
                "could not read a crashed container's log: %s",
                exc,
                extra={"pod": f"{run.namespace}/{run.pod}", "container": run.container},
            )
            text = None
        with self._guard:
            self._logs[run.key] = text or ""
            while len(self._logs) > self.capacity:
                self._logs.popitem(last=False)
        return text or ""


def observe_workload(
    kube: KubeApi, owner: Owner, revision: str, crash_logs: CrashLogs | None = None
) -> WorkloadObservation | None:
    """The revision's Deployment, why it cannot create or start its pods when its
    conditions say (``ReplicaFailure``, ``ProgressDeadlineExceeded``), and why a pod is not
    Ready when one says (from the crashed run's whole log, through ``crash_logs``, when a
    container crashed); None when absent or not ours (applying the plan reports the
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
        run = crashed_run(pods) if crash_logs is not None else None
        crash_log = crash_logs.read(run) if crash_logs is not None and run is not None else ""
        observed = replace(observed, problem=pod_problem(pods, crash_log))
    return observed
