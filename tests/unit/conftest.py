from typing import Any

import pytest

from llmcanary.api.spec import LLMDeploymentSpec
from llmcanary.builders import Owner


@pytest.fixture
def owner() -> Owner:
    return Owner(name="tiny", namespace="ml", uid="0000-uid")


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
