"""The real API server rejects bad LLMDeployments at `kubectl apply`, naming the field."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml
from kubectl import ROOT, Kubectl

from llmcanary.api.crd import without_empty_collections
from llmcanary.api.spec import LLMDeploymentSpec

pytestmark = pytest.mark.k8s


def manifest(name: str = "bad", **spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "apiVersion": "llmcanary.io/v1alpha1",
        "kind": "LLMDeployment",
        "metadata": {"name": name},
        "spec": {"model": {"name": "tiny-llm", "repository": "/models"}},
    }
    for key, value in spec.items():
        base["spec"][key] = value
    return base


def _gateway_metrics_behind_istio() -> dict[str, Any]:
    doc = _with("traffic", {"router": "istio", "istio": {"hosts": ["tiny"]}})
    doc["spec"].setdefault("canary", {}).setdefault("analysis", {})["metrics"] = "traefik"
    return doc


def _with(path: str, value: Any) -> dict[str, Any]:
    """A valid manifest with one field (dotted path under spec) replaced."""
    doc = manifest()
    node = doc["spec"]
    *parents, leaf = path.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    if value is _DELETE:
        node.pop(leaf, None)
    else:
        node[leaf] = value
    return doc


_DELETE = object()

# (what is wrong, manifest, the field path and words the error must contain)
INVALID: list[tuple[str, dict[str, Any], list[str]]] = [
    (
        "weight below range",
        _with("canary.initialWeight", 0),
        ["spec.canary.initialWeight", "greater than or equal to 1"],
    ),
    (
        "weight above range",
        _with("canary.stepWeight", 150),
        ["spec.canary.stepWeight", "less than or equal to 100"],
    ),
    (
        "initialWeight above maxWeight",
        _with("canary", {"initialWeight": 60, "maxWeight": 50}),
        ["spec.canary.initialWeight", "initialWeight must not exceed maxWeight"],
    ),
    (
        "unknown router",
        _with("traffic.router", "nginx"),
        ["spec.traffic.router", 'Unsupported value: "nginx"'],
    ),
    ("negative replicas", _with("replicas", -1), ["spec.replicas", "greater than or equal to 1"]),
    (
        "bad duration",
        _with("canary.stepInterval", "thirty minutes"),
        ["spec.canary.stepInterval", "should match"],
    ),
    ("missing model name", _with("model.name", _DELETE), ["spec.model.name", "Required value"]),
    (
        "step shorter than the analysis interval",
        _with("canary", {"stepInterval": "30s", "analysis": {"interval": "1m"}}),
        ["spec.canary.stepInterval", "stepInterval must be at least analysis.interval"],
    ),
    (
        "preferred batch above maxBatchSize",
        _with("triton", {"maxBatchSize": 4, "dynamicBatching": {"preferredBatchSizes": [8]}}),
        ["spec.triton.dynamicBatching.preferredBatchSizes", "between 1 and maxBatchSize"],
    ),
    (
        "vllm backend with a batch size",
        _with("triton", {"backend": "vllm", "maxBatchSize": 8}),
        ["spec.triton.maxBatchSize", "the vllm backend batches by itself"],
    ),
    (
        "vllm backend with dynamic batching",
        _with("triton", {"backend": "vllm", "dynamicBatching": {}}),
        ["spec.triton.dynamicBatching", "remove dynamicBatching"],
    ),
    (
        "warm-up batch larger than the model takes",
        _with(
            "triton",
            {
                "maxBatchSize": 0,
                "modelWarmup": [
                    {
                        "name": "w",
                        "batchSize": 4,
                        "inputs": {"PROMPT": {"dataType": "TYPE_STRING", "zeroData": True}},
                    }
                ],
            },
        ),
        ["spec.triton.modelWarmup", "at most maxBatchSize (1 when maxBatchSize is 0)"],
    ),
    (
        "warm-up input with two data sources",
        _with(
            "triton",
            {
                "modelWarmup": [
                    {
                        "name": "w",
                        "inputs": {
                            "PROMPT": {
                                "dataType": "TYPE_STRING",
                                "zeroData": True,
                                "inputDataFile": "prompt",
                            }
                        },
                    }
                ]
            },
        ),
        ["spec.triton.modelWarmup[0].inputs[PROMPT]", "exactly one of zeroData"],
    ),
    (
        "unknown dtype",
        _with("model.sizing", {"parameters": 7e9, "dtype": "fp12"}),
        ["spec.model.sizing.dtype", "Unsupported value"],
    ),
    (
        "partial KV-cache sizing",
        _with("model.sizing", {"parameters": 7e9, "dtype": "fp16", "layers": 32}),
        ["spec.model.sizing", "set all four or none"],
    ),
    (
        "error rate above 100%",
        _with("canary.analysis.criteria", [{"metric": "errorRate", "maxPercent": 150}]),
        ["spec.canary.analysis.criteria[0].maxPercent"],
    ),
    (
        "quantile outside (0,1)",
        _with(
            "canary.analysis.criteria",
            [{"metric": "ttft", "quantile": 1.5, "maxIncreasePercent": 20}],
        ),
        ["spec.canary.analysis.criteria[0].quantile"],
    ),
    (
        "an error-rate criterion with a quantile",
        _with(
            "canary.analysis.criteria",
            [{"metric": "errorRate", "maxPercent": 1, "quantile": 0.9}],
        ),
        ["spec.canary.analysis.criteria[0]", "an errorRate criterion takes maxPercent only"],
    ),
    (
        "a latency criterion without a limit",
        _with("canary.analysis.criteria", [{"metric": "tpot", "quantile": 0.9}]),
        ["spec.canary.analysis.criteria[0]", "a latency criterion takes maxIncreasePercent"],
    ),
    (
        "a criterion the preset cannot read",
        _with(
            "canary.analysis",
            {"metrics": "istio", "criteria": [{"metric": "ttft", "maxIncreasePercent": 20}]},
        ),
        ["spec.canary.analysis.criteria", "not read by this metrics preset"],
    ),
    (
        "the removed analysis.latency",
        _with("canary.analysis.latency", {"quantile": 0.95, "maxIncreasePercent": 20}),
        [
            "spec.canary.analysis.latency",
            "write criteria: [{metric: e2eLatency, quantile: 0.95, maxIncreasePercent: 20}",
        ],
    ),
    (
        "the removed analysis.metric",
        _with("canary.analysis.metric", "summary"),
        ["spec.canary.analysis.metric", "write metrics: triton"],
    ),
    (
        "env value and valueFrom together",
        _with(
            "env",
            [{"name": "A", "value": "1", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
        ),
        ["spec.env[0]", "set value or valueFrom, not both"],
    ),
    (
        "duplicate env names",
        _with("env", [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]),
        ["spec.env[1]", "Duplicate value"],
    ),
    (
        "unsupported repository",
        _with("model.repository", "ftp://models"),
        ["spec.model.repository", "should match"],
    ),
    (
        "istio router without hosts",
        _with("traffic.router", "istio"),
        ["spec.traffic.istio", "router istio needs"],
    ),
    (
        "gateway metrics without the gateway's router",
        _gateway_metrics_behind_istio(),
        ["spec.canary.analysis.metrics", "the traefik metrics preset reads the gateway's"],
    ),
    ("bad cpu quantity", _with("resources.cpu", "lots"), ["spec.resources.cpu"]),
    (
        "too many GPUs",
        _with("resources.gpus", 17),
        ["spec.resources.gpus", "less than or equal to 16"],
    ),
    ("unknown field", _with("replicaz", 2), ['unknown field "spec.replicaz"']),
    # Issue 15: what crashed or loaded the operator, refused at admission with its field.
    (
        "a step the state machine overflowed on",
        _with("canary.initialStepInterval", "99999999999h"),
        ["spec.canary.initialStepInterval"],
    ),
    (
        "an analysis every millisecond",
        _with("canary.analysis.interval", "1ms"),
        ["spec.canary.analysis.interval", "must be a duration from 1s to 24h"],
    ),
    ("a negative cpu", _with("resources.cpu", "-1"), ["spec.resources.cpu", "should match"]),
    (
        "a model to load that is no model name",
        _with("model.loads", ["tensorrt_llm", "../etc"]),
        ["spec.model.loads[1]", "should match"],
    ),
    (
        "a repository path that climbs",
        _with("model.repository", "pvc://c/../x"),
        ["spec.model.repository", "no '..' segment"],
    ),
    (
        "a format spec that allocates 600 MB",
        _with("canary.analysis.queries", {"requests": "x{{a='{arm:>600000000}'}}"}),
        ["spec.canary.analysis.queries.requests", "no format spec or conversion"],
    ),
    (
        "a toleration the API server refuses on a Pod",
        _with("tolerations", [{"key": "k", "operator": "Exists", "value": "v"}]),
        ["spec.tolerations[0]", "operator Exists takes no value"],
    ),
    (
        "weights beyond any model",
        _with("model.sizing", {"parameters": 1e308, "dtype": "fp16"}),
        ["spec.model.sizing.parameters", "less than or equal to"],
    ),
    ("a number as a string", _with("replicas", "2"), ["spec.replicas", "must be of type integer"]),
    ("name that cannot name a Service", manifest(name="Tiny.LLM"), ["metadata.name"]),
    (
        "name too long for its children",
        manifest(name="x" * 53),
        ["metadata.name must be at most 52"],
    ),
]


@pytest.mark.parametrize(("what", "doc", "expected"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_spec_is_rejected_with_the_field(
    kubectl: Kubectl, crd: None, namespace: str, what: str, doc: dict[str, Any], expected: list[str]
) -> None:
    done = kubectl.apply(doc, namespace, check=False)
    assert done.returncode != 0, f"{what}: the API server accepted it"
    for words in expected:
        assert words in done.stderr, f"{what}: {words!r} not in {done.stderr!r}"
    assert kubectl.list("llmd", namespace) == [], "nothing may be stored"


def test_examples_apply_cleanly(kubectl: Kubectl, crd: None, namespace: str) -> None:
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        done = kubectl.run("apply", "--dry-run=server", "-n", namespace, "-f", str(path))
        assert "created (server dry run)" in done.stdout


def test_server_defaults_are_the_model_defaults(
    kubectl: Kubectl, crd: None, namespace: str
) -> None:
    """The agreement proof end to end: the API server defaults a minimal spec exactly as
    the pydantic model does."""
    doc = manifest(name="minimal")
    kubectl.apply(doc, namespace)
    stored = kubectl.get("llmd", "minimal", namespace)
    assert stored is not None
    by_model = LLMDeploymentSpec.model_validate(copy.deepcopy(doc["spec"]))
    assert LLMDeploymentSpec.model_validate(stored["spec"]) == by_model
    # And every default the model has, the server filled in (empty collections aside).
    expected = without_empty_collections(
        by_model.model_dump(mode="json", by_alias=True, exclude_none=True)
    )
    assert without_empty_collections(stored["spec"]) == expected


def test_printer_columns(kubectl: Kubectl, crd: None, namespace: str) -> None:
    kubectl.apply(yaml.safe_load((ROOT / "examples" / "tiny-llm.yaml").read_text()), namespace)
    header = kubectl.run("get", "llmd", "-n", namespace).stdout.splitlines()[0].split()
    assert header == ["NAME", "PHASE", "STABLE", "CANARY", "WEIGHT", "CHECK", "AGE"]
    wide = kubectl.run("get", "llmd", "-n", namespace, "-o", "wide").stdout.splitlines()[0].split()
    assert wide[-3:] == ["STEP", "FAILEDCHECKS", "ROUTER"]
