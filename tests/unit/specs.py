"""Spec factories for unit tests (a module of its own: ``conftest`` is a name every test
directory has, so importing helpers from it picks whichever pytest loaded first)."""

from typing import Any

from llmcanary.api.spec import LLMDeploymentSpec


def make_spec(**overrides: Any) -> LLMDeploymentSpec:
    base: dict[str, Any] = {
        "model": {"name": "tiny-llm", "repository": "pvc://models/repo"},
        "triton": {
            "maxBatchSize": 8,
            "dynamicBatching": {"maxQueueDelayMicroseconds": 2000, "preferredBatchSizes": [4, 8]},
        },
        "replicas": 2,
        "resources": {"gpus": 1, "cpu": "8", "memory": "64Gi"},
    }
    base.update(overrides)
    return LLMDeploymentSpec.model_validate(base)
