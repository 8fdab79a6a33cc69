"""Names, labels and owner references shared by every child object."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

from llmcanary.api import API_VERSION, KIND

Track = Literal["stable", "canary", "baseline"]
TRACKS: tuple[Track, ...] = get_args(Track)

LABEL_DEPLOYMENT = "llmcanary.io/deployment"
LABEL_REVISION = "llmcanary.io/revision"
LABEL_TRACK = "llmcanary.io/track"
#: On an InferencePool's endpoint picker and its pods: the LLMDeployment it serves. Not
#: llmcanary.io/deployment, which names a revision's Triton pods (routing/inference_pool).
LABEL_PICKER = "llmcanary.io/endpoint-picker"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "llmcanary"
CONFIG_MOUNT = "/etc/llmcanary/model-config"


@dataclass(frozen=True)
class Owner:
    """The LLMDeployment that owns the children being built."""

    name: str
    namespace: str
    uid: str

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }

    def metadata(self, name: str, labels: dict[str, str]) -> dict[str, Any]:
        return {
            "name": name,
            "namespace": self.namespace,
            "labels": labels,
            "ownerReferences": [self.reference()],
        }


def deployment_name(owner: str, revision: str) -> str:
    return f"{owner}-{revision}"


# The suffix that makes a fresh baseline's pods a revision of their own: the same pod
# template as the stable revision, but not selected by NAME-stable.
BASELINE_SUFFIX = "-baseline"


def baseline_revision(stable_revision: str) -> str:
    """The revision label of a fresh baseline of ``stable_revision``."""
    return f"{stable_revision}{BASELINE_SUFFIX}"


def config_map_name(owner: str, revision: str) -> str:
    return f"{owner}-{revision}-config"


def service_name(owner: str, track: Track) -> str:
    return f"{owner}-{track}"


def common_labels(owner: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "triton",
        "app.kubernetes.io/instance": owner,
        LABEL_MANAGED_BY: MANAGER,
        LABEL_DEPLOYMENT: owner,
    }


def revision_selector(owner: str, revision: str) -> dict[str, str]:
    """What selects one revision's pods: never the track, which changes on promotion."""
    return {LABEL_DEPLOYMENT: owner, LABEL_REVISION: revision}


def pod_labels(owner: str, revision: str) -> dict[str, str]:
    """The labels a revision's pod template carries (the track is set on pods in place)."""
    return {**common_labels(owner), **revision_selector(owner, revision)}


def revision_labels(owner: str, revision: str, track: Track) -> dict[str, str]:
    return {**common_labels(owner), **revision_selector(owner, revision), LABEL_TRACK: track}
