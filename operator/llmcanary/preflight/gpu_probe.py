"""The opt-in GPU memory probe: a Job on the target GPU node type reads ``mem_get_info()``.

GPU Feature Discovery's label says what a GPU has; the probe says what a pod gets on it
(after the driver's and ECC's share, or a MIG slice). When
``spec.preflight.gpuMemory.probe.enabled``, the reconciler calls :func:`run_probe` each tick
until it is ``done``, then folds the reading into the fit with :func:`with_probe`.

- Builders (PURE): :func:`build_probe_config_map` ships ``scripts/gpu_memory_probe.py``,
  package data beside this module read as text by :func:`probe_script` (not a module of
  ``llmcanary``: torch never enters its import path), and :func:`build_probe_job` runs it on
  ``nvidia.com/gpu.product=<node type>`` with the pod's GPUs, owned by the LLMDeployment,
  bounded by ``activeDeadlineSeconds`` and removed by ``ttlSecondsAfterFinished``.
  :func:`parse_probe_log` reads its JSON lines; :func:`with_probe` judges the reading.
- I/O: :func:`run_probe` creates both, and once the Job has finished reads the pod's log.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

from llmcanary.api.spec import LLMDeploymentSpec
from llmcanary.api.status import GpuFit
from llmcanary.builders.meta import LABEL_MANAGED_BY, LABEL_REVISION, MANAGER, Owner
from llmcanary.builders.workload import CONTAINER_SECURITY_CONTEXT, TRITON_UID, placement
from llmcanary.kube.children import ensure
from llmcanary.kube.client import Kube
from llmcanary.kube.errors import Forbidden
from llmcanary.kube.jobs import job_failure, job_succeeded, pod_state
from llmcanary.preflight.gpu import GIB, LABEL_PRODUCT, RESOURCE_GPU

__all__ = [
    "LABEL_PROBE",
    "PROBE_DEADLINE_SECONDS",
    "PROBE_TTL_SECONDS",
    "ProbeOutcome",
    "ProbeReading",
    "build_probe_config_map",
    "build_probe_job",
    "parse_probe_log",
    "probe_config_map_name",
    "probe_image",
    "probe_job_name",
    "probe_script",
    "run_probe",
    "with_probe",
]

#: Selects the probe's pod; the value is the Job's name. Not ``llmcanary.io/deployment``,
#: which the Services select on: the probe must never receive traffic.
LABEL_PROBE = "llmcanary.io/gpu-probe"
#: The default probe image is large: pulling it may take most of this.
PROBE_DEADLINE_SECONDS = 900
PROBE_TTL_SECONDS = 3600
SCRIPT_KEY = "gpu_memory_probe.py"
MOUNT = "/opt/llmcanary-probe"
CONTAINER = "probe"
_MAX_NAME = 63  # the Job's name is also a label value (job-name)

#: Where the script lies in this package: a directory without ``__init__.py``, so the
#: script is package data (pyproject.toml's package-data ships it), never a module.
SCRIPT_RESOURCE = f"scripts/{SCRIPT_KEY}"
#: The Job's annotation naming the GPU node type it probes.
ANNOTATION_NODE_TYPE = "llmcanary.io/gpu-node-type"


@functools.cache
def probe_script() -> str:
    """The probe script's text, as the ConfigMap ships it (read once, at first use)."""
    script = resources.files("llmcanary.preflight").joinpath(SCRIPT_RESOURCE)
    return script.read_text(encoding="utf-8")


# --- builders (pure) -------------------------------------------------------------------


def probe_image(spec: LLMDeploymentSpec, default_image: str) -> str:
    """``spec.preflight.gpuMemory.probe.image``, else the operator's ``gpu_probe_image``."""
    return spec.preflight.gpu_memory.probe.image or default_image


def _bounded(base: str, digest: str) -> str:
    name = f"{base}-{digest}"
    if len(name) <= _MAX_NAME:
        return name
    return f"{base[: _MAX_NAME - len(digest) - 1].rstrip('-.')}-{digest}"


def probe_job_name(owner: str, revision: str, node_type: str, image: str) -> str:
    """One Job per revision, node type and image: a Job's pod template cannot change."""
    digest = hashlib.sha256(f"{revision}\0{node_type}\0{image}".encode()).hexdigest()[:8]
    return _bounded(f"{owner}-gpu-probe", digest)


def probe_config_map_name(owner: str) -> str:
    return f"{owner}-gpu-probe"


def _labels(owner: Owner) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "llmcanary-gpu-probe",
        "app.kubernetes.io/instance": owner.name,
        LABEL_MANAGED_BY: MANAGER,
    }


