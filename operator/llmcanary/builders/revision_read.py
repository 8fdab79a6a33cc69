"""The Job that reads a new revision's model repository. PURE.

The operator cannot see a model repository (a PersistentVolumeClaim, or a path inside the
Triton image), so before a revision's first pod it runs one pod that can: the revision's
own Triton image, the repository mounted read-only where the revision's pods mount it, on
the nodes they run on, running :data:`~llmcanary.builders.repository.READ_SCRIPT`. Its
log is the listing; the operator plans the revision from it and keeps the plan in the
revision's ConfigMap (``reconciler/revision_config.py``).

The pod runs as the Triton pods do (Pod Security "restricted", uid 1000, no token), with
small fixed resources and no GPU. Its labels (:func:`read_labels`) let the operator's pod
watch see it finish, and match no Service's selector.
"""

from __future__ import annotations

import copy
import hashlib
from typing import Any

from llmcanary.api.spec import LLMDeploymentSpec
from llmcanary.builders.meta import LABEL_MANAGED_BY, MANAGER, Owner
from llmcanary.builders.repository import READ_SCRIPT
from llmcanary.builders.workload import (
    CONTAINER_SECURITY_CONTEXT,
    POD_SECURITY_CONTEXT,
    model_source,
    placement,
)

__all__ = [
    "JOB_UID",
    "LABEL_READ",
    "LABEL_READ_REVISION",
    "READ_CONTAINER",
    "READ_DEADLINE_SECONDS",
    "READ_TTL_SECONDS",
    "build_read_job",
    "read_job_name",
    "read_labels",
    "read_selector",
]

#: On the read's pod: the LLMDeployment it reads for (the operator's pod watch maps its
#: events to it), and the revision. Never ``llmcanary.io/deployment``: the replicas
#: router's Service selects on that, and a read pod must never receive traffic.
LABEL_READ = "llmcanary.io/repository-read"
LABEL_READ_REVISION = "llmcanary.io/repository-read-revision"
READ_CONTAINER = "read"
#: Pulling a Triton image onto a node for the first time can take most of this.
READ_DEADLINE_SECONDS = 1800
#: A finished read stays this long (``kubectl logs`` of a failed one); after a failed one,
#: the next pass reads again (a repository fixed meanwhile is read afresh).
READ_TTL_SECONDS = 600
_MAX_NAME = 63  # the Job's name is also a label value (job-name)


#: The label the Job controller puts on a Job's pods: its uid (a pod left by an earlier
#: Job of the same name never matches).
JOB_UID = "batch.kubernetes.io/controller-uid"


def read_job_name(owner: str, revision: str) -> str:
    """``OWNER-read-REVISION``; a long owner name is cut and a digest of it added, so that
    two LLMDeployments never share a Job."""
    suffix = f"-read-{revision}"
    if len(owner) + len(suffix) <= _MAX_NAME:
        return owner + suffix
    digest = hashlib.sha256(owner.encode()).hexdigest()[:6]
    return f"{owner[: _MAX_NAME - len(suffix) - 7].rstrip('-.')}-{digest}{suffix}"


def read_labels(owner: str, revision: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "llmcanary-repository-read",
        "app.kubernetes.io/instance": owner,
        LABEL_MANAGED_BY: MANAGER,
        LABEL_READ: owner,
        LABEL_READ_REVISION: revision,
    }


def read_selector(owner: str, revision: str, job_uid: str) -> str:
    """The label selector of the pod of the read Job ``job_uid`` of ``revision``."""
    return f"{LABEL_READ}={owner},{LABEL_READ_REVISION}={revision},{JOB_UID}={job_uid}"


def build_read_job(owner: Owner, spec: LLMDeploymentSpec, revision: str) -> dict[str, Any]:
    """The Job that lists ``spec.model.repository`` in ``spec.triton.image``."""
    source = model_source(spec)
    labels = read_labels(owner.name, revision)
    small = {"cpu": "100m", "memory": "128Mi"}
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": copy.deepcopy(POD_SECURITY_CONTEXT),
        "containers": [
            {
                "name": READ_CONTAINER,
                "image": spec.triton.image,
                "command": ["/bin/sh", "-c", READ_SCRIPT],
                "env": [{"name": "MODEL_REPOSITORY_ROOT", "value": source.root}],
                "resources": {"requests": dict(small), "limits": dict(small)},
                "securityContext": copy.deepcopy(CONTAINER_SECURITY_CONTEXT),
                "terminationMessagePolicy": "FallbackToLogsOnError",
                "volumeMounts": source.mounts,
            }
        ],
        "volumes": source.volumes,
        **placement(spec),
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": owner.metadata(read_job_name(owner.name, revision), labels),
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": READ_DEADLINE_SECONDS,
            "ttlSecondsAfterFinished": READ_TTL_SECONDS,
            "template": {
                "metadata": {"labels": labels},
                "spec": pod_spec,
            },
        },
    }
