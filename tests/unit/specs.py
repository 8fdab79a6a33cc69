"""Spec factories for unit tests (a module of its own: ``conftest`` is a name every test
directory has, so importing helpers from it picks whichever pytest loaded first)."""

import bisect
import math
from statistics import NormalDist
from typing import Any

from llmcanary.analysis.histogram import Histogram
from llmcanary.analysis.sequential import BLOCKS
from llmcanary.analysis.types import SIGNALS, ArmReading, LatencyReading
from llmcanary.api.spec import LLMDeploymentSpec

#: spec.triton with every field the config.pbtxt overlay sets, none at its default.
EVERY_TRITON_FIELD: dict[str, Any] = {
    "maxBatchSize": 8,
    "dynamicBatching": {
        "maxQueueDelayMicroseconds": 1500,
        "preferredBatchSizes": [4, 8],
        "defaultQueuePolicy": {"timeoutAction": "DELAY", "maxQueueSize": 32},
    },
    "instanceGroup": {"kind": "KIND_CPU", "count": 2},
    "decoupled": True,
    "parameters": {"max_tokens": "64", "quote": 'say "hi"'},
    "modelWarmup": [
        {
            "name": "warm",
            "batchSize": 2,
            "inputs": {"PROMPT": {"dataType": "TYPE_STRING", "dims": [1], "zeroData": True}},
        }
    ],
}


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
    """An arm of a source without histograms, whose latency signals (e2eLatency, ttft,
    tpot) read ``latency_ms`` at each of QUANTILES, unless one is given by name
    (``arm(ttft=300.0)``): over the window and in each of BLOCKS time blocks alike."""
    return ArmReading(
        requests=requests,
        errors=errors,
        latency={
            signal: LatencyReading(
                quantiles=dict.fromkeys(QUANTILES, value := signals.get(signal, latency_ms)),
                quantile_blocks=dict.fromkeys(QUANTILES, (value,) * BLOCKS),
                method="a test's number",
            )
            for signal in SIGNALS
        },
    )


# Bucket bounds 20% apart from 1 ms to about 2 hours, as tiny-llm publishes them.
LADDER_MS = tuple(round(1.2**i, 4) for i in range(86))


def lognormal_histogram(median_ms: float, sigma: float, n: int) -> Histogram:
    """``n`` requests spread exactly as a log-normal (median, sigma) would be, bucketed on
    LADDER_MS: a histogram whose true quantiles are known (``median * exp(sigma * z_q)``)."""
    unit = NormalDist()
    values = sorted(median_ms * math.exp(sigma * unit.inv_cdf((i + 0.5) / n)) for i in range(n))
    pairs: list[tuple[float, float]] = []
    index = 0
    for bound in LADDER_MS:
        index = bisect.bisect_right(values, bound, lo=index)
        pairs.append((bound, float(index)))
    pairs.append((math.inf, float(n)))
    return Histogram.from_buckets(pairs)


def measured_arm(
    median_ms: float = 100.0,
    requests: int = 1000,
    errors: int = 0,
    *,
    sigma: float = 0.5,
    pods: int = 1,
    **medians: float,
) -> ArmReading:
    """An arm with real histograms: each latency signal log-normal around ``median_ms``
    (or its own median, ``ttft=...``), its requests spread over ``pods`` pods."""
    per_pod = requests // pods
    return ArmReading(
        requests=float(requests - errors),
        errors=float(errors),
        latency={
            signal: LatencyReading(
                pods={
                    f"pod-{p}": lognormal_histogram(medians.get(signal, median_ms), sigma, per_pod)
                    for p in range(pods)
                }
            )
            for signal in SIGNALS
        },
    )
