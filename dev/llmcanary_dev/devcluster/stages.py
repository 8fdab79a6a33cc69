"""KWOK's stages, and who decides when a pod is Ready.

KWOK plays every kubelet of the dev cluster. With ``kwok`` readiness (the default) it
starts a pod and marks it Ready at once: what the operator's integration tests need.

With the local data plane (:mod:`llmcanary_dev.localstack`), the pods of LLMDeployments run
real ``tritonserver`` processes, and a pod must be Ready only while its Triton is, or
traffic would reach a model that has not loaded. In ``external`` readiness KWOK still
starts those pods (phase Running, init containers completed) but leaves
``Ready``/``ContainersReady`` False with the container waiting in ``ContainerCreating``,
and gives them **no pod IP**: the data plane assigns one (it reads the IPs in use from the
API server; KWOK keeps its pool in memory and, restarted while pods run, hands out IPs
that live pods hold) and sets readiness from Triton's own ``/v2/health/ready``. Every
other pod is handled as before.

In both modes the operator's repository reads (pods labelled
``llmcanary.io/repository-read``) are left out of KWOK's stages: the read-pods component
(:mod:`llmcanary_dev.devcluster.read_pods`) runs them for real.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, Literal

import yaml

from llmcanary.builders.meta import LABEL_DEPLOYMENT
from llmcanary.builders.revision_read import LABEL_READ

__all__ = ["DATA_PLANE_STAGE", "PodReadiness", "kwok_config"]

PodReadiness = Literal["kwok", "external"]

#: Pods that carry LABEL_DEPLOYMENT belong to an LLMDeployment.
_LABEL_KEY = f'.metadata.labels["{LABEL_DEPLOYMENT}"]'
DATA_PLANE_STAGE = "llmcanary-pod-started"
_READ_KEY = f'.metadata.labels["{LABEL_READ}"]'

_STARTED_TEMPLATE = """\
{{ $now := Now }}
conditions:
- lastTransitionTime: {{ $now | Quote }}
  status: "True"
  type: Initialized
- lastTransitionTime: {{ $now | Quote }}
  status: "True"
  type: PodScheduled
- lastTransitionTime: {{ $now | Quote }}
  status: "False"
  reason: ContainersNotReady
  message: "waiting for Triton to report ready (llmcanary local data plane)"
  type: ContainersReady
- lastTransitionTime: {{ $now | Quote }}
  status: "False"
  reason: ContainersNotReady
  message: "waiting for Triton to report ready (llmcanary local data plane)"
  type: Ready
containerStatuses:
{{ range .spec.containers }}
- image: {{ .image | Quote }}
  name: {{ .name | Quote }}
  ready: false
  started: false
  restartCount: 0
  state:
    waiting:
      reason: ContainerCreating
{{ end }}
initContainerStatuses:
{{ range .spec.initContainers }}
- image: {{ .image | Quote }}
  name: {{ .name | Quote }}
  ready: true
  restartCount: 0
  state:
    terminated:
      exitCode: 0
      finishedAt: {{ $now | Quote }}
      reason: Completed
      startedAt: {{ $now | Quote }}
{{ end }}
{{ $hostIPs := NodeIPsWith .spec.nodeName }}
{{ with $hostIPs }}
hostIP: {{ index . 0 | Quote }}
hostIPs:
{{ range . }}
- ip: {{ . | Quote }}
{{ end }}
{{ end }}
phase: Running
startTime: {{ $now | Quote }}
"""


def _expressions(stage: dict[str, Any]) -> list[dict[str, Any]]:
    selector = stage.setdefault("spec", {}).setdefault("selector", {})
    expressions: list[dict[str, Any]] = selector.setdefault("matchExpressions", [])
    return expressions


#: The stages that would start or complete a pod: the operator's repository reads are
#: left out of them, and run for real by the dev cluster's read-pods component.
_POD_RUNNING_STAGES = ("pod-ready", "pod-complete")


def kwok_config(stage_docs: Sequence[str], readiness: PodReadiness) -> str:
    """KWOK's ``--config`` file: the stages kwokctl would use, adjusted for ``readiness``,
    and without the operator's repository reads (``llmcanary_dev.devcluster.read_pods``)."""
    stages = [yaml.safe_load(doc) for doc in stage_docs]
    for stage in stages:
        if stage.get("metadata", {}).get("name") in _POD_RUNNING_STAGES:
            _expressions(stage).append({"key": _READ_KEY, "operator": "DoesNotExist"})
    if readiness == "external":
        ready = next((s for s in stages if s.get("metadata", {}).get("name") == "pod-ready"), None)
        if ready is None:
            raise ValueError("KWOK's stages have no 'pod-ready' stage to adjust")
        started = copy.deepcopy(ready)
        _expressions(ready).append({"key": _LABEL_KEY, "operator": "DoesNotExist"})
        started["metadata"]["name"] = DATA_PLANE_STAGE
        _expressions(started).append({"key": _LABEL_KEY, "operator": "Exists"})
        started["spec"]["next"] = {"statusTemplate": _STARTED_TEMPLATE}
        stages.append(started)
    return "\n---\n".join(yaml.safe_dump(s, sort_keys=False).strip() for s in stages) + "\n"
