"""What a pass reads of the cluster for the machine: workloads, why their pods are not
Ready (with a crashed Triton's whole log, read once per crash), and command annotations."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from llmcanary.api import ANNOTATION_PAUSED, REQUEST_ANNOTATIONS
from llmcanary.builders import Owner
from llmcanary.builders.meta import LABEL_DEPLOYMENT, LABEL_REVISION, deployment_name
from llmcanary.kube.children import owned_by
from llmcanary.kube.client import KubeApi
from llmcanary.kube.errors import Forbidden
from llmcanary.rollout.observation import (
    Commands,
    CrashedRun,
    WorkloadObservation,
    crashed_run,
    deployment_failure,
    pod_problem,
    triton_errors,
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
    """Triton's errors in the logs of crashed runs, read once each: a crash loop is
    observed every pass, and a run's log does not change once it has ended. What is kept
    is the errors (at most MAX_REASON characters), not the log; bounded, the oldest go
    first. A read that failed for a passing reason is tried again after RETRY_S; one the
    API refuses (pods/log not granted) or a pod that is gone is not. One per reconciler,
    shared by its workers."""

    RETRY_S = 60.0

    def __init__(
        self,
        kube: KubeApi,
        capacity: int = 512,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kube = kube
        self.capacity = capacity
        self.monotonic = monotonic
        # run -> (its errors, when to read again: None never)
        self._errors: OrderedDict[tuple[str, str, str], tuple[str, float | None]] = OrderedDict()
        self._guard = threading.Lock()

    def errors(self, run: CrashedRun) -> str:
        """Triton's errors in the run's log; "" when it cannot be read or has none: the
        termination message then says what it can."""
        now = self.monotonic()
        with self._guard:
            known = self._errors.get(run.key)
            if known is not None and (known[1] is None or now < known[1]):
                self._errors.move_to_end(run.key)
                return known[0]
        retry_at: float | None = None
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
            if not isinstance(exc, Forbidden):
                retry_at = now + self.RETRY_S
            log.info(
                "could not read a crashed container's log: %s",
                exc,
                extra={"pod": f"{run.namespace}/{run.pod}", "container": run.container},
            )
            text = None
        found = triton_errors(text or "")
        with self._guard:
            self._errors[run.key] = (found, retry_at)
            self._errors.move_to_end(run.key)
            while len(self._errors) > self.capacity:
                self._errors.popitem(last=False)
        return found


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
        errors = ""
        if crash_logs is not None and (run := crashed_run(pods)) is not None:
            errors = crash_logs.errors(run)
        observed = replace(observed, problem=pod_problem(pods, errors))
    return observed