def build_probe_config_map(owner: Owner) -> dict[str, Any]:
    """The probe script, mounted into the Job's pod."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": owner.metadata(probe_config_map_name(owner.name), _labels(owner)),
        "data": {SCRIPT_KEY: probe_script()},
    }


def build_probe_job(
    owner: Owner, spec: LLMDeploymentSpec, revision: str, node_type: str, default_image: str
) -> dict[str, Any]:
    """A Job that runs the probe once on a ``node_type`` node with the pod's GPUs."""
    image = probe_image(spec, default_image)
    name = probe_job_name(owner.name, revision, node_type, image)
    gpus = str(spec.resources.gpus)
    labels = _labels(owner)
    pod_labels = {**labels, LABEL_PROBE: name}
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        # As the Triton pods run: a namespace under Pod Security "restricted" takes it.
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": TRITON_UID,
            "runAsGroup": TRITON_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "nodeSelector": {**spec.node_selector, LABEL_PRODUCT: node_type},
        "containers": [
            {
                "name": CONTAINER,
                "image": image,
                "command": ["python3", f"{MOUNT}/{SCRIPT_KEY}"],
                # No home directory for uid 1000 in most images: caches go to /tmp.
                "env": [{"name": "HOME", "value": "/tmp"}],
                "resources": {
                    "requests": {"cpu": "500m", "memory": "2Gi", RESOURCE_GPU: gpus},
                    "limits": {"memory": "4Gi", RESOURCE_GPU: gpus},
                },
                "volumeMounts": [{"name": "probe", "mountPath": MOUNT, "readOnly": True}],
                "securityContext": copy.deepcopy(CONTAINER_SECURITY_CONTEXT),
            }
        ],
        "volumes": [{"name": "probe", "configMap": {"name": probe_config_map_name(owner.name)}}],
    }
    if spec.tolerations:
        pod_spec["tolerations"] = placement(spec)["tolerations"]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            **owner.metadata(name, {**labels, LABEL_REVISION: revision}),
            "annotations": {ANNOTATION_NODE_TYPE: node_type},
        },
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": PROBE_DEADLINE_SECONDS,
            "ttlSecondsAfterFinished": PROBE_TTL_SECONDS,
            "template": {"metadata": {"labels": pod_labels}, "spec": pod_spec},
        },
    }


@dataclass(frozen=True)
class ProbeReading:
    """What the probe printed: one entry per GPU the pod got, or an error."""

    devices: tuple[dict[str, Any], ...] = ()
    error: str | None = None

    @property
    def free_bytes(self) -> int:
        return sum(int(d["free_bytes"]) for d in self.devices)

    @property
    def total_bytes(self) -> int:
        return sum(int(d["total_bytes"]) for d in self.devices)


def parse_probe_log(text: str) -> ProbeReading:
    """The probe's JSON lines; other lines (an image's banner) are skipped."""
    devices: list[dict[str, Any]] = []
    for line in text.splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if not isinstance(item, dict):
            continue
        if "error" in item:
            return ProbeReading(tuple(devices), str(item["error"]))
        if isinstance(item.get("free_bytes"), int) and isinstance(item.get("total_bytes"), int):
            devices.append(item)
    if not devices:
        return ProbeReading(error="the probe printed no GPU reading")
    return ProbeReading(tuple(devices))


def with_probe(fit: GpuFit, probed_free_gib: float | None, message: str) -> GpuFit:
    """The fit with the probe's reading: fails when the measured free memory is too small."""
    if probed_free_gib is None:
        return fit.model_copy(update={"message": f"{fit.message}; probe: {message}"})
    update: dict[str, Any] = {"probed_free_gi_b": round(probed_free_gib, 2)}
    required = fit.required_gi_b
    if required is not None and fit.fits and probed_free_gib < required:
        update["fits"] = False
        update["message"] = (
            f"the probe on {fit.node_type} measured {probed_free_gib:.1f} GiB free per pod,"
            f" less than the {required:.1f} GiB needed: set resources.gpus higher, or use a"
            " smaller dtype"
        )
    else:
        update["message"] = f"{fit.message}; probe: {message}"
    return fit.model_copy(update=update)


# --- running it (I/O) ------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeOutcome:
    """``done`` False: the Job still runs, call again next tick."""

    done: bool
    probed_free_gib: float | None = None
    message: str = ""
    job: str = ""


def run_probe(
    kube: Kube,
    owner: Owner,
    spec: LLMDeploymentSpec,
    revision: str,
    node_type: str,
    default_image: str,
) -> ProbeOutcome:
    """Create the probe (once), then report: still running, the reading, or why it failed."""
    config_map = build_probe_config_map(owner)
    job = build_probe_job(owner, spec, revision, node_type, default_image)
    name = job["metadata"]["name"]
    try:
        ensure(kube, config_map)
        ensure(kube, job)
        current = kube.get("batch/v1", "Job", owner.namespace, name) or job
        pods = kube.list("v1", "Pod", owner.namespace, f"{LABEL_PROBE}={name}")
    except Forbidden as exc:
        return ProbeOutcome(
            True,
            message=f"GPU probe not run: {exc.message} (it needs create/get on jobs and"
            " configmaps and list on pods, get on pods/log)",
            job=name,
        )
    where = f"Job {name} on {node_type}"
    failure = job_failure(current)
    succeeded = job_succeeded(current)
    if not succeeded and failure is None:
        return ProbeOutcome(False, message=f"{where}: running, {pod_state(pods)}", job=name)
    log_text = ""
    if pods:
        try:
            log_text = kube.pod_log(owner.namespace, _name(pods[0]), CONTAINER) or ""
        except Forbidden as exc:
            return ProbeOutcome(True, message=f"{where}: {exc.message}", job=name)
    reading = parse_probe_log(log_text)
    if failure is not None or reading.error is not None:
        why = reading.error if log_text else (failure or reading.error)
        return ProbeOutcome(True, message=f"{where} failed: {why}", job=name)
    free = reading.free_bytes / GIB
    return ProbeOutcome(
        True,
        probed_free_gib=free,
        message=f"{where}: {free:.1f} GiB free of {reading.total_bytes / GIB:.1f} GiB on"
        f" {len(reading.devices)} GPU(s)",
        job=name,
    )


def _name(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))
