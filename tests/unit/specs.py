"""Spec factories for unit tests (a module of its own: ``conftest`` is a name every test
directory has, so importing helpers from it picks whichever pytest loaded first)."""

from typing import Any

from llmcanary.analysis.types import SIGNALS, ArmReading, LatencyReading
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


# The quantiles a test's criteria may ask for.
QUANTILES = (0.5, 0.9, 0.95, 0.99)


def arm(
    latency_ms: float | None = 100.0,
    requests: float | None = 1000.0,
    errors: float | None = 0.0,
    **signals: float | None,
) -> ArmReading:
    """An arm whose latency signals (e2eLatency, ttft, tpot) read ``latency_ms`` at each
    of QUANTILES, unless one is given by name: ``arm(ttft=300.0)``."""
    return ArmReading(
        requests=requests,
        errors=errors,
        latency={
            signal: LatencyReading(
                quantiles=dict.fromkeys(QUANTILES, signals.get(signal, latency_ms)),
                method="a test's number",
            )
            for signal in SIGNALS
        },
    )
