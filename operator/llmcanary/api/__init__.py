"""The LLMDeployment API: pydantic models that are the source of the CRD."""

from llmcanary.api.spec import LLMDeploymentSpec
from llmcanary.api.status import Condition, LLMDeploymentStatus

GROUP = "llmcanary.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "LLMDeployment"
PLURAL = "llmdeployments"
SINGULAR = "llmdeployment"
SHORT_NAMES = ("llmd",)

# Manual control that survives GitOps (Argo CD leaves annotations it does not own alone).
# Each request acts once per distinct value: `kubectl llmcanary promote` writes a timestamp.
ANNOTATION_PROMOTE = f"{GROUP}/promote"  # skip the remaining steps and promote
ANNOTATION_ABORT = f"{GROUP}/abort"  # roll the canary back now
ANNOTATION_RETRY = f"{GROUP}/retry"  # try a rolled-back revision again
ANNOTATION_RESUME = f"{GROUP}/resume"  # continue a rollout the operator paused
ANNOTATION_PAUSED = f"{GROUP}/paused"  # "true": hold the rollout (like spec.paused)
REQUEST_ANNOTATIONS = (ANNOTATION_PROMOTE, ANNOTATION_ABORT, ANNOTATION_RETRY, ANNOTATION_RESUME)

__all__ = [
    "ANNOTATION_ABORT",
    "ANNOTATION_PAUSED",
    "ANNOTATION_PROMOTE",
    "ANNOTATION_RESUME",
    "ANNOTATION_RETRY",
    "API_VERSION",
    "GROUP",
    "KIND",
    "PLURAL",
    "REQUEST_ANNOTATIONS",
    "SHORT_NAMES",
    "SINGULAR",
    "VERSION",
    "Condition",
    "LLMDeploymentSpec",
    "LLMDeploymentStatus",
]
