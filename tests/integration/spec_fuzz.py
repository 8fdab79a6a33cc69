"""Generated LLMDeployment specs for differential fuzzing: valid ones, ones at a bound, and
ones just past it, so that the pydantic models and the API server (the CRD's schema and
CEL) can be asked the same question about each.

Each spec is a valid base with one to three fields replaced by a value drawn from that
field's catalogue below. The catalogue leans on the edges: a bound and one past it, the
shapes a tenant could use to hurt the operator (format specs in templates, durations that
overflow, negative quantities), and values of the wrong type.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from typing import Any

Value = Callable[[random.Random], Any]


def _one_of(*values: Any) -> Value:
    return lambda rng: copy.deepcopy(rng.choice(values))


def _text(*lengths: int, alphabet: str = "abcdefghij") -> Value:
    return lambda rng: "".join(rng.choice(alphabet) for _ in range(rng.choice(lengths)))


_DURATIONS = _one_of(
    "0s",
    "1s",
    "999ms",
    "1.5s",
    "30s",
    "1m",
    "90s",
    "1h1h",
    "24h",
    "24h1ms",
    "25h",
    "720h",
    "721h",
    "8760h",
    "99999999999h",
    "0.001ms",
    "1",
    "1d",
    "-1s",
    "",
    5,
    None,
)
_QUANTITIES = _one_of(
    "1",
    "8",
    "500m",
    "1.5",
    "64Gi",
    "0",
    "+2",
    "-1",
    "1e3",
    "1e99",
    "1e308",
    "1e-3",
    "lots",
    "1Ki",
    "1ki",
    4,
    0,
    -1,
    1.5,
    2.0,
    2**53,
    2**53 + 1,
    True,
    "",
)
_TEMPLATES = _one_of(
    "sum(increase(req{{arm='{arm}'}}[{window}]))",
    "{arm}",
    "{{{arm}}}",
    "{arm:>600000000}",
    "{arm!r}",
    "{window:x}",
    "{job}",
    "{}",
    "}{",
    "{arm",
    "arm}",
    "{{",
    "max(t{{q='{quantile}'}}) * {model} + {name} + {namespace} + {revision}",
    "x" * 4096,
    "x" * 4097,
)
_NAMES = _text(1, 5, 63, 253, 254)

# Dotted paths under spec, and how to draw a value for each.
CATALOGUE: dict[str, Value] = {
    "model.name": _one_of("m", "tiny_llm", "a.b-c", "-x", "x" * 128, "x" * 129, "", "a b"),
    "model.repository": _one_of(
        "/models",
        "/m/",
        "pvc://claim",
        "pvc://claim/sub/dir",
        "pvc://c/../x",
        "/a/../b",
        "/a/..",
        "/..",
        "/a/..b",
        "pvc://c//x",
        "pvc://C",
        "pvc://c/",
        "/",
        "//x",
        "/a b",
        "ftp://x",
        "models",
        "/" + "x" * 1023,
        "/" + "x" * 1024,
    ),
    "model.loads": _one_of([], ["*"], ["tensorrt_llm", "a.b-c"], ["a b"], ["x" * 129], ["*"] * 65),
    "model.version": _one_of("1", "v2.0", "-1", "x" * 63, "x" * 64, "", "a_b"),
    "model.sizing": _one_of(
        {"parameters": 7e9, "dtype": "fp16"},
        {"parameters": 1e15, "dtype": "bf16"},
        {"parameters": 1.1e15, "dtype": "bf16"},
        {"parameters": 1e308, "dtype": "fp16"},
        {"parameters": 0, "dtype": "fp16"},
        {"parameters": -1, "dtype": "fp16"},
        {"parameters": 7e9, "dtype": "fp12"},
        {
            "parameters": 7e9,
            "dtype": "fp16",
            "layers": 32,
            "kvHeads": 8,
            "headDim": 128,
            "maxSequenceLength": 4096,
        },
        {"parameters": 7e9, "dtype": "fp16", "layers": 32},
        {
            "parameters": 7e9,
            "dtype": "fp16",
            "layers": 1025,
            "kvHeads": 8,
            "headDim": 128,
            "maxSequenceLength": 4096,
        },
    ),
    "triton.image": _one_of(
        "nvcr.io/nvidia/tritonserver:24.10-py3", "a", "a b", "x" * 512, "x" * 513, "", "img\t1"
    ),
    "triton.backend": _one_of("python", "vllm", "Py", "x" * 64, "x" * 65),
    "triton.maxBatchSize": _one_of(0, 1, 8, 4096, 4097, -1, "8", 2.5),
    "triton.dynamicBatching": _one_of(
        {},
        {"preferredBatchSizes": [4]},
        {"preferredBatchSizes": [16]},
        {"maxQueueDelayMicroseconds": 60_000_000},
        {"maxQueueDelayMicroseconds": 60_000_001},
        {"defaultTimeoutMicroseconds": 3_600_000_000},
        {"defaultTimeoutMicroseconds": 3_600_000_001},
        {"maxQueueSize": 10_000_000},
        {"maxQueueSize": 10_000_001},
        {"maxQueueSize": -1},
    ),
    "triton.instanceGroup": _one_of(
        {}, {"kind": "KIND_MODEL"}, {"kind": "KIND_GPU", "count": 2}, {"count": 0}, {"kind": "X"}
    ),
    "triton.parameters": _one_of(
        {}, {"a": "b"}, {"k": "x" * 1024}, {"k": "x" * 1025}, {f"k{i}": "v" for i in range(65)}
    ),
    "triton.args": _one_of([], ["--log-verbose=1"], ["x" * 1025], ["a"] * 65, [1]),
    "triton.modelWarmup": _one_of(
        [],
        [
            {
                "name": "w",
                "inputs": {"P": {"dataType": "TYPE_STRING", "dims": [1], "zeroData": True}},
            }
        ],
        [
            {
                "name": "w",
                "batchSize": 9,
                "inputs": {"P": {"dataType": "TYPE_FP32", "randomData": True}},
            }
        ],
        [{"name": "w", "inputs": {"P": {"dataType": "TYPE_FP32", "zeroData": False}}}],
        [{"name": "w", "inputs": {"P": {"dataType": "TYPE_FP32", "inputDataFile": "../x"}}}],
        [{"name": "w", "inputs": {}}],
        [{"name": "w", "count": 0, "inputs": {"P": {"dataType": "X", "zeroData": True}}}],
        [{"name": "w", "inputs": {"P": {"dataType": "TYPE_FP32", "dims": [-1], "zeroData": True}}}],
    ),
    "replicas": _one_of(1, 2, 0, -1, 1000, 1001, "2", 1.5, 2.0),
    "resources.cpu": _QUANTITIES,
    "resources.memory": _QUANTITIES,
    "resources.gpus": _one_of(0, 1, 16, 17, -1),
    "env": _one_of(
        [],
        [{"name": "A", "value": "1"}],
        [{"name": "A", "value": "x" * 32768}],
        [{"name": "A", "value": "x" * 32769}],
        [{"name": "A", "value": "1", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
        [{"name": "A", "valueFrom": {}}],
        [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
        [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "S", "key": "k"}}}],
        [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k/1"}}}],
        [{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "a.b", "key": "x.y"}}}],
        [{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        [
            {
                "name": "A",
                "valueFrom": {
                    "fieldRef": {"fieldPath": "metadata.name"},
                    "secretKeyRef": {"name": "s", "key": "k"},
                },
            }
        ],
        [{"name": "A", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}}],
        [
            {
                "name": "A",
                "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "-1"}},
            }
        ],
        [{"name": "1A", "value": "x"}],
        [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}],
    ),
    "nodeSelector": _one_of(
        {}, {"gpu": "h100"}, {"k": "x" * 63}, {"k": "x" * 64}, {f"k{i}": "v" for i in range(65)}
    ),
    "tolerations": _one_of(
        [],
        [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        [{"key": "nvidia.com/gpu", "operator": "Exists", "value": "x"}],
        [
            {
                "key": "k",
                "operator": "Equal",
                "value": "v",
                "effect": "NoExecute",
                "tolerationSeconds": 60,
            }
        ],
        [{"key": "k", "operator": "Equal", "value": "v", "tolerationSeconds": 60}],
        [{"operator": "Exists"}],
        [{"operator": "Equal", "value": "v"}],
        [{"key": "bad key", "operator": "Exists"}],
        [{"key": "k", "value": "v"}],
        [{"key": "k", "value": "x" * 64}],
        [{"key": "k", "effect": "Sometimes"}],
    ),
    "traffic.router": _one_of("replicas", "gatewayAPI", "istio", "nginx"),
    "traffic.gatewayAPI": _one_of(
        {"hostnames": ["chat.example.com"]},
        {"hostnames": ["a b"]},
        {"hostnames": ["x" * 254]},
        {"parentRefs": [{"name": "gw"}]},
        {"parentRefs": [{"name": ""}]},
    ),
    "traffic.istio": _one_of(
        {"hosts": ["chat"]}, {"hosts": []}, {"hosts": ["a b"]}, {"hosts": ["h"], "gateways": ["g"]}
    ),
    "canary.initialWeight": _one_of(1, 5, 100, 0, 101),
    "canary.stepWeight": _one_of(1, 10, 100, 0, 101),
    "canary.maxWeight": _one_of(1, 50, 100, 0, 101),
    "canary.initialStepInterval": _DURATIONS,
    "canary.stepInterval": _DURATIONS,
    "canary.analysis.interval": _DURATIONS,
    "canary.analysis.warmup": _DURATIONS,
    "canary.analysis.minSamples": _one_of(1, 200, 10_000_000, 10_000_001, 0),
    "canary.analysis.failureLimit": _one_of(1, 100, 101, 0),
    "canary.analysis.inconclusiveLimit": _one_of(1, 1000, 1001, 0),
    "canary.analysis.baseline": _one_of("fresh", "stable", "none"),
    "canary.analysis.metrics": _one_of("tritonVLLM", "triton", "istio", "vllm"),
    "canary.analysis.prometheus.address": _one_of(
        "http://prometheus.monitoring.svc:9090",
        "https://p.svc",
        "ftp://p",
        "http://a b",
        "http://" + "x" * 520,
    ),
    "canary.analysis.criteria": _one_of(
        [{"metric": "e2eLatency", "maxIncreasePercent": 20}],
        [{"metric": "ttft", "quantile": 0.99, "maxMilliseconds": 3_600_000}],
        [{"metric": "ttft", "quantile": 0.99, "maxMilliseconds": 3_600_001}],
        [{"metric": "ttft", "quantile": 1, "maxIncreasePercent": 20}],
        [{"metric": "tpot", "maxIncreasePercent": 10_001}],
        [{"metric": "errorRate", "maxPercent": 1}],
        [{"metric": "errorRate", "maxPercent": 101}],
        [{"metric": "errorRate", "maxPercent": 1, "quantile": 0.5}],
        [{"metric": "e2eLatency"}],
        [],
    ),
    "canary.analysis.queries.requests": _TEMPLATES,
    "canary.analysis.queries.errors": _TEMPLATES,
    "canary.analysis.queries.ttft": _TEMPLATES,
    "preflight.envDiff.allowedDifferences": _one_of(
        ["image"], [""], ["x" * 253], ["x" * 254], ["a"] * 65
    ),
    "preflight.gpuMemory.headroomPercent": _one_of(0, 10, 100, 101, -1, 12.5),
    "preflight.dependencies": _one_of(
        [],
        [{"name": "db", "url": "tcp://db.svc:5432"}],
        [{"name": "db", "url": "http://db.svc/health", "timeoutMilliseconds": 60_001}],
        [{"name": "db", "url": "tcp://db.svc"}],
        [{"name": "db", "url": "http://a", "expectStatus": 600}],
    ),
    "paused": _one_of(True, False, "yes"),
}


def base_spec() -> dict[str, Any]:
    return {"model": {"name": "tiny-llm", "repository": "/models"}, "replicas": 1}


def _set(spec: dict[str, Any], path: str, value: Any) -> None:
    node = spec
    *parents, leaf = path.split(".")
    for key in parents:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    if value is None:
        node.pop(leaf, None)
    else:
        node[leaf] = value


def generate(count: int, seed: int) -> list[tuple[str, dict[str, Any]]]:
    """``count`` specs, each with what was changed (for the failure message)."""
    rng = random.Random(seed)
    paths = sorted(CATALOGUE)
    out: list[tuple[str, dict[str, Any]]] = []
    for _ in range(count):
        spec = base_spec()
        changes = []
        for path in rng.sample(paths, rng.choice((1, 1, 2, 3))):
            value = CATALOGUE[path](rng)
            _set(spec, path, value)
            shown = repr(value)
            changes.append(f"{path}={shown[:60]}{'...' if len(shown) > 60 else ''}")
        out.append(("; ".join(changes), spec))
    return out
