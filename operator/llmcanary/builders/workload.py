"""The Triton workload of one revision: its Deployment and its config ConfigMap."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from llmcanary.api.spec import LLMDeploymentSpec
from llmcanary.builders.meta import (
    CONFIG_MOUNT,
    LABEL_REVISION,
    Owner,
    Track,
    common_labels,
    config_map_name,
    deployment_name,
    pod_labels,
    revision_labels,
    revision_selector,
)
from llmcanary.builders.repository import RevisionPlan, revision_data
from llmcanary.builders.triton_config import render_config_pbtxt

HTTP_PORT = 8000
GRPC_PORT = 8001
METRICS_PORT = 8002
MODEL_REPOSITORY = "/models"
#: Where the pods stage instead when the repository itself is /models inside the image: the
#: staging volume mounted there would hide it.
OTHER_MODEL_REPOSITORY = "/llmcanary/models"
SOURCE_MOUNT = "/mnt/model-source"
# An LLM can take many minutes to load its weights; the startup probe allows 30.
STARTUP_BUDGET_SECONDS = 1800
STARTUP_PERIOD_SECONDS = 10

# The pods meet Pod Security "restricted" by default. The NGC tritonserver image runs as
# root unless told otherwise, and ships the user triton-server (uid and gid 1000) for
# running without it: the pods run as 1000:1000. Every volume the pod writes is an
# emptyDir (world-writable); the model source is mounted read-only, so it only has to be
# readable by uid or gid 1000 (fsGroup gives group 1000 to volumes that support it, and
# OnRootMismatch keeps the kubelet from walking a large volume on every start).
TRITON_UID = 1000
POD_SECURITY_CONTEXT: dict[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": TRITON_UID,
    "runAsGroup": TRITON_UID,
    "fsGroup": TRITON_UID,
    "fsGroupChangePolicy": "OnRootMismatch",
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY_CONTEXT: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
}
IMAGE_ALLOWLIST_SETTING = "LLMCANARY_ALLOWED_IMAGES"
#: A container that fails leaves the tail of its log (80 lines, 2 KiB at most) in its
#: status, where the operator reads why Triton would not start (a model that failed to
#: load, a Python backend's exception) and shows it in the LLMDeployment's status.
TERMINATION_MESSAGE_POLICY = "FallbackToLogsOnError"

# What the revision serves, on the Deployment's own metadata (not the pod template: a
# template change would replace running pods). Preflight's environment diff reads them.
ANNOTATION_MODEL_NAME = "llmcanary.io/model-name"
ANNOTATION_MODEL_VERSION = "llmcanary.io/model-version"
ANNOTATION_MODEL_REPOSITORY = "llmcanary.io/model-repository"

# Assemble /models from the read-only source and the revision's ConfigMap: the served
# model (MODEL_NAME), then each model the ConfigMap's "models" key names (an ensemble's
# steps), one per line. Each model's entries are linked, not copied, so staging costs no
# time whatever the model size; its config.pbtxt is the ConfigMap's (the served model's
# under "config.pbtxt", another's under "NAME.config.pbtxt"), or none when the repository
# has none (Triton completes it). A ConfigMap without "models" (made before repositories
# were read) stages the served model alone, as it always did.
STAGE_SCRIPT = """\
set -eu
root=$(dirname "$MODEL_SOURCE")
stage() {
  src="$root/$1"
  dst="$MODEL_REPOSITORY/$1"
  if [ ! -d "$src" ]; then
    echo "no model directory at $src: check spec.model.repository and .name" >&2
    exit 1
  fi
  mkdir -p "$dst"
  for entry in "$src"/*; do
    [ -e "$entry" ] || continue
    base=$(basename "$entry")
    [ "$base" = config.pbtxt ] && continue
    ln -sfn "$entry" "$dst/$base"
  done
  if [ -f "$CONFIG_DIR/$2" ]; then
    cp "$CONFIG_DIR/$2" "$dst/config.pbtxt"
  fi
}
stage "$MODEL_NAME" config.pbtxt
if [ -f "$CONFIG_DIR/models" ]; then
  while IFS= read -r name || [ -n "$name" ]; do
    [ -n "$name" ] && stage "$name" "$name.config.pbtxt"
  done < "$CONFIG_DIR/models"
fi
"""


def image_allowed(image: str, patterns: Sequence[str]) -> bool:
    """Whether ``image`` may run under the operator's image allowlist. Pure.

    ``patterns`` are fnmatch patterns, case-sensitive, matched against the whole image
    reference as written in the spec (registry, repository, tag and digest): no
    registry or tag is filled in, so ``nvcr.io/nvidia/tritonserver:*`` does not match
    ``tritonserver:24.10-py3``. ``*`` also spans ``/``. No patterns: every image.
    """
    if not patterns:
        return True
    image = image.strip()
    return bool(image) and any(fnmatchcase(image, pattern.strip()) for pattern in patterns)


def image_refusal(image: str, patterns: Sequence[str], what: str = "triton.image") -> str | None:
    """None if ``image`` is allowed, else one line saying why not and what to do. Pure."""
    if image_allowed(image, patterns):
        return None
    shown = image if len(image) <= 255 else image[:255] + "..."
    return (
        f"{what} {shown!r} is not in the operator's image allowlist"
        f" ({IMAGE_ALLOWLIST_SETTING}: {', '.join(patterns)}); use an allowed image,"
        " or ask the platform team to allow it"
    )


def build_config_map(
    owner: Owner, spec: LLMDeploymentSpec, revision: str, plan: RevisionPlan | None = None
) -> dict[str, Any]:
    """The revision's ConfigMap: what its pods stage (see :data:`STAGE_SCRIPT`).

    ``plan``: what the repository read decided (:func:`plan_revision`), persisted here
    once so that every pod of the revision, and the environment diff, see the same
    configuration. Without one, the served model's config rendered from the spec alone
    (``llmcanary render``, which cannot read a repository)."""
    data = (
        revision_data(plan, spec.model.name)
        if plan is not None
        else {"config.pbtxt": render_config_pbtxt(spec.model, spec.triton)}
    )
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": owner.metadata(
            config_map_name(owner.name, revision),
            common_labels(owner.name) | {LABEL_REVISION: revision},
        ),
        "data": data,
    }


def tritonserver_args(spec: LLMDeploymentSpec) -> list[str]:
    return [
        f"--model-repository={staging_path(spec)}",
        f"--http-port={HTTP_PORT}",
        f"--grpc-port={GRPC_PORT}",
        f"--metrics-port={METRICS_PORT}",
        # What the triton metrics preset reads: the request summary's quantiles, and the
        # first-response histogram (Triton 2.52+ publishes it only when asked; an older
        # Triton ignores the key).
        "--metrics-config=summary_latencies=true",
        "--metrics-config=histogram_latencies=true",
        "--exit-on-error=true",
        *spec.triton.args,
    ]


@dataclass(frozen=True)
class ModelSource:
    """Where a pod finds the model repository: its root inside the container, and the
    volume (a PersistentVolumeClaim, read-only) that holds it, if any."""

    root: str
    volumes: list[dict[str, Any]]
    mounts: list[dict[str, Any]]


def model_source(spec: LLMDeploymentSpec) -> ModelSource:
    """The repository as the stage container and the repository read see it."""
    repository = spec.model.repository
    if repository.startswith("pvc://"):
        claim, _, sub_path = repository.removeprefix("pvc://").partition("/")
        mount: dict[str, Any] = {
            "name": "model-source",
            "mountPath": SOURCE_MOUNT,
            "readOnly": True,
        }
        if sub_path:
            mount["subPath"] = sub_path
        volume = {
            "name": "model-source",
            "persistentVolumeClaim": {"claimName": claim, "readOnly": True},
        }
        return ModelSource(SOURCE_MOUNT, [volume], [mount])
    # An absolute path inside the image (weights baked into a custom Triton image).
    return ModelSource(repository.rstrip("/") or "/", [], [])


def placement(spec: LLMDeploymentSpec) -> dict[str, Any]:
    """The pod spec's ``nodeSelector`` and ``tolerations`` from the spec, where it sets
    them: the Triton pods and every pod that must run where they do (the repository read,
    the GPU probe)."""
    placed: dict[str, Any] = {}
    if spec.node_selector:
        placed["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        placed["tolerations"] = [
            t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in spec.tolerations
        ]
    return placed


def staging_path(spec: LLMDeploymentSpec) -> str:
    """Where the pods assemble the repository Triton loads: ``/models``, unless the source
    is ``/models`` (or under it) inside the image, which a volume there would hide."""
    if spec.model.repository.startswith("pvc://"):
        return MODEL_REPOSITORY  # the source is mounted at SOURCE_MOUNT
    root = model_source(spec).root
    if root == MODEL_REPOSITORY or root.startswith(f"{MODEL_REPOSITORY}/"):
        return OTHER_MODEL_REPOSITORY
    return MODEL_REPOSITORY


def _resources(spec: LLMDeploymentSpec) -> dict[str, Any]:
    # Requests equal limits: Guaranteed QoS, so the model gets what it was sized for.
    amounts: dict[str, Any] = {"cpu": spec.resources.cpu, "memory": spec.resources.memory}
    if spec.resources.gpus:
        amounts["nvidia.com/gpu"] = str(spec.resources.gpus)
    return {"requests": dict(amounts), "limits": dict(amounts)}


def _probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": 5,
    }


def model_annotations(spec: LLMDeploymentSpec) -> dict[str, str]:
    """The Deployment annotations naming the model a revision serves."""
    return {
        ANNOTATION_MODEL_NAME: spec.model.name,
        ANNOTATION_MODEL_VERSION: spec.model.version,
        ANNOTATION_MODEL_REPOSITORY: spec.model.repository,
    }


def build_deployment(
    owner: Owner, spec: LLMDeploymentSpec, revision: str, track: Track, replicas: int
) -> dict[str, Any]:
    """The Deployment ``NAME-REVISION`` running Triton for one revision."""
    labels = revision_labels(owner.name, revision, track)
    source = model_source(spec)
    env = [e.model_dump(mode="json", by_alias=True, exclude_none=True) for e in spec.env]
    staging = {"name": "models", "mountPath": staging_path(spec)}
    config_mount = {"name": "model-config", "mountPath": CONFIG_MOUNT, "readOnly": True}
    small = {"cpu": "100m", "memory": "128Mi"}
    pod_spec: dict[str, Any] = {
        "enableServiceLinks": False,
        # Triton never calls the Kubernetes API: no token in its pods.
        "automountServiceAccountToken": False,
        "securityContext": copy.deepcopy(POD_SECURITY_CONTEXT),
        "terminationGracePeriodSeconds": 60,
        "initContainers": [
            {
                "name": "stage-model",
                "image": spec.triton.image,
                "command": ["/bin/sh", "-c", STAGE_SCRIPT],
                "terminationMessagePolicy": TERMINATION_MESSAGE_POLICY,
                "securityContext": copy.deepcopy(CONTAINER_SECURITY_CONTEXT),
                "env": [
                    {"name": "MODEL_NAME", "value": spec.model.name},
                    {"name": "MODEL_SOURCE", "value": f"{source.root}/{spec.model.name}"},
                    {"name": "MODEL_REPOSITORY", "value": staging_path(spec)},
                    {"name": "CONFIG_DIR", "value": CONFIG_MOUNT},
                ],
                "resources": {"requests": dict(small), "limits": dict(small)},
                "volumeMounts": [staging, config_mount, *source.mounts],
            }
        ],
        "containers": [
            {
                "name": "triton",
                "image": spec.triton.image,
                "command": ["tritonserver"],
                "args": tritonserver_args(spec),
                "terminationMessagePolicy": TERMINATION_MESSAGE_POLICY,
                "securityContext": copy.deepcopy(CONTAINER_SECURITY_CONTEXT),
                "env": env,
                "ports": [
                    {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
                    {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
                    {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
                ],
                "resources": _resources(spec),
                "startupProbe": _probe(
                    "/v2/health/ready",
                    STARTUP_PERIOD_SECONDS,
                    STARTUP_BUDGET_SECONDS // STARTUP_PERIOD_SECONDS,
                ),
                "readinessProbe": _probe("/v2/health/ready", 5, 3),
                "livenessProbe": _probe("/v2/health/live", 10, 6),
                "volumeMounts": [
                    staging,
                    {"name": "dshm", "mountPath": "/dev/shm"},
                    *source.mounts,
                ],
            }
        ],
        "volumes": [
            {"name": "models", "emptyDir": {}},
            # The Python backend talks to its stub through shared memory.
            {"name": "dshm", "emptyDir": {"medium": "Memory"}},
            {
                "name": "model-config",
                "configMap": {"name": config_map_name(owner.name, revision)},
            },
            *source.volumes,
        ],
    }
    pod_spec.update(placement(spec))
    metadata = owner.metadata(deployment_name(owner.name, revision), labels)
    metadata["annotations"] = model_annotations(spec)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": revision_selector(owner.name, revision)},
            "progressDeadlineSeconds": STARTUP_BUDGET_SECONDS,
            # No track label in the template: promotion turns the canary's pods into the
            # stable ones by relabelling them in place, and a template change would
            # replace every pod (a second model load). The operator keeps pods' track.
            "template": {
                "metadata": {"labels": pod_labels(owner.name, revision)},
                "spec": pod_spec,
            },
        },
    }
