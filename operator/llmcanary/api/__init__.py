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

__all__ = [
    "API_VERSION",
    "GROUP",
    "KIND",
    "PLURAL",
    "SHORT_NAMES",
    "SINGULAR",
    "VERSION",
    "Condition",
    "LLMDeploymentSpec",
    "LLMDeploymentStatus",
]
